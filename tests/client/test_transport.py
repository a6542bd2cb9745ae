"""The transport under the session, against a raw socket server on 127.0.0.1: one deadline
per exchange whatever the server drips, answers capped, redirects not followed, connections
kept alive, and a failure of the HTTP libraries below surfacing as an SDK error (also in the
``log()`` pipeline, which must not retry it forever).

The same tests run where ``urllib3-future`` replaces ``urllib3`` (installed beside
``syvain-metrics-api-client``): nothing here depends on which one is loaded.

A drip lasts :data:`DRIP_SECONDS` and then completes a valid answer, so a transport without a
deadline would *succeed*, slowly: the tests assert the timeout error, never a duration.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import shutil
import socket
import ssl
import subprocess
import threading
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3

import syvain_metrics as sm
from syvain_metrics.client.sync import sync_spool
from syvain_metrics.client.transport import Exchange
from syvain_metrics.pipeline import delivery
from syvain_metrics.testing import LocalServer
from tests.conftest import API_KEY

DRIP_SECONDS = 30.0
PACE = 0.05  # seconds between two dripped bytes: far below any per-read timeout
AUTH_OK = json.dumps(
    {"data": {"auth": {"kind": "api_key"}, "organization": {"id": "o", "name": "n"}}, "error": None}
).encode()

Script = Callable[[socket.socket], None]


class RawServer:
    """Accepts connections on 127.0.0.1 and answers each request (head and declared body
    read) with ``script(connection)``; counts connections and requests."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.requests = 0
        self.stopping = threading.Event()
        self.hung_up = threading.Event()  # the client closed while an answer was dripped
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._threads: list[threading.Thread] = []
        self._conns: list[socket.socket] = []
        self._accept = threading.Thread(target=self._accept_loop, daemon=True)
        self._accept.start()

    def _accept_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            self._conns.append(conn)
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        reader = conn.makefile("rb")
        with contextlib.suppress(OSError), conn, reader:
            while not self.stopping.is_set():
                length = 0
                line = reader.readline()
                if not line:
                    return
                while line not in (b"\r\n", b"\n", b""):
                    name, _, value = line.decode("latin-1").partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                    line = reader.readline()
                reader.read(length)
                self.requests += 1
                self.script(conn)

    def drip(self, conn: socket.socket, data: bytes) -> None:
        """Send ``data`` over :data:`DRIP_SECONDS`, a piece every :data:`PACE` seconds."""
        pieces = max(int(DRIP_SECONDS / PACE), 1)
        size = max(len(data) // pieces, 1)
        for start in range(0, len(data), size):
            if self.stopping.wait(PACE):
                return
            try:
                conn.sendall(data[start : start + size])
            except OSError:
                self.hung_up.set()
                raise

    def close(self) -> None:
        self.stopping.set()
        self._listener.close()
        self._accept.join(timeout=5)
        for conn in self._conns:  # unblock a read waiting for a next request
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(timeout=5)


def _answer(status: int, body: bytes, extra: str = "") -> bytes:
    head = f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n{extra}"
    return (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def _auth_ok(conn: socket.socket) -> None:
    conn.sendall(_answer(200, AUTH_OK))


@pytest.fixture
def raw() -> Iterator[RawServer]:
    server = RawServer(_auth_ok)
    yield server
    server.close()


def _session(url: str, **options: Any) -> sm.Session:
    options.setdefault("retry", sm.RetryPolicy(attempts=1, sleep=lambda seconds: None))
    options.setdefault("spool_dir", None)
    return sm.Session(API_KEY, host=url, **options)


def _texts(error: BaseException) -> str:
    return "".join(traceback.format_exception(error)) + repr(vars(error))


# -- one deadline per exchange ----------------------------------------------------------------


def test_a_status_line_and_headers_dripped_for_longer_than_the_timeout_time_out(
    raw: RawServer,
) -> None:
    head = b"HTTP/1.1 200 OK\r\n" + b"X-Slow: " + b"a" * 600 + b"\r\n"
    raw.script = lambda conn: (raw.drip(conn, head), conn.sendall(_answer(200, AUTH_OK)[17:]))
    with (
        _session(raw.url, timeout=0.5) as session,
        pytest.raises(sm.MetricsApiTimeoutError, match=r"timed out after 0\.5 s") as caught,
    ):
        sm.whoami(session=session)
    assert caught.value.retryable
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None
    assert API_KEY not in _texts(caught.value)


def test_a_body_dripped_for_longer_than_the_timeout_times_out(raw: RawServer) -> None:
    def script(conn: socket.socket) -> None:
        whole = _answer(200, AUTH_OK)
        split = whole.index(b"\r\n\r\n") + 4
        conn.sendall(whole[:split])
        raw.drip(conn, whole[split:])

    raw.script = script
    with _session(raw.url, timeout=0.5) as session, pytest.raises(sm.MetricsApiTimeoutError):
        sm.whoami(session=session)


def test_a_body_that_ends_with_the_connection_cut_at_the_deadline_is_a_timeout(
    raw: RawServer,
) -> None:
    # No length: the body ends when the connection closes, so what was read when the
    # deadline shut the socket looks whole. It must not be taken for the answer.
    def script(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
        raw.drip(conn, AUTH_OK)
        conn.shutdown(socket.SHUT_RDWR)

    raw.script = script
    with _session(raw.url, timeout=0.5) as session, pytest.raises(sm.MetricsApiTimeoutError):
        sm.whoami(session=session)
    assert raw.hung_up.wait(DRIP_SECONDS)  # long before the drip would have ended


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (made with the openssl command)."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_an_answer_dripped_over_tls_ends_at_the_deadline(
    raw: RawServer, certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # HTTP/2 is offered: urllib3-future takes it, and then waits for the server's settings
    # while connecting; urllib3 takes HTTP/1.1 and reads the dripped head.
    cert, key = certificate
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["h2", "http/1.1"])
    original = raw._serve

    def serve(conn: socket.socket) -> None:
        with contextlib.suppress(OSError), context.wrap_socket(conn, server_side=True) as tls:
            tls.recv(65536)
            raw.drip(tls, b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 600 + b"\r\n")

    raw._serve = serve  # type: ignore[method-assign]
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
    try:
        https = raw.url.replace("http://", "https://")
        with _session(https, timeout=0.5) as session, pytest.raises(sm.MetricsApiTimeoutError):
            sm.whoami(session=session)
        # The client hung up long before the drip would have ended.
        assert raw.hung_up.wait(DRIP_SECONDS)
    finally:
        raw._serve = original  # type: ignore[method-assign]


def test_a_tls_handshake_dripped_for_longer_than_the_timeout_times_out(raw: RawServer) -> None:
    # A TLS record header announcing 16 KiB, then its bytes dripped: the handshake never
    # ends while each read gets a byte (no certificate is needed to play this).
    raw.script = lambda conn: None
    original = raw._serve

    def serve(conn: socket.socket) -> None:
        with contextlib.suppress(OSError), conn:
            raw.drip(conn, b"\x16\x03\x03\x40\x00" + b"\x00" * 4_000)

    raw._serve = serve  # type: ignore[method-assign]
    try:
        https = raw.url.replace("http://", "https://")
        with _session(https, timeout=0.5) as session, pytest.raises(sm.MetricsApiTimeoutError):
            sm.whoami(session=session)
    finally:
        raw._serve = original  # type: ignore[method-assign]


def test_each_attempt_has_its_own_deadline_and_the_next_uses_a_new_connection(
    raw: RawServer,
) -> None:
    dripping = [True, True, False]

    def script(conn: socket.socket) -> None:
        if dripping.pop(0):
            raw.drip(conn, _answer(200, AUTH_OK))
        else:
            _auth_ok(conn)

    raw.script = script
    retry = sm.RetryPolicy(attempts=3, backoff_base=0.01, sleep=lambda seconds: None)
    with _session(raw.url, timeout=0.5, retry=retry) as session:
        assert sm.whoami(session=session).kind == "api_key"
    assert raw.requests == 3
    assert raw.connections == 3  # a connection shut at its deadline is never reused


def test_a_deadline_is_kept_in_a_forked_child(raw: RawServer) -> None:
    raw.script = lambda conn: raw.drip(conn, _answer(200, AUTH_OK))
    with _session(raw.url, timeout=0.5) as session:
        with contextlib.suppress(sm.MetricsApiTimeoutError):
            sm.whoami(session=session)  # the parent's watchdog thread is running
        context = multiprocessing.get_context("fork")
        results = context.Queue()

        def child() -> None:
            try:
                sm.whoami(session=session)
                results.put("answered")
            except sm.MetricsApiError as error:
                results.put(type(error).__name__)

        process = context.Process(target=child)
        process.start()
        outcome = results.get(timeout=DRIP_SECONDS * 2)
        process.join(timeout=10)
    assert outcome == "MetricsApiTimeoutError"


def test_a_deadline_that_passes_after_the_exchange_leaves_its_connection_alone() -> None:
    left, right = socket.socketpair()
    with left, right:
        with Exchange(60) as exchange:
            exchange.watch(left)
        exchange.expire()  # the watchdog, late: the connection is back in the pool by now
        assert not exchange.expired
        left.sendall(b"still open")
        assert right.recv(100) == b"still open"


def test_a_socket_handed_over_after_the_deadline_is_shut_at_once() -> None:
    left, right = socket.socketpair()
    with left, right, Exchange(60) as exchange:
        exchange.expire()
        exchange.watch(left)
        assert exchange.expired
        assert left.recv(100) == b""  # shut down: a read ends at once


def test_the_watchdog_ends_a_read_blocked_on_a_silent_socket() -> None:
    left, right = socket.socketpair()
    with left, right, Exchange(0.2) as exchange:
        exchange.watch(left)
        assert left.recv(100) == b""  # would block for ever without the watchdog
        assert exchange.expired


# -- answers: capped, never redirected ------------------------------------------------------------


def test_an_undeclared_length_beyond_the_cap_is_a_response_error(raw: RawServer) -> None:
    def script(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(100):
            conn.sendall(b"400\r\n" + b"[" * 0x400 + b"\r\n")
        conn.sendall(b"0\r\n\r\n")

    raw.script = script
    with (
        _session(raw.url, max_response_bytes=10_000) as session,
        pytest.raises(sm.MetricsApiResponseError, match="max_response_bytes"),
    ):
        sm.whoami(session=session)


def test_a_declared_length_beyond_the_cap_is_a_response_error(raw: RawServer) -> None:
    raw.script = lambda conn: conn.sendall(_answer(200, b"[" * 20_000))
    with (
        _session(raw.url, max_response_bytes=10_000) as session,
        pytest.raises(sm.MetricsApiResponseError, match="max_response_bytes"),
    ):
        sm.whoami(session=session)


def test_a_redirect_is_not_followed(raw: RawServer) -> None:
    elsewhere = RawServer(_auth_ok)
    try:
        location = f"Location: {elsewhere.url}/api/v1/auth/status\r\n"
        raw.script = lambda conn: conn.sendall(_answer(307, b"", location))
        with (
            _session(raw.url) as session,
            pytest.raises(sm.MetricsApiRequestError, match="redirect") as caught,
        ):
            sm.whoami(session=session)
        assert caught.value.status_code == 307
        assert elsewhere.connections == 0
    finally:
        elsewhere.close()


# -- connections kept alive ---------------------------------------------------------------------


def test_calls_and_error_answers_reuse_one_kept_alive_connection(raw: RawServer) -> None:
    answers = [200, 404, 200, 500, 200]
    not_found = json.dumps({"data": None, "error": "HTTP 404: nope"}).encode()

    def script(conn: socket.socket) -> None:
        status = answers.pop(0)
        conn.sendall(_answer(status, AUTH_OK if status == 200 else not_found))

    raw.script = script
    with _session(raw.url) as session:
        for status in list(answers):
            if status == 200:
                sm.whoami(session=session)
            else:
                with pytest.raises(sm.MetricsApiRequestError):
                    sm.whoami(session=session)
    assert raw.requests == 5
    assert raw.connections == 1


# -- a failure below the transport --------------------------------------------------------------


@pytest.fixture
def broken_urllib3(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """urllib3's pools fail as an incompatible urllib3 does (the message even quotes the
    request's Authorization header); returns the list of calls."""
    calls: list[int] = []

    def urlopen(self: Any, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        authorization = (kwargs.get("headers") or {}).get("Authorization", "")
        raise TypeError(
            "getresponse() got an unexpected keyword argument 'police_officer' "
            f"(headers: {authorization})"
        )

    monkeypatch.setattr(urllib3.HTTPConnectionPool, "urlopen", urlopen)
    return calls


def test_a_type_error_below_the_transport_is_an_sdk_error_without_the_key(
    raw: RawServer, broken_urllib3: list[int]
) -> None:
    retry = sm.RetryPolicy(attempts=3, sleep=lambda seconds: None)
    with (
        _session(raw.url, retry=retry) as session,
        pytest.raises(sm.MetricsApiRequestError, match="TypeError") as caught,
    ):
        sm.whoami(session=session)
    error = caught.value
    assert isinstance(error, sm.MetricsApiTransportError)
    assert not error.retryable
    assert broken_urllib3 == [1]  # not retried: trying again cannot help
    assert error.__cause__ is None
    assert error.__context__ is None
    assert "police_officer" in str(error)
    assert API_KEY not in _texts(error)


def _flush_failing_below_the_transport(
    session: sm.Session, monkeypatch: pytest.MonkeyPatch, slug: str, count: int
) -> tuple[sm.FlushError, int]:
    """Log ``count`` events while every HTTP call fails inside urllib3 (a ``TypeError``):
    the ``FlushError`` that ``flush()`` raises, and how many calls were tried."""
    exp = sm.Experiment.create(slug, session=session)
    calls: list[int] = []

    def urlopen(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        raise TypeError("unexpected keyword argument 'police_officer'")

    monkeypatch.setattr(urllib3.HTTPConnectionPool, "urlopen", urlopen)
    for step in range(count):
        exp.log("loss", 1.0, step=step)
    with pytest.raises(sm.FlushError) as caught:
        exp.flush(timeout=60)
    return caught.value, len(calls)


def test_log_does_not_retry_a_failure_below_the_transport_for_ever(
    metrics_server: LocalServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    retry = sm.RetryPolicy(backoff_base=0.01, jitter=0)
    session = metrics_server.session(spool_dir=tmp_path, retry=retry)
    try:
        error, calls = _flush_failing_below_the_transport(
            session, monkeypatch, "below-the-transport", 5
        )
        assert not error.timed_out
        assert len(error.rejected) == 5
        assert "TypeError" in error.rejected[0].message
        assert "(kept on disk for `syvain-metrics sync`)" in error.rejected[0].message
        assert calls == delivery.UNEXPECTED_TRIES
        kept = list(Path(str(session.spool_dir)).glob("b-*.jsonl"))
        assert len(kept) == 1  # kept for `syvain-metrics sync`, not dropped
    finally:
        monkeypatch.undo()
        with contextlib.suppress(sm.FlushError):
            session.close()


def test_log_without_a_spool_does_not_claim_to_keep_a_batch_failing_below_the_transport(
    metrics_server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    retry = sm.RetryPolicy(backoff_base=0.01, jitter=0)
    session = metrics_server.session(spool_dir=None, retry=retry)
    try:
        error, _ = _flush_failing_below_the_transport(
            session, monkeypatch, "below-the-transport-no-spool", 3
        )
        assert not error.timed_out
        messages = {r.message for r in error.rejected}
        assert len(error.rejected) == 3
        assert len(messages) == 1
        message = messages.pop()
        assert "TypeError" in message
        assert "kept on disk" not in message  # nothing holds the events: none is kept
        assert "not kept: the session has no spool (spool_dir=None)" in message
    finally:
        monkeypatch.undo()
        with contextlib.suppress(sm.FlushError):
            session.close()


def test_sync_keeps_a_batch_that_fails_below_the_transport(
    metrics_server: LocalServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    session = metrics_server.session(spool_dir=tmp_path, flush_timeout=0.2)
    exp = sm.Experiment.create("sync-below-the-transport", session=session)
    metrics_server.faults.fail_next("ingest_metrics", times=10**6, status=503)
    for step in range(10):
        exp.log("loss", 1.0, step=step)
    session.close()  # an outage: the events stay in the spool (said, not raised)
    metrics_server.faults.clear()

    def urlopen(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("unexpected keyword argument 'police_officer'")

    with monkeypatch.context() as patch:
        patch.setattr(urllib3.HTTPConnectionPool, "urlopen", urlopen)
        report = sync_spool(
            tmp_path,
            api_key=metrics_server.api_key,
            host=metrics_server.url,
            retry=sm.RetryPolicy(backoff_base=0.01, jitter=0),
        )
    assert report.stored == 0
    assert len(report.kept) == 1
    assert "TypeError" in report.kept[0]
    report = sync_spool(tmp_path, api_key=metrics_server.api_key, host=metrics_server.url)
    assert report.stored == 10  # nothing was lost
    with metrics_server.session(spool_dir=None) as reader:
        assert len(sm.Experiment.get(exp.id, session=reader).metrics("loss")) == 10
