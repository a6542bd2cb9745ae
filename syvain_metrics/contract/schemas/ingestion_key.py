"""Ingestion key payloads.

Example:
    >>> IngestionKeyCreateRequest().load({})
    {'name': 'SDK ingestion key'}
"""

from __future__ import annotations

from marshmallow import fields, validate

from syvain_metrics.contract.limits import (
    DEFAULT_INGESTION_KEY_NAME,
    INGESTION_KEY_NAME_MAX,
    INGESTION_KEY_TTL_MAX_MS,
)
from syvain_metrics.contract.schemas.base import RequestSchema, ResponseSchema
from syvain_metrics.contract.schemas.fields import DurationMs, time_ms


class IngestionKeySchema(ResponseSchema):
    """An ingestion key as the service returns it (never with its token)."""

    id = fields.String(required=True)
    experiment_id = fields.String(required=True)
    name = fields.String(required=True)
    created_at_ms = time_ms(required=True)
    expires_at_ms = time_ms(required=True)
    revoked_at_ms = time_ms(allow_none=True, load_default=None)
    last_used_at_ms = time_ms(allow_none=True, load_default=None)


class IngestionKeyCreateRequest(RequestSchema):
    """Body of ``POST /experiments/{id}/ingestion-keys``; ``ttl_ms`` is 1 ms to 7 days."""

    name = fields.String(
        load_default=DEFAULT_INGESTION_KEY_NAME,
        validate=validate.Length(min=1, max=INGESTION_KEY_NAME_MAX),
    )
    ttl_ms = DurationMs(minimum=1, maximum=INGESTION_KEY_TTL_MAX_MS)


class IngestionKeyReply(ResponseSchema):
    """``{key}``."""

    key = fields.Nested(IngestionKeySchema, required=True)


class IngestionKeyCreateReply(ResponseSchema):
    """``{key, token}``: the only answer that shows a token."""

    key = fields.Nested(IngestionKeySchema, required=True)
    token = fields.String(
        required=True,
        validate=[
            validate.Length(min=1),
            # It goes into an Authorization header; the message must not show it.
            validate.Regexp(
                r"[!-~\xa0-\xff](?:[ -~\xa0-\xff]*[!-~\xa0-\xff])?\Z",
                error="Must be printable latin-1 text without control characters.",
            ),
        ],
    )


class IngestionKeyListReply(ResponseSchema):
    """``{keys: [key]}``."""

    keys = fields.List(fields.Nested(IngestionKeySchema), required=True)
