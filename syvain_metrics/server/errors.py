"""Errors the local server answers with, each carrying the contract's ``code=`` and ``field=``.

Handlers raise :class:`ApiError`; the application turns it into the envelope
``{"data": null, "error": {"message": ..., "details": "code=...; field=..."}}``.

Example:
    >>> error = ApiError(404, "not_found", "Experiment not found")
    >>> error.envelope()
    {'data': None, 'error': {'message': 'Experiment not found', 'details': 'code=not_found'}}
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from marshmallow import ValidationError

from syvain_metrics.contract.schemas.base import flatten_messages

VALIDATION_ERROR = "validation_error"


class ApiError(Exception):
    """An HTTP error answer: status, machine-readable code, message and optional field.

    Example:
        >>> ApiError(409, "slug_exists", "Slug already exists", field="slug").details
        'code=slug_exists; field=slug'
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = dict(headers or {})

    @property
    def details(self) -> str:
        """The ``;``-separated ``key=value`` details string."""
        parts = [f"code={self.code}"]
        if self.field is not None:
            parts.append(f"field={self.field}")
        return "; ".join(parts)

    def envelope(self) -> dict[str, Any]:
        """The response body for this error."""
        return {"data": None, "error": {"message": self.message, "details": self.details}}


def not_found(what: str, *, field: str | None = None) -> ApiError:
    """``404 not_found`` for a missing (or another organization's) resource.

    Example:
        >>> not_found("Folder", field="parent_id").details
        'code=not_found; field=parent_id'
    """
    return ApiError(404, "not_found", f"{what} not found", field=field)


def invalid(field: str, problem: str, *, what: str = "request") -> ApiError:
    """``400 validation_error`` naming one field.

    Example:
        >>> invalid("limit", "Must be at least 1.").message
        'Invalid request: limit: Must be at least 1.'
    """
    return ApiError(400, VALIDATION_ERROR, f"Invalid {what}: {field}: {problem}", field=field)


def from_validation(error: ValidationError, *, what: str, prefix: str = "") -> ApiError:
    """Map a marshmallow error to ``400 validation_error`` with the first bad field.

    Paths use the SDK's :func:`~syvain_metrics.contract.schemas.base.flatten_messages`, so an ingest
    body error names e.g. ``data[3].value``.

    Example:
        >>> err = ValidationError({"data": {3: {"value": ["Must be a number."]}}})
        >>> from_validation(err, what="request body").details
        'code=validation_error; field=data[3].value'
    """
    flat = flatten_messages(error.messages, prefix)
    if not flat:
        return invalid(prefix or "body", "Invalid value.", what=what)
    field, messages = next(iter(flat.items()))
    if field == "_schema":  # a whole-object rule, e.g. "a folder patch needs name or parent_id"
        field = prefix or "body"
    return invalid(field, " ".join(messages), what=what)


_SERVING_ERROR_CODES = {
    400: "bad_request",
    403: "forbidden",
    408: "request_timeout",
    413: "payload_too_large",
    414: "uri_too_long",
    417: "expectation_failed",
    431: "headers_too_large",
    501: "not_implemented",
}
"""The codes of the errors the serving layer answers before the app sees a request."""


def envelope_error(status: int, reason: str) -> bytes:
    """The body of an error the serving layer (waitress, a gunicorn worker) answers by
    itself, in the contract's envelope.

    Example:
        >>> envelope_error(431, "Request Header Fields Too Large")
        b'{"data":null,"error":{"message":"Request Header Fields Too Large","details":"code=headers_too_large"}}'
    """
    code = _SERVING_ERROR_CODES.get(status, "internal_error")
    error = {"message": reason, "details": f"code={code}"}
    return json.dumps({"data": None, "error": error}, separators=(",", ":")).encode()


def closing_answer(status: int, reason: str, headers: Mapping[str, str] | None = None) -> bytes:
    """A whole HTTP/1.1 answer, body in the envelope, that closes its connection: what the
    serving layer writes to a socket itself (a request past its deadline, a head the
    parser refused).

    Example:
        >>> closing_answer(408, "Request Timeout").split(b"\\r\\n")[:2]
        [b'HTTP/1.1 408 Request Timeout', b'Connection: close']
    """
    body = envelope_error(status, reason)
    lines = [
        f"HTTP/1.1 {status} {reason}",
        "Connection: close",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        *(f"{name}: {value}" for name, value in (headers or {}).items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body
