"""Metric rows as the service returns them, checked a whole column at a time.

:class:`MetricRowTable` checks every value of a rows answer column by column and keeps
the rows as received (extra fields included), so row objects are built only when read.

Example:
    >>> MetricRowsReply().load({"rows": []})
    {'rows': []}
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from itertools import repeat
from operator import is_not, itemgetter
from typing import Any, SupportsIndex, overload

from marshmallow import ValidationError

from syvain_metrics.contract.limits import MAX_TIME_MS, MIN_TIME_MS
from syvain_metrics.contract.schemas.base import ResponseSchema
from syvain_metrics.contract.schemas.columns import (
    all_finite,
    finite,
    type_set,
)
from syvain_metrics.contract.schemas.fields import (
    _Field,
)

_NONE: type = type(None)
_STR: frozenset[type] = frozenset({str})
_OPT_STR: frozenset[type] = frozenset({str, _NONE})
_INT: frozenset[type] = frozenset({int})
ROW_COLUMN_TYPES: dict[str, frozenset[type]] = {
    "event_id": _STR,
    "org_id": _STR,
    "experiment_id": _STR,
    "experiment_slug": _STR,
    "experiment_description": _OPT_STR,
    "experiment_metadata_json": _OPT_STR,
    "metric_name": _STR,
    "metric_value": frozenset((float, int)),
    "step": frozenset((float, int, _NONE)),
    "event_metadata_json": _STR,
    "client_timestamp_ms": _INT,
    "server_timestamp_ms": _INT,
}
"""Each documented row field and the JSON types it may hold."""

ROW: dict[str, Any] = {
    "event_id": "e1",
    "org_id": "o1",
    "experiment_id": "x1",
    "experiment_slug": "run-1",
    "metric_name": "loss",
    "metric_value": 0.5,
    "step": 1.0,
    "event_metadata_json": "{}",
    "client_timestamp_ms": 1,
    "server_timestamp_ms": 2,
}
"""A valid row, for examples."""


_TIMES = frozenset({"client_timestamp_ms", "server_timestamp_ms"})
_OPTIONAL = frozenset({"experiment_description", "experiment_metadata_json"})
_REQUIRED = frozenset(ROW_COLUMN_TYPES) - _OPTIONAL
"""Fields every row carries (``step`` too: it may be null but not absent)."""
REPEATING_FIELDS = frozenset(
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
"""Text fields with few distinct values in a read, often one for a whole answer: the column
store keeps one object per distinct value."""
_ONE_TYPE = frozenset({str, _NONE})


class _Absent:
    """A field a row did not carry."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "ABSENT"

    def __reduce__(self) -> str:
        return "ABSENT"


ABSENT: Any = _Absent()


class RowPage(list[dict[str, Any]]):
    """The rows of one answer as received, plus what validation learnt of them, so that
    storing the page column by column need not learn it again: ``columns``, each documented
    field that every row carries, as the list validation took out of the rows; ``types``,
    the JSON types found in each of those columns (values checked against the contract,
    times within its range); ``uniform``, the fields whose column holds one value
    throughout. Slices keep all three (a part of a column has at most its types, and a part
    of a uniform column is uniform).

    Example:
        >>> page = MetricRowTable().deserialize([{**ROW, "step": 1.0}, {**ROW, "step": 2.0}])
        >>> page[1:].columns["step"], page.types["step"] == {float}, "metric_name" in page.uniform
        ([2.0], True, True)
    """

    columns: dict[str, list[Any]]
    types: dict[str, set[type]]
    uniform: frozenset[str]

    @overload
    def __getitem__(self, index: SupportsIndex) -> dict[str, Any]: ...
    @overload
    def __getitem__(self, index: slice) -> RowPage: ...
    def __getitem__(self, index: SupportsIndex | slice) -> dict[str, Any] | RowPage:
        if isinstance(index, slice):
            page = RowPage(super().__getitem__(index))
            page.columns = {name: column[index] for name, column in self.columns.items()}
            page.types = self.types
            page.uniform = self.uniform
            return page
        return super().__getitem__(index)


def _whole_steps(steps: list[Any], found: set[type]) -> bool:
    values: Iterable[Any] = steps
    if found != {float}:  # nulls or ints among the floats
        values = map(float, filter(partial(is_not, None), steps))
    return all(map(float.is_integer, values))


class MetricRowTable(_Field):
    """The ``rows`` of a metrics answer, checked one column at a time; loads to a
    :class:`RowPage` of the rows as received (extra fields kept) and the checked columns, so
    row objects can be built only when read.

    Example:
        >>> MetricRowTable().deserialize([])
        []
    """

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> RowPage:
        if not isinstance(value, list):
            raise ValidationError("Must be a list of rows.")
        page = RowPage(value)
        page.columns = {}
        page.types = {}
        page.uniform = frozenset()
        if not value:
            return page
        rows: list[dict[str, Any]] = value
        count = len(rows)
        uniform: list[str] = []
        if type_set(rows) != {dict}:
            bad = next(i for i, row in enumerate(rows) if type(row) is not dict)
            raise ValidationError(f"Row {bad} is not an object.")
        # The required fields are checked present one by one below: when the rows hold no
        # more keys than those, no row carries an optional field.
        bare = sum(map(len, rows)) == count * len(_REQUIRED)
        for name, allowed in ROW_COLUMN_TYPES.items():
            if name in _REQUIRED:
                # itemgetter is the faster pass, and a KeyError is how a missing field shows.
                try:
                    column = list(map(itemgetter(name), rows))
                except KeyError:
                    bad = next(i for i, row in enumerate(rows) if name not in row)
                    raise ValidationError(f"Row {bad}: field {name} is missing.") from None
            elif bare:
                continue
            else:
                try:  # every row carries it: the common case when it is asked for
                    column = list(map(itemgetter(name), rows))
                except KeyError:
                    column = list(map(dict.get, rows, repeat(name, count), repeat(ABSENT, count)))
            first = column[0]
            if (
                name in REPEATING_FIELDS
                and type(first) in _ONE_TYPE
                and column.count(first) == count
            ):
                # Only a string equals a string among JSON values (and only null, null): one
                # value throughout has the type of the first; the common case, and cheaper
                # than a type per value.
                found = {type(first)}
                uniform.append(name)
            else:
                found = set(map(type, column))
            found.discard(_Absent)
            if not found <= allowed:
                bad = next(i for i, row in enumerate(rows) if type(row.get(name)) not in allowed)
                raise ValidationError(f"Row {bad}: field {name} has the wrong type.")
            if name == "step" and float in found and not _whole_steps(column, found):
                raise ValidationError("Field step must hold whole numbers.")
            if name in _TIMES and not MIN_TIME_MS <= min(column) <= max(column) <= MAX_TIME_MS:
                bad = next(i for i, v in enumerate(column) if not MIN_TIME_MS <= v <= MAX_TIME_MS)
                raise ValidationError(f"Row {bad}: field {name} is out of range.")
            if name == "metric_value" and not all_finite(column):
                bad = next(i for i, v in enumerate(column) if not finite(v))
                raise ValidationError(f"Row {bad}: field metric_value is not finite.")
            if name in _REQUIRED or ABSENT not in column:
                page.columns[name] = column
                page.types[name] = found
        page.uniform = frozenset(uniform)
        return page


class MetricRowsReply(ResponseSchema):
    """``{rows: [row]}``."""

    rows = MetricRowTable(required=True)
