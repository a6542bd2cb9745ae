"""Metric read queries: the list-metrics query, compare series, and metadata filters.

Example:
    >>> metadata_filter({"split": "train"})
    {'metadata_key': 'split', 'metadata_value': 'train'}
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from marshmallow import fields, post_load, validate

from syvain_metrics.contract.limits import MAX_COMPARE_SERIES
from syvain_metrics.contract.queries import COMPARE, METRICS_LIST
from syvain_metrics.contract.schemas.base import RequestSchema
from syvain_metrics.contract.schemas.query_fields import MetadataFilter, metadata_filter

__all__ = [
    "QUERY_ORDER",
    "CompareQuery",
    "CompareSeriesList",
    "MetricsQuery",
    "SeriesSchema",
    "metadata_filter",
    "series_param",
]


_RANGE_ORDER = tuple(p.name for p in COMPARE.params if p.sdk_sends)

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

MetricsQuery = METRICS_LIST.client_schema()
"""Query of ``GET /experiments/{id}/metrics``; ``metadata`` expands to the key/value filters."""

CompareQuery = COMPARE.client_schema()
"""Query of ``GET /metrics`` besides the ``series`` values."""


class SeriesSchema(RequestSchema):
    """One compare series; loads to the compact-JSON-ready dict (``None`` keys left out)."""

    experiment_id = fields.String(required=True, validate=validate.Length(min=1))
    metric_name = fields.String(required=True, validate=validate.Length(min=1))
    metadata = MetadataFilter(allow_none=True)

    @post_load
    def _expand_metadata(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        expanded = data.pop("metadata", None) or {}
        return {**data, **expanded}


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
