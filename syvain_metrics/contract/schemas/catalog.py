"""Metric catalog payloads.

Example:
    >>> CatalogReply().load({"metrics": [{"metric_name": "loss"}]})
    {'metrics': [{'metric_name': 'loss', 'metadata_keys': []}]}
"""

from __future__ import annotations

from marshmallow import fields

from syvain_metrics.contract.queries import LIMIT, Param, Query
from syvain_metrics.contract.schemas.base import ResponseSchema
from syvain_metrics.contract.schemas.fields import JsonValue


class CatalogItemSchema(ResponseSchema):
    """A metric name and the metadata keys seen with it."""

    metric_name = fields.String(required=True)
    metadata_keys = fields.List(fields.String(), load_default=list)


class CatalogKeyValuesSchema(ResponseSchema):
    """One metadata key and its values."""

    key = fields.String(required=True)
    values = fields.List(JsonValue(allow_none=True), load_default=list)
    value_count = fields.Integer(strict=True, required=True)


class CatalogValuesSchema(ResponseSchema):
    """``{metric_name, scanned_event_count, keys}``."""

    metric_name = fields.String(required=True)
    scanned_event_count = fields.Integer(strict=True, required=True)
    keys = fields.List(fields.Nested(CatalogKeyValuesSchema), load_default=list)


CATALOG = Query("CatalogQuery", (LIMIT,))
"""Query of ``GET /experiments/{id}/catalog`` (endpoint 17)."""

CATALOG_VALUES = Query("CatalogValuesQuery", (Param("key", "keys"), LIMIT))
"""Query of ``GET /experiments/{id}/catalog/{metric}`` (endpoint 18)."""

CatalogQuery = CATALOG.client_schema()
"""Query of ``GET /experiments/{id}/catalog``."""

CatalogValuesQuery = CATALOG_VALUES.client_schema()
"""Query of ``GET /experiments/{id}/catalog/{metric}``; ``key`` is repeated per item."""


class CatalogReply(ResponseSchema):
    """``{metrics: [item]}``."""

    metrics = fields.List(fields.Nested(CatalogItemSchema), required=True)


class CatalogValuesReply(ResponseSchema):
    """``{metadata: values}``."""

    metadata = fields.Nested(CatalogValuesSchema, required=True)
