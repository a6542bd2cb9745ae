"""The requestor: one logical call of a route, as the session's resources ask for it.

It holds what a call needs and nothing of the session's lifecycle: the pooled HTTP
connections, the credentials and the ingestion-token cache. One call is prepared once
(URL, query, body encoded once, ``Idempotency-Key``), then sent: retried when retryable,
polled while the same call is in progress on the server (409), its answer decoded and
checked, any failure mapped to the SDK's error for it, and every key and token scrubbed
from the error's message.

Example:
    >>> requestor = Requestor(credentials, timeout=10.0, ingest_timeout=60.0,
    ...                       retry=RetryPolicy(), clock=time.time, pool_size=10,
    ...                       max_response_bytes=DEFAULT_MAX_RESPONSE_BYTES)  # doctest: +SKIP
    >>> requestor.call(operations.AUTH_STATUS)         # doctest: +SKIP
    {'org_id': ...}
"""

from __future__ import annotations

import http.client
import json
import logging
import platform
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import requests
import urllib3
from marshmallow import Schema

from syvain_metrics._version import __version__
from syvain_metrics.client.auth import Credentials
from syvain_metrics.client.retry import RetryPolicy
from syvain_metrics.client.secret import Secret
from syvain_metrics.client.tokens import IngestionTokenCache
from syvain_metrics.client.transport import (
    ERROR_BODY_MAX,
    BadEncodingError,
    BearerAuth,
    BodyTooLargeError,
    DeadlineAdapter,
    Exchange,
    read_body,
)
from syvain_metrics.contract import operations
from syvain_metrics.contract.limits import DEFAULT_INGESTION_KEY_NAME
from syvain_metrics.contract.operations import API_PREFIX, Operation
from syvain_metrics.contract.schemas.base import load_request, load_response
from syvain_metrics.contract.schemas.envelope import IN_PROGRESS, request_error, unwrap_envelope
from syvain_metrics.contract.schemas.fields import text_ok
from syvain_metrics.contract.schemas.ingestion_key import (
    IngestionKeyCreateRequest,
)
from syvain_metrics.errors import (
    MetricsApiConnectionError,
    MetricsApiError,
    MetricsApiRequestError,
    MetricsApiResponseError,
    MetricsApiTimeoutError,
    MetricsApiTransportError,
    MetricsValidationError,
)
from syvain_metrics.pipeline.batch import new_idempotency_key as _new_idempotency_key

logger = logging.getLogger("syvain_metrics")

_URLLIB3_VERSION: str = getattr(urllib3, "__version__", "?")
USER_AGENT = (
    f"syvain-metrics-python/{__version__} python/{platform.python_version()} "
    f"requests/{requests.__version__}"
)
QueryValue = str | int | float | bool | Sequence[str] | None
Query = Mapping[str, QueryValue] | Sequence[tuple[str, str]]


def query_pairs(query: Query | None) -> list[tuple[str, str]]:
    """Encode query values: booleans as ``true``/``false``, lists repeated, ``None`` left out.

    Example:
        >>> query_pairs({"key": ["a", "b"], "sync": True, "limit": None})
        [('key', 'a'), ('key', 'b'), ('sync', 'true')]
    """
    if query is None:
        return []
    if not isinstance(query, Mapping):
        return [(str(k), str(v)) for k, v in query]
    pairs: list[tuple[str, str]] = []
    for key, value in query.items():
        if value is None:
            continue
        if isinstance(value, bool):
            pairs.append((key, "true" if value else "false"))
        elif isinstance(value, list | tuple):
            pairs.extend((key, str(item)) for item in value if item is not None)
        else:
            pairs.append((key, str(value)))
    return pairs


@dataclass(frozen=True)
class _Prepared:
    """One logical call, ready to send (and to send again on a retry)."""

    method: str
    url: str
    params: list[tuple[str, str]]
    payload: bytes | None
    idempotency_key: str | None
    timeout: float
    timeout_setting: str
    operation: str
    attempts: int
    on_body: Callable[[bytes], object] | None = None


@dataclass(frozen=True)
class _Outcome:
    """What one attempt came to: ``data``, or an ``error`` and how to treat it."""

    data: Any = None
    error: MetricsApiError | None = None
    retryable: bool = True
    retry_after: str | None = None


class Requestor:
    """Makes one logical call at a time for a session (any number of threads at once).

    Args:
        credentials: the API key and the host it is for.
        timeout: seconds for each exchange of an ordinary call.
        ingest_timeout: the same for the routes that may wait long (metric ingestion).
        retry: how many attempts, and the waits between them.
        clock: seconds since the epoch; drives ingestion-token expiry.
        pool_size: connections kept alive per host.
        max_response_bytes: the largest answer read, after decompression.
    """

    def __init__(
        self,
        credentials: Credentials,
        *,
        timeout: float,
        ingest_timeout: float,
        retry: RetryPolicy,
        clock: Callable[[], float],
        pool_size: int,
        max_response_bytes: int,
    ) -> None:
        self._credentials = credentials
        self.host: str = credentials.host
        self.timeout = timeout
        self.ingest_timeout = ingest_timeout
        self.retry = retry
        self.clock = clock
        self.max_response_bytes = max_response_bytes
        self._pool_size = pool_size
        self._http_lock = threading.Lock()
        self._http: requests.Session | None = self._new_http()
        self.tokens = IngestionTokenCache(self._mint_ingestion_token, clock=clock)

    def _new_http(self) -> requests.Session:
        http = requests.Session()
        adapter = DeadlineAdapter(pool_connections=4, pool_maxsize=self._pool_size)
        http.mount("http://", adapter)
        http.mount("https://", adapter)
        http.headers.clear()
        http.headers.update(
            {
                "Accept": "application/json",
                "Content-Type": "application/json",
                "User-Agent": USER_AGENT,
            }
        )
        # Read proxy and CA settings from the environment once, for the one host this session
        # talks to, instead of on every request; and keep ~/.netrc from replacing the
        # bearer token, which requests would do with trust_env on.
        settings = http.merge_environment_settings(self.host, {}, None, None, None)
        http.proxies = settings["proxies"]
        http.verify = settings["verify"]
        http.trust_env = False
        return http

    def _connect(self) -> requests.Session:
        with self._http_lock:
            if self._http is None:
                self._http = self._new_http()
            return self._http

    def after_fork_in_child(self) -> None:
        """In a forked child: drop the parent's connections and tokens without closing
        anything (closing could disturb the parent's sockets); they are made afresh, lazily."""
        self._http_lock = threading.Lock()
        self._http = None
        self.tokens = IngestionTokenCache(self._mint_ingestion_token, clock=self.clock)

    def close(self) -> None:
        """Release the pooled connections."""
        if self._http is not None:
            self._http.close()

    def delivery_wait(self, attempt: int, retry_after: float | None = None) -> float:
        """The retry policy's wait before the next try of a ``log()`` batch (the
        :class:`~syvain_metrics.pipeline.delivery.DeliveryPolicy` of the session's sender).

        Example:
            >>> requestor.delivery_wait(0)  # doctest: +SKIP
            0.25
        """
        return self.retry.delivery_wait(attempt, retry_after)

    def call(
        self,
        route: Operation,
        *segments: str,
        reply: Schema | None = None,
        query: Query | None = None,
        body: Mapping[str, Any] | None = None,
        encoded_body: bytes | None = None,
        idempotency_key: str | None = None,
        attempts: int | None = None,
        on_body: Callable[[bytes], object] | None = None,
    ) -> dict[str, Any]:
        """Send one logical call of ``route`` and return its validated ``data`` (the
        arguments are those of :meth:`Session.call <syvain_metrics.Session.call>`).

        Example:
            >>> requestor.call(operations.GET_EXPERIMENT, "0f8e2c1a")  # doctest: +SKIP
            {'experiment': {...}}
        """
        if reply is None:
            reply = route.reply()
        for segment in segments:
            if not isinstance(segment, str) or not text_ok(segment):
                raise MetricsValidationError(
                    {route.operation: [f"Path segment {segment!a} must be valid Unicode text."]}
                )
        key = None
        if route.sends_idempotency_key:
            key = idempotency_key or _new_idempotency_key()
        if encoded_body is None and body is not None:
            encoded_body = _encode_body(body)
        prepared = _Prepared(
            method=route.method,
            url=f"{self.host}{API_PREFIX}{route.path(*segments)}",
            params=query_pairs(query),
            payload=encoded_body,
            idempotency_key=key,
            timeout=self.ingest_timeout if route.long_wait else self.timeout,
            timeout_setting="ingest_timeout" if route.long_wait else "timeout",
            operation=route.operation,
            attempts=self.retry.attempts if attempts is None else attempts,
            on_body=on_body,
        )
        # Keys and tokens stay Secret in this frame and below (error reporters record the
        # locals of each frame); the answer is never bound here, as a minted token is in it.
        credential = self._credentials.api_key
        try:
            if route.credential != "ingestion_key":
                return load_response(
                    reply, self._send(prepared, credential=credential), operation=route.operation
                )
            experiment_id = segments[0]
            credential = self.tokens.token(experiment_id)
            try:
                answer = self._send(prepared, credential=credential)
            except MetricsApiRequestError as error:
                if error.status_code not in (401, 403):
                    raise
                logger.info("ingestion token refused (%s); minting a new one", error.status_code)
                credential = self.tokens.renew(experiment_id, credential)
                answer = self._send(prepared, credential=credential)
            return load_response(reply, answer, operation=route.operation)
        except MetricsApiError as error:
            raise self._redacted(error, credential) from error.__cause__

    def forget_ingestion_credential(self, experiment_id: str) -> None:
        """Drop the cached ingestion token of one experiment.

        Example:
            >>> requestor.forget_ingestion_credential("0f8e2c1a-...")  # doctest: +SKIP
        """
        self.tokens.forget(experiment_id)

    # -- internals ------------------------------------------------------------------

    def _mint_ingestion_token(self, experiment_id: str) -> tuple[Secret, int]:
        body = load_request(IngestionKeyCreateRequest(), {"name": DEFAULT_INGESTION_KEY_NAME})
        data = self.call(
            operations.CREATE_INGESTION_KEY,
            experiment_id,
            body=body,
        )
        return Secret(data["token"]), data["key"]["expires_at_ms"]

    def _send(self, prepared: _Prepared, *, credential: Secret) -> Any:
        """Send one logical call: retry what is retryable, poll while the same call is in
        progress on the server, and raise the last error (redacted) otherwise. The waits
        between tries add up to at most ``retry.max_total_wait``."""
        policy = self.retry
        attempt = 0
        polls = 0
        waited = 0.0
        while True:
            outcome = self._attempt(prepared, credential)
            if outcome.error is None:
                return outcome.data
            error = outcome.error
            if isinstance(error, MetricsApiRequestError) and outcome.retry_after:
                error.retry_after = policy.retry_after_seconds(outcome.retry_after)
            in_progress = getattr(error, "error_code", None) == IN_PROGRESS
            if in_progress and polls < policy.poll_attempts:
                wait = policy.poll_interval
            elif in_progress or not outcome.retryable or attempt >= prepared.attempts - 1:
                raise self._redacted(error, credential) from None
            else:
                wait = policy.backoff(attempt, outcome.retry_after)
            if waited + wait > policy.max_total_wait:
                logger.info(
                    "%s %s failed (%s); not retrying: waiting %.2f s more would pass "
                    "RetryPolicy.max_total_wait (%g s)",
                    prepared.method,
                    prepared.url,
                    self._redacted(error, credential),
                    wait,
                    policy.max_total_wait,
                )
                raise self._redacted(error, credential) from None
            waited += wait
            if in_progress:
                polls += 1  # polls do not use up the attempts (contract section 3)
            else:
                logger.info(
                    "%s %s failed (%s); retrying in %.2f s",
                    prepared.method,
                    prepared.url,
                    self._redacted(error, credential),
                    wait,
                )
                attempt += 1
            policy.sleep(wait)

    def _attempt(self, prepared: _Prepared, credential: Secret) -> _Outcome:
        """One HTTP exchange, turned into data or into the error it amounts to."""
        operation = prepared.operation
        status = 0
        exchange = Exchange(prepared.timeout)
        try:
            with exchange:
                response = (self._http or self._connect()).request(
                    prepared.method,
                    prepared.url,
                    params=prepared.params,
                    data=prepared.payload,
                    headers=_idempotency_header(prepared.idempotency_key),
                    auth=BearerAuth(credential),
                    timeout=exchange.timeout,  # type: ignore[arg-type]  # passed through to urllib3
                    stream=True,
                    allow_redirects=False,
                )
                status = response.status_code
                if 300 <= status < 400:
                    # Unwatched first: close() hands the connection back to the pool, where
                    # another thread's exchange may take it before this block ends.
                    exchange.finish()
                    response.close()  # the body is not wanted; the connection is not reused
                    return _Outcome(error=_redirect_error(response, operation), retryable=False)
                limit = self.max_response_bytes if status < 400 else ERROR_BODY_MAX
                try:
                    content = read_body(response, limit)
                except BodyTooLargeError:
                    if status < 400:
                        message = (
                            f"Metrics API response for {operation} is larger than "
                            f"max_response_bytes ({limit:,} bytes); ask for fewer rows, or raise "
                            "Session(max_response_bytes=...)."
                        )
                        return _Outcome(error=MetricsApiResponseError(message), retryable=False)
                    content = b""  # an error answer too long to be a message
            if exchange.expired:
                # Cut at the deadline: what was read may look whole (a body that ends when
                # the connection closes, headers that end early) and is not to be trusted.
                raise TimeoutError("the exchange's deadline passed")
        # The exception below is described, not chained (and this returns rather than raises):
        # it holds the request, Authorization header included, in its attributes and frames.
        except Exception as exc:
            return _Outcome(**self._failure(prepared, status, exc, expired=exchange.expired))
        except KeyboardInterrupt:
            interrupted = True
        else:
            interrupted = False
        if interrupted:
            # Ctrl-C inside requests: raised afresh, without the frames below, whose locals
            # hold the request's headers.
            raise KeyboardInterrupt
        logger.debug("%s %s -> %s", prepared.method, prepared.url, status)
        if status >= 400 or status < 200:
            error = request_error(status, content.decode("utf-8", "replace"))
            return _Outcome(
                error=error,
                retryable=error.retryable,
                retry_after=response.headers.get("Retry-After"),
            )
        if prepared.on_body is not None:
            try:
                prepared.on_body(content)
            except Exception as error:  # a look ahead, never a reason for the call to fail
                logger.debug("looking ahead at %s failed: %s", operation, error)
        try:
            decoded = json.loads(content)
        except (ValueError, RecursionError) as exc:
            # The contract counts a body that is not JSON among retryable failures.
            why = "nested too deeply" if isinstance(exc, RecursionError) else "not JSON"
            message = (
                f"Metrics API response for {operation} is {why} "
                f"(HTTP {status}, {len(content)} bytes)."
            )
            return _Outcome(error=MetricsApiResponseError(message))
        return _Outcome(data=unwrap_envelope(decoded, operation=operation))

    def _failure(
        self, prepared: _Prepared, status: int, exc: Exception, *, expired: bool
    ) -> dict[str, Any]:
        """The error an exception of one exchange amounts to (``_Outcome``'s fields)."""
        operation = prepared.operation
        if expired or isinstance(
            exc, requests.Timeout | urllib3.exceptions.TimeoutError | TimeoutError
        ):
            message = (
                f"Metrics API request for {operation} timed out after {prepared.timeout:g} s "
                f"(raise Session({prepared.timeout_setting}=...) if the service needs longer)."
            )
            return {"error": MetricsApiTimeoutError(message, retryable=True)}
        if isinstance(exc, BadEncodingError):
            message = f"Metrics API response for {operation} could not be read: {exc}."
            return {"error": MetricsApiResponseError(message)}
        where = f"HTTP {status} from {self.host}" if status else f"could not reach {self.host}"
        what = f"{type(exc).__name__}: {str(exc)[:500]}"
        if isinstance(
            exc,
            requests.RequestException
            | urllib3.exceptions.HTTPError
            | http.client.HTTPException
            | OSError,
        ):
            message = f"Metrics API request for {operation} {where}: {what}"
            return {"error": MetricsApiConnectionError(message, retryable=True)}
        # Anything else is a fault of the HTTP libraries below (a version the SDK does not
        # work with, a bug): trying again cannot help, and it must not escape raw.
        message = (
            f"Metrics API request for {operation} failed inside the HTTP client "
            f"(requests {requests.__version__}, urllib3 {_URLLIB3_VERSION}): {what}"
        )
        return {"error": MetricsApiTransportError(message), "retryable": False}

    def _redacted(self, error: MetricsApiError, credential: Secret) -> MetricsApiError:
        """Scrub the API key and tokens from an error message, should a server echo them."""
        message = str(error)
        secrets = [
            secret.reveal()
            for secret in (self._credentials.api_key, credential, *self.tokens.secrets())
        ]
        if any(secret and secret in message for secret in secrets):
            for secret in secrets:
                if secret:
                    message = message.replace(secret, "***")
            error.args = (message,)
        return error


def _idempotency_header(key: str | None) -> dict[str, str]:
    return {} if key is None else {"Idempotency-Key": key}


def _redirect_error(response: requests.Response, operation: str) -> MetricsApiRequestError:
    """A 3xx: never followed (the body and the credentials stay with the configured host)."""
    status = response.status_code
    location = response.headers.get("Location", "")[:300] or "(no Location header)"
    return MetricsApiRequestError(
        f"HTTP {status}: the service answered {operation} with a redirect to {location!r}, "
        "which the SDK does not follow; check Session(host=...) (for instance https:// "
        "rather than http://).",
        status_code=status,
    )


def _encode_body(body: Mapping[str, Any]) -> bytes:
    try:
        return json.dumps(body, allow_nan=False, separators=(",", ":")).encode()
    except ValueError as error:  # validation upstream makes this unreachable for SDK bodies
        raise MetricsValidationError(f"Request body is not finite JSON: {error}") from None
