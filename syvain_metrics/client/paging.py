"""Reading every row of a metrics query without a cursor.

The contract has no cursor, so a read without ``limit`` pages by moving the sort
key's bound to the last row seen (``from_step`` ascending, ``to_step``
descending; ``from_time`` / ``to_time`` for time order). The bound is inclusive, so
rows at the boundary come again and are dropped by ``event_id``.

**The end of the data is a page that brings nothing new**, never a page shorter than
asked for: a service may cap pages below the size asked for, and a short page is
then only the cap. So a short page is confirmed by one more request from its last
position, which (at the end) holds only rows already seen. A page whose rows all
share one step is read again inside that step, moving the time bound; a page whose
rows all share one step and one millisecond is read once more with the largest page
the service allows, and if even that is full the read stops with an error rather
than loop or drop rows. A bound that does not move (a service ignoring it) stops the
read with an error too.

Rows with a null step sort first ascending and last descending, and no step bound
selects them, so they are read as their own block: ascending, the first page (with
no step bound) shows them, or shows that there are none; descending, one request of
one row looks for them once the steps are done.

While the caller works on a page (decodes it, builds columns, plots it), the next
request is already on its way (``prefetch``), so a read takes about the longer of the
service's time and the client's, not their sum.

Example:
    >>> plan = RowReader(fetch=lambda params: [], page_size=1000)
    >>> plan.read({"metric_name": "loss"}, limit=None)
    []
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import compress, islice
from operator import itemgetter
from typing import Any

from syvain_metrics.client.pages import (
    Advance,
    Fetch,
    Pages,
    Row,
    advance_bound,
    bound_not_kept,
    within_limit,
)
from syvain_metrics.contract.limits import DEFAULT_PAGE_SIZE, MAX_METRIC_ROWS_LIMIT
from syvain_metrics.contract.schemas.rows import RowPage
from syvain_metrics.errors import PagingError

_STEP_BOUNDS = ("step", "from_step", "to_step")
_TIME_ORDER = "step,client_timestamp"


@dataclass
class RowReader:
    """Reads all rows (or the first ``limit``) of a query through ``fetch(params) -> rows``,
    page by page (:meth:`pages`) or whole (:meth:`read`).

    Example:
        >>> RowReader(fetch=lambda params: []).read({}, limit=5)
        []
    """

    fetch: Fetch
    page_size: int = DEFAULT_PAGE_SIZE
    prefetch: bool = False
    """Send the next request while the caller works on the current page."""
    look_ahead: bool = False
    """Send it as soon as the current page's bytes arrive (``fetch`` takes ``on_body``)."""
    _cap: int = field(default=MAX_METRIC_ROWS_LIMIT, init=False, repr=False)

    def __post_init__(self) -> None:
        self.fetch = within_limit(self.fetch)

    def read(self, params: dict[str, Any], *, limit: int | None) -> list[Row]:
        """Rows in the service's order; at most ``limit`` when given, else all of them."""
        return [row for page in self.pages(params, limit=limit) for row in page]

    def pages(self, params: dict[str, Any], *, limit: int | None) -> Iterator[list[Row]]:
        """The rows in the service's order, one list per request that brought new rows.

        With ``limit`` of at most ``page_size``, the read is that one request, as asked.
        """
        order = _Order.of(params)
        one_request = self.page_size if order.pageable else MAX_METRIC_ROWS_LIMIT
        if limit is not None and limit <= min(one_request, MAX_METRIC_ROWS_LIMIT):
            rows = self.fetch({**params, "limit": limit})
            if rows:
                yield rows
            return
        # Paging relies on the order, so ask for it rather than trust a default.
        params = {**params, "sort_by": params.get("sort_by") or _TIME_ORDER}
        pages = Pages(self.fetch, self.prefetch, self.look_ahead)
        left = limit
        try:
            for page in self._all(pages, params, order):
                if left is not None:
                    page = page[:left]
                    left -= len(page)
                if page:
                    yield page
                if left == 0:
                    return
        finally:
            pages.close()  # nothing more goes out for a read that ended or was dropped

    # -- strategy by sort key ---------------------------------------------------------

    def _all(self, pages: Pages, params: dict[str, Any], order: _Order) -> Iterator[list[Row]]:
        if order.primary == "step":
            if any(params.get(k) is not None for k in _STEP_BOUNDS):
                yield from self._by_step(pages, params, order)
            elif order.descending:
                yield from self._by_step(pages, params, order)
                nulls = self._null_block(pages, params, order)
                nulls.reverse()
                if nulls:
                    yield nulls
            else:
                yield from self._ascending_from_the_start(pages, params, order)
        elif order.primary == "client_timestamp":
            yield from self._by_time(pages, params, order.descending, set())
        else:  # server_timestamp or series: no bound moves with them
            yield self._single_page(pages, params)

    def _page(
        self,
        pages: Pages,
        params: dict[str, Any],
        size: int | None = None,
        advance: Advance | None = None,
    ) -> list[Row]:
        rows = pages.get({**params, "limit": size or self.page_size}, advance)
        _check_sorted(rows, params)
        return rows

    def _single_page(self, pages: Pages, params: dict[str, Any]) -> list[Row]:
        """Every row of a query no bound can page: one largest page, which must not be full."""
        rows = self._page(pages, params, MAX_METRIC_ROWS_LIMIT)
        if len(rows) >= min(MAX_METRIC_ROWS_LIMIT, self._cap):
            raise PagingError(
                f"More than {len(rows):,} rows at one sort position or in an order that cannot "
                f"be paged (sort_by={params.get('sort_by')}); pass limit=, narrow the query, "
                "or sort by step or client_timestamp."
            )
        return rows

    def _learn_cap(self, short: int | None, rows: list[Row]) -> None:
        """A page shorter than asked for was not the end: the service caps pages at that."""
        if short is not None and len(rows) >= short:
            self._cap = min(self._cap, short)

    def _ascending_from_the_start(
        self, pages: Pages, params: dict[str, Any], order: _Order
    ) -> Iterator[list[Row]]:
        rows = self._page(pages, params, advance=("from_step", "step"))
        nulls = 0
        while nulls < len(rows) and rows[nulls]["step"] is None:
            nulls += 1
        if nulls == len(rows) and rows:
            # Only null steps so far: the block may go on beyond this page.
            block = self._null_block(pages, params, order, first=rows)
            if block:
                yield block
            yield from self._by_step(pages, {**params, "from_step": 0}, order)
            return
        if nulls:
            yield rows[:nulls]  # null steps sort first: the block ends inside this page
        yield from self._by_step(pages, params, order, first=rows)

    def _null_block(
        self,
        pages: Pages,
        params: dict[str, Any],
        order: _Order,
        first: list[Row] | None = None,
    ) -> list[Row]:
        """Rows whose step is null, in ascending order (they sort before every step);
        ``first`` is the first page of the ascending read, when already fetched."""
        query = {k: v for k, v in params.items() if k not in _STEP_BOUNDS}
        query["sort_direction"] = "asc"
        if first is None:
            probe = self._page(pages, query, 1)
            if not probe or probe[0]["step"] is not None:
                return []
            first = self._page(pages, query)
        nulls = [row for row in first if row["step"] is None]
        if len(nulls) < len(first):
            return nulls  # a step follows the block inside this page: it is complete
        return self._confirmed_nulls(pages, query, order, nulls)

    def _confirmed_nulls(
        self, pages: Pages, query: dict[str, Any], order: _Order, nulls: list[Row]
    ) -> list[Row]:
        """The rest of a null block whose first page held only null steps."""
        if not order.ties_by_time:
            # No bound moves inside the block in this order: one largest page holds it.
            rows = self._single_page(pages, query)
            return [row for row in rows if row["step"] is None]
        block = list(nulls)
        query = {**query, "sort_by": order.time_keys}
        seen = {row["event_id"] for row in nulls}
        while True:
            first, last = nulls[0]["client_timestamp_ms"], nulls[-1]["client_timestamp_ms"]
            if first == last:
                exact = {**query, "from_time": last, "to_time": last}
                crowded = [r for r in self._single_page(pages, exact) if r["step"] is None]
                block.extend(r for r in crowded if r["event_id"] not in seen)
                seen = set()
                last += 1
            else:
                seen = {r["event_id"] for r in nulls if r["client_timestamp_ms"] == last}
            advance_bound(query, "from_time", last)
            rows = self._page(pages, query)
            nulls = [row for row in rows if row["step"] is None]
            head = nulls[0]["client_timestamp_ms"] if nulls else None
            if seen and head != last:
                raise bound_not_kept("from_time", last, head)
            fresh = [row for row in nulls if row["event_id"] not in seen]
            block.extend(fresh)
            if not fresh or len(nulls) < len(rows):
                return block

    def _by_step(
        self,
        pages: Pages,
        params: dict[str, Any],
        order: _Order,
        first: list[Row] | None = None,
    ) -> Iterator[list[Row]]:
        """Rows with a step, paging by the step bound; ``first`` is the first page when the
        caller already fetched it (without its null steps)."""
        descending = order.descending
        bound = "to_step" if descending else "from_step"
        advance = (bound, "step")
        query = dict(params)
        seen: set[str] = set()  # rows at the bound that the previous page already gave
        short: int | None = None  # the length of the previous page, when shorter than asked
        while True:
            if first is not None:
                rows, first = first, None
            else:
                rows = self._page(pages, query, advance=advance)
            nulls = _null_steps(rows)  # after the steps descending, before them ascending
            stepped = rows if not nulls else rows[:-nulls] if descending else rows[nulls:]
            head = int(stepped[0]["step"]) if stepped else None
            if seen and head != query[bound]:
                raise bound_not_kept(bound, query[bound], head)
            fresh = _fresh(stepped, seen)
            # Null steps sort after every step descending: once one shows, the steps are done.
            # (Ascending, only the first page can hold them, before its steps.)
            if not fresh or (descending and len(stepped) < len(rows)):
                if fresh:
                    yield fresh
                return
            self._learn_cap(short, rows)
            short = len(rows) if len(rows) < min(self.page_size, self._cap) else None
            last = int(stepped[-1]["step"])
            if head == last:
                # One step only: read that step alone (this page is its first), then move
                # past it.
                yield from self._within_step(pages, params, last, order, seen, stepped)
                if descending and last == 0:
                    return
                advance_bound(query, bound, last - 1 if descending else last + 1)
                seen = set()
                continue
            advance_bound(query, bound, last)
            pages.ahead({**query, "limit": self.page_size}, advance)
            seen = {row["event_id"] for row in stepped if row["step"] == last}
            yield fresh

    def _within_step(
        self,
        pages: Pages,
        params: dict[str, Any],
        step: int,
        order: _Order,
        seen: set[str],
        first: list[Row],
    ) -> Iterator[list[Row]]:
        """Every row of one step, ``first`` being its first page and ``seen`` the ids of the
        step's rows given before it."""
        narrowed = {k: v for k, v in params.items() if k not in ("from_step", "to_step")}
        narrowed["step"] = step
        if not order.ties_by_time:
            rows = self._single_page(pages, narrowed)
            fresh = [row for row in rows if row["event_id"] not in seen]
            if fresh:
                yield fresh
            return
        # The step's first page by time is ``first``: the same keys order the rows within it.
        narrowed["sort_by"] = order.time_keys
        yield from self._by_time(pages, narrowed, order.descending, seen, first)

    def _by_time(
        self,
        pages: Pages,
        params: dict[str, Any],
        descending: bool,
        seen: set[str],
        first: list[Row] | None = None,
    ) -> Iterator[list[Row]]:
        """Rows paged by the client-time bound; ``first`` is the first page when already
        fetched, and ``seen`` the ids of its rows already given."""
        bound = "to_time" if descending else "from_time"
        advance = (bound, "client_timestamp_ms")
        query = dict(params)
        check = False  # whether the page must start at the bound (rows there were seen)
        short: int | None = None
        while True:
            handed = first is not None  # part of a page asked for otherwise: no length to judge
            if first is not None:
                rows, first = first, None
            else:
                rows = self._page(pages, query, advance=advance)
            head = rows[0]["client_timestamp_ms"] if rows else None
            if check and head != query[bound]:
                raise bound_not_kept(bound, query[bound], head)
            fresh = _fresh(rows, seen)
            if not fresh:
                return
            self._learn_cap(short, rows)
            short = None if handed or len(rows) >= min(self.page_size, self._cap) else len(rows)
            last = rows[-1]["client_timestamp_ms"]
            if head == last:
                # One millisecond only: take it in one largest page, then move past it.
                yield fresh
                given = {row["event_id"] for row in rows}
                exact = {**query, "from_time": last, "to_time": last}
                crowded = self._single_page(pages, exact)
                rest = [row for row in crowded if row["event_id"] not in given]
                if rest:
                    yield rest
                if descending and last == 0:
                    return
                advance_bound(query, bound, last - 1 if descending else last + 1)
                seen, check = set(), False
                continue
            advance_bound(query, bound, last)
            pages.ahead({**query, "limit": self.page_size}, advance)
            seen = {row["event_id"] for row in rows if row["client_timestamp_ms"] == last}
            check = True
            yield fresh


def _null_steps(rows: list[Row]) -> int:
    steps = rows.columns.get("step") if isinstance(rows, RowPage) else None
    if steps is None:
        steps = list(map(itemgetter("step"), rows))
    return steps.count(None)


def _fresh(rows: list[Row], seen: set[str]) -> list[Row]:
    """The rows not yet given. Those given sat at the bound, so they open the page, in the
    same order: the page less its head (a slice, which keeps a page's columns); anything
    else (rows written meanwhile at the bound) is filtered row by row."""
    if not seen:
        return rows
    head = len(seen)
    if all(map(seen.__contains__, map(itemgetter("event_id"), islice(rows, head)))):
        return rows[head:]  # every id seen is in the head: none further on
    return [row for row in rows if row["event_id"] not in seen]


_SORT_FIELD = {
    "step": "step",
    "client_timestamp": "client_timestamp_ms",
    "server_timestamp": "server_timestamp_ms",
}
_NULL_STEP = float("-inf")  # null steps sort before every step ascending, after descending


def _sort_values(rows: list[Row], key: str) -> list[Any]:
    values = list(map(itemgetter(_SORT_FIELD[key]), rows))
    if key == "step" and None in values:
        values = [_NULL_STEP if value is None else value for value in values]
    return values


def _check_sorted(rows: list[Row], params: dict[str, Any]) -> None:
    """Raise :class:`PagingError` unless a page follows the order it was asked for (as far as
    the known keys go: ``series`` and the final ``event_id`` are not checked). Whole-column
    comparisons: a key after the first is looked at only where the keys before it tie."""
    keys: list[str] = []
    for name in str(params.get("sort_by") or "").split(","):
        if name not in _SORT_FIELD:
            break
        keys.append(name)
    if not keys or len(rows) < 2:
        return
    comes_first = operator.gt if params.get("sort_direction") == "desc" else operator.lt
    ties: list[int] | None = None  # pairs (i, i + 1) whose keys so far are equal
    for key in keys:
        if ties is None:
            values = _sort_values(rows, key)
            left, right = values[:-1], values[1:]
            pairs: Iterable[int] = range(len(left))
        else:
            tied = [rows[i] for i in ties] + [rows[i + 1] for i in ties]
            values = _sort_values(tied, key)
            left, right = values[: len(ties)], values[len(ties) :]
            pairs = ties
        if any(map(comes_first, right, left)):
            raise PagingError(
                f"The service's answer is not in the order asked for (sort_by={params['sort_by']}): "
                "paging cannot rely on it."
            )
        ties = list(compress(pairs, map(operator.eq, left, right)))
        if not ties:
            return


@dataclass(frozen=True)
class _Order:
    """The requested order, as far as paging cares."""

    primary: str
    descending: bool
    ties_by_time: bool
    """Rows equal on the primary key follow client time (so a time bound can page them)."""
    time_keys: str = _TIME_ORDER
    """The sort keys to send when paging by time inside a step (the user's, when given)."""

    @property
    def pageable(self) -> bool:
        return self.primary in ("step", "client_timestamp")

    @classmethod
    def of(cls, params: dict[str, Any]) -> _Order:
        explicit = params.get("sort_by")
        keys = str(explicit).split(",") if explicit else ["step", "client_timestamp"]
        return cls(
            primary=keys[0],
            descending=params.get("sort_direction") == "desc",
            ties_by_time=len(keys) > 1 and keys[1] == "client_timestamp",
            time_keys=",".join(keys) if keys[:2] == _TIME_ORDER.split(",") else _TIME_ORDER,
        )
