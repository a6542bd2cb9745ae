"""The session: one pooled HTTP connection set, credentials, retries, and the default-session registry.

Resources never touch HTTP; they ask the session for one logical call of a route
(:mod:`syvain_metrics.contract.routes`) and get the validated ``data`` payload back::

    session.call(routes.CREATE_FOLDER, reply=FolderReply(),
                 body={"name": "runs", "parent_id": None})

Example:
    >>> import syvain_metrics as sm
    >>> with sm.Session("ak_org_123", host="http://127.0.0.1:8765") as session:
    ...     session  # the key never shows
    <Session http://127.0.0.1:8765 auth=api_key>
"""

from __future__ import annotations

import atexit
import http.client
import json
import logging
import os
import platform
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import urllib3
from marshmallow import Schema

from syvain_metrics._version import __version__
from syvain_metrics.client.auth import Credentials, hide_key, resolve_credentials
from syvain_metrics.client.retry import RetryPolicy
from syvain_metrics.client.secret import Secret
from syvain_metrics.client.tokens import IngestionTokenCache
from syvain_metrics.client.transport import (
    DEFAULT_MAX_RESPONSE_BYTES,
    ERROR_BODY_MAX,
    BadEncodingError,
    BearerAuth,
    BodyTooLargeError,
    DeadlineAdapter,
    Exchange,
    read_body,
)
from syvain_metrics.contract import routes
from syvain_metrics.contract.limits import DEFAULT_INGESTION_KEY_NAME, DEFAULT_PAGE_SIZE
from syvain_metrics.contract.routes import API_PREFIX, Route
from syvain_metrics.contract.schemas.base import load_request, load_response
from syvain_metrics.contract.schemas.envelope import IN_PROGRESS, request_error, unwrap_envelope
from syvain_metrics.contract.schemas.fields import text_ok
from syvain_metrics.contract.schemas.ingestion_key import (
    IngestionKeyCreateReply,
    IngestionKeyCreateRequest,
)
from syvain_metrics.contract.schemas.options import check_page_size
from syvain_metrics.errors import (
    FlushError,
    MetricsApiConnectionError,
    MetricsApiError,
    MetricsApiRequestError,
    MetricsApiResponseError,
    MetricsApiTimeoutError,
    MetricsApiTransportError,
    MetricsValidationError,
)
from syvain_metrics.pipeline.batch import new_idempotency_key as _new_idempotency_key
from syvain_metrics.pipeline.logs import SessionLogs
from syvain_metrics.pipeline.spool import configured_root as configured_spool_root

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


class _UserCache:
    def __repr__(self) -> str:
        return "USER_CACHE"


_MAX_SECONDS = 86_400.0
"""The longest timeout a session takes (a day): beyond, it is no longer a bound."""

USER_CACHE: Any = _UserCache()
"""The default ``spool_dir``: ``$SYVAIN_METRICS_SPOOL_DIR``, else the user's cache directory."""


def _spool_root(spool_dir: str | os.PathLike[str] | _UserCache | None) -> Path | None:
    if spool_dir is None:
        return None
    if isinstance(spool_dir, _UserCache):
        return configured_spool_root()
    if not isinstance(spool_dir, str | os.PathLike):
        raise MetricsValidationError({"spool_dir": ["Must be a directory path or None."]})
    return Path(spool_dir)


class Session:
    """A connection to the Syvain Metrics API (or a local server), shared by every resource.

    Args:
        api_key: an API key, ``"local"`` / ``"local-dev"`` (the CLI's login file), or ``None``
            to read ``SYVAIN_METRICS_API_KEY`` and ``SYVAIN_METRICS_HOST``, then ``"local"``.
        host: the service origin, e.g. ``"https://metrics.syvain.com"``.
        timeout: seconds for each exchange of an ordinary call (annotations included):
            connecting, sending and the whole answer, body included, within this time.
        ingest_timeout: the same for metric ingestion, which may wait for ``sync=True``.
        retry: a :class:`RetryPolicy` (3 attempts, 0.25 s then 0.5 s).
        clock: seconds since the epoch; drives ingestion-token expiry (tests inject one).
        pool_size: connections kept alive per host.
        page_size: rows per request when a read pages through a large result (50,000; at
            most 100,000, the contract's largest; a service that answers fewer per request is
            read correctly all the same, only with more requests).
        spool_dir: where ``log()`` events wait on disk until the service acknowledges them:
            by default ``$SYVAIN_METRICS_SPOOL_DIR``, else the user's cache directory
            (``~/.cache/syvain-metrics/spool``); ``None`` keeps them in memory only. A spool
            that cannot be created or written yet (a full disk) is tried again, up to every
            15 s; one refused (not a directory of this user's) is not, and either way
            ``flush()`` and ``close()`` warn that events are held in memory only.
        flush_interval: the longest a ``log()`` event waits before it is sent (seconds).
        flush_timeout: how long ``close()``, the end of ``run()`` and interpreter exit wait
            for pending ``log()`` events (seconds); what is left stays in the spool.
        max_response_bytes: the largest answer read, after decompression (256 MiB); a larger
            one is a :class:`~syvain_metrics.MetricsApiResponseError`.

    Example:
        >>> import syvain_metrics as sm
        >>> session = sm.Session("ak_org_123", host="http://127.0.0.1:8765", timeout=5)
        >>> session.timeout, session.ingest_timeout
        (5.0, 60.0)
        >>> session.close()
    """

    def __init__(
        self,
        api_key: str | Secret | None = None,
        *,
        host: str | None = None,
        timeout: float = 10.0,
        ingest_timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        clock: Callable[[], float] = time.time,
        pool_size: int = 10,
        page_size: int = DEFAULT_PAGE_SIZE,
        spool_dir: str | os.PathLike[str] | _UserCache | None = USER_CACHE,
        flush_interval: float = 1.0,
        flush_timeout: float = 30.0,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        # First of all: a reporter recording this frame's locals (a bad timeout below, say)
        # must find no key in it.
        credential = hide_key(api_key)
        del api_key
        for name, value in (
            ("timeout", timeout),
            ("ingest_timeout", ingest_timeout),
            ("flush_interval", flush_interval),
            ("flush_timeout", flush_timeout),
        ):
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not 0 < value <= _MAX_SECONDS
            ):
                raise MetricsValidationError(
                    {
                        name: [
                            f"Must be a finite number of seconds above 0 (at most {_MAX_SECONDS:g})."
                        ]
                    }
                )
        if (
            isinstance(max_response_bytes, bool)
            or not isinstance(max_response_bytes, int)
            or max_response_bytes < 1
        ):
            raise MetricsValidationError(
                {"max_response_bytes": ["Must be a whole number of bytes above 0."]}
            )
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise MetricsValidationError({"retry": ["Must be a RetryPolicy or None."]})
        if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1:
            raise MetricsValidationError({"pool_size": ["Must be a whole number above 0."]})
        if not callable(clock):
            raise MetricsValidationError({"clock": ["Must be a callable returning seconds."]})
        self.max_response_bytes = max_response_bytes
        self.page_size: int = check_page_size(page_size) or DEFAULT_PAGE_SIZE
        self._credentials: Credentials = resolve_credentials(credential, host=host)
        self.host: str = self._credentials.host
        self.timeout = float(timeout)
        self.ingest_timeout = float(ingest_timeout)
        self.retry = retry or RetryPolicy()
        self.clock = clock
        self.flush_timeout = float(flush_timeout)
        self._pool_size = pool_size
        self._http_lock = threading.Lock()
        self._http: requests.Session | None = self._new_http()
        self.tokens = IngestionTokenCache(self._mint_ingestion_token, clock=clock)
        self._closing = False
        self._closed = False
        # Reentrant: a signal handler may call close() while this thread is inside it.
        self._close_lock = threading.RLock()
        self.logs = SessionLogs(
            self, spool_root=_spool_root(spool_dir), interval=float(flush_interval)
        )
        _sessions.add(self)
        self.logs.offer_leftovers()

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

    def _after_fork_in_child(self) -> None:
        # The parent's connections, sender threads, pending events and locks belong to the
        # parent: drop them without closing anything (closing could disturb the parent's
        # sockets) and start afresh, lazily (a child that never calls does no set-up at all).
        self._http_lock = threading.Lock()
        self._http = None
        self.tokens = IngestionTokenCache(self._mint_ingestion_token, clock=self.clock)
        self._close_lock = threading.RLock()
        self.logs.after_fork()

    # -- context management -------------------------------------------------------

    def __enter__(self) -> Session:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is None:
            self.close()
            return
        try:  # an exception is already leaving the block: it wins, the rest is logged
            self.close()
        except FlushError as error:
            logger.warning("syvain_metrics: closing the session: %s", error)

    def close(self) -> None:
        """Wait up to ``flush_timeout`` for every pending ``log()`` event, then release the
        connections. Raises :class:`~syvain_metrics.FlushError` (after closing) if some events
        were rejected or are still pending; pending ones stay in the spool for
        ``syvain-metrics sync``.

        Example:
            >>> session.close()  # doctest: +SKIP
        """
        with self._close_lock:
            if self._closing:
                return
            self._closing = True
        incomplete: FlushError | None = None
        try:
            # Still open: it sends requests. After a SIGTERM, no longer than run() allowed.
            incomplete = self.logs.close(self.logs.exit_wait(self.flush_timeout))
        finally:
            self._closed = True
            if self._http is not None:
                self._http.close()
        if incomplete is not None:
            raise incomplete

    def flush(self, timeout: float | None = None) -> int:
        """Wait until every ``log()`` event of this session, all experiments, is stored;
        returns how many were waited for. Raises :class:`~syvain_metrics.FlushError` on
        timeout or rejected events (see ``Experiment.flush``).

        Example:
            >>> session.flush(timeout=60)  # doctest: +SKIP
            3000
        """
        settled = self.logs.wait(None, timeout)
        error = self.logs.incomplete(settled)
        if error is not None:
            raise error
        return 0 if settled is None else settled.stored

    def drain_logs_at_exit(self) -> None:
        """At interpreter (or multiprocessing child) exit: wait up to ``flush_timeout`` for
        pending ``log()`` events and stop the sender; warn about what is left."""
        if self._closing or not self.logs.started:
            return
        error = self.logs.close(self.logs.exit_wait(self.flush_timeout))
        if error is not None:
            logger.warning("syvain_metrics: at exit, %s", error)

    @property
    def spool_dir(self) -> str | None:
        """The directory of this session's ``log()`` spool in this process, or ``None``."""
        directory = self.logs.spool_dir
        return None if directory is None else str(directory)

    def __repr__(self) -> str:
        # Also for a session whose constructor failed: reporters that record local variables
        # call this on the half-built ``self`` of __init__'s frame.
        credentials = getattr(self, "_credentials", None)
        if credentials is None:
            return "<Session (not connected)>"
        return f"<Session {credentials.host} auth={credentials.source}>"

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has run (a closed session sends nothing more)."""
        return self._closed or self._closing

    @property
    def auth_source(self) -> str:
        """Where the API key came from: ``"api_key"``, ``"local"`` or ``"local-dev"``."""
        return self._credentials.source

    @property
    def org_id(self) -> str | None:
        """The organization id recorded by the CLI login, if known."""
        return self._credentials.org_id

    # -- the one entry point resources use -----------------------------------------

    def call(
        self,
        route: Route,
        *segments: str,
        reply: Schema,
        query: Query | None = None,
        body: Mapping[str, Any] | None = None,
        encoded_body: bytes | None = None,
        idempotency_key: str | None = None,
        attempts: int | None = None,
        on_body: Callable[[bytes], object] | None = None,
    ) -> dict[str, Any]:
        """Send one logical call of ``route`` and return its validated ``data``.

        ``segments`` fill the route's path (ids, metric names). POST and PATCH carry an
        ``Idempotency-Key`` reused on every retry (unless the route says otherwise).
        Routes written with an ingestion token use the token of the experiment named by
        the first segment, renewing it once on 401/403.

        The log() sender, which retries on its own schedule, passes a body it encoded once
        (``encoded_body``), the key it keeps across its retries (``idempotency_key``), and
        ``attempts=1``. A paged read passes ``on_body``, which sees a 2xx answer's raw bytes
        before they are decoded (to send the next request early); what it raises is ignored.

        Example:
            >>> session.call(routes.GET_EXPERIMENT, "0f8e2c1a", reply=ExperimentReply())  # doctest: +SKIP
            {'experiment': {...}}
        """
        if self._closed:
            raise MetricsApiError("This session is closed; open a new one with sm.connect().")
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
            >>> session.forget_ingestion_credential("0f8e2c1a-...")  # doctest: +SKIP
        """
        self.tokens.forget(experiment_id)

    # -- internals ------------------------------------------------------------------

    def _mint_ingestion_token(self, experiment_id: str) -> tuple[Secret, int]:
        body = load_request(IngestionKeyCreateRequest(), {"name": DEFAULT_INGESTION_KEY_NAME})
        data = self.call(
            routes.CREATE_INGESTION_KEY,
            experiment_id,
            reply=IngestionKeyCreateReply(),
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


# Every session of this process, so that a fork and the interpreter's exit reach them all.
_sessions: weakref.WeakSet[Session] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for session in list(_sessions):
        session._after_fork_in_child()


def _drain_at_exit() -> None:
    for session in list(_sessions):
        try:
            session.drain_logs_at_exit()
        except Exception as error:  # an exit hook must let the others run
            logger.warning("syvain_metrics: draining log() events at exit failed: %s", error)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_drain_at_exit)


# -- the default session -------------------------------------------------------------

_default_lock = threading.Lock()
_default: Session | None = None


def connect(api_key: str | None = None, **options: Any) -> Session:
    """Open a :class:`Session` and make it the default for class-level calls; ``options`` are
    the session's keyword arguments (``host=``, ``timeout=``, ``spool_dir=``, ...).

    Example:
        >>> import syvain_metrics as sm
        >>> sm.connect("ak_org_123", host="http://127.0.0.1:8765")
        <Session http://127.0.0.1:8765 auth=api_key>
    """
    global _default
    credential = hide_key(api_key)
    del api_key
    session = Session(credential, **options)
    with _default_lock:
        _default = session
    return session


def set_default_session(session: Session | None) -> None:
    """Make ``session`` the default for class-level calls (``None`` clears it).

    Example:
        >>> sm.set_default_session(local_session)  # doctest: +SKIP
    """
    global _default
    with _default_lock:
        _default = session


def get_session(session: Session | None = None) -> Session:
    """``session`` if given, else the default one set by :func:`connect`.

    Example:
        >>> get_session() is sm.connect("ak_org_123")  # doctest: +SKIP
        True
    """
    if session is not None:
        return session
    with _default_lock:
        current = _default
    if current is None:
        raise MetricsApiError(
            "No session: call sm.connect(...) first, or pass session=sm.Session(...)."
        )
    return current
