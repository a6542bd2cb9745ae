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

from syvain_metrics.contract.limits import (
    COMPARE_SORT_KEYS,
    MAX_COMPARE_SERIES,
    METRIC_SORT_KEYS,
    SORT_DIRECTIONS,
)
from syvain_metrics.contract.queries import LIMIT, Param, Query
from syvain_metrics.contract.schemas.base import RequestSchema
from syvain_metrics.contract.schemas.query_fields import MetadataFilter, metadata_filter

__all__ = [
    "COMPARE",
    "METRICS_LIST",
    "QUERY_ORDER",
    "CompareQuery",
    "CompareSeriesList",
    "MetricsQuery",
    "SeriesSchema",
    "metadata_filter",
    "series_param",
]


def _range(sort_keys: tuple[str, ...]) -> tuple[Param, ...]:
    """Bounds, order and limit: shared by list-metrics and compare."""
    return (
        Param("from_step", "count"),
        Param("to_step", "count"),
        Param("from_time", "time"),
        Param("to_time", "time"),
        Param("sort_by", "sort", sort_keys),
        Param("sort_direction", "choice", SORT_DIRECTIONS),
        LIMIT,
        Param("include_experiment_meta_as_of", "flag"),
    )


METRICS_LIST = Query(
    "MetricsQuery",
    (
        Param("metric_name", "name"),
        Param("metadata", "metadata"),
        Param("step", "count"),
        *_range(METRIC_SORT_KEYS),
    ),
)
"""Query of ``GET /experiments/{id}/metrics`` (endpoint 11)."""

COMPARE = Query(
    "CompareQuery",
    (
        Param("series", "series", sdk_sends=False),
        Param("step", "count", sdk_sends=False),
        *_range(COMPARE_SORT_KEYS),
    ),
)
"""Query of ``GET /metrics`` (endpoint 12): the parameters of 11 without its per-series
filters, and the ``series``."""

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
