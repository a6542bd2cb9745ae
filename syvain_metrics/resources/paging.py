"""Reading every row of a metrics query without a cursor.

The contract has no cursor, so a read without ``limit`` pages by moving the sort
key's bound past the last row seen (``from_step`` ascending, ``to_step``
descending; ``from_time`` / ``to_time`` for time order). The bound is inclusive, so
rows at the boundary come again and are dropped by ``event_id``. A page that
cannot advance (every row at one step) is read again inside that step, moving the
time bound; a page that still cannot advance (every row at one step and one
millisecond) is read once more with the largest page the service allows, and if
even that is full the read stops with an error rather than loop or drop rows. A
bound that does not move (a service ignoring it) stops the read with an error too.

A page shorter than asked for is taken as the last one, so the page size must not
exceed what the service honours: the default, 1,000, is the default
``limit`` for metric rows in the contract (section 8).

Rows with a null step sort first ascending and last descending, and no step bound
selects them, so they are read as their own block: with no step bound, ordered by
step ascending, moving ``from_time`` until a non-null step shows up (or, when ties
are not broken by client time, in one largest page).

Example:
    >>> plan = RowReader(fetch=lambda params: [], page_size=1000)
    >>> plan.read({"metric_name": "loss"}, limit=None)
    []
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from syvain_metrics.errors import MetricsApiError
from syvain_metrics.schemas.limits import DEFAULT_PAGE_SIZE, MAX_METRIC_ROWS_LIMIT

if TYPE_CHECKING:
    from marshmallow import Schema

    from syvain_metrics.routes import Route
    from syvain_metrics.session import Session

Row = dict[str, Any]
Fetch = Callable[[dict[str, Any]], list[Row]]


_STEP_BOUNDS = ("step", "from_step", "to_step")
_TIME_ORDER = "step,client_timestamp"


class PagingError(MetricsApiError):
    """A read cannot go on without losing or repeating rows: more rows at one sort position
    than the largest page, an answer out of the order asked for, or a bound the service does
    not keep. Raised instead of returning a silent prefix.

    Example:
        >>> issubclass(PagingError, MetricsApiError)
        True
    """


@dataclass
class RowReader:
    """Reads all rows (or the first ``limit``) of a query through ``fetch(params) -> rows``."""

    fetch: Fetch
    page_size: int = DEFAULT_PAGE_SIZE

    def read(self, params: dict[str, Any], *, limit: int | None) -> list[Row]:
        """Rows in the service's order; at most ``limit`` when given, else all of them."""
        order = _Order.of(params)
        one_page = self.page_size if order.pageable else MAX_METRIC_ROWS_LIMIT
        if limit is not None and limit <= min(one_page, MAX_METRIC_ROWS_LIMIT):
            return self.fetch({**params, "limit": limit})
        # Paging relies on the order, so ask for it rather than trust a default.
        params = {**params, "sort_by": params.get("sort_by") or _TIME_ORDER}
        out: list[Row] = []
        for row in self._all(params, order):
            out.append(row)
            if limit is not None and len(out) >= limit:
                break
        return out

    # -- strategy by sort key ---------------------------------------------------------

    def _all(self, params: dict[str, Any], order: _Order) -> Iterator[Row]:
        seen: set[str] = set()
        if order.primary == "step":
            nulls: list[Row] = []
            if not any(params.get(k) is not None for k in _STEP_BOUNDS):
                nulls = self._null_step_block(params, order, seen)
            if not order.descending:
                yield from nulls
            yield from self._by_step(params, order, seen)
            if order.descending:
                yield from reversed(nulls)
        elif order.primary == "client_timestamp":
            yield from self._by_time(params, order.descending, seen)
        else:  # server_timestamp or series: no bound moves with them
            yield from self._single_page(params)

    def _page(self, params: dict[str, Any], size: int | None = None) -> tuple[list[Row], bool]:
        size = size or self.page_size
        rows = self.fetch({**params, "limit": size})
        _check_sorted(rows, params)
        return rows, len(rows) >= size

    def _single_page(self, params: dict[str, Any]) -> list[Row]:
        rows, full = self._page(params, MAX_METRIC_ROWS_LIMIT)
        if full:
            raise PagingError(
                f"More than {MAX_METRIC_ROWS_LIMIT:,} rows in an order that cannot be paged "
                f"(sort_by={params.get('sort_by')}); pass limit=, narrow the query, or sort by "
                "step or client_timestamp."
            )
        return rows

    @staticmethod
    def _fresh(rows: list[Row], seen: set[str]) -> Iterator[Row]:
        for row in rows:
            event_id = row["event_id"]
            if event_id not in seen:
                seen.add(event_id)
                yield row

    def _null_step_block(self, params: dict[str, Any], order: _Order, seen: set[str]) -> list[Row]:
        """Rows whose step is null, in ascending order (they sort before every step)."""
        query = {**params, "sort_direction": "asc"}
        rows, full = self._page(query)
        nulls = [row for row in rows if row["step"] is None]
        if not full or len(nulls) < len(rows):
            return list(self._fresh(nulls, seen))
        if not order.ties_by_time:
            # No bound moves inside the block in this order: one largest page holds it.
            rows = self._single_page(query)
            return list(self._fresh([row for row in rows if row["step"] is None], seen))
        block = list(self._fresh(nulls, seen))
        query["sort_by"] = order.time_keys
        while True:
            last = nulls_last_seen = nulls[-1]["client_timestamp_ms"]
            if nulls[0]["client_timestamp_ms"] == last:
                exact = {**query, "from_time": last, "to_time": last}
                block.extend(
                    self._fresh([r for r in self._single_page(exact) if r["step"] is None], seen)
                )
                last += 1
            self._advance(query, "from_time", last)
            rows, full = self._page(query)
            nulls = [row for row in rows if row["step"] is None]
            first = nulls[0]["client_timestamp_ms"] if nulls else None
            if last == nulls_last_seen and first != last:
                raise _bound_not_kept("from_time", last, first)
            block.extend(self._fresh(nulls, seen))
            if not full or len(nulls) < len(rows):
                return block

    def _by_step(self, params: dict[str, Any], order: _Order, seen: set[str]) -> Iterator[Row]:
        descending = order.descending
        bound = "to_step" if descending else "from_step"
        query = dict(params)
        if params.get("step") is None and query.get(bound) is None and not descending:
            query[bound] = 0  # null steps were read as their own block
        expect: int | None = None  # a step already seen that the next page must start with
        while True:
            rows, full = self._page(query)
            stepped = [row for row in rows if row["step"] is not None]
            first = int(stepped[0]["step"]) if stepped else None
            if expect is not None and first != expect:
                raise _bound_not_kept(bound, expect, first)
            yield from self._fresh(stepped, seen)
            # Null steps sort after every step descending: once one shows, the steps are done.
            if not full or not stepped or len(stepped) < len(rows):
                return
            last = expect = int(stepped[-1]["step"])
            if int(stepped[0]["step"]) == last:
                # A whole page at one step: read that step alone, then move past it.
                yield from self._within_step(params, last, order, seen)
                if descending and last == 0:
                    return
                last = last - 1 if descending else last + 1
                expect = None
            self._advance(query, bound, last)

    def _within_step(
        self, params: dict[str, Any], step: int, order: _Order, seen: set[str]
    ) -> Iterator[Row]:
        narrowed = {k: v for k, v in params.items() if k not in ("from_step", "to_step")}
        narrowed["step"] = step
        if not order.ties_by_time:
            yield from self._fresh(self._single_page(narrowed), seen)
            return
        narrowed["sort_by"] = order.time_keys
        yield from self._by_time(narrowed, order.descending, seen)

    def _by_time(self, params: dict[str, Any], descending: bool, seen: set[str]) -> Iterator[Row]:
        bound = "to_time" if descending else "from_time"
        query = dict(params)
        expect: int | None = None  # a time already seen that the next page must start with
        while True:
            rows, full = self._page(query)
            first = rows[0]["client_timestamp_ms"] if rows else None
            if expect is not None and first != expect:
                raise _bound_not_kept(bound, expect, first)
            yield from self._fresh(rows, seen)
            if not full:
                return
            last = expect = rows[-1]["client_timestamp_ms"]
            if rows[0]["client_timestamp_ms"] == last:
                # A whole page at one millisecond: take it in one largest page.
                exact = {**query, "from_time": last, "to_time": last}
                yield from self._fresh(self._single_page(exact), seen)
                last = last - 1 if descending else last + 1
                expect = None
            self._advance(query, bound, last)

    @staticmethod
    def _advance(query: dict[str, Any], bound: str, value: int) -> None:
        """Move a bound; a bound that would not move means the service ignores it."""
        if query.get(bound) == value:
            raise PagingError(
                f"The service did not honour {bound}={value}: paging cannot advance, and "
                "reading on would repeat rows forever."
            )
        query[bound] = value


def _bound_not_kept(bound: str, value: int, first: int | None) -> PagingError:
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


_SORT_VALUE: dict[str, Callable[[Row], Any]] = {
    # Null steps sort before every step ascending (and so after them descending).
    "step": lambda row: (row["step"] is not None, row["step"] or 0),
    "client_timestamp": lambda row: row["client_timestamp_ms"],
    "server_timestamp": lambda row: row["server_timestamp_ms"],
}


def _check_sorted(rows: list[Row], params: dict[str, Any]) -> None:
    """Raise :class:`PagingError` unless a page follows the order it was asked for (as far as
    the known keys go: ``series`` and the final ``event_id`` are not checked)."""
    keys: list[Callable[[Row], Any]] = []
    for name in str(params.get("sort_by") or "").split(","):
        if name not in _SORT_VALUE:
            break
        keys.append(_SORT_VALUE[name])
    if not keys or len(rows) < 2:
        return
    values = [tuple(key(row) for key in keys) for row in rows]
    ordered = sorted(values, reverse=params.get("sort_direction") == "desc")
    if values != ordered:
        raise PagingError(
            f"The service's answer is not in the order asked for (sort_by={params['sort_by']}): "
            "paging cannot rely on it."
        )


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


def read_by_time(
    fetch: Fetch,
    params: dict[str, Any],
    *,
    bound: str,
    time_field: str,
    descending: bool,
    page_size: int,
    largest_page: int,
    limit: int | None,
) -> list[Row]:
    """Every item of a list ordered by a creation time (experiments newest first, annotations
    oldest first), or at most ``limit``, paging by moving the inclusive ``bound`` parameter
    (``to`` or ``from``) to the last time seen and dropping repeats by ``id``. A page whose
    items all share one time is read again as that one time, in the largest page.

    Example:
        >>> read_by_time(lambda params: [], {}, bound="to", time_field="created_at_ms",
        ...              descending=True, page_size=100, largest_page=1000, limit=None)
        []
    """
    if limit is not None and limit <= largest_page:
        return fetch({**params, "limit": limit})
    query = dict(params)
    seen: set[str] = set()
    out: list[Row] = []
    while True:
        items = fetch({**query, "limit": page_size})
        for item in items:
            if item["id"] not in seen:
                seen.add(item["id"])
                out.append(item)
        if limit is not None and len(out) >= limit:
            return out[:limit]
        if len(items) < page_size:
            return out
        times = [item[time_field] for item in items]
        if times != sorted(times, reverse=descending):
            raise PagingError(
                f"The service's answer is not ordered by {time_field}: paging cannot rely on "
                f"it; pass limit= (at most {largest_page}) to read one page."
            )
        last = times[-1]
        if times[0] == last:
            crowded = fetch({**query, "from": last, "to": last, "limit": largest_page})
            if len(crowded) >= largest_page:
                raise PagingError(
                    f"More than {largest_page} items share {time_field}={last}: they cannot "
                    "be read completely."
                )
            for item in crowded:
                if item["id"] not in seen:
                    seen.add(item["id"])
                    out.append(item)
            last = last - 1 if descending else last + 1
        RowReader._advance(query, bound, last)


def read_created(
    session: Session,
    route: Route,
    segments: tuple[str, ...],
    reply: Schema,
    items_key: str,
    query: dict[str, Any],
    *,
    newest_first: bool,
    limits: tuple[int, int],
) -> list[Row]:
    """A list ordered by ``created_at_ms`` (experiments newest first, annotations oldest
    first): every item, or at most ``query["limit"]``, through :func:`read_by_time`;
    ``limits`` are the list's (default, largest) page sizes."""

    def fetch(params: dict[str, Any]) -> list[Row]:
        items: list[Row] = session.call(route, *segments, reply=reply, query=params)[items_key]
        return items

    query = dict(query)
    limit = query.pop("limit", None)
    return read_by_time(
        fetch,
        query,
        bound="to" if newest_first else "from",
        time_field="created_at_ms",
        descending=newest_first,
        page_size=limits[0],
        largest_page=limits[1],
        limit=limit,
    )
