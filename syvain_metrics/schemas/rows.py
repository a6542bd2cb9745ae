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
from operator import is_not
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
            found = set(map(type, map(dict.get, rows, repeat(name))))
            if not found <= allowed:
                bad = next(i for i, row in enumerate(rows) if type(row.get(name)) not in allowed)
                problem = "is missing" if name not in rows[bad] else "has the wrong type"
                raise ValidationError(f"Row {bad}: field {name} {problem}.")
            if name == "step" and float in found:
                present: Iterable[Any] = filter(
                    partial(is_not, None), map(dict.get, rows, repeat(name))
                )
                if not all(map(float.is_integer, map(float, present))):
                    raise ValidationError("Field step must hold whole numbers.")
        # ``step`` may be null but must be present; the column pass cannot tell the two apart.
        if not all(map(dict.__contains__, rows, repeat("step"))):
            bad = next(i for i, row in enumerate(rows) if "step" not in row)
            raise ValidationError(f"Row {bad}: field step is missing.")
        values: list[Any] = list(map(dict.get, rows, repeat("metric_value")))
        if not all_finite(values):
            bad = next(i for i, v in enumerate(values) if not finite(v))
            raise ValidationError(f"Row {bad}: field metric_value is not finite.")
        return rows


class MetricRowsReply(ResponseSchema):
    """``{rows: [row]}``."""

    rows = MetricRowTable(required=True)
