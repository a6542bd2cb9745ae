"""Annotation payloads.

Example:
    >>> AnnotationCreateRequest().load({"annotation": "checkpoint"})
    {'annotation': 'checkpoint', 'metadata': {}}
"""

from __future__ import annotations

from marshmallow import fields, validate

from syvain_metrics.contract.limits import ANNOTATION_MAX
from syvain_metrics.contract.queries import LIMIT, Param, Query
from syvain_metrics.contract.schemas.base import RequestSchema, ResponseSchema
from syvain_metrics.contract.schemas.experiment import ExperimentSchema
from syvain_metrics.contract.schemas.fields import JsonObject, time_ms


class AnnotationSchema(ResponseSchema):
    """An annotation as the service returns it."""

    id = fields.String(required=True)
    experiment_id = fields.String(required=True)
    annotation = fields.String(required=True)
    metadata = fields.Dict(keys=fields.String(), load_default=dict)
    created_at_ms = time_ms(required=True)


class AnnotationCreateRequest(RequestSchema):
    """Body of ``POST /experiments/{id}/annotations`` (``metadata`` always sent)."""

    annotation = fields.String(required=True, validate=validate.Length(min=1, max=ANNOTATION_MAX))
    metadata = JsonObject(load_default=dict)


ANNOTATION_LIST = Query(
    "AnnotationListQuery",
    (Param("from_ms", "time", wire="from"), Param("to_ms", "time", wire="to"), LIMIT),
)
"""Query of ``GET /experiments/{id}/annotations`` (endpoint 19)."""

AnnotationListQuery = ANNOTATION_LIST.client_schema()
"""Query of ``GET /experiments/{id}/annotations``."""


class AnnotationReply(ResponseSchema):
    """``{experiment, annotation}``."""

    experiment = fields.Nested(ExperimentSchema, required=True)
    annotation = fields.Nested(AnnotationSchema, required=True)


class AnnotationListReply(ResponseSchema):
    """``{annotations: [Annotation]}``."""

    annotations = fields.List(fields.Nested(AnnotationSchema), required=True)
