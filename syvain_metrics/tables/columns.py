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

import json
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import chain, compress, filterfalse, repeat
from math import isnan
from operator import add, itemgetter, mul
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

    def last_per_step(self) -> RowColumns:
        """A new table that keeps, of the rows of one series (experiment, metric name, event
        metadata) at one step, only the row logged last; rows without a step are all kept,
        and the order of the rows is kept. See :func:`last_per_step`.

        Example:
            >>> table = RowColumns.from_rows([
            ...     {"event_id": "a", "metric_name": "loss", "step": 1.0, "metric_value": 0.9,
            ...      "client_timestamp_ms": 10},
            ...     {"event_id": "b", "metric_name": "loss", "step": 1.0, "metric_value": 0.4,
            ...      "client_timestamp_ms": 20}])
            >>> table.last_per_step().column("metric_value")
            [0.4]
        """
        return last_per_step(self)

    def take(self, selection: slice) -> RowColumns:
        """A new table of the rows ``selection`` picks."""
        table = RowColumns()
        table.columns = {name: column[selection] for name, column in self.columns.items()}
        table.length = len(range(self.length)[selection])
        table._shared = self._shared
        return table


# -- the last value logged at each step of each series ---------------------------------------


_SERIES_FIELDS = ("experiment_id", "metric_name", "event_metadata_json")
_LOGGED_TIMES = ("client_timestamp_ms", "server_timestamp_ms")
_EXACT = 2**53
"""Whole numbers up to here are exact as floats."""


def _canonical_metadata(text: Any) -> Any:
    """One text per metadata object, whatever the key order or the spelling of its numbers
    (``{"b":1,"a":2.0}`` and ``{"a":2,"b":1}`` are one series); a text that is not JSON
    stands for itself."""
    if not isinstance(text, str):
        return text
    try:
        loaded = json.loads(text)
    except ValueError:
        return text
    return json.dumps(_whole(loaded), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _whole(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _whole(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_whole(item) for item in value]
    return value


def _codes(column: Column, name: str) -> list[int] | None:
    """A small integer per row standing for its value of ``name`` (equal metadata objects
    get one code), or ``None`` when every row has the same."""
    # Shared objects: the count compares pointers, and a read holds few distinct values.
    if column.count(column[0]) == len(column):
        return None
    distinct = set(column)
    same = _canonical_metadata if name == "event_metadata_json" else (lambda value: value)
    numbers: dict[Any, int] = {}
    code = {value: numbers.setdefault(same(value), len(numbers)) for value in distinct}
    return None if len(numbers) == 1 else list(map(code.__getitem__, column))


def _series_codes(table: RowColumns) -> list[int] | None:
    """A small integer per row standing for its series (experiment, metric name, event
    metadata), or ``None`` when the rows are one series; built from whole columns."""
    combined: list[int] | None = None
    for name in _SERIES_FIELDS:
        column = table.columns.get(name)
        codes = None if column is None else _codes(column, name)
        if codes is None:
            continue
        if combined is None:
            combined = codes
        else:
            width = max(codes) + 1
            combined = list(map(add, map(mul, combined, repeat(width)), codes))
    return combined


def _step_keys(table: RowColumns) -> Sequence[Any]:
    """Each row's step, where a row without one gets an object equal to nothing else (so it
    is never grouped, never dropped)."""
    column = table.columns.get("step")
    if column is None:
        return [object() for _ in range(table.length)]
    if type(column) is array:
        if not any(map(isnan, column)):
            return column
        steps: list[Any] = column.tolist()
        for index in compress(range(len(steps)), map(isnan, column)):
            steps[index] = object()
        return steps
    steps = [object() if step is None else step for step in table.column("step")]
    return steps


def _group_keys(table: RowColumns) -> Sequence[Any]:
    """Each row's (series, step) key: equal for two rows exactly when they are one series
    at one step (a row without a step equals no other)."""
    series, steps = _series_codes(table), _step_keys(table)
    if series is None:
        return steps
    highest = max(steps) if type(steps) is array else _EXACT
    if highest < _EXACT and min(steps) >= 0:
        span = int(highest) + 1
        if (max(series) + 1) * span <= _EXACT and all(map(float.is_integer, steps)):
            # One float a row (series x span + step), exact below 2**53: cheaper to build
            # and to hash than a tuple, and the tuples' allocations would wake the GC.
            return list(map(add, map(mul, series, repeat(float(span))), steps))
    return list(zip(series, steps, strict=True))


def _logged_order(table: RowColumns) -> Callable[[int], tuple[Any, ...]]:
    """The order that decides which of two rows was logged last: the client time, then the
    server time, then the event id, so the choice never depends on the order of the rows."""
    client, server = (table.columns.get(name) for name in _LOGGED_TIMES)
    ids = table.columns.get("event_id")
    if (
        type(client) is array
        and type(server) is array
        and isinstance(ids, list)
        and ABSENT not in ids
    ):
        times, more, names = client, server, ids
        return lambda index: (times[index], more[index], names[index])

    def order(index: int) -> tuple[Any, ...]:  # a field missing or of an unexpected type
        times = (table.value(name, index) for name in _LOGGED_TIMES)
        event_id = str(table.value("event_id", index, ""))
        return (*(value if isinstance(value, int) else -1 for value in times), event_id)

    return order


def last_per_step(table: RowColumns) -> RowColumns:
    """The rows of ``table`` without those replaced by a later one: of the rows of one series
    (experiment, metric name, event metadata) at one step, only the one logged last is kept
    (the latest client time; ties go to the latest server time, then the greatest event id).
    Rows without a step are all kept; the kept rows stay in their order. ``table`` itself is
    returned when no step of any series holds two rows.

    Done on whole columns: a set of the rows' (series, step) keys tells whether any is
    repeated, a dict of them finds the last row of each key, and only the rows of keys held
    by several rows are looked at one by one.

    Example:
        >>> table = RowColumns.from_rows([
        ...     {"event_id": "a", "experiment_id": "x", "metric_name": "acc", "step": 0.0},
        ...     {"event_id": "b", "experiment_id": "x", "metric_name": "acc", "step": 0.0},
        ...     {"event_id": "c", "experiment_id": "x", "metric_name": "acc", "step": None}])
        >>> last_per_step(table).column("event_id")
        ['b', 'c']
    """
    count = table.length
    if count < 2:
        return table
    keys = _group_keys(table)
    if len(set(keys)) == count:
        return table  # no step logged twice: the common case ends here
    last = dict(zip(keys, range(count), strict=True))
    order = _logged_order(table)
    lasts = set(last.values())
    keep = bytearray(b"\x01") * count
    winners: dict[Any, int] = {}
    for index in filterfalse(lasts.__contains__, range(count)):  # rows a later one repeats
        keep[index] = 0
        key = keys[index]
        held = winners.setdefault(key, last[key])
        if order(index) > order(held):
            winners[key] = index
    for key, index in winners.items():
        if index != last[key]:  # logged last, though not the last in the read's order
            keep[last[key]], keep[index] = 0, 1
    kept = RowColumns()
    for name, column in table.columns.items():
        selected = compress(column, keep)
        kept.columns[name] = (
            array(column.typecode, selected) if type(column) is array else list(selected)
        )
    kept.length = count - keep.count(0)
    kept._shared = table._shared
    return kept
