"""How the local server frames requests (RFC 9112 §6): a request whose body length cannot be
told for sure gets one answer in the contract's envelope and a closed connection, so bytes
after it are never read as another request.

Shown on raw sockets against a real server on 127.0.0.1: each malformed or unsupported
``Transfer-Encoding`` (a coding after ``chunked``, ``chunked`` twice, ``xchunked``, one in an
HTTP/1.0 request, one beside a ``Content-Length``, a coding the server cannot decode before
``chunked``) is a 400 ``bad_request``; each answer says ``Connection: close`` and the
connection then ends. A plain chunked body is still read and the connection kept.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from syvain_metrics.server import MetricsApp, Store
from syvain_metrics.server.runner import make_server, stop_server

API_KEY = "ak_local_framing"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def code(self) -> str:
        details = json.loads(self.body)["error"]["details"]
        return dict(part.strip().split("=", 1) for part in details.split(";"))["code"]


@pytest.fixture(scope="module")
def address() -> Iterator[tuple[str, int]]:
    import threading

    store = Store()
    store.use_api_keys([API_KEY])
    app = MetricsApp(store)
    server = make_server(app, "127.0.0.1", 0, threads=2)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    yield "127.0.0.1", int(server.effective_port)
    stop_server(server, thread, app.faults)
    store.close()


def read_answer(connection: socket.socket) -> Answer | None:
    """One answer from the connection, or ``None`` when it ends (or is reset) first."""
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = connection.recv(65536)
            if not chunk:
                return None
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {
            name.strip().lower(): value.strip()
            for name, value in (line.split(":", 1) for line in lines[1:])
        }
        while len(body) < int(headers.get("content-length", "0")):
            chunk = connection.recv(65536)
            if not chunk:
                break
            body += chunk
    except ConnectionResetError:
        return None
    return Answer(int(lines[0].split(" ", 2)[1]), headers, body)


def send(address: tuple[str, int], request: bytes) -> tuple[Answer | None, Answer | None]:
    """The first answer to ``request`` and whatever comes after it (``None``: the end)."""
    with socket.create_connection(address, timeout=15) as connection:
        connection.sendall(request)
        first = read_answer(connection)
        return first, read_answer(connection)


def post(headers: str, body: bytes, version: str = "1.1") -> bytes:
    head = (
        f"POST /api/v1/folders HTTP/{version}\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {API_KEY}\r\nContent-Type: application/json\r\n{headers}\r\n"
    )
    return head.encode() + body


CHUNKED_FOLDER = b'13\r\n{"name": "chunked"}\r\n0\r\n\r\n'
STATUS = f"GET /api/v1/auth/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n\r\n"


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        pytest.param("Transfer-Encoding: gzip, chunked\r\n", 400, "bad_request", id="gzip"),
        pytest.param("Transfer-Encoding: identity, chunked\r\n", 400, "bad_request", id="id"),
        pytest.param("Transfer-Encoding: chunked, identity\r\n", 400, "bad_request", id="last"),
        pytest.param("Transfer-Encoding: xchunked\r\n", 400, "bad_request", id="xchunked"),
        pytest.param("Transfer-Encoding: chunked\r\n" * 2, 400, "bad_request", id="twice"),
        pytest.param(
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n", 400, "bad_request", id="2"
        ),
        pytest.param("Transfer-Encoding: \r\n", 400, "bad_request", id="empty"),
        pytest.param(
            "Transfer-Encoding: chunked\r\nContent-Length: 30\r\n", 400, "bad_request", id="cl"
        ),
        # Field names in any case spelling, and a value continued on a folded line.
        pytest.param(
            "TRANSFER-ENCODING: chunked\r\ncontent-length: 30\r\n", 400, "bad_request", id="CL"
        ),
        pytest.param("tRANSFER-eNCODING: xchunked\r\n", 400, "bad_request", id="case"),
        pytest.param("Transfer-Encoding: chunked,\r\n identity\r\n", 400, "bad_request", id="fold"),
    ],
)
def test_a_transfer_encoding_the_server_cannot_follow_is_answered_then_closed(
    address: tuple[str, int], headers: str, status: int, code: str
) -> None:
    # The trailing request would be a second, smuggled request if the connection stayed open.
    first, after = send(address, post(headers, CHUNKED_FOLDER) + STATUS.encode())
    assert first is not None
    assert (first.status, first.code) == (status, code)
    assert json.loads(first.body)["data"] is None
    assert first.headers["connection"].lower() == "close"
    assert after is None  # nothing more is answered: the connection ended


def test_transfer_encoding_in_an_http_1_0_request_is_a_400_then_closed(
    address: tuple[str, int],
) -> None:
    request = post("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", b"0\r\n\r\n", "1.0")
    first, after = send(address, request + STATUS.encode())
    assert first is not None
    assert (first.status, first.code) == (400, "bad_request")
    assert after is None


def test_content_length_and_transfer_encoding_smuggle_nothing(address: tuple[str, int]) -> None:
    # Read by Content-Length, the body ends before "GET": a second request. Read as chunked,
    # "GET ..." starts the next request. Either way, only one answer comes.
    smuggled = STATUS.encode()
    request = post(f"Content-Length: {len(CHUNKED_FOLDER)}\r\nTransfer-Encoding: chunked\r\n", b"")
    first, after = send(address, request + CHUNKED_FOLDER + smuggled)
    assert first is not None
    assert first.status == 400
    assert after is None


def test_a_chunked_body_is_still_read_and_the_connection_kept(address: tuple[str, int]) -> None:
    with socket.create_connection(address, timeout=15) as connection:
        body = b'10\r\n{"name": "kept"}\r\n0\r\n\r\n'
        connection.sendall(post("Transfer-Encoding: chunked\r\n", body))
        created = read_answer(connection)
        assert created is not None
        assert created.status == 200, created.body
        assert json.loads(created.body)["data"]["folder"]["name"] == "kept"
        connection.sendall(STATUS.encode())  # the same connection answers the next request
        again = read_answer(connection)
        assert again is not None
        assert again.status == 200
