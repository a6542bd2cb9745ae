"""Sending the requests of a paged read: the fetch function's contract, a guard on the
``limit`` a service must keep, and the prefetch that sends the next request while the caller
works on the current page (or, with ``look_ahead``, as soon as the current page's bytes
arrive, before they are decoded).

Nothing here knows the session or the resources: a read is given a ``fetch(params) -> rows``.

Example:
    >>> pages = Pages(lambda params: [{"event_id": "a"}], prefetch=True, look_ahead=False)
    >>> pages.ahead({"limit": 1})
    >>> pages.get({"limit": 1})
    [{'event_id': 'a'}]
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from syvain_metrics.errors import MetricsApiResponseError, PagingError

Row = dict[str, Any]
Fetch = Callable[..., list[Row]]
"""``fetch(params) -> rows``; with ``look_ahead``, also ``fetch(params, on_body=callback)``,
which calls ``callback(raw_bytes)`` when a 2xx answer arrives, before decoding it."""


def within_limit(fetch: Fetch) -> Fetch:
    """``fetch`` that refuses an answer with more rows than the ``limit`` it asked for (a
    :class:`~syvain_metrics.MetricsApiResponseError`), rather than hand them on.

    Example:
        >>> within_limit(lambda params: [{}, {}])({"limit": 1})
        Traceback (most recent call last):
        ...
        syvain_metrics.errors.MetricsApiResponseError: The service answered 2 rows to a request for at most 1: it does not keep the contract's limit.
    """

    def bounded(params: dict[str, Any], **kwargs: Any) -> list[Row]:
        rows = fetch(params, **kwargs)
        limit = params.get("limit")
        if isinstance(limit, int) and len(rows) > limit:
            raise MetricsApiResponseError(
                f"The service answered {len(rows):,} rows to a request for at most {limit:,}: "
                "it does not keep the contract's limit."
            )
        return rows

    return bounded


def _frozen(params: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(
        (key, tuple(value) if isinstance(value, list) else value)
        for key, value in sorted(params.items())
    )


Advance = tuple[str, str]
"""How a page moves the read on: the bound parameter and the row field it takes."""

_DECODER = json.JSONDecoder()


def last_row(body: bytes) -> dict[str, Any] | None:
    """A guess at the last row of a rows answer, read from the end of its raw bytes without
    decoding the rest; ``None`` when the guess fails. Only ever used to send the next request
    early: the decoded page decides, and a wrong guess costs one request.

    Example:
        >>> last_row(b'{"data":{"rows":[{"event_id":"a","step":1.0},{"event_id":"b","step":2.0}]},"error":null}')
        {'event_id': 'b', 'step': 2.0}
    """
    end = body.rfind(b"}]")
    start = end
    for _ in range(4):  # '{"' may also close a string that ends with '{'
        start = body.rfind(b'{"', 0, start)
        if start < 0:
            return None
        try:
            row, stop = _DECODER.raw_decode(body[start : end + 1].decode())
        except ValueError:
            continue
        if isinstance(row, dict) and "event_id" in row and stop == end + 1 - start:
            return row
    return None


class _Ticket:
    """One request of a read: its query, its answer to come, and whether it is still wanted."""

    __slots__ = ("future", "key", "live")

    def __init__(self, key: tuple[tuple[str, Any], ...]) -> None:
        self.key = key
        self.future: Future[list[Row]] = Future()
        self.live = True


class Pages:
    """Sends a read's requests. With ``prefetch``, the one announced by :meth:`ahead` goes out
    on a daemon thread at once and :meth:`get` of the same query takes its answer; with
    ``look_ahead`` too, as soon as a page's raw bytes arrive, the request after it (the bound
    moved to the page's last row) goes out before the page is even decoded, at most one
    request ahead of the caller."""

    def __init__(self, fetch: Fetch, prefetch: bool, look_ahead: bool) -> None:
        self._fetch = fetch
        self._prefetch = prefetch
        self._look_ahead = look_ahead and prefetch
        self._lock = threading.Lock()
        self._ahead: _Ticket | None = None
        self._closed = False

    def get(self, params: dict[str, Any], advance: Advance | None = None) -> list[Row]:
        key = _frozen(params)
        with self._lock:
            ahead, self._ahead = self._ahead, None
        if ahead is not None:
            if ahead.key == key:
                return ahead.future.result()
            ahead.live = False
        return self._run(params, _Ticket(key), advance)

    def ahead(
        self, params: dict[str, Any], advance: Advance | None = None, *, guessed: bool = False
    ) -> None:
        if not self._prefetch:
            return
        query = dict(params)
        ticket = _Ticket(_frozen(query))
        with self._lock:
            if self._closed:
                return
            current = self._ahead
            if current is not None:
                if guessed or current.key == ticket.key:
                    return  # one request ahead is enough; or it is already on its way
                current.live = False
            self._ahead = ticket

        def run() -> None:
            try:
                ticket.future.set_result(self._run(query, ticket, advance))
            except BaseException as error:  # handed to whoever asks for the page
                ticket.future.set_exception(error)

        # A daemon thread, not a pool: a read the caller abandons must not hold up exit.
        threading.Thread(target=run, name="syvain-metrics-prefetch", daemon=True).start()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._ahead is not None:
                self._ahead.live = False
                self._ahead = None

    def _run(self, params: dict[str, Any], ticket: _Ticket, advance: Advance | None) -> list[Row]:
        if not self._look_ahead or advance is None:
            return self._fetch(params)

        def guess(body: bytes) -> None:
            if self._closed or not ticket.live or self._ahead is not None:
                return
            bound, field_name = advance
            row = last_row(body)
            value = None if row is None else row.get(field_name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                return
            if params.get(bound) != int(value):
                self.ahead({**params, bound: int(value)}, advance, guessed=True)

        return self._fetch(params, on_body=guess)


def advance_bound(query: dict[str, Any], bound: str, value: int) -> None:
    """Move a bound; a bound that would not move means the service ignores it."""
    if query.get(bound) == value:
        raise PagingError(
            f"The service did not honour {bound}={value}: paging cannot advance, and "
            "reading on would repeat rows forever."
        )
    query[bound] = value


def bound_not_kept(bound: str, value: int, first: int | None) -> PagingError:
    """The next page did not start at ``value``, where rows were already seen."""
    if first is not None and (first < value if bound.startswith("from") else first > value):
        return PagingError(
            f"The service did not honour {bound}={value}: paging cannot advance, and reading "
            "on would repeat rows forever."
        )
    return PagingError(
        f"The service's {bound}={value} left out rows at {value} already seen: paging needs "
        "inclusive bounds, and reading on could skip rows."
    )
