"""The local server's WSGI application: one request pipeline for every operation.

Each request goes the same way: route, faults, authenticate, read and parse the body,
idempotency, validate (with the operation's schemas), stage, then the handler inside the
write turn. What an operation adds is in the endpoint table,
:data:`~syvain_metrics.server.handlers.ENDPOINTS`: its handler, and its hooks (an ingest
stages its batch before the write turn; the handler then writes it). The pipeline asks the
store only for what every request needs: credentials, the transaction, idempotency records.

Routing works on the raw request path (``REQUEST_URI``), not ``PATH_INFO``: WSGI
decodes ``%2F`` into ``/``, and ids and metric names may contain ``/``. Each path
segment is percent-decoded here, once.

Example:
    >>> from werkzeug.test import Client
    >>> from syvain_metrics.server.store import Store
    >>> store = Store()
    >>> [key] = store.use_api_keys(["ak_local_demo"])
    >>> client = Client(MetricsApp(store))
    >>> reply = client.get("/api/v1/auth/status", headers={"Authorization": f"Bearer {key}"})
    >>> reply.status_code, reply.json["data"]["auth"]
    (200, {'kind': 'api_key'})
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, unquote_to_bytes, urlsplit

from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.routing import Map, RequestRedirect, Rule
from werkzeug.wrappers import Request, Response

from syvain_metrics.contract.operations import API_PREFIX, DASHBOARD_PREFIX, INGEST_METRICS
from syvain_metrics.server import handlers
from syvain_metrics.server.dashboard import Dashboard
from syvain_metrics.server.errors import VALIDATION_ERROR, ApiError, invalid
from syvain_metrics.server.faults import Faults, SimulatedCrash
from syvain_metrics.server.handlers import ENDPOINTS, Endpoint
from syvain_metrics.server.idempotency import (
    IdempotencyGate,
    Replay,
    RunningElsewhere,
    Ticket,
    fingerprint,
)
from syvain_metrics.server.inputs import load_body, load_query, parse_body
from syvain_metrics.server.limits import (
    LARGE_BODIES_AT_ONCE,
    LARGE_BODY_BYTES,
    MAX_BODY_BYTES,
    MAX_IDEMPOTENCY_KEY_LENGTH,
)
from syvain_metrics.server.proxies import TrustedProxies
from syvain_metrics.server.sql import canonical
from syvain_metrics.server.store import Principal, Store

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

logger = logging.getLogger("syvain_metrics.server")

__all__ = ["ENDPOINTS", "MetricsApp", "canonical_path", "raw_target"]


def raw_target(environ: WSGIEnvironment) -> tuple[str, str]:
    """The request's path and query exactly as sent (``%2F`` still encoded).

    Example:
        >>> raw_target({"REQUEST_URI": "/api/v1/experiments/a%2Fb?limit=5"})
        ('/api/v1/experiments/a%2Fb', 'limit=5')
    """
    uri = environ.get("REQUEST_URI") or environ.get("RAW_URI")
    if not uri:  # a WSGI server without the raw URI: the best we can rebuild
        decoded = environ.get("PATH_INFO", "").encode("latin-1").decode("utf-8", "replace")
        return quote(decoded, safe="/"), environ.get("QUERY_STRING", "")
    if not uri.startswith("/") and "://" in uri:
        parts = urlsplit(uri)  # absolute form, as a proxy may send
        return parts.path or "/", parts.query
    path, _, query = uri.partition("?")
    return path, query.partition("#")[0]


def _segment(raw: str) -> str:
    # waitress hands the URI over as latin-1 text; a segment is UTF-8 once percent-decoded.
    return unquote_to_bytes(raw.encode("latin-1", "replace")).decode("utf-8", "replace")


def canonical_path(raw_path: str) -> str:
    """Each segment decoded once and re-encoded with no safe characters, for matching.

    Example:
        >>> canonical_path("/api/v1/experiments/a%2Fb/catalog/loss%20rate")
        '/api/v1/experiments/a%2Fb/catalog/loss%20rate'
    """
    return "/".join(quote(_segment(part), safe="") for part in raw_path.split("/"))


def _dump(payload: Any) -> bytes:
    text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    try:
        return text.encode()
    except UnicodeEncodeError:  # a lone surrogate: written as its JSON escape instead
        return json.dumps(payload, separators=(",", ":")).encode()


def _answer(data: dict[str, Any]) -> bytes:
    """The envelope of a 2xx answer; a :class:`~handlers.RawJson` value (a rows array
    :func:`~syvain_metrics.server.wire.rows_json` wrote) goes in as it is."""
    raw = {key: value for key, value in data.items() if isinstance(value, handlers.RawJson)}
    if not raw:
        return _dump({"data": data, "error": None})
    rest = _dump({key: value for key, value in data.items() if key not in raw})[1:-1]
    parts = [f"{json.dumps(key)}:{value}" for key, value in raw.items()]
    inner = ",".join([*parts, rest.decode()] if rest else parts)
    return ('{"data":{' + inner + '},"error":null}').encode()


def _json_response(status: int, body: bytes, headers: dict[str, str] | None = None) -> Response:
    return Response(body, status=status, headers=headers, content_type="application/json")


def _error_response(error: ApiError) -> Response:
    return _json_response(error.status, _dump(error.envelope()), error.headers)


def _broken(status: int, body: bytes) -> WSGIApplication:
    """An answer that promises more bytes than it sends: the server then closes the
    connection mid-body, and the client sees a broken connection, not a response."""

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        reason = HTTP_STATUS_CODES.get(status, "Unknown")
        start_response(
            f"{status} {reason}",
            [("Content-Type", "application/json"), ("Content-Length", str(len(body) + 4096))],
        )
        return [body[: max(1, len(body) // 2)]]

    return app


def _staged(
    endpoint: Endpoint, call: handlers.Call
) -> contextlib.AbstractContextManager[handlers.Call]:
    """The call readied by the endpoint's staging hook (outside the write turn), if it has one."""
    return endpoint.stage(call) if endpoint.stage is not None else contextlib.nullcontext(call)


def _refusal(error: ApiError) -> tuple[int, bytes, bool]:
    """``(status, body, keep)`` of a refused call: an idempotency record may keep any 4xx
    answer but a validation failure."""
    return error.status, _dump(error.envelope()), error.code != VALIDATION_ERROR


def _internal_error(message: str, endpoint: Endpoint) -> tuple[int, bytes, bool]:
    """Log the exception being handled; ``(status, body, keep)`` of a 500, never kept."""
    logger.exception(message, endpoint.name)
    failure = ApiError(500, "internal_error", "Internal server error")
    return 500, _dump(failure.envelope()), False


class MetricsApp:
    """The WSGI application of the local Syvain Metrics server.

    Args:
        store: where everything is kept.
        faults: the fault switches (a fresh, disarmed set when ``None``).
        trusted_proxies: addresses or networks of reverse proxies whose ``X-Forwarded-*``
            headers are believed (:mod:`~syvain_metrics.server.proxies`); none by default.

    Example:
        >>> from syvain_metrics.server.store import Store
        >>> app = MetricsApp(Store())
        >>> app.faults.fired
        0
    """

    def __init__(
        self,
        store: Store,
        *,
        faults: Faults | None = None,
        trusted_proxies: Iterable[str] = (),
    ) -> None:
        self.store = store
        self.faults = faults or Faults()
        self.trusted_proxies = TrustedProxies(trusted_proxies)
        self._entry = self.trusted_proxies.wrap(self._answer)
        # Processes sharing the database see each other's requests in progress.
        elsewhere = RunningElsewhere(store.path) if store.shared else None
        self.idempotency = IdempotencyGate(store, elsewhere)
        self._large_bodies = threading.BoundedSemaphore(LARGE_BODIES_AT_ONCE)
        self.dashboard = Dashboard(store)
        self._by_name = {endpoint.name: endpoint for endpoint in ENDPOINTS}
        self._urls = Map(
            [
                Rule(API_PREFIX + e.operation.rule, endpoint=e.name, methods=[e.operation.method])
                for e in ENDPOINTS
            ],
            strict_slashes=True,  # "/experiments/" is not "/experiments": 404, not a list
            merge_slashes=False,
        ).bind("localhost")

    def reset(self) -> None:
        """Wipe all data (organizations and API keys stay), disarm faults, forget running keys.

        Example:
            >>> app.reset()  # doctest: +SKIP
        """
        self.faults.clear()
        self.idempotency.reset()
        self.store.reset()

    def close(self) -> None:
        """Close what the application holds open: the store's connections and, when processes
        share the database, the record of requests in progress. Faults waiting are woken.

        Example:
            >>> app.close()  # doctest: +SKIP
        """
        self.faults.wake_all()
        self.idempotency.close()
        self.store.close()

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        return self._entry(environ, start_response)

    def _answer(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        try:
            answer = self.respond(environ)
        except Exception:
            # Never waitress' plain-text 500: whatever went wrong, the answer is an envelope.
            logger.exception("unexpected error answering %s", environ.get("REQUEST_METHOD"))
            answer = _error_response(ApiError(500, "internal_error", "Internal server error"))
        return answer(environ, start_response)

    # -- the request pipeline -----------------------------------------------------------

    def respond(self, environ: WSGIEnvironment) -> WSGIApplication:
        """The WSGI answer to one request."""
        method = environ.get("REQUEST_METHOD", "GET").upper()
        raw_path, raw_query = raw_target(environ)
        if raw_path == DASHBOARD_PREFIX or raw_path.startswith(DASHBOARD_PREFIX + "/"):
            return self.dashboard.respond(environ)
        try:
            endpoint, args = self._route(method, raw_path)
        except ApiError as error:
            return _error_response(error)
        fault = self.faults.take("fail", method, raw_path, endpoint.name)
        if fault is not None:
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else None
            injected = ApiError(fault.status, "injected_fault", "Injected fault", headers=headers)
            return _error_response(injected)
        if self.faults.take("drop_before_commit", method, raw_path, endpoint.name):
            return _broken(200, b'{"data":')
        request = Request(environ)
        try:
            principal = self._authorize(endpoint, request, args)
            body = self._read_body(request)
        except ApiError as error:
            return _error_response(error)
        # A large body's parsed value can take 25 times its size: only a few at once.
        large = len(body) > LARGE_BODY_BYTES and endpoint.body is not None
        with self._large_bodies if large else contextlib.nullcontext():
            return self._respond(endpoint, args, request, principal, body, raw_query)

    def _respond(
        self,
        endpoint: Endpoint,
        args: dict[str, str],
        request: Request,
        principal: Principal,
        body: bytes,
        raw_query: str,
    ) -> WSGIApplication:
        """The answer to a routed, authenticated request whose body has been read."""
        method, raw_path = request.method.upper(), raw_target(request.environ)[0]
        try:
            # The body is parsed once: its value is what the idempotency fingerprint and the
            # schema both look at.
            value = parse_body(body) if endpoint.body is not None else {}
        except ApiError as error:
            return _error_response(error)
        if endpoint.operation is INGEST_METRICS:
            refused = self.faults.rejected_metric(body)
            if refused is not None:
                field = f"data[{refused}].name"
                return _error_response(invalid(field, "Refused by a fault.", what="metric"))
        key = request.headers.get("Idempotency-Key")
        if key is not None and len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
            problem = f"Must be at most {MAX_IDEMPOTENCY_KEY_LENGTH} characters."
            return _error_response(invalid("Idempotency-Key", problem, what="header"))
        if not endpoint.operation.sends_idempotency_key:
            key = None  # ingestion-key creation ignores the header (contract section 8)
        ticket: Ticket | None = None
        # The canonical text serves the fingerprint and, for an ingest, the insert: one
        # encoding of the body instead of two.
        text = canonical(value) if body.strip() and (key or endpoint.stores_text) else None
        if key:
            outcome = self.idempotency.begin(
                principal.credential, key, fingerprint(method, raw_path, raw_query, text)
            )
            if isinstance(outcome, ApiError):
                return _error_response(outcome)
            if isinstance(outcome, Replay):
                return _json_response(
                    outcome.status, outcome.body, {"Idempotency-Replayed": "true"}
                )
            ticket = outcome
        try:
            # Validation runs before the write lock is taken, so other requests can be
            # checked while one is written.
            call = self._prepare(endpoint, request, principal, args, value, text)
            if isinstance(call, tuple):
                status, payload, keep = call
                if ticket is not None and keep:
                    self.idempotency.record(ticket, status, payload)
            elif method == "GET":
                status, payload, keep = self._run(endpoint, call)
            else:
                # The write, the ingestion key's use and the idempotency record commit
                # together: a crash between them cannot leave a write without its answer.
                try:
                    with _staged(endpoint, call) as call, self.store.transaction(call.staged):
                        status, payload, keep = self._run(endpoint, call)
                        self.faults.crash_point(
                            "crash_after_write", method, raw_path, endpoint.name
                        )
                        if ticket is not None and keep:
                            self.idempotency.record(ticket, status, payload)
                except Exception:
                    status, payload, keep = _internal_error("could not commit %s", endpoint)
                self.faults.crash_point("crash_after_commit", method, raw_path, endpoint.name)
            dropped = self.faults.take("drop_after_commit", method, raw_path, endpoint.name)
            delay = self.faults.take("delay", method, raw_path, endpoint.name)
            if delay is not None:
                self.faults.sleep(delay.seconds)  # still "in progress" for a second attempt
        except SimulatedCrash:
            # What a client of a crashed server sees: the connection ends, no answer.
            return _broken(200, b'{"data":')
        finally:
            # After a real crash nothing of this is left in memory either.
            if ticket is not None:
                self.idempotency.finish(ticket)
        if dropped is not None:
            return _broken(status, payload)
        return _json_response(status, payload)

    def _route(self, method: str, raw_path: str) -> tuple[Endpoint, dict[str, str]]:
        try:
            name, values = self._urls.match(canonical_path(raw_path), method=method)
        except MethodNotAllowed as error:
            allowed = ", ".join(m for m in error.valid_methods or () if m != "HEAD")
            raise ApiError(
                405,
                "method_not_allowed",
                f"Method {method} not allowed here",
                headers={"Allow": allowed},
            ) from None
        except (NotFound, RequestRedirect):
            raise ApiError(404, "not_found", f"No route for {method} {raw_path}") from None
        return self._by_name[str(name)], {k: unquote(v) for k, v in values.items()}

    def _authorize(self, endpoint: Endpoint, request: Request, args: dict[str, str]) -> Principal:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "unauthorized", "Missing bearer token")
        principal = self.store.authenticate(token.strip())
        if endpoint.operation.credential == "api_key" and principal.kind != "api_key":
            raise ApiError(
                403,
                "forbidden",
                "An ingestion token can only ingest metrics and create annotations",
            )
        if endpoint.operation.credential == "ingestion_key":
            if principal.kind != "ingestion_key":
                raise ApiError(
                    403, "forbidden", "This endpoint takes the experiment's ingestion token"
                )
            if principal.experiment_id != args.get("experiment_id"):
                raise ApiError(
                    403, "forbidden", "This ingestion token belongs to another experiment"
                )
        return principal

    @staticmethod
    def _read_body(request: Request) -> bytes:
        """The body, at most :data:`MAX_BODY_BYTES` of it: 413 by ``Content-Length`` before
        reading, or once a body without one goes past the limit. Bodies are not inflated:
        any ``Content-Encoding`` but ``identity`` is 415."""
        too_large = ApiError(
            413, "payload_too_large", f"Bodies are limited to {MAX_BODY_BYTES} bytes"
        )
        encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise ApiError(
                415,
                "unsupported_encoding",
                "Request bodies are taken as they are: no Content-Encoding",
            )
        if (request.content_length or 0) > MAX_BODY_BYTES:
            raise too_large
        body = request.stream.read(MAX_BODY_BYTES + 1)
        if len(body) > MAX_BODY_BYTES:
            raise too_large
        return body

    def _prepare(
        self,
        endpoint: Endpoint,
        request: Request,
        principal: Principal,
        args: dict[str, str],
        body: dict[str, Any],
        text: str | None,
    ) -> handlers.Call | tuple[int, bytes, bool]:
        """The validated call, or the answer to a call that cannot run: ``(status, body,
        keep)``, where ``keep`` says whether an idempotency record may hold the answer (not
        for validation failures)."""
        try:
            query = load_query(endpoint.query, request.args)
            loaded = load_body(endpoint.body, body) if endpoint.body is not None else {}
        except ApiError as error:
            return _refusal(error)
        except Exception:
            return _internal_error("unexpected error validating %s", endpoint)
        origin = request.host_url.rstrip("/")
        return handlers.Call(self.store, principal, origin, args, query, loaded, text)

    def _run(self, endpoint: Endpoint, call: handlers.Call) -> tuple[int, bytes, bool]:
        """Run one validated call: ``(status, body, keep)`` as :meth:`_prepare` says (no
        idempotency record for a 5xx either)."""
        try:
            data = endpoint.handler(call)
            if call.principal.key_id is not None:
                # Only an accepted request counts as a use: bad input changes nothing.
                self.store.touch_ingestion_key(call.principal.key_id)
        except ApiError as error:
            return _refusal(error)
        except Exception:
            return _internal_error("unexpected error in %s", endpoint)
        return 200, _answer(data), True
