"""gunicorn's threaded worker held to the local server's limits (``serve --processes N``).

gunicorn's ``gthread`` worker answers each request in a thread of its pool; a thread reading a
request head waits for it as long as the client takes, so a few clients sending one byte
every few seconds would hold every thread. :class:`GuardedThreadWorker` adds what
:mod:`~syvain_metrics.server.connections` gives the one-process server, as far as gunicorn's
design allows:

- a request's head is gathered by the worker's poller, not by a thread: a thread takes the
  connection once the head is whole, so slow heads never hold the threads. It must arrive
  whole within ``head_timeout`` seconds of the connection's
  opening (or of its first byte, on a kept-alive connection), its body within
  ``body_timeout`` seconds of the head's end; bytes arriving do not move the deadline. Past
  it: ``408`` in the contract's envelope, and the connection closed. The body is received
  whole before the application runs (as waitress does), so a slow body never holds a
  request being answered.
- a client address holding ``per_client`` connections in this worker gets its new one in
  the place of its own that waited longest (idle between requests, or still sending), except
  for a trusted proxy's address; when all of them are being answered, the new one is closed.
- a new connection goes to the worker holding fewest (:class:`Balance`): gunicorn's workers
  all wait on one listening socket, and the first to wake, often the same one, would take
  most of them, leaving clients writing at once in one process.
- the answers gunicorn writes itself (a malformed request, a head too large) are in the
  contract's envelope like every other.

Example:
    >>> GuardedThreadWorker.head_timeout, GuardedThreadWorker.body_timeout
    (10, 60)
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import selectors
import socket
import time
from collections.abc import Iterator
from functools import partial
from multiprocessing.sharedctypes import RawArray
from typing import Any

from gunicorn.workers.gthread import TConn, ThreadWorker

from syvain_metrics.server.errors import closing_answer
from syvain_metrics.server.limits import (
    BODY_TIMEOUT_S,
    CONNECTIONS_PER_CLIENT,
    HEAD_TIMEOUT_S,
    MAX_BODY_BYTES,
)
from syvain_metrics.server.proxies import TrustedProxies

HEAD_BYTES_LIMIT = 256 * 1024
"""Largest request head gathered by the poller (waitress' ``max_request_header_size``):
past it the head goes to a thread as it is, and gunicorn's own limits answer."""


class Balance:
    """Each worker's open connections and last sign of life, in memory the worker processes
    share (made before they are forked): a worker leaves a new connection to another that
    holds fewer, unless that one has shown no sign of life for :attr:`STALE_S` (stopped, or
    stuck: then it is not waited for).

    Example:
        >>> balance = Balance(2)
        >>> balance.report(0, 3); balance.report(1, 1)
        >>> balance.my_turn(0), balance.my_turn(1)
        (False, True)
    """

    STALE_S = 2.0

    def __init__(self, workers: int) -> None:
        self.slots = workers
        # Per slot: open connections, then the time.monotonic() of its last report.
        self._shared = RawArray(ctypes.c_double, 2 * workers)

    def free_slot(self, taken: set[int]) -> int:
        """A slot no running worker holds (the first one)."""
        return min(set(range(self.slots)) - taken, default=0)

    def report(self, slot: int, connections: int) -> None:
        """Record a worker's open connections, and that it runs."""
        self._shared[2 * slot] = connections
        self._shared[2 * slot + 1] = time.monotonic()

    def my_turn(self, slot: int) -> bool:
        """Whether the worker in ``slot`` should take the next connection: no running worker
        holds fewer."""
        now, mine = time.monotonic(), self._shared[2 * slot]
        return not any(
            other != slot
            and now - self._shared[2 * other + 1] < self.STALE_S
            and self._shared[2 * other] < mine
            for other in range(self.slots)
        )


class RequestTimeoutError(Exception):
    """The part of the request still arriving (head or body) missed its deadline (not an
    ``OSError``: gunicorn takes those for a client gone, and answers nothing)."""


class DeadlineSocket:
    """A client socket whose reads end at :attr:`deadline` (``time.monotonic()``; ``None``:
    no deadline); everything else is the socket's.

    Example:
        >>> with socket.socket() as plain:
        ...     DeadlineSocket(plain).deadline is None
        True
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.deadline: float | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)

    def recv(self, size: int, *flags: int) -> bytes:
        """Read as ``socket.recv``; raise :class:`RequestTimeoutError` once the deadline passed."""
        if self.deadline is None:
            return bytes(self.sock.recv(size, *flags))
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise RequestTimeoutError("the request did not arrive in time")
        previous = self.sock.gettimeout()
        self.sock.settimeout(remaining)
        try:
            return bytes(self.sock.recv(size, *flags))
        except TimeoutError:
            raise RequestTimeoutError("the request did not arrive in time") from None
        finally:
            self.sock.settimeout(previous)


class _Received(io.RawIOBase):
    """A request body received before the application runs: what was read, then the rest
    of the original body (past :data:`~.limits.MAX_BODY_BYTES`, read only if asked)."""

    def __init__(self, head: bytes, rest: Any) -> None:
        super().__init__()
        self._head = io.BytesIO(head)
        self._rest = rest

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        data = self._head.read(size)
        if size is None or size < 0:
            return data + bytes(self._rest.read())
        if len(data) < size:
            data += self._rest.read(size - len(data))
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def readline(self, size: int | None = -1) -> bytes:
        line = self._head.readline(size)
        if line.endswith(b"\n") or (size is not None and 0 <= size == len(line)):
            return line
        rest = self._rest.readline(-1 if size is None or size < 0 else size - len(line))
        return line + bytes(rest)

    def __iter__(self) -> Iterator[bytes]:
        while line := self.readline():
            yield line


class _Captured:
    """Stands for a client socket while gunicorn writes an error page: the page is kept, to
    be answered in the contract's envelope instead."""

    def __init__(self) -> None:
        self.data = b""

    def gettimeout(self) -> float:
        return 0.0

    def sendall(self, data: bytes) -> None:
        self.data += data


class GuardedThreadWorker(ThreadWorker):  # type: ignore[misc]
    """gunicorn's ``gthread`` worker with the head and body deadlines and the limit per client
    address of the module's text. The limits are class attributes (tests lower them);
    :mod:`~syvain_metrics.server.prefork` sets ``trusted_proxies`` and ``balance`` before
    the workers start.

    Example:
        >>> GuardedThreadWorker.per_client
        100
    """

    head_timeout: float = HEAD_TIMEOUT_S
    body_timeout: float = BODY_TIMEOUT_S
    per_client: int = CONNECTIONS_PER_CLIENT
    trusted_proxies: TrustedProxies = TrustedProxies()
    balance: Balance | None = None
    slot = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.clients: dict[str, list[Any]] = {}
        self.gathering: set[Any] = set()

    # -- connections and their owners ----------------------------------------------------------

    def accept(self, listener: Any) -> None:
        """Accept one connection (gunicorn's ``accept``) with room made for it first."""
        try:
            client_sock, client_addr = listener.accept()
        except OSError:
            return  # none waiting, or the client left
        client = str(client_addr[0]) if isinstance(client_addr, tuple) else ""
        if not self._make_room(client):
            with contextlib.suppress(OSError):
                client_sock.close()
            return
        self.nr_conns += 1
        if self.balance is not None:
            self.balance.report(self.slot, self.nr_conns)
        client_sock.setblocking(True)
        conn = TConn(self.cfg, DeadlineSocket(client_sock), client_addr, listener.getsockname())
        conn.opened = time.monotonic()
        conn.client_key = client
        conn.phase = "head"
        conn.since = conn.opened
        self.clients.setdefault(client, []).append(conn)
        self._gather(conn, conn.opened + self.head_timeout)

    def wait_for_and_dispatch_events(self, timeout: float) -> None:
        """Wait for events (gunicorn's), not listening while another worker holds fewer
        connections: it takes the next one."""
        if self.balance is not None:
            self.balance.report(self.slot, self.nr_conns)
            if self._accepting and self.alive and not self.balance.my_turn(self.slot):
                self.set_accept_enabled(False)  # the serving loop enables it again
                timeout = 0.05  # and looks again soon
        super().wait_for_and_dispatch_events(timeout)

    # -- heads, gathered by the poller ---------------------------------------------------------

    def _gather(self, conn: Any, deadline: float) -> None:
        conn.head = b""
        conn.head_deadline = deadline
        conn.sock.setblocking(False)
        self.gathering.add(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._head_bytes, conn))

    def _stop_gathering(self, conn: Any) -> None:
        self.gathering.discard(conn)
        with contextlib.suppress(OSError, KeyError, ValueError):
            self.poller.unregister(conn.sock)

    def _head_bytes(self, conn: Any, _: Any) -> None:
        try:
            data = conn.sock.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data or conn.phase == "gone":
            self._drop(conn)
            return
        conn.head += data
        # Blank lines before a request line (RFC 9112 section 2.2) are part of its head.
        head = conn.head.lstrip(b"\r\n")
        if b"\r\n\r\n" in head or b"\n\n" in head or len(conn.head) > HEAD_BYTES_LIMIT:
            self._stop_gathering(conn)
            conn.data_ready = True
            # Whole, so no longer a head still arriving: it waits for a thread, and room is
            # never made by closing it (a flood of new connections from its address would
            # otherwise reach it first).
            conn.phase, conn.since = "answering", time.monotonic()
            self.enqueue_req(conn)

    def _drop(self, conn: Any, answer: bytes = b"") -> None:
        self._stop_gathering(conn)
        if answer:
            with contextlib.suppress(OSError):
                conn.sock.sock.send(answer)
        self.nr_conns -= 1
        conn.phase = "gone"
        conn.close()
        self._forget(conn)

    def murder_gathering(self) -> None:
        """Answer 408 to the connections whose head is not whole by its deadline."""
        now = time.monotonic()
        for conn in [conn for conn in self.gathering if conn.head_deadline <= now]:
            self._drop(conn, closing_answer(408, "Request Timeout"))
        if not self.alive:  # stopping: a head not whole yet is not waited for
            for conn in list(self.gathering):
                self._drop(conn)

    def on_client_socket_readable(self, conn: Any, client: Any) -> None:
        """A kept-alive connection's next request began: gather its head."""
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        conn.phase, conn.since = "head", time.monotonic()
        self._gather(conn, conn.since + self.head_timeout)
        self._head_bytes(conn, client)

    def murder_pending(self) -> None:
        """Deadlines of the heads being gathered, checked with gunicorn's timeouts."""
        super().murder_pending()
        self.murder_gathering()

    def _make_room(self, client: str) -> bool:
        self.method_queue.run_callbacks(None)  # requests just answered are idle now
        mine = [conn for conn in self.clients.get(client, []) if conn.phase != "gone"]
        if len(mine) < self.per_client or self.trusted_proxies.trusts(client):
            return True
        # Still sending a head first (oldest), then a body, then idle between requests.
        order = {"head": 0, "body": 1, "idle": 2}
        waiting = [conn for conn in mine if conn.phase in order]
        if not waiting and any(conn.phase == "answering" for conn in mine):
            # An answer may be out while its thread has not yet said so: a moment for it,
            # then what the threads said meanwhile.
            time.sleep(0.02)
            self.method_queue.run_callbacks(None)
            waiting = [conn for conn in mine if conn.phase in order]
        if not waiting:
            return False
        oldest = min(waiting, key=lambda conn: (order[conn.phase], conn.since))
        oldest.phase = "gone"
        with contextlib.suppress(OSError):
            # Its thread (or the poller) sees the end at once and closes it.
            oldest.sock.sock.shutdown(socket.SHUT_RDWR)
        return True

    def _forget(self, conn: Any) -> None:
        mine = self.clients.get(getattr(conn, "client_key", ""), [])
        if conn in mine:
            mine.remove(conn)
            if not mine:
                self.clients.pop(conn.client_key, None)

    def finish_request(self, conn: Any, fs: Any) -> None:
        """gunicorn's bookkeeping, then the connection's place: idle, or forgotten."""
        super().finish_request(conn, fs)
        if conn.sock.sock.fileno() == -1:  # closed by gunicorn
            conn.phase = "gone"
            self._forget(conn)
        elif conn in self.keepalived_conns:
            conn.phase = "idle"
        else:  # a next request read ahead, back in a thread
            conn.phase, conn.since = "head", time.monotonic()

    def murder_keepalived(self, force: bool = False) -> None:
        """Close idle connections past their time (gunicorn's), and forget them."""
        before = list(self.keepalived_conns)
        super().murder_keepalived(force)
        for conn in before:
            if conn not in self.keepalived_conns:
                self._forget(conn)

    # -- one request -----------------------------------------------------------------------

    def handle(self, conn: Any) -> Any:
        """Read and answer one request (gunicorn's), the head held to its deadline."""
        if conn.phase == "gone":
            return False
        head, conn.head = getattr(conn, "head", b""), b""
        # A head read ahead on a kept-alive connection was not gathered: it gets its time.
        conn.sock.deadline = conn.head_deadline if head else time.monotonic() + self.head_timeout
        if head:
            conn.sock.setblocking(True)
            conn.init()
            conn.parser.unreader.unread(head)
        try:
            keep = super().handle(conn)
        finally:
            conn.sock.deadline = None
        if keep is True:  # answered: idle from now on, before the poller hears of it
            # Idle ones make room in the order their last requests began to be answered
            # (their threads may end in another order).
            conn.phase, conn.since = "idle", conn.since
        return keep

    def handle_request(self, req: Any, conn: Any) -> Any:
        """Receive the body whole within its deadline, then answer (gunicorn's)."""
        conn.phase, conn.since = "body", time.monotonic()
        conn.sock.deadline = conn.since + self.body_timeout
        length = next((value for name, value in req.headers if name == "CONTENT-LENGTH"), "")
        # One the application refuses by its length (413) is not received first.
        if req.body is not None and not (length.isdigit() and int(length) > MAX_BODY_BYTES):
            received = req.body.read(MAX_BODY_BYTES + 1)
            req.body = _Received(received, req.body)
        conn.sock.deadline = None
        conn.phase, conn.since = "answering", time.monotonic()
        return super().handle_request(req, conn)

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        """Answer in the contract's envelope: 408 past a deadline, else gunicorn's status."""
        if isinstance(exc, RequestTimeoutError):
            with contextlib.suppress(OSError):
                client.sendall(closing_answer(408, "Request Timeout"))
            return
        captured = _Captured()
        super().handle_error(req, captured, addr, exc)
        status_line = captured.data.split(b"\r\n", 1)[0].decode("latin-1")
        parts = status_line.split(" ", 2)
        if len(parts) < 3 or not parts[1].isdigit():
            return
        with contextlib.suppress(OSError):
            client.sendall(closing_answer(int(parts[1]), parts[2]))
