"""The HTTP layer under :class:`~syvain_metrics.Session`: one deadline per exchange, bounded
answers, no redirects.

``urllib3``'s timeouts apply to each read of the socket, so a server sending a byte a second
keeps a call alive for as long as it likes. Here each exchange gets one deadline, set when it
starts: connecting takes what is left of it, and every later read of the answer (status line,
headers, body) waits at most for what is left, then fails as a timeout.

Answers are read up to a size cap, and a compressed answer is inflated piece by piece up to
the same cap, so a small body that inflates a thousandfold costs no more than the cap.

Example:
    >>> adapter = DeadlineAdapter(pool_maxsize=2)
    >>> adapter.poolmanager.pool_classes_by_scheme["http"].__name__
    '_HTTPPool'
"""

from __future__ import annotations

import functools
import http.client
import io
import socket
import time
import zlib
from typing import Any

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection

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


class _DeadlineIO(io.RawIOBase):
    """The socket's reads, each one waiting at most for what is left of the deadline."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        super().__init__()
        self._sock = sock
        self._raw = sock.makefile("rb", buffering=0)  # holds the socket open, like http.client
        self._deadline = deadline
        self._timeout = sock.gettimeout()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out")
        self._sock.settimeout(left if self._timeout is None else min(left, self._timeout))
        return self._raw.readinto(buffer)

    def close(self) -> None:
        if not self.closed:
            try:
                if self._sock.fileno() >= 0:
                    self._sock.settimeout(self._timeout)
            except OSError:
                pass
            self._raw.close()
        super().close()


class _DeadlineSocket:
    """What :class:`http.client.HTTPResponse` needs of a socket: ``makefile("rb")``."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock = sock
        self._deadline = deadline

    def makefile(self, mode: str, *args: Any, **kwargs: Any) -> io.BufferedReader:
        return io.BufferedReader(_DeadlineIO(self._sock, self._deadline))


def _response(
    sock: socket.socket, *args: Any, deadline: float, **kwargs: Any
) -> http.client.HTTPResponse:
    return http.client.HTTPResponse(_DeadlineSocket(sock, deadline), *args, **kwargs)  # type: ignore[arg-type]


class _Deadline:
    """Makes a connection's answer arrive whole within the time left when it is awaited
    (``urllib3`` sets ``timeout`` to what is left of the exchange's total)."""

    timeout: Any
    response_class: Any

    def getresponse(self) -> Any:
        timeout = self.timeout
        if isinstance(timeout, int | float) and timeout > 0:
            deadline = time.monotonic() + float(timeout)
            self.response_class = functools.partial(_response, deadline=deadline)
        return super().getresponse()  # type: ignore[misc]


class _DeadlineConnection(_Deadline, HTTPConnection):
    pass


class _DeadlineHTTPSConnection(_Deadline, HTTPSConnection):
    pass


class _HTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _DeadlineConnection


class _HTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _DeadlineHTTPSConnection


_POOLS: dict[str, type[urllib3.HTTPConnectionPool]] = {"http": _HTTPPool, "https": _HTTPSPool}


class DeadlineAdapter(HTTPAdapter):
    """``requests``' adapter with connections that keep one deadline per exchange (pass
    :func:`exchange_timeout` as the request's ``timeout``); never retries on its own.

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


def exchange_timeout(seconds: float) -> urllib3.Timeout:
    """One deadline of ``seconds`` for connecting and the whole answer.

    Example:
        >>> exchange_timeout(5).total
        5
    """
    return urllib3.Timeout(total=seconds)


def read_body(response: requests.Response, limit: int) -> bytes:
    """The whole body, inflated when compressed, at most ``limit`` bytes (else
    :class:`BodyTooLargeError`); the connection goes back to the pool, or is closed when the body
    was not read to its end. A response built without a connection (a test adapter's) has
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
    raw.release_conn()
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
