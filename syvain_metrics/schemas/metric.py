"""Metric payloads: ingest bodies, metric queries, compare series, and result rows.

Bulk data takes column-at-a-time paths: :class:`MetricBatch` validates a whole list
of metrics with C-level passes (types, lengths, ranges, finiteness) and falls back
to the per-metric :class:`MetricInputSchema` only to name the first bad field;
:class:`MetricRowTable` checks every value of a rows answer column by column and
keeps the rows as received, so row objects are built only when read.

Example:
    >>> MetricBatch().deserialize([{"client_event_id": "a", "name": "loss", "value": 1}])
    [{'client_event_id': 'a', 'name': 'loss', 'value': 1.0, 'step': None}]
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from functools import partial
from itertools import chain, repeat
from operator import is_not
from typing import Any

from marshmallow import ValidationError, fields, post_load, pre_load, validate

from syvain_metrics.schemas.base import QuerySchema, RequestSchema, ResponseSchema
from syvain_metrics.schemas.fields import (
    EpochMs,
    FiniteNumber,
    JsonObject,
    SafeInteger,
    _Field,
)
from syvain_metrics.schemas.limits import (
    CLIENT_EVENT_ID_MAX,
    COMPARE_SORT_KEYS,
    INGEST_MODES,
    MAX_COMPARE_SERIES,
    MAX_METRICS_PER_INGEST,
    MAX_SAFE_INTEGER,
    METRIC_NAME_MAX,
    METRIC_SORT_KEYS,
    SORT_DIRECTIONS,
)

INGEST_KEYS = ("client_event_id", "name", "value", "step", "metadata", "timestamp_ms")
"""The fields of one metric, in the order they are sent."""


class MetricInputSchema(RequestSchema):
    """One metric to ingest. ``step`` is always sent (``None`` allowed); ``metadata`` and
    ``timestamp_ms`` only when given, ``timestamp_ms`` never as ``null``."""

    client_event_id = fields.String(
        required=True, validate=validate.Length(min=1, max=CLIENT_EVENT_ID_MAX)
    )
    name = fields.String(required=True, validate=validate.Length(min=1, max=METRIC_NAME_MAX))
    value = FiniteNumber(required=True)
    step = SafeInteger(minimum=0, allow_none=True, load_default=None)
    metadata = JsonObject()
    timestamp_ms = SafeInteger(minimum=0)

    @pre_load
    def _drop_null_optionals(self, data: Any, **kwargs: Any) -> Any:
        # ``None`` means "not given" for the two keys that are sent only when given.
        if isinstance(data, Mapping) and any(
            data.get(key, ...) is None for key in ("metadata", "timestamp_ms")
        ):
            return {k: v for k, v in data.items() if v is not None or k == "step"}
        return data

    @post_load
    def _wire_order(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return {key: data[key] for key in INGEST_KEYS if key in data}


def _type_set(values: Sequence[Any]) -> set[type]:
    return set(map(type, values))


def _lengths_within(values: Sequence[str], low: int, high: int) -> bool:
    return not values or (min(map(len, values)) >= low and max(map(len, values)) <= high)


def _ints_within(values: Sequence[int], low: int, high: int) -> bool:
    return not values or (min(values) >= low and max(values) <= high)


def _all_finite(values: Sequence[float]) -> bool:
    try:
        return all(map(math.isfinite, values))
    except OverflowError:  # an int too large for a float
        return False


def _finite(value: float) -> bool:
    return _all_finite([value])


def _plain_json_objects(objects: list[Any]) -> bool:
    if _type_set(objects) != {dict} or not _type_set(list(chain.from_iterable(objects))) <= {str}:
        return False
    try:
        json.dumps(objects, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


class MetricBatch(_Field):
    """A list of metrics to ingest, validated column by column.

    Loads to a list of wire-ready dicts in the order of :data:`INGEST_KEYS`.
    ``max_length`` bounds one request body; the SDK validates a whole ``ingest()``
    call with no bound and splits it afterwards.

    Example:
        >>> MetricBatch().deserialize([{"client_event_id": "a", "name": "", "value": 1}])
        Traceback (most recent call last):
        ...
        marshmallow.exceptions.ValidationError: {0: {'name': ['Length must be between 1 and 500.']}}
    """

    default_error_messages = {
        "invalid": "Must be a list of metrics.",
        "too_many": "At most {max} metrics per request, got {count}.",
    }

    def __init__(self, *, max_length: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_length = max_length

    def _deserialize(
        self, value: Any, attr: str | None, data: Any, **kwargs: Any
    ) -> list[dict[str, Any]]:
        if not isinstance(value, list | tuple):
            raise self.make_error("invalid")
        if self.max_length is not None and len(value) > self.max_length:
            raise self.make_error("too_many", max=self.max_length, count=len(value))
        items: Sequence[Any] = value
        fast = _fast_batch(items)
        return fast if fast is not None else _slow_batch(items)


def _fast_batch(items: Sequence[Any]) -> list[dict[str, Any]] | None:
    """Validate plain well-typed dicts with whole-column C passes; ``None`` means "look closer"."""
    if not items:
        return []
    if _type_set(items) != {dict}:
        return None
    if not set(chain.from_iterable(items)) <= set(INGEST_KEYS):
        return None
    ids: list[Any] = list(map(dict.get, items, repeat("client_event_id")))
    names: list[Any] = list(map(dict.get, items, repeat("name")))
    values: list[Any] = list(map(dict.get, items, repeat("value")))
    steps: list[Any] = list(map(dict.get, items, repeat("step")))
    if _type_set(ids) != {str} or not _lengths_within(ids, 1, CLIENT_EVENT_ID_MAX):
        return None
    if _type_set(names) != {str} or not _lengths_within(names, 1, METRIC_NAME_MAX):
        return None
    if not _type_set(values) <= {float, int} or not _all_finite(values):
        return None
    step_types = _type_set(steps)
    if not step_types <= {int, type(None)}:
        return None
    stepped = [s for s in steps if s is not None]
    if stepped and not _ints_within(stepped, 0, MAX_SAFE_INTEGER):
        return None
    metadata = [m["metadata"] for m in items if "metadata" in m]
    if metadata and not _plain_json_objects(metadata):
        return None
    stamps = [m["timestamp_ms"] for m in items if "timestamp_ms" in m]
    if stamps and (_type_set(stamps) != {int} or not _ints_within(stamps, 0, MAX_SAFE_INTEGER)):
        return None
    out: list[dict[str, Any]] = []
    append = out.append
    for item, event_id, name, number, step in zip(items, ids, names, values, steps, strict=True):
        row = {"client_event_id": event_id, "name": name, "value": float(number), "step": step}
        if len(item) > 3 + ("step" in item):
            if "metadata" in item:
                row["metadata"] = dict(item["metadata"])
            if "timestamp_ms" in item:
                row["timestamp_ms"] = item["timestamp_ms"]
        append(row)
    return out


_METRIC_INPUT = MetricInputSchema()


def _slow_batch(items: Sequence[Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    errors: dict[int, Any] = {}
    for index, item in enumerate(items):
        if not isinstance(item, Mapping):
            errors[index] = {"_schema": ["Must be a metric (a dict or a MetricPoint)."]}
            continue
        try:
            out.append(_METRIC_INPUT.load(dict(item)))
        except ValidationError as error:
            errors[index] = error.messages
        if len(errors) >= 10:  # enough to act on; a 100k batch need not list every failure
            break
    if errors:
        raise ValidationError(errors)
    return out


class IngestRequest(RequestSchema):
    """Body of ``POST /experiments/{id}/ingest``: at most 1,000 metrics."""

    data = MetricBatch(required=True, max_length=MAX_METRICS_PER_INGEST)


class IngestReply(ResponseSchema):
    """``{ok: true, mode}``."""

    ok = fields.Boolean(required=True, validate=validate.Equal(True))
    mode = fields.String(required=True, validate=validate.OneOf(INGEST_MODES))


def metadata_filter(value: Any) -> dict[str, str]:
    """Turn a user's ``metadata=`` filter into query parameters.

    A ``str`` selects events that have that key; a one-key ``dict`` selects by value:
    a ``str`` value goes as ``metadata_value``, any other JSON value as compact
    ``metadata_value_json``.

    Example:
        >>> metadata_filter({"split": "train"})
        {'metadata_key': 'split', 'metadata_value': 'train'}
        >>> metadata_filter({"layer": 3})
        {'metadata_key': 'layer', 'metadata_value_json': '3'}
    """
    if isinstance(value, str):
        if not value:
            raise ValidationError("A metadata key must not be empty.")
        return {"metadata_key": value}
    if not isinstance(value, Mapping) or len(value) != 1:
        raise ValidationError(
            "Must be a metadata key (str) or a dict with exactly one key, e.g. {'split': 'train'}."
        )
    ((key, wanted),) = value.items()
    if not isinstance(key, str) or not key:
        raise ValidationError("A metadata key must be a non-empty string.")
    if isinstance(wanted, str):
        return {"metadata_key": key, "metadata_value": wanted}
    try:
        text = json.dumps(wanted, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as error:
        raise ValidationError(f"The metadata value must be finite JSON: {error}.") from None
    return {"metadata_key": key, "metadata_value_json": text}


class MetadataFilter(_Field):
    """The ``metadata=`` argument of metric reads (see :func:`metadata_filter`)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        return metadata_filter(value)


class SortKeys(_Field):
    """``sort_by``: one key or a list of keys, sent comma-joined."""

    def __init__(self, *, choices: Sequence[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.choices = tuple(choices)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        keys = [value] if isinstance(value, str) else value
        if not isinstance(keys, list | tuple) or not keys:
            raise ValidationError(f"Must be one of {', '.join(self.choices)} or a list of them.")
        bad = [k for k in keys if k not in self.choices]
        if bad:
            raise ValidationError(
                f"Unknown sort key {bad[0]!r}; must be among {', '.join(self.choices)}."
            )
        return ",".join(keys)


_RANGE_ORDER = (
    "from_step",
    "to_step",
    "from_time",
    "to_time",
    "sort_by",
    "sort_direction",
    "limit",
    "include_experiment_meta_as_of",
)


QUERY_ORDER = (
    "series",
    "metric_name",
    "metadata_key",
    "metadata_value",
    "metadata_value_json",
    "step",
    *_RANGE_ORDER,
)
"""Every metrics-read query parameter, in the order it is sent (pages re-add bounds and limit)."""


class _RangeQuery(QuerySchema):
    """The bounds, order and limit shared by list-metrics and compare."""

    from_step = SafeInteger(minimum=0, allow_none=True)
    to_step = SafeInteger(minimum=0, allow_none=True)
    from_time = EpochMs(allow_none=True)
    to_time = EpochMs(allow_none=True)
    sort_direction = fields.String(allow_none=True, validate=validate.OneOf(SORT_DIRECTIONS))
    limit = SafeInteger(minimum=1, allow_none=True)
    include_experiment_meta_as_of = fields.Boolean(allow_none=True)


class MetricsQuery(_RangeQuery):
    """Query of ``GET /experiments/{id}/metrics``; ``metadata`` expands to the key/value filters."""

    metric_name = fields.String(allow_none=True, validate=validate.Length(min=1))
    metadata = MetadataFilter(allow_none=True)
    step = SafeInteger(minimum=0, allow_none=True)
    sort_by = SortKeys(choices=METRIC_SORT_KEYS, allow_none=True)

    wire_order = ("metric_name", "metadata", "step", *_RANGE_ORDER)


class SeriesSchema(RequestSchema):
    """One compare series; loads to the compact-JSON-ready dict (``None`` keys left out)."""

    experiment_id = fields.String(required=True, validate=validate.Length(min=1))
    metric_name = fields.String(required=True, validate=validate.Length(min=1))
    metadata = MetadataFilter(allow_none=True)

    @post_load
    def _expand_metadata(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        expanded = data.pop("metadata", None) or {}
        return {**data, **expanded}


class CompareQuery(_RangeQuery):
    """Query of ``GET /metrics`` besides the ``series`` values."""

    sort_by = SortKeys(choices=COMPARE_SORT_KEYS, allow_none=True)

    wire_order = _RANGE_ORDER


class CompareSeriesList(RequestSchema):
    """1 to 64 series, each loaded by :class:`SeriesSchema`."""

    series = fields.List(
        fields.Nested(SeriesSchema),
        required=True,
        validate=validate.Length(min=1, max=MAX_COMPARE_SERIES),
    )


def series_param(series: Mapping[str, Any]) -> str:
    """The compact JSON text of one ``series`` query value.

    Example:
        >>> series_param({"experiment_id": "e1", "metric_name": "loss"})
        '{"experiment_id":"e1","metric_name":"loss"}'
    """
    return json.dumps(dict(series), separators=(",", ":"), ensure_ascii=False)


# --- rows -------------------------------------------------------------------------

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
        if _type_set(rows) != {dict}:
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
        if not _all_finite(values):
            bad = next(i for i, v in enumerate(values) if not _finite(v))
            raise ValidationError(f"Row {bad}: field metric_value is not finite.")
        return rows


class MetricRowsReply(ResponseSchema):
    """``{rows: [row]}``."""

    rows = MetricRowTable(required=True)
