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
from typing import Any

from marshmallow import ValidationError

from syvain_metrics.schemas.base import ResponseSchema
from syvain_metrics.schemas.columns import (
    all_finite,
    finite,
    type_set,
)
from syvain_metrics.schemas.fields import (
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


_OPTIONAL = frozenset({"experiment_description", "experiment_metadata_json"})
_REQUIRED = frozenset(ROW_COLUMN_TYPES) - _OPTIONAL
"""Fields every row carries (``step`` too: it may be null but not absent)."""


def _column(rows: list[dict[str, Any]], name: str) -> Iterable[Any]:
    return map(dict.get, rows, repeat(name))


def _whole_steps(rows: list[dict[str, Any]], found: set[type]) -> bool:
    steps: Iterable[Any] = map(itemgetter("step"), rows)
    if found != {float}:  # nulls or ints among the floats
        steps = map(float, filter(partial(is_not, None), steps))
    return all(map(float.is_integer, steps))


class MetricRowTable(_Field):
    """The ``rows`` of a metrics answer, checked one column at a time; loads to the rows as
    received (extra fields kept), so row objects can be built only when read.

    Example:
        >>> MetricRowTable().deserialize([])
        []
    """

    def _deserialize(
        self, value: Any, attr: str | None, data: Any, **kwargs: Any
    ) -> list[dict[str, Any]]:
        if not isinstance(value, list):
            raise ValidationError("Must be a list of rows.")
        rows: list[dict[str, Any]] = value
        if not rows:
            return rows
        if type_set(rows) != {dict}:
            bad = next(i for i, row in enumerate(rows) if type(row) is not dict)
            raise ValidationError(f"Row {bad} is not an object.")
        for name, allowed in ROW_COLUMN_TYPES.items():
            # itemgetter is the faster pass, and a KeyError is how a missing field shows.
            column = map(itemgetter(name), rows) if name in _REQUIRED else _column(rows, name)
            try:
                found = set(map(type, column))
            except KeyError:
                bad = next(i for i, row in enumerate(rows) if name not in row)
                raise ValidationError(f"Row {bad}: field {name} is missing.") from None
            if not found <= allowed:
                bad = next(i for i, row in enumerate(rows) if type(row.get(name)) not in allowed)
                raise ValidationError(f"Row {bad}: field {name} has the wrong type.")
            if name == "step" and float in found and not _whole_steps(rows, found):
                raise ValidationError("Field step must hold whole numbers.")
        values: list[Any] = list(map(itemgetter("metric_value"), rows))
        if not all_finite(values):
            bad = next(i for i, v in enumerate(values) if not finite(v))
            raise ValidationError(f"Row {bad}: field metric_value is not finite.")
        return rows


class MetricRowsReply(ResponseSchema):
    """``{rows: [row]}``."""

    rows = MetricRowTable(required=True)
