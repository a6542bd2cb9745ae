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

from collections.abc import Iterable, Iterator
from itertools import chain, repeat
from operator import itemgetter
from typing import Any


class _Absent:
    """A field the row did not carry."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "ABSENT"

    def __reduce__(self) -> str:
        return "ABSENT"


ABSENT: Any = _Absent()

SHARED_FIELDS = frozenset(
    {
        "org_id",
        "experiment_id",
        "experiment_slug",
        "experiment_description",
        "experiment_metadata_json",
        "metric_name",
        "event_metadata_json",
    }
)
"""Fields with few distinct values in a read: stored as one object per distinct value."""


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
        self.columns: dict[str, list[Any]] = {}
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
        """Append ``rows``; the dicts are not kept, only their values."""
        count = len(rows)
        if not count:
            return
        fields = dict.fromkeys(chain.from_iterable(rows))
        # Every row has every field exactly when the sizes add up (keys are unique per row).
        complete = sum(map(len, rows)) == count * len(fields)
        for name in fields:
            if complete:
                values = list(map(itemgetter(name), rows))
            else:
                values = list(map(dict.get, rows, repeat(name, count), repeat(ABSENT, count)))
            if name in SHARED_FIELDS:
                values = self._share(values)
            column = self.columns.get(name)
            if column is None:
                self.columns[name] = [ABSENT] * self.length + values if self.length else values
            else:
                column.extend(values)
        for name, column in self.columns.items():
            if name not in fields:
                column.extend(repeat(ABSENT, count))
        self.length += count

    def _share(self, values: list[Any]) -> list[Any]:
        first = values[0]
        if values.count(first) == len(values):  # one value for the whole page: common
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
        if ABSENT in column:
            return [None if value is ABSENT else value for value in column]
        return list(column)

    def raw(self, name: str) -> list[Any] | None:
        """The stored column itself (may hold :data:`ABSENT`), or ``None``; do not modify."""
        return self.columns.get(name)

    def row(self, index: int) -> dict[str, Any]:
        """Row ``index`` as a dict of the fields it carries."""
        return {
            name: value
            for name, column in self.columns.items()
            if (value := column[index]) is not ABSENT
        }

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
