"""Metric read queries: the list-metrics query, compare series, and metadata filters.

Example:
    >>> metadata_filter({"split": "train"})
    {'metadata_key': 'split', 'metadata_value': 'train'}
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from marshmallow import ValidationError, fields, post_load, validate

from syvain_metrics.contract.limits import (
    COMPARE_SORT_KEYS,
    MAX_COMPARE_SERIES,
    METRIC_SORT_KEYS,
    SORT_DIRECTIONS,
)
from syvain_metrics.contract.schemas.base import QuerySchema, RequestSchema
from syvain_metrics.contract.schemas.fields import (
    EpochMs,
    Flag,
    SafeInteger,
    _Field,
)


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
    include_experiment_meta_as_of = Flag(allow_none=True)


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
