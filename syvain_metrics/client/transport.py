"""The HTTP layer under :class:`~syvain_metrics.Session`: one deadline per exchange, bounded
answers, no redirects, connections kept alive.

``urllib3``'s timeouts apply to each read of the socket, so a server sending a byte a second
keeps a call alive for as long as it likes. Here each exchange runs inside an
:class:`Exchange`: when its deadline passes, a watchdog thread shuts down the sockets the
exchange used, which ends whatever read or write is waiting on them (connecting, the status
line, the headers, the body); the session then reports a timeout.

Only the public API of ``urllib3`` 2.x is used: a connection class (``ConnectionCls``) whose
``connect()`` and ``request()`` hand the connection, and its socket (``sock``) once it has
one, to the exchange of the calling thread, all arguments passed through untouched; nothing
of ``http.client`` is replaced. It works the same on ``urllib3-future``, which replaces the
``urllib3`` module when installed (for instance by ``niquests``), HTTP/2 included.

Answers are read up to a size cap, and a compressed answer is inflated piece by piece up to
the same cap, so a small body that inflates a thousandfold costs no more than the cap.

Example:
    >>> adapter = DeadlineAdapter(pool_maxsize=2)
    >>> adapter.poolmanager.pool_classes_by_scheme["http"].__name__
    '_HTTPPool'
    >>> with Exchange(5) as exchange:
    ...     exchange.expired
    False
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import os
import socket
import threading
import time
import zlib
from types import TracebackType
from typing import Any

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection

from syvain_metrics.client.secret import Secret
from syvain_metrics.pipeline.forks import threads_leave_sigterm_to_main

logger = logging.getLogger("syvain_metrics")

DEFAULT_MAX_RESPONSE_BYTES = 256 * 1024 * 1024
"""The largest answer a session reads unless told otherwise (256 MiB, inflated): the largest
page of metric rows (100,000 rows, about 40 MB of JSON) six times over."""

ERROR_BODY_MAX = 64 * 1024
"""The most of an error answer's body that is read (its message is what matters)."""

_CHUNK = 1024 * 1024
_IDENTITY = frozenset({"", "identity"})
_INFLATED = frozenset({"gzip", "x-gzip", "deflate"})


class BodyTooLargeError(Exception):
    """An answer beyond the cap: raised by :func:`read_body`, turned into an SDK error by
    the session."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"more than {limit:,} bytes")
        self.limit = limit


class BadEncodingError(Exception):
    """An answer whose ``Content-Encoding`` cannot be read."""


_RECHECK = 0.05
"""Seconds between two looks of the watchdog at an expired exchange that has not ended yet:
a connection may open its socket after the deadline passed."""


def _socket_of(source: Any) -> socket.socket | None:
    """The socket of ``source``: a socket, or a connection's socket of the moment (``sock``:
    the plain one while connecting, then the TLS one), or a TLS-in-TLS transport's."""
    if isinstance(source, socket.socket):
        return source
    sock = getattr(source, "sock", None)
    if isinstance(sock, socket.socket):
        return sock
    inner = getattr(sock, "socket", None)
    return inner if isinstance(inner, socket.socket) else None


def _shut(source: Any) -> bool:
    """End every read and write waiting on the socket of ``source``, from another thread;
    False when it has no socket (yet).

    ``close()`` would not wake a thread blocked in ``recv()``; ``shutdown()`` does. It is
    called on the plain socket class, so that a TLS socket's state is not touched under the
    thread reading it (the read then fails, and the exchange knows why)."""
    sock = _socket_of(source)
    if sock is None:
        return False
    # Already closed or never connected: nothing is waiting on it.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    return True


class Exchange:
    """One request and its whole answer, within ``seconds`` of entering the ``with`` block.

    The SDK's connections used on this thread inside the block (connecting included) are
    shut down when the deadline passes; :attr:`expired` then says that the failure that
    follows is a timeout, whatever exception the layers below raised for it.

    Example:
        >>> with Exchange(0.5) as exchange:
        ...     exchange.timeout.total
        0.5
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds
        self.expired = False
        self._finished = False
        self._watched: list[Any] = []
        self._lock = threading.Lock()
        self._outer: Exchange | None = None

    @property
    def timeout(self) -> urllib3.Timeout:
        """What ``urllib3`` is given: connecting and each read also bounded by the deadline."""
        return urllib3.Timeout(total=self.seconds)

    def __enter__(self) -> Exchange:
        self._outer = getattr(_current, "exchange", None)
        _current.exchange = self
        _watchdog.arm(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.finish()
        _current.exchange = self._outer
        self._outer = None

    @property
    def finished(self) -> bool:
        """Whether the exchange ended (its connections are no longer watched)."""
        return self._finished

    def watch(self, source: Any) -> None:
        """Shut ``source`` (a socket, or a connection and whatever socket it has then) down
        when the deadline passes; at once if it has passed."""
        with self._lock:
            if self._finished:
                return
            if not any(known is source for known in self._watched):
                self._watched.append(source)
            if not self.expired:
                return
        _shut(source)

    def finish(self) -> bool:
        """Stop watching (before a connection goes back to the pool, where another exchange
        may take it); False when the deadline had already passed."""
        with self._lock:
            self._finished = True
            self._watched.clear()
            return not self.expired

    def expire(self) -> bool:
        """The deadline passed: shut down every socket of the exchange (the watchdog's call);
        True while the exchange goes on, to be looked at again."""
        with self._lock:
            if self._finished:
                return False
            self.expired = True
            watched = list(self._watched)
        for source in watched:
            _shut(source)
        return True


_current = threading.local()


class _Watchdog:
    """One daemon thread for the process, expiring exchanges whose deadline passed."""

    def __init__(self) -> None:
        self._condition = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, Exchange]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._compact_at = 1024

    def after_fork_in_child(self) -> None:
        # The thread did not cross the fork, and its lock may have been held when it happened.
        self._condition = threading.Condition(threading.Lock())
        self._heap = []
        self._thread = None
        self._pid = os.getpid()

    def arm(self, exchange: Exchange) -> None:
        with self._condition:
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._heap = []
                self._pid = os.getpid()
                self._thread = threading.Thread(
                    target=self._run, name="syvain-metrics-deadlines", daemon=True
                )
                with threads_leave_sigterm_to_main():
                    self._thread.start()
            if len(self._heap) > self._compact_at:
                # Finished exchanges wait in the heap for their deadline: drop them.
                self._heap = [entry for entry in self._heap if not entry[2].finished]
                heapq.heapify(self._heap)
                self._compact_at = max(1024, 2 * len(self._heap))
            self._push(exchange, exchange.deadline)

    def _push(self, exchange: Exchange, when: float) -> None:
        """Queue ``exchange`` to be expired at ``when`` (the lock held)."""
        first = not self._heap or when < self._heap[0][0]
        heapq.heappush(self._heap, (when, next(self._order), exchange))
        if first:
            self._condition.notify()

    def _run(self) -> None:
        while True:
            due: list[Exchange] = []
            with self._condition:
                now = time.monotonic()
                while self._heap and self._heap[0][0] <= now:
                    due.append(heapq.heappop(self._heap)[2])
                if not due:
                    wait = self._heap[0][0] - now if self._heap else None
                    self._condition.wait(wait)
                    continue
            again = []
            for exchange in due:
                try:
                    if exchange.expire():
                        again.append(exchange)
                except Exception:  # pragma: no cover - the thread keeps every other deadline
                    logger.exception("syvain_metrics: ending an exchange at its deadline failed")
            if again:  # not ended yet: a socket may come, or be stuck
                with self._condition:
                    for exchange in again:
                        self._push(exchange, time.monotonic() + _RECHECK)


_watchdog = _Watchdog()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_watchdog.after_fork_in_child)


def _watch(connection: Any) -> None:
    """Hand ``connection`` to the exchange of this thread, and its socket if it has one: the
    connection lets go of its socket when an answer ends with the connection (the answer
    keeps reading from it), so the socket is watched on its own too."""
    exchange: Exchange | None = getattr(_current, "exchange", None)
    if exchange is not None:
        exchange.watch(connection)
        sock = _socket_of(connection)
        if sock is not None:
            exchange.watch(sock)


class _Watched:
    # Watched before connecting (the socket of the moment is shut when the deadline passes,
    # so a TLS or HTTP/2 handshake is cut too) and after. Arguments are passed through as
    # they come: urllib3 and urllib3-future differ in them.
    def connect(self, *args: Any, **kwargs: Any) -> Any:
        _watch(self)
        result = super().connect(*args, **kwargs)  # type: ignore[misc]
        _watch(self)
        return result

    def request(self, *args: Any, **kwargs: Any) -> Any:
        _watch(self)  # a kept-alive connection: connect() is not called again
        return super().request(*args, **kwargs)  # type: ignore[misc]


class _WatchedConnection(_Watched, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_Watched, HTTPSConnection):
    pass


class _HTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _WatchedConnection


class _HTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_POOLS: dict[str, type[urllib3.HTTPConnectionPool]] = {"http": _HTTPPool, "https": _HTTPSPool}


class DeadlineAdapter(HTTPAdapter):
    """``requests``' adapter whose connections keep one deadline per :class:`Exchange`;
    never retries on its own.

    Example:
        >>> DeadlineAdapter().max_retries.total
        0
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_retries=0, **kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(_POOLS)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if isinstance(manager, urllib3.PoolManager):  # not a SOCKS manager
            manager.pool_classes_by_scheme = dict(_POOLS)
        return manager


class BearerAuth(requests.auth.AuthBase):
    """``requests``' authentication hook that sets ``Authorization: Bearer <secret>`` on the
    prepared request, so that no frame of the SDK holds the header's text.

    Example:
        >>> request = requests.Request("GET", "http://127.0.0.1/", auth=BearerAuth(Secret("k")))
        >>> request.prepare().headers["Authorization"]
        'Bearer k'
        >>> BearerAuth(Secret("k"))
        BearerAuth(Secret('***'))
    """

    def __init__(self, secret: Secret) -> None:
        self._secret = secret

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = "Bearer " + self._secret.reveal()
        return request

    def __repr__(self) -> str:
        return f"BearerAuth({self._secret!r})"


def read_body(response: requests.Response, limit: int) -> bytes:
    """The whole body, inflated when compressed, at most ``limit`` bytes (else
    :class:`BodyTooLargeError`); the connection goes back to the pool, or is closed when the body
    was not read to its end or the exchange's deadline passed. A response built without a connection (a test adapter's) has
    its content already.

    Example:
        >>> response = requests.Response()
        >>> response._content = b"{}"
        >>> read_body(response, 10)
        b'{}'
    """
    raw = response.raw
    if raw is None or not isinstance(raw, urllib3.HTTPResponse):
        content = response.content
        if len(content) > limit:
            raise BodyTooLargeError(limit)
        return content
    encoding = response.headers.get("Content-Encoding", "").strip().lower()
    try:
        if encoding in _IDENTITY:
            body = _read_plain(raw, response.headers.get("Content-Length"), limit)
        elif encoding in _INFLATED:
            body = _read_inflated(raw, limit)
        else:
            raise BadEncodingError(f"Content-Encoding {encoding[:40]!r} is not supported")
    except BaseException:
        raw.close()  # a connection left mid-body must not be used again
        raise
    exchange: Exchange | None = getattr(_current, "exchange", None)
    if exchange is None or exchange.finish():
        raw.release_conn()
    else:
        raw.close()  # its socket was shut down at the deadline, just after the last byte
    return body


def _read_plain(raw: urllib3.HTTPResponse, declared: str | None, limit: int) -> bytes:
    length = int(declared) if declared and declared.strip().isdigit() else None
    if length is not None:
        if length > limit:
            raise BodyTooLargeError(limit)
        return raw.read(decode_content=False)  # one read, bounded by the declared length
    parts: list[bytes] = []
    size = 0
    while chunk := raw.read(_CHUNK, decode_content=False):
        size += len(chunk)
        if size > limit:
            raise BodyTooLargeError(limit)
        parts.append(chunk)
    return b"".join(parts)


def _read_inflated(raw: urllib3.HTTPResponse, limit: int) -> bytes:
    inflater = zlib.decompressobj(zlib.MAX_WBITS | 32)  # a gzip or a zlib header
    parts: list[bytes] = []
    size = 0
    try:
        while not inflater.eof and (chunk := raw.read(_CHUNK, decode_content=False)):
            data = chunk
            while data and not inflater.eof:
                # Small pieces: zlib sizes its output buffer by what it may return.
                piece = inflater.decompress(data, min(_CHUNK, limit + 1 - size))
                size += len(piece)
                if size > limit:
                    raise BodyTooLargeError(limit)
                parts.append(piece)
                data = inflater.unconsumed_tail
        parts.append(inflater.flush())
    except zlib.error as error:
        raise BadEncodingError(f"the compressed body is broken ({error})") from None
    body = b"".join(parts)
    if len(body) > limit:
        raise BodyTooLargeError(limit)
    return body
