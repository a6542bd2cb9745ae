"""Folder payloads: the resource, its request bodies and the replies that carry it.

Example:
    >>> FolderSchema().load({"folder_id": "f1", "org_id": "o1", "name": "runs", "path_name": "runs"})
    {'folder_id': 'f1', 'org_id': 'o1', 'name': 'runs', 'parent_id_path': [], 'path_name': 'runs'}
"""

from __future__ import annotations

from typing import Any

from marshmallow import ValidationError, fields, validate, validates_schema

from syvain_metrics.contract.limits import FOLDER_NAME_MAX
from syvain_metrics.contract.queries import Param, Query
from syvain_metrics.contract.schemas.base import RequestSchema, ResponseSchema

FolderName = validate.Length(min=1, max=FOLDER_NAME_MAX)


class FolderSchema(ResponseSchema):
    """A folder as the service returns it (``parent_id_path`` may be absent: read as ``[]``)."""

    folder_id = fields.String(required=True)
    org_id = fields.String(required=True)
    name = fields.String(required=True)
    parent_id_path = fields.List(fields.String(), load_default=list)
    path_name = fields.String(required=True)


class FolderCreateRequest(RequestSchema):
    """Body of ``POST /folders``. ``parent_id`` is always sent; ``null`` means the root."""

    name = fields.String(required=True, validate=FolderName)
    parent_id = fields.String(allow_none=True, load_default=None)


class FolderPatchRequest(RequestSchema):
    """Body of ``PATCH /folders/{id}``: a present ``parent_id`` (even ``null``) moves the folder."""

    name = fields.String(validate=FolderName)
    parent_id = fields.String(allow_none=True)

    @validates_schema
    def _needs_a_change(self, data: dict[str, Any], **kwargs: Any) -> None:
        if "name" not in data and "parent_id" not in data:
            raise ValidationError("A folder patch needs name or parent_id.")


FOLDER_LIST = Query("FolderListQuery", (Param("path", "text"),))
"""Query of ``GET /folders`` (endpoint 2)."""

FolderListQuery = FOLDER_LIST.client_schema()
"""Query of ``GET /folders``."""


class FolderReply(ResponseSchema):
    """``{folder}``."""

    folder = fields.Nested(FolderSchema, required=True)


class FolderListReply(ResponseSchema):
    """``{folders: [Folder]}``."""

    folders = fields.List(fields.Nested(FolderSchema), required=True)
