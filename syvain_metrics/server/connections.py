"""How the local server holds its connections: a deadline for each request's head and body,
and room for a new connection when its client, or the server, holds as many as it may.

waitress closes a connection after ``channel_timeout`` without a byte, but every byte restarts
that timer and it stops accepting once ``connection_limit`` connections are open: a client
sending one header byte every few seconds holds a connection for ever, and enough of them
hold every one. Here:

- a request's head must arrive whole within ``head_timeout`` seconds of the connection's
  opening (or of its first byte, on a kept-alive connection), and its body within
  ``body_timeout`` seconds of the head's end; bytes arriving do not move the deadline. Past
  it the server answers ``408`` in the contract's envelope and closes the connection. Blank
  lines before a request line count as part of its head.
- a client address holding ``per_client`` connections, or the server holding
  ``connection_limit``, gets its new connection in the place of the one that has waited
  longest for its client: first one still sending a request head (the oldest), then one
  sending a body, then one idle between requests. A connection with a request being answered
  is never closed for another; when all are, the new connection is closed at once.
- a trusted proxy's address (``serve --trusted-proxy``) is held to ``connection_limit``
  only: every client behind it connects from that address, and a limit per address would
  cap them all together.

A client that opens connections and does not use them therefore only ever pushes out its own,
and a new request, which sends its head at once, is read before it could be pushed out.

Example:
    >>> from syvain_metrics.server.app import MetricsApp
    >>> from syvain_metrics.server.runner import make_server
    >>> from syvain_metrics.server.store import Store
    >>> server = make_server(MetricsApp(Store()), "127.0.0.1", 0, head_timeout=5, per_client=2)
    >>> server.head_timeout, server.per_client
    (5, 2)
    >>> server.close()
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterable
from typing import Any

from waitress.channel import HTTPChannel
from waitress.server import TcpWSGIServer
from waitress.task import ErrorTask
from waitress.utilities import build_http_date

from syvain_metrics.server.errors import closing_answer, envelope_error
from syvain_metrics.server.framing import FramingParser
from syvain_metrics.server.proxies import TrustedProxies

ACCEPTS_PER_PASS = 64
"""Connections accepted each time the serving loop finds some waiting (fewer with a lower
limit per client: each may take the place of an older one, and a connection accepted must
outlast the next pass, where its first bytes are read)."""


class EnvelopeErrorTask(ErrorTask):  # type: ignore[misc]
    """Answers a request waitress refused itself (malformed, too large) in the contract's
    envelope, then closes the connection.

    Example:
        >>> TimedChannel.error_task_class is EnvelopeErrorTask
        True
    """

    def execute(self) -> None:
        error = self.request.error
        reason = f"{error.reason}: {error.body}" if error.body else error.reason
        body = envelope_error(error.code, reason)
        self.status = f"{error.code} {error.reason}"
        self.response_headers.append(("Content-Type", "application/json"))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class TimedRequest(FramingParser):
    """A request being received, with the moments its head and its body began.

    Example:
        >>> from waitress.adjustments import Adjustments
        >>> request = TimedRequest(Adjustments())
        >>> request.received(b"\\r\\n\\r\\n"), request.completed  # blank lines: no request yet
        (4, False)
        >>> _ = request.received(b"POST / HTTP/1.1\\r\\nContent-Length: 5\\r\\n\\r\\n")
        >>> request.body_started is not None
        True
    """

    completed: bool
    empty: bool
    headers_finished: bool
    header_plus: bytes
    header_bytes_received: int

    def __init__(self, adj: Any) -> None:
        super().__init__(adj)
        self.head_started = time.monotonic()
        self.body_started: float | None = None

    def received(self, data: bytes) -> int:
        consumed: int = super().received(data)
        if self.completed and self.empty:
            # Blank lines before a request line (RFC 9112 §2.2): waitress would end an empty
            # request here and start a new one, and its clock, at the next byte.
            self.completed = self.empty = self.headers_finished = False
            self.header_plus = b""
            self.header_bytes_received = 0
        elif self.headers_finished and not self.completed and self.body_started is None:
            self.body_started = time.monotonic()
        return consumed

    def deadline(self, head_timeout: float, body_timeout: float) -> float:
        """When the part of the request still arriving (head or body) must be whole.

        Example:
            >>> from waitress.adjustments import Adjustments
            >>> request = TimedRequest(Adjustments())
            >>> request.deadline(10, 60) - request.head_started
            10.0
        """
        if self.body_started is not None:
            return self.body_started + body_timeout
        return float(self.head_started + head_timeout)

    def restart_clock(self) -> None:
        """Give the part still arriving its whole time again (it was not read meanwhile)."""
        if self.body_started is not None:
            self.body_started = time.monotonic()
        else:
            self.head_started = time.monotonic()


class TimedChannel(HTTPChannel):  # type: ignore[misc]
    """waitress' connection, held to the deadlines of :class:`GuardedServer`.

    Example:
        >>> TimedChannel.parser_class is TimedRequest
        True
    """

    parser_class = TimedRequest
    error_task_class = EnvelopeErrorTask
    request: TimedRequest | None
    requests: list[Any]
    will_close: bool
    close_when_flushed: bool
    total_outbufs_len: int
    current_outbuf_count: int
    last_activity: float

    def __init__(self, server: GuardedServer, sock: Any, addr: Any, adj: Any, map: Any) -> None:
        self.opened = time.monotonic()
        self.fresh = True  # no request answered yet: its first head is due from the opening
        self.last_request = self.opened
        self.client = str(addr[0])
        super().__init__(server, sock, addr, adj, map=map)
        server.clients.setdefault(self.client, set()).add(self)

    def del_channel(self, map: Any = None) -> None:
        super().del_channel(map)
        mine = self.server.clients.get(self.client, set())
        mine.discard(self)
        if not mine:
            self.server.clients.pop(self.client, None)

    @property
    def leaving(self) -> bool:
        """Whether the connection is closing (it no longer counts against any limit)."""
        return bool(self.will_close or self.close_when_flushed)

    def _busy(self) -> bool:
        return bool(self.requests or self.total_outbufs_len or self.leaving)

    def received(self, data: bytes) -> bool:
        if data and self.request is None and self.fresh:
            with self.requests_lock:
                if self.request is None and not self.leaving:
                    self.request = self.parser_class(self.adj)
                    self.request.head_started = self.opened
        return bool(super().received(data))

    def service(self) -> None:
        self.fresh = False
        # Idle ones make room in the order their last requests began to be answered: the end
        # of an answer is recorded by a worker thread that may run late.
        self.last_request = time.monotonic()
        super().service()
        request = self.request
        if request is not None:  # read ahead, then not read while this one was answered
            request.restart_clock()

    def read_waiting(self) -> None:
        """Read what the client has sent already, without waiting: a request whose head came
        with its connection is then being answered, so no connection opened after it can
        take its place."""
        try:
            data = self.socket.recv(self.adj.recv_bytes)
        except OSError:  # nothing yet (BlockingIOError), or gone: the serving loop will see
            return
        if data:
            self.last_activity = time.time()
            self.received(data)

    def deadline(self) -> float | None:
        """When the request arriving must be whole (``time.monotonic()``); ``None`` while
        none is (idle between requests), or while a request is answered."""
        if self._busy():
            return None
        request = self.request
        if request is None:
            return self.opened + self.server.head_timeout if self.fresh else None
        return float(request.deadline(self.server.head_timeout, self.server.body_timeout))

    def waiting_since(self) -> tuple[int, float] | None:
        """How long the connection has waited for its client, as a sort key (smallest: the
        first to give up its place); ``None`` while a request is answered or it is closing."""
        if self._busy():
            return None
        request = self.request
        if request is None:
            if self.fresh:
                return (0, self.opened)
            return (2, self.last_request)
        if request.body_started is not None:
            return (1, float(request.body_started))
        return (0, float(request.head_started))

    def time_out(self) -> None:
        """Answer 408 in the envelope and close the connection once it is written."""
        answer = closing_answer(
            408,
            "Request Timeout",
            {"Date": build_http_date(time.time()), "Server": self.adj.ident},
        )
        with self.requests_lock:
            if self.request is not None:
                self.request.close()
                self.request = None
            with self.outbuf_lock:
                self.outbufs[-1].append(answer)
                self.current_outbuf_count += len(answer)
                self.total_outbufs_len += len(answer)
            self.close_when_flushed = True

    def give_up_place(self) -> None:
        """Close the connection for a new one: its client sees the end at once."""
        with contextlib.suppress(OSError):
            # Shut down now, closed by the loop later: its descriptor must not be reused
            # by a new connection while the loop still has events for it.
            self.socket.shutdown(socket.SHUT_RDWR)
        self.will_close = True


class GuardedServer(TcpWSGIServer):  # type: ignore[misc]
    """waitress' server with head and body deadlines and a limit per client address, except
    for ``trusted_proxies`` (see the module's text). Built by
    :func:`~syvain_metrics.server.runner.make_server`.

    Example:
        >>> GuardedServer.channel_class is TimedChannel
        True
    """

    channel_class = TimedChannel
    next_channel_cleanup: float
    active_channels: dict[int, TimedChannel]

    def __init__(
        self,
        application: Any,
        adj: Any,
        *,
        head_timeout: float,
        body_timeout: float,
        per_client: int,
        trusted_proxies: TrustedProxies | None = None,
    ) -> None:
        self.head_timeout = head_timeout
        self.body_timeout = body_timeout
        self.per_client = per_client
        self.trusted_proxies = trusted_proxies or TrustedProxies()
        self.clients: dict[str, set[TimedChannel]] = {}
        super().__init__(application, map={}, adj=adj)

    def readable(self) -> bool:
        now = time.time()
        if now >= self.next_channel_cleanup:
            self.next_channel_cleanup = now + self.adj.cleanup_interval
            self.maintenance(now)
        # No pause at connection_limit: make_room keeps the count there.
        return bool(self.accepting)

    def maintenance(self, now: float) -> None:
        super().maintenance(now)  # waitress' idle timeout
        moment = time.monotonic()
        for channel in list(self.active_channels.values()):
            deadline = channel.deadline()
            if deadline is not None and moment >= deadline:
                channel.time_out()

    @property
    def accepts_per_pass(self) -> int:
        """Connections taken at most each time the serving loop finds some waiting (see
        :data:`ACCEPTS_PER_PASS`).

        Example:
            >>> from syvain_metrics.server.app import MetricsApp
            >>> from syvain_metrics.server.runner import make_server
            >>> from syvain_metrics.server.store import Store
            >>> server = make_server(MetricsApp(Store()), "127.0.0.1", 0, per_client=8)
            >>> server.accepts_per_pass
            2
            >>> server.close()
        """
        return min(ACCEPTS_PER_PASS, max(1, self.per_client // 4))

    def handle_accept(self) -> None:
        # Several at a time (waitress takes one per pass of its loop): a client that opens
        # connections as fast as they are closed for others keeps the listen queue full, and
        # a new client waits for every connection queued before its own.
        for _ in range(self.accepts_per_pass):
            try:
                accepted = self.accept()
                if accepted is None:
                    return  # none waiting
                connection, address = accepted
                self.set_socket_options(connection)
            except OSError:
                continue  # the client left before it was accepted
            self.take(connection, self.fix_addr(address))

    def take(self, connection: socket.socket, address: Any) -> bool:
        """Serve an accepted connection if there is room for it (made as the module's text
        says); else close it and return ``False``."""
        if not self.make_room(str(address[0])):
            connection.close()
            return False
        self.channel_class(self, connection, address, self.adj, map=self._map).read_waiting()
        return True

    def make_room(self, client: str) -> bool:
        """Make room for one more connection of ``client``; ``False`` if none can be made."""
        mine = self.clients.get(client, set())
        # Asked only at the limit, so that not every accept parses the address.
        if _staying(mine) >= self.per_client and not self.trusted_proxies.trusts(client):
            return _push_out_one(mine)
        everyone, limit = self.active_channels.values(), self.adj.connection_limit
        # Counted only when it may matter: the count walks every connection.
        if len(everyone) >= limit and _staying(everyone) >= limit:
            return _push_out_one(everyone)
        return True


def _staying(channels: Iterable[TimedChannel]) -> int:
    return sum(1 for channel in channels if not channel.leaving)


def _push_out_one(channels: Iterable[TimedChannel]) -> bool:
    waiting = [(since, channel) for channel in channels if (since := channel.waiting_since())]
    if not waiting:
        return False
    min(waiting, key=lambda pair: pair[0])[1].give_up_place()
    return True
