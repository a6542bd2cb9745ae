"""Metric rows held column by column: one list per wire field, built straight from each page.

A million rows as dicts cost about a kilobyte each; as columns they cost the values
themselves and a pointer per field. Fields that repeat from row to row (the
organization, the experiment, the metric name, the metadata text) share one string
object per distinct value. Fields a row lacks are kept as absent, so a row reads back
exactly as the service sent it.

Example:
    >>> table = RowColumns.from_rows([{"event_id": "e1", "metric_name": "loss"},
    ...                               {"event_id": "e2", "metric_name": "loss", "extra": 1}])
    >>> len(table), table.column("metric_name"), table.row(0), table.column("extra")
    (2, ['loss', 'loss'], {'event_id': 'e1', 'metric_name': 'loss'}, [None, 1])
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator
from itertools import chain, repeat
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from syvain_metrics.contract.schemas.rows import ABSENT, REPEATING_FIELDS, RowPage

_NULL = float("nan")  # a null step in a column of doubles (steps are whole numbers)
_INT64 = (-(2**63), 2**63 - 1)
PACKED_FIELDS: dict[str, tuple[str, frozenset[type]]] = {
    "metric_value": ("d", frozenset({float})),
    "step": ("d", frozenset({float, type(None)})),
    "client_timestamp_ms": ("q", frozenset({int})),
    "server_timestamp_ms": ("q", frozenset({int})),
}
"""Number fields kept as machine arrays (8 bytes a value instead of 32) while every value
has the type the service sends (a double, an integer, a null step); else as a list."""

if TYPE_CHECKING:
    Column = list[Any] | array[Any]


def _packed(name: str, values: list[Any], types: set[type] | None = None) -> array[Any] | None:
    """``values`` as a machine array when every one has a type the array holds; ``types``,
    when given, are the types already found in ``values``, checked against the contract
    (times within its range, so within a 64-bit integer)."""
    code, allowed = PACKED_FIELDS[name]
    if not (set(map(type, values)) if types is None else types) <= allowed:
        return None
    if (
        types is None
        and code == "q"
        and not (_INT64[0] <= min(values) and max(values) <= _INT64[1])
    ):
        return None
    if name == "step" and None in values:
        values = [_NULL if value is None else value for value in values]
    return array(code, values)


def _unpacked(name: str, column: array[Any]) -> list[Any]:
    values = column.tolist()
    if name == "step":
        return [None if value != value else value for value in values]  # NaN: a null step
    return values


class RowColumns:
    """Rows as columns: ``columns[field][i]`` is row ``i``'s value (or :data:`ABSENT`).

    Example:
        >>> table = RowColumns()
        >>> table.extend([{"event_id": "e1", "step": 1.0}])
        >>> table.column("step")
        [1.0]
    """

    __slots__ = ("_shared", "columns", "length")

    def __init__(self) -> None:
        self.columns: dict[str, Column] = {}
        self.length = 0
        self._shared: dict[Any, Any] = {}

    @classmethod
    def from_rows(cls, rows: Iterable[dict[str, Any]]) -> RowColumns:
        """A table of ``rows`` (dicts as the service sent them)."""
        table = cls()
        table.extend(list(rows))
        return table

    def __len__(self) -> int:
        return self.length

    def extend(self, rows: list[dict[str, Any]]) -> None:
        """Append ``rows``; the dicts are not kept, only their values. A validated
        :class:`RowPage` hands over the columns it already holds."""
        count = len(rows)
        if not count:
            return
        known: dict[str, list[Any]] = {}
        types: dict[str, set[type]] = {}
        uniform: frozenset[str] = frozenset()
        if isinstance(rows, RowPage):
            known, types, uniform = rows.columns, rows.types, rows.uniform
        # Every row has exactly the known fields when the sizes add up (keys are unique).
        if known and sum(map(len, rows)) == count * len(known):
            fields: dict[str, Any] = dict.fromkeys(known)
            complete = True
        else:
            known = {}
            fields = dict.fromkeys(chain.from_iterable(rows))
            complete = sum(map(len, rows)) == count * len(fields)
        for name in fields:
            if name in known:
                values = known[name]
            elif complete:
                values = list(map(itemgetter(name), rows))
            else:
                values = list(map(dict.get, rows, repeat(name, count), repeat(ABSENT, count)))
            checked = name in known  # and so in types: what validation found
            if name in REPEATING_FIELDS:
                values = self._share(values, checked and name in uniform)
            column = self.columns.get(name)
            packed = None
            if name in PACKED_FIELDS and complete:
                packed = _packed(name, values, types[name] if checked else None)
            if packed is not None and (
                (column is None and not self.length) or type(column) is array
            ):
                if column is None:
                    self.columns[name] = packed
                else:
                    column.extend(packed)
                continue
            if type(column) is array:  # a value the array cannot hold: a list from now on
                column = self.columns[name] = _unpacked(name, column)
            if column is None:
                self.columns[name] = [ABSENT] * self.length + values if self.length else values
            else:
                column.extend(values)
        for name in list(self.columns):
            if name not in fields:
                column = self.columns[name]
                if type(column) is array:
                    column = self.columns[name] = _unpacked(name, column)
                column.extend(repeat(ABSENT, count))
        self.length += count

    def _share(self, values: list[Any], uniform: bool = False) -> list[Any]:
        """``values`` with one object per distinct value; ``uniform`` when they are known to
        be one value throughout."""
        first = values[0]
        if uniform or values.count(first) == len(values):  # one value for the page: common
            return [self._shared.setdefault(first, first)] * len(values)
        distinct = set(values)
        if len(distinct) * 4 > len(values):
            return values  # mostly distinct: sharing would save little
        shared = self._shared
        for value in distinct:
            shared.setdefault(value, value)
        return list(map(shared.__getitem__, values))

    def column(self, name: str) -> list[Any]:
        """Every row's value of ``name`` (``None`` where a row lacks it)."""
        column = self.columns.get(name)
        if column is None:
            return [None] * self.length
        if type(column) is array:
            return _unpacked(name, column)
        if ABSENT in column:
            return [None if value is ABSENT else value for value in column]
        return list(column)

    def value(self, name: str, index: int, default: Any = None) -> Any:
        """Row ``index``'s value of ``name``, or ``default`` when the row lacks it."""
        column = self.columns.get(name)
        if column is None:
            return default
        value = column[index]
        if value is ABSENT:
            return default
        if value != value and name == "step":  # NaN: a null step in a packed column
            return None
        return value

    def row(self, index: int) -> dict[str, Any]:
        """Row ``index`` as a dict of the fields it carries."""
        row = {
            name: value
            for name, column in self.columns.items()
            if (value := column[index]) is not ABSENT
        }
        step = row.get("step")
        if step is not None and step != step:  # NaN: a null step in a packed column
            row["step"] = None
        return row

    def rows(self) -> Iterator[dict[str, Any]]:
        """Every row as a dict, in order."""
        return map(self.row, range(self.length))

    def take(self, selection: slice) -> RowColumns:
        """A new table of the rows ``selection`` picks."""
        table = RowColumns()
        table.columns = {name: column[selection] for name, column in self.columns.items()}
        table.length = len(range(self.length)[selection])
        table._shared = self._shared
        return table
