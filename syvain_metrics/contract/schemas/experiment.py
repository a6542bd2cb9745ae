"""Experiment payloads: the resource, its request bodies, its list query and its replies.

Example:
    >>> ExperimentCreateRequest().load({"slug": "run-1"})
    {'slug': 'run-1', 'description': '', 'metadata': {}}
"""

from __future__ import annotations

from marshmallow import fields, validate

from syvain_metrics.contract.limits import (
    DEFAULT_ERROR_NAME,
    DESCRIPTION_MAX,
    ERROR_DETAIL_MAX,
    ERROR_NAME_MAX,
    EXPERIMENT_STATUSES,
    SLUG_MAX,
    STATUS_UPDATES,
)
from syvain_metrics.contract.queries import LIMIT, Param, Query
from syvain_metrics.contract.schemas.base import RequestSchema, ResponseSchema
from syvain_metrics.contract.schemas.fields import EpochMs, JsonObject, time_ms
from syvain_metrics.contract.schemas.folder import FolderSchema


def _optional_ms() -> fields.Integer:
    return time_ms(allow_none=True, load_default=None)


class ExperimentSchema(ResponseSchema):
    """An experiment as the service returns it; optional fields that are absent read as ``None``."""

    id = fields.String(required=True)
    org_id = fields.String(required=True)
    folder = fields.Nested(FolderSchema, allow_none=True, load_default=None)
    url = fields.String(required=True)
    slug = fields.String(required=True)
    description = fields.String(required=True)
    metadata = fields.Dict(keys=fields.String(), load_default=dict)
    status = fields.String(required=True, validate=validate.OneOf(EXPERIMENT_STATUSES))
    error_name = fields.String(allow_none=True, load_default=None)
    error_detail = fields.String(allow_none=True, load_default=None)
    created_at_ms = time_ms(required=True)
    updated_at_ms = time_ms(required=True)
    started_at_ms = _optional_ms()
    done_at_ms = _optional_ms()
    last_heartbeat_at_ms = _optional_ms()
    last_event_at_ms = _optional_ms()


class ExperimentCreateRequest(RequestSchema):
    """Body of ``POST /experiments``. ``folder_id`` absent = server default; ``None`` = the root."""

    slug = fields.String(required=True, validate=validate.Length(min=1, max=SLUG_MAX))
    folder_id = fields.String(allow_none=True)
    description = fields.String(load_default="", validate=validate.Length(max=DESCRIPTION_MAX))
    metadata = JsonObject(load_default=dict)


class StatusErrorSchema(RequestSchema):
    """The ``error`` object of a status update."""

    name = fields.String(
        load_default=DEFAULT_ERROR_NAME, validate=validate.Length(max=ERROR_NAME_MAX)
    )
    detail = fields.String(load_default="", validate=validate.Length(max=ERROR_DETAIL_MAX))


class StatusUpdateRequest(RequestSchema):
    """Body of ``POST /experiments/{id}`` (status ``running``, ``done`` or ``error``)."""

    status = fields.String(required=True, validate=validate.OneOf(STATUS_UPDATES))
    error = fields.Nested(StatusErrorSchema)
    timestamp_ms = EpochMs()  # ms, or an aware datetime


class ExperimentMoveRequest(RequestSchema):
    """Body of ``PATCH /experiments/{id}``: ``folder_id`` is always present (``None`` = root)."""

    folder_id = fields.String(required=True, allow_none=True)


EXPERIMENT_LIST = Query(
    "ExperimentListQuery",
    (
        Param("status", "choice", EXPERIMENT_STATUSES),
        Param("slug", "text"),
        Param("search", "text"),
        Param("from_ms", "time", wire="from"),
        Param("to_ms", "time", wire="to"),
        LIMIT,
    ),
)
"""Query of ``GET /experiments`` (endpoint 6)."""

ExperimentListQuery = EXPERIMENT_LIST.client_schema()
"""Query of ``GET /experiments``; bounds are ms or aware datetimes, sent as ``from`` / ``to``."""


class ExperimentReply(ResponseSchema):
    """``{experiment}``."""

    experiment = fields.Nested(ExperimentSchema, required=True)


class ExperimentListReply(ResponseSchema):
    """``{experiments: [Experiment]}``."""

    experiments = fields.List(fields.Nested(ExperimentSchema), required=True)


class FolderContentsReply(ResponseSchema):
    """``{folder, folders, experiments}`` from ``GET /folders/{id}``."""

    folder = fields.Nested(FolderSchema, required=True)
    folders = fields.List(fields.Nested(FolderSchema), required=True)
    experiments = fields.List(fields.Nested(ExperimentSchema), required=True)
