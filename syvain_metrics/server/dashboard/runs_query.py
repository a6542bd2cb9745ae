"""The runs table's state, read from and written to the list page's URL: the folder (and
whether its subfolders' runs are included), the filters, the metric columns and the sort.
The URL is the whole state: reloading or sharing it shows the same table.

Query parameters:

- ``folder``: a folder id (all runs without it); ``sub=1``: include its subfolders' runs;
- ``status``, ``q``: a status, and text found in the slug or description;
- ``meta.<key>=<value>``: runs whose metadata ``key`` is ``value`` (repeat it for either of
  several values; numbers compare as numbers, so ``0.010`` finds ``0.01``);
- ``col``: a metric column, ``<sub-series>:<last|min|max>`` such as
  ``loss[split=valid]:min`` (repeat it; an empty ``col`` alone means none; without any
  ``col`` the table shows the first sub-series' last values);
- ``sort``: ``slug``, ``status``, ``created``, ``duration``, ``folder``, ``meta:<key>`` or
  ``metric:<column>`` (that column is shown, whether ``col`` names it or not); ``order``:
  ``asc`` or ``desc``.

Example:
    >>> query = RunsQuery.parse({"col": ["loss[split=valid]:min"], "sort": ["metric:loss[split=valid]:min"]})
    >>> query.columns, query.sort, query.order
    (['loss[split=valid]:min'], 'metric:loss[split=valid]:min', 'asc')
    >>> query.url(sort="slug", order="desc")
    '/dashboard/?col=loss%5Bsplit%3Dvalid%5D%3Amin&sort=slug&order=desc'
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlencode

from syvain_metrics.contract.limits import EXPERIMENT_STATUSES
from syvain_metrics.contract.operations import DASHBOARD_PREFIX
from syvain_metrics.server.errors import ApiError

HOWS = ("last", "min", "max")
"""What a metric column shows of a sub-series: its last value (by step, then client time, as
reads order events), its smallest or its largest."""

BUILT_IN_SORTS = ("slug", "status", "created", "duration", "folder")
"""The columns every table has, by the name ``sort`` gives them."""

MAX_COLUMNS = 40
"""At most this many metric columns in one table."""

DEFAULT_COLUMNS = 4
"""Without ``col``, the table shows the last value of this many sub-series (the first ones)."""

META_PREFIX = "meta."
"""A metadata filter's parameter is ``meta.<key>``."""


def _bad(message: str) -> ApiError:
    return ApiError(400, "validation_error", message)


def plain(value: Any) -> str:
    """A metadata value as written in a label or a filter: text as it is, else JSON.

    Example:
        >>> plain("valid"), plain(0.01), plain(True)
        ('valid', '0.01', 'true')
    """
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def series_label(name: str, metadata: Mapping[str, Any]) -> str:
    """A sub-series' label, as the SDK's summaries name it: the metric, then its event
    metadata in brackets, keys in order.

    Example:
        >>> series_label("loss", {"split": "valid"}), series_label("loss", {})
        ('loss[split=valid]', 'loss')
        >>> series_label("acc", {"split": "test", "k": 5})
        'acc[k=5,split=test]'
    """
    if not metadata:
        return name
    inner = ",".join(f"{key}={plain(metadata[key])}" for key in sorted(metadata))
    return f"{name}[{inner}]"


def split_column(column: str) -> tuple[str, str]:
    """A metric column's sub-series label and what it shows; 400 when it is not
    ``<label>:<last|min|max>``.

    Example:
        >>> split_column("loss[split=valid]:min")
        ('loss[split=valid]', 'min')
    """
    label, _, how = column.rpartition(":")
    if not label or how not in HOWS:
        raise _bad(
            f"The column {column!r} is not '<metric>[<metadata>]:<how>' with how one of "
            f"{', '.join(HOWS)} (e.g. 'loss[split=valid]:min')."
        )
    return label, how


def number(text: str) -> float | None:
    """``text`` as a finite number, else ``None``.

    Example:
        >>> number("0.010"), number("adam"), number("nan")
        (0.01, None, None)
    """
    try:
        found = float(text)
    except ValueError:
        return None
    return found if found - found == 0 else None


def value_matches(value: Any, wanted: str) -> bool:
    """Whether a metadata value is the filter's text: numbers as numbers, anything else by
    its text.

    Example:
        >>> value_matches(0.01, "0.010"), value_matches("adam", "adam"), value_matches(True, "1")
        (True, True, False)
    """
    if isinstance(value, int | float) and not isinstance(value, bool):
        return number(wanted) == value
    return plain(value) == wanted


@dataclass(frozen=True)
class RunsQuery:
    """The state of the runs table (see the module's description of each parameter).

    Example:
        >>> RunsQuery(folder="f1", subfolders=True, status="done").url()
        '/dashboard/?folder=f1&sub=1&status=done'
    """

    folder: str | None = None
    subfolders: bool = False
    status: str | None = None
    text: str = ""
    filters: tuple[tuple[str, tuple[str, ...]], ...] = ()
    columns: list[str] = field(default_factory=list)
    explicit_columns: bool = False
    sort: str | None = None
    order: str = "desc"

    @classmethod
    def parse(cls, args: Mapping[str, Sequence[str]]) -> RunsQuery:
        """The state a URL's query asks for (each parameter's values in order); 400 for a
        value it cannot mean.

        Example:
            >>> RunsQuery.parse({"order": ["up"]})
            Traceback (most recent call last):
            ...
            syvain_metrics.server.errors.ApiError: order is 'asc' or 'desc', not 'up'.
        """

        def one(name: str) -> str:
            values = args.get(name) or []
            return values[-1].strip() if values else ""

        sub = one("sub")
        if sub not in ("", "0", "1"):
            raise _bad(f"sub is 1 (include the subfolders' runs) or 0, not {sub!r}.")
        status = one("status") or None
        if status is not None and status not in EXPERIMENT_STATUSES:
            raise _bad(f"status is one of {', '.join(EXPERIMENT_STATUSES)}, not {status!r}.")
        columns: list[str] = []
        for value in args.get("col") or []:
            value = value.strip()
            if value and value not in columns:
                split_column(value)
                columns.append(value)
        if len(columns) > MAX_COLUMNS:
            raise _bad(f"A table shows at most {MAX_COLUMNS} metric columns.")
        filters = []
        for name in sorted(args):
            if name.startswith(META_PREFIX):
                key = name[len(META_PREFIX) :]
                values = tuple(dict.fromkeys(v.strip() for v in args[name] if v.strip()))
                if not key:
                    raise _bad("A metadata filter names its key: meta.<key>=<value>.")
                if values:
                    filters.append((key, values))
        sort = one("sort") or None
        if sort is not None:
            if sort.startswith("metric:"):
                split_column(sort[len("metric:") :])  # the table shows it, even if col does not
            elif not (sort in BUILT_IN_SORTS or (sort.startswith("meta:") and len(sort) > 5)):
                raise _bad(
                    f"sort is one of {', '.join(BUILT_IN_SORTS)}, meta:<key> or "
                    f"metric:<column>, not {sort!r}."
                )
        order = one("order") or ("desc" if sort in (None, "created") else "asc")
        if order not in ("asc", "desc"):
            raise _bad(f"order is 'asc' or 'desc', not {order!r}.")
        return cls(
            folder=one("folder") or None,
            subfolders=sub == "1",
            status=status,
            text=one("q"),
            filters=tuple(filters),
            columns=columns,
            explicit_columns="col" in args,
            sort=sort,
            order=order,
        )

    def with_columns(self, columns: list[str]) -> RunsQuery:
        """The same state with these metric columns (the defaults filled in)."""
        return replace(self, columns=columns)

    def params(self, **changes: Any) -> list[tuple[str, str]]:
        """The query's parameters, with ``changes`` (``sort``, ``order``, ``subfolders``...)."""
        state = replace(self, **changes) if changes else self
        out: list[tuple[str, str]] = []
        if state.folder:
            out.append(("folder", state.folder))
            if state.subfolders:
                out.append(("sub", "1"))
        if state.status:
            out.append(("status", state.status))
        if state.text:
            out.append(("q", state.text))
        for key, values in state.filters:
            out += [(META_PREFIX + key, value) for value in values]
        if state.explicit_columns or state.columns:
            out += [("col", column) for column in state.columns] or [("col", "")]
        if state.sort:
            out += [("sort", state.sort), ("order", state.order)]
        return out

    def url(self, **changes: Any) -> str:
        """The list page's URL (a path) for this state, with ``changes``."""
        params = self.params(**changes)
        return f"{DASHBOARD_PREFIX}/" + (f"?{urlencode(params)}" if params else "")

    def sort_url(self, key: str) -> str:
        """The URL a column's header links to: sorted by it, ascending first, then the other
        way round."""
        order = "asc"
        if self.sort == key:
            order = "desc" if self.order == "asc" else "asc"
        return self.url(sort=key, order=order)

    def filter_values(self, key: str) -> tuple[str, ...]:
        """The values a metadata filter asks for (none: no filter on ``key``)."""
        return dict(self.filters).get(key, ())
