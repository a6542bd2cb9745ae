"""``GET /auth/status`` payload.

Example:
    >>> AuthStatusReply().load({"auth": {"kind": "api_key"}, "organization": {"id": "o1"}})
    {'auth': {'kind': 'api_key'}, 'organization': {'id': 'o1', 'name': None}}
"""

from __future__ import annotations

from marshmallow import fields, validate

from syvain_metrics.contract.limits import AUTH_KINDS
from syvain_metrics.contract.schemas.base import ResponseSchema


class AuthIdentitySchema(ResponseSchema):
    """``{kind}``."""

    kind = fields.String(required=True, validate=validate.OneOf(AUTH_KINDS))


class OrganizationSchema(ResponseSchema):
    """``{id, name?}``."""

    id = fields.String(required=True)
    name = fields.String(allow_none=True, load_default=None)


class AuthStatusReply(ResponseSchema):
    """``{auth, organization}``."""

    auth = fields.Nested(AuthIdentitySchema, required=True)
    organization = fields.Nested(OrganizationSchema, required=True)
