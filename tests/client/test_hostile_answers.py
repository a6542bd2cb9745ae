"""The SDK against answers no honest server gives: a body dripped a byte at a time, a gzip
bomb, bodies too large or nested too deeply, redirects, more rows than asked for, a huge
``Retry-After``, out-of-range timestamps and wrong types. Each case asserts the error class
and that the call ends within a generous bound (it must not hang).

A tiny HTTP server on 127.0.0.1 (stdlib ``http.server``) plays what ``responses`` cannot:
timing, compression on the wire, a second host behind a redirect.
"""

from __future__ import annotations

import contextlib
import gzip
import http.server
import json
import threading
import time
import traceback
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import responses

import syvain_metrics as sm
from tests.conftest import API, API_KEY, envelope, experiment_wire, key_wire, row_wire

Script = Callable[[http.server.BaseHTTPRequestHandler], None]


class Hostile:
    """A threaded server answering every request with ``script(handler)``; it records each
    request's method, path, headers and body."""

    def __init__(self) -> None:
        owner = self
        self.script: Script = _json(envelope({}))
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                owner.requests.append((self.command, self.path, dict(self.headers), body))
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    owner.script(self)  # the client may give up, as it should

            do_GET = do_POST = do_PATCH = do_DELETE = _any  # noqa: N815

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _send(
    handler: http.server.BaseHTTPRequestHandler,
    status: int,
    body: bytes,
    headers: dict[str, str] | None = None,
) -> None:
    handler.send_response(status)
    for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
        handler.send_header(name, value)
    if "Content-Length" not in (headers or {}):
        handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def _json(payload: Any, status: int = 200) -> Script:
    data = json.dumps(payload).encode()
    return lambda handler: _send(handler, status, data)


AUTH_OK = envelope({"auth": {"kind": "api_key"}, "organization": {"id": "o", "name": "n"}})


def _drip_body(pause: float = 0.2) -> Script:
    def script(handler: http.server.BaseHTTPRequestHandler) -> None:
        body = json.dumps(AUTH_OK).encode()
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        for byte in body:
            handler.wfile.write(bytes([byte]))
            handler.wfile.flush()
            time.sleep(pause)

    return script


def _drip_headers(pause: float = 0.2) -> Script:
    def script(handler: http.server.BaseHTTPRequestHandler) -> None:
        head = b"HTTP/1.1 200 OK\r\n" + b"X-Slow: " + b"a" * 200 + b"\r\n"
        for byte in head:
            handler.wfile.write(bytes([byte]))
            handler.wfile.flush()
            time.sleep(pause)

    return script


@pytest.fixture
def hostile() -> Iterator[Hostile]:
    server = Hostile()
    yield server
    server.close()


@pytest.fixture
def elsewhere() -> Iterator[Hostile]:
    """A second host, the target of redirects: it must never hear from the SDK."""
    server = Hostile()
    yield server
    server.close()


def _session(url: str, **options: Any) -> sm.Session:
    retry = options.pop("retry", sm.RetryPolicy(attempts=1, sleep=lambda seconds: None))
    return sm.Session(API_KEY, host=url, retry=retry, spool_dir=None, **options)


def _elapsed(call: Callable[[], Any], error: type[BaseException]) -> tuple[float, Any]:
    start = time.monotonic()
    with pytest.raises(error) as caught:
        call()
    return time.monotonic() - start, caught.value


# -- time: one deadline per exchange ----------------------------------------------------


def test_a_body_dripped_a_byte_at_a_time_ends_within_the_timeout(hostile: Hostile) -> None:
    hostile.script = _drip_body()
    with _session(hostile.url, timeout=1) as session:
        took, error = _elapsed(lambda: sm.whoami(session=session), sm.MetricsApiTimeoutError)
    assert took < 1 + 2  # timeout + margin; each byte comes well within the timeout
    assert isinstance(error, sm.MetricsApiRequestError)
    assert error.retryable
    assert "timed out after 1 s" in str(error)
    # Nothing chained: the transport's exceptions hold the request, Authorization included.
    assert error.__cause__ is None
    assert error.__context__ is None
    assert API_KEY not in "".join(traceback.format_exception(error))


def test_headers_dripped_a_byte_at_a_time_end_within_the_timeout(hostile: Hostile) -> None:
    hostile.script = _drip_headers()
    with _session(hostile.url, timeout=1) as session:
        took, _ = _elapsed(lambda: sm.whoami(session=session), sm.MetricsApiTimeoutError)
    assert took < 1 + 2


def test_every_retry_of_a_drip_has_its_own_deadline_and_the_call_ends(hostile: Hostile) -> None:
    hostile.script = _drip_body()
    retry = sm.RetryPolicy(attempts=2, backoff_base=0.01, sleep=time.sleep)
    with _session(hostile.url, timeout=0.6, retry=retry) as session:
        took, _ = _elapsed(lambda: sm.whoami(session=session), sm.MetricsApiTimeoutError)
    assert len(hostile.requests) == 2
    assert took < 2 * 0.6 + 2


def test_a_drip_through_an_http_proxy_ends_within_the_timeout(
    hostile: Hostile, monkeypatch: pytest.MonkeyPatch
) -> None:
    hostile.script = _drip_body()
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", hostile.url)
    with _session("http://metrics.example.test", timeout=1) as session:
        took, _ = _elapsed(lambda: sm.whoami(session=session), sm.MetricsApiTimeoutError)
    assert hostile.requests[0][1] == "http://metrics.example.test/api/v1/auth/status"
    assert took < 1 + 2


def test_a_slow_but_whole_answer_within_the_timeout_is_read(hostile: Hostile) -> None:
    hostile.script = _drip_body(pause=0.001)
    with _session(hostile.url, timeout=5) as session:
        assert sm.whoami(session=session).kind == "api_key"


# -- size: a cap on answers, compressed or not ------------------------------------------


def _gzip_bomb(inflated: int) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = b"0" * (1 << 20)
    parts = [packer.compress(b'{"data":{"pad":"')]
    parts.extend(packer.compress(zeros) for _ in range(inflated >> 20))
    parts.append(packer.compress(b'"},"error":null}'))
    parts.append(packer.flush())
    return b"".join(parts)


BOMB = _gzip_bomb(64 << 20)  # 64 MiB of JSON in about 64 KB


def test_a_gzip_bomb_stops_at_the_size_cap(hostile: Hostile) -> None:
    hostile.script = lambda h: _send(h, 200, BOMB, {"Content-Encoding": "gzip"})
    with _session(hostile.url, timeout=10, max_response_bytes=1 << 20) as session:
        took, error = _elapsed(lambda: sm.whoami(session=session), sm.MetricsApiResponseError)
    assert "max_response_bytes" in str(error)
    assert len(BOMB) < 200_000
    assert took < 10


def test_a_gzip_answer_within_the_cap_is_inflated_and_read(hostile: Hostile) -> None:
    packed = gzip.compress(json.dumps(AUTH_OK).encode())
    hostile.script = lambda h: _send(h, 200, packed, {"Content-Encoding": "gzip"})
    with _session(hostile.url) as session:
        assert sm.whoami(session=session).kind == "api_key"


def test_a_broken_gzip_body_is_a_response_error(hostile: Hostile) -> None:
    hostile.script = lambda h: _send(h, 200, b"not gzip at all", {"Content-Encoding": "gzip"})
    with _session(hostile.url) as session:
        _, error = _elapsed(lambda: sm.whoami(session=session), sm.MetricsApiResponseError)
    assert "compressed body is broken" in str(error)


def test_an_unknown_content_encoding_is_a_response_error(hostile: Hostile) -> None:
    hostile.script = lambda h: _send(h, 200, b"{}", {"Content-Encoding": "br"})
    with _session(hostile.url) as session:
        _, error = _elapsed(lambda: sm.whoami(session=session), sm.MetricsApiResponseError)
    assert "'br' is not supported" in str(error)


def test_a_declared_length_beyond_the_cap_is_refused_before_reading(hostile: Hostile) -> None:
    hostile.script = lambda h: _send(h, 200, b"{}", {"Content-Length": str(10**12)})
    with _session(hostile.url, timeout=5, max_response_bytes=1 << 20) as session:
        took, error = _elapsed(lambda: sm.whoami(session=session), sm.MetricsApiResponseError)
    assert "1,048,576 bytes" in str(error)
    assert took < 5


def test_an_undeclared_length_beyond_the_cap_stops_at_the_cap(hostile: Hostile) -> None:
    def script(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Connection", "close")  # no length: the body ends with the socket
        handler.end_headers()
        for _ in range(64):
            handler.wfile.write(b" " * (1 << 20))

    hostile.script = script
    with _session(hostile.url, timeout=10, max_response_bytes=1 << 20) as session:
        took, _ = _elapsed(lambda: sm.whoami(session=session), sm.MetricsApiResponseError)
    assert took < 10


def test_a_huge_error_body_still_gives_the_status(hostile: Hostile) -> None:
    hostile.script = lambda h: _send(h, 404, b"x" * (4 << 20))
    with _session(hostile.url) as session:
        _, error = _elapsed(lambda: sm.whoami(session=session), sm.MetricsApiNotFoundError)
    assert error.status_code == 404
    assert len(str(error)) < 10_000


def test_max_response_bytes_must_be_a_positive_whole_number() -> None:
    for bad in (0, -1, 1.5, True, "1"):
        with pytest.raises(sm.MetricsValidationError, match="max_response_bytes"):
            sm.Session(API_KEY, host="http://127.0.0.1:9", max_response_bytes=bad)


# -- redirects: never followed ------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_a_request_error_naming_the_location_and_nothing_leaves(
    hostile: Hostile, elsewhere: Hostile, status: int
) -> None:
    target = f"{elsewhere.url}/api/v1/anything"
    hostile.script = lambda h: _send(h, status, b"", {"Location": target})
    with _session(hostile.url) as session:
        _, error = _elapsed(lambda: sm.whoami(session=session), sm.MetricsApiRequestError)
        exp = sm.Experiment(experiment_wire(), session=session)
        with pytest.raises(sm.MetricsApiRequestError, match=f"HTTP {status}"):
            exp.annotate("note")
        with pytest.raises(sm.MetricsApiRequestError):
            sm.Experiment.create("run-x", session=session)
    assert error.status_code == status
    assert target in str(error)
    assert not error.retryable
    assert elsewhere.requests == []  # neither the body nor the key went there
    assert all(method in ("GET", "POST") for method, *_ in hostile.requests)


# -- bodies that break the contract --------------------------------------------------------


@pytest.fixture
def plain(mocked: responses.RequestsMock) -> Iterator[sm.Session]:
    with sm.Session(
        API_KEY,
        host=API.removesuffix("/api/v1"),
        retry=sm.RetryPolicy(attempts=1, sleep=lambda s: None),
        spool_dir=None,
    ) as session:
        yield session


def _calls(session: sm.Session) -> dict[str, Callable[[], Any]]:
    exp = sm.Experiment(experiment_wire(), session=session)
    return {
        "whoami": lambda: sm.whoami(session=session),
        "get_experiment": lambda: sm.Experiment.get("exp-1", session=session),
        "list_experiments": lambda: sm.Experiment.list(limit=5, session=session),
        "list_metrics": lambda: exp.metrics("loss", limit=5),
        "list_folders": lambda: sm.Folder.list(session=session),
    }


NESTED = b'{"data":' + b"[" * 100_000 + b"]" * 100_000 + b',"error":null}'


@pytest.mark.parametrize(
    "operation", ["whoami", "get_experiment", "list_experiments", "list_metrics", "list_folders"]
)
@pytest.mark.parametrize("status", [200, 400, 503])
def test_a_body_nested_too_deeply_is_an_sdk_error(
    plain: sm.Session, mocked: responses.RequestsMock, operation: str, status: int
) -> None:
    for method in (responses.GET, responses.POST):
        mocked.add(method, responses.matchers.re.compile(f"{API}/.*"), body=NESTED, status=status)
    expected = sm.MetricsApiResponseError if status == 200 else sm.MetricsApiRequestError
    took, _ = _elapsed(_calls(plain)[operation], expected)
    assert took < 10


def test_a_value_nested_deeply_inside_a_valid_answer_is_a_response_error_or_kept(
    plain: sm.Session, mocked: responses.RequestsMock
) -> None:
    deep: Any = 1
    for _ in range(900):
        deep = [deep]
    wire = {**experiment_wire(), "metadata": {"deep": deep}}
    mocked.get(f"{API}/experiments/exp-1", json=envelope({"experiment": wire}))
    try:
        exp = sm.Experiment.get("exp-1", session=plain)
    except sm.MetricsApiResponseError:
        return
    assert exp.metadata["deep"][0][0] is not None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("created_at_ms", 10**30),
        ("created_at_ms", -(10**30)),
        ("updated_at_ms", 2**63),
        ("started_at_ms", 10**20),
        ("created_at_ms", "yesterday"),
        ("created_at_ms", 1.5),
        ("created_at_ms", True),
        ("slug", 7),
        ("metadata", []),
        ("status", "exploded"),
        ("folder", "f-1"),
    ],
)
def test_out_of_range_or_wrong_types_in_an_experiment_are_response_errors(
    plain: sm.Session, mocked: responses.RequestsMock, field: str, value: Any
) -> None:
    mocked.get(
        f"{API}/experiments/exp-1",
        json=envelope({"experiment": {**experiment_wire(), field: value}}),
    )
    with pytest.raises(sm.MetricsApiResponseError, match=field):
        sm.Experiment.get("exp-1", session=plain)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("client_timestamp_ms", 10**30),
        ("server_timestamp_ms", -(10**20)),
        ("metric_value", "0.5"),
        ("step", "3"),
        ("event_id", None),
    ],
)
def test_out_of_range_or_wrong_types_in_rows_are_response_errors(
    plain: sm.Session, mocked: responses.RequestsMock, field: str, value: Any
) -> None:
    rows = [row_wire(f"e{i}", i, 0.5, 1_000 + i) for i in range(3)]
    rows[1][field] = value
    mocked.get(f"{API}/experiments/exp-1/metrics", json=envelope({"rows": rows}))
    exp = sm.Experiment(experiment_wire(), session=plain)
    with pytest.raises(sm.MetricsApiResponseError, match=field):
        exp.metrics("loss", limit=5)


@pytest.mark.parametrize("data", [[], "rows", 5, None, {"rows": {"a": 1}}, {"rows": [1, 2]}])
def test_a_rows_answer_of_the_wrong_shape_is_a_response_error(
    plain: sm.Session, mocked: responses.RequestsMock, data: Any
) -> None:
    mocked.get(f"{API}/experiments/exp-1/metrics", json=envelope(data))
    exp = sm.Experiment(experiment_wire(), session=plain)
    with pytest.raises(sm.MetricsApiResponseError):
        exp.metrics("loss", limit=5)


# -- more rows than asked for ---------------------------------------------------------------


@pytest.mark.parametrize("limit", [5, 1_000])
def test_more_metric_rows_than_the_limit_is_a_response_error(
    plain: sm.Session, mocked: responses.RequestsMock, limit: int
) -> None:
    rows = [row_wire(f"e{i}", i, 0.5, 1_000 + i) for i in range(limit + 1)]
    mocked.get(f"{API}/experiments/exp-1/metrics", json=envelope({"rows": rows}))
    exp = sm.Experiment(experiment_wire(), session=plain)
    with pytest.raises(
        sm.MetricsApiResponseError, match=f"{limit + 1:,} rows .* at most {limit:,}"
    ):
        exp.metrics("loss", limit=limit)


def test_more_rows_than_the_page_asked_for_in_a_paged_read_is_a_response_error(
    mocked: responses.RequestsMock,
) -> None:
    rows = [row_wire(f"e{i}", i, 0.5, 1_000 + i) for i in range(150)]
    mocked.get(f"{API}/experiments/exp-1/metrics", json=envelope({"rows": rows}))
    with sm.Session(
        API_KEY, host=API.removesuffix("/api/v1"), page_size=100, spool_dir=None
    ) as session:
        exp = sm.Experiment(experiment_wire(), session=session)
        with pytest.raises(sm.MetricsApiResponseError, match="at most 100"):
            exp.metrics("loss")


@pytest.mark.parametrize("limit", [3, None])
def test_more_experiments_than_the_limit_is_a_response_error(
    plain: sm.Session, mocked: responses.RequestsMock, limit: int | None
) -> None:
    many = [{**experiment_wire(f"exp-{i}"), "created_at_ms": 2_000_000 - i} for i in range(1_001)]
    mocked.get(f"{API}/experiments", json=envelope({"experiments": many}))
    with pytest.raises(sm.MetricsApiResponseError, match="1,001 rows"):
        sm.Experiment.list(limit=limit, session=plain)


# -- Retry-After and the bound on one call ---------------------------------------------------


def test_a_huge_retry_after_is_capped_and_the_waits_of_one_call_are_bounded(
    mocked: responses.RequestsMock,
) -> None:
    waits: list[float] = []
    mocked.get(
        f"{API}/auth/status",
        json={"data": None, "error": {"message": "slow down"}},
        status=429,
        headers={"Retry-After": "100000000"},
    )
    policy = sm.RetryPolicy(attempts=10, sleep=waits.append)
    with (
        sm.Session(API_KEY, host=API.removesuffix("/api/v1"), retry=policy, spool_dir=None) as s,
        pytest.raises(sm.MetricsApiRateLimitError) as caught,
    ):
        sm.whoami(session=s)
    assert waits
    assert max(waits) <= policy.max_retry_after == 10.0
    assert sum(waits) <= policy.max_total_wait == 30.0
    assert caught.value.retry_after == 10.0
    assert len(mocked.calls) == len(waits) + 1  # it gave up instead of waiting past the bound


@pytest.mark.parametrize("header", ["-5", "nan", "1e400", "soon", "Wed, 21 Oct 2999 07:28:00 GMT"])
def test_odd_retry_after_headers_give_bounded_waits(
    mocked: responses.RequestsMock, header: str
) -> None:
    waits: list[float] = []
    mocked.get(
        f"{API}/auth/status",
        json={"data": None, "error": "busy"},
        status=503,
        headers={"Retry-After": header},
    )
    policy = sm.RetryPolicy(sleep=waits.append)
    with (
        sm.Session(API_KEY, host=API.removesuffix("/api/v1"), retry=policy, spool_dir=None) as s,
        pytest.raises(sm.MetricsApiRequestError),
    ):
        sm.whoami(session=s)
    assert len(waits) == 2
    assert all(0 <= wait <= policy.max_retry_after for wait in waits)


def test_backoff_has_jitter_and_stays_within_its_bounds() -> None:
    policy = sm.RetryPolicy()
    draws = {policy.backoff(1) for _ in range(50)}
    assert len(draws) > 1
    assert all(0.25 <= wait <= 0.5 for wait in draws)
    assert sm.RetryPolicy(jitter=0).backoff(1) == 0.5


@pytest.mark.parametrize(
    "options",
    [
        {"attempts": 0},
        {"attempts": 2.5},
        {"jitter": 2},
        {"max_retry_after": float("inf")},
        {"max_total_wait": -1},
        {"backoff_base": float("nan")},
    ],
)
def test_retry_policy_refuses_unbounded_settings(options: dict[str, Any]) -> None:
    with pytest.raises(sm.MetricsValidationError, match=next(iter(options))):
        sm.RetryPolicy(**options)


def test_a_minted_token_no_header_can_carry_is_a_response_error_unseen(
    plain: sm.Session, mocked: responses.RequestsMock
) -> None:
    token = "ing_tok_hostile\r\nX-Injected: 1"
    mocked.post(
        f"{API}/experiments/exp-1/ingestion-keys",
        json=envelope({"key": key_wire(), "token": token}),
    )
    exp = sm.Experiment(experiment_wire(), session=plain)
    with pytest.raises(sm.MetricsApiResponseError, match="token") as caught:
        exp.annotate("note")
    assert "ing_tok_hostile" not in str(caught.value)
    assert len(mocked.calls) == 1  # nothing sent with it
