"""The response envelope ``{"data": ..., "error": ...}`` and the mapping of failures to errors.

Example:
    >>> unwrap_envelope({"data": {"ok": True}, "error": None}, operation="ingest")
    {'ok': True}
    >>> error = request_error(404, '{"data":null,"error":{"message":"Experiment not found",'
    ...                            '"details":"code=not_found"}}')
    >>> str(error), error.error_code, error.retryable, error.field
    ('HTTP 404: Experiment not found: code=not_found', 'not_found', False, None)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from syvain_metrics.errors import (
    MetricsApiRequestError,
    MetricsApiResponseError,
    request_error_class,
)

RETRYABLE_STATUSES = frozenset({408, 425, 429})
IN_PROGRESS = "idempotency_key_in_progress"
_GENERIC = "Metrics API request failed."
_BODY_EXCERPT = 500
_MESSAGE_MAX = 4_000


def error_message(error: Any) -> str | None:
    """The envelope's error as one line: ``message`` joined with ``: details`` when present."""
    if error is None:
        return None
    if isinstance(error, str):
        return error if error else _GENERIC
    if not isinstance(error, Mapping):
        return _GENERIC
    message = error.get("message")
    base = message if isinstance(message, str) and message else _GENERIC
    details = error.get("details")
    return f"{base}: {details}" if isinstance(details, str) and details else str(base)


def error_code(error: Any) -> str | None:
    """The ``code=...`` part of an envelope error's ``details``, if any.

    Example:
        >>> error_code({"message": "x", "details": "code=validation_error; field=name"})
        'validation_error'
    """
    return _detail(error, "code")


def error_field(error: Any) -> str | None:
    """The ``field=...`` part of an envelope error's ``details`` (the request field the
    answer is about), if any.

    Example:
        >>> error_field({"message": "x", "details": "code=validation_error; field=data[3]"})
        'data[3]'
    """
    return _detail(error, "field")


def _detail(error: Any, name: str) -> str | None:
    """One ``name=value`` part of the ``;``-separated ``details`` of an envelope error."""
    if not isinstance(error, Mapping) or not isinstance(error.get("details"), str):
        return None
    for part in error["details"].split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key.strip() == name and value.strip():
            return str(value.strip())
    return None


def is_retryable(status: int, code: str | None) -> bool:
    """408, 425, 429, any 5xx, and a 409 whose code says the first attempt is still running."""
    return status in RETRYABLE_STATUSES or status >= 500 or (status == 409 and code == IN_PROGRESS)


def request_error(status: int, body: str) -> MetricsApiRequestError:
    """Build the error for an HTTP status >= 400 from the response body text (its class
    follows the status: :class:`~syvain_metrics.MetricsApiNotFoundError` for 404, ...)."""
    message: str | None = None
    code: str | None = None
    field: str | None = None
    try:
        payload = json.loads(body) if body else None
    except (ValueError, RecursionError):
        payload = None
    if isinstance(payload, Mapping) and payload.get("error") is not None:
        message = error_message(payload["error"])
        code = error_code(payload["error"])
        field = error_field(payload["error"])
    if message is None:
        message = body[:_BODY_EXCERPT] if body else _GENERIC
    return request_error_class(status)(
        f"HTTP {status}: {message[:_MESSAGE_MAX]}",
        status_code=status,
        error_code=code,
        retryable=is_retryable(status, code),
        field=field,
    )


def unwrap_envelope(payload: Any, *, operation: str) -> Any:
    """Return ``data`` of a 2xx envelope; raise :class:`MetricsApiResponseError` if it is broken."""
    if not isinstance(payload, Mapping):
        raise MetricsApiResponseError(
            f"Metrics API response for {operation} must be a JSON object envelope."
        )
    if "error" not in payload or "data" not in payload:
        missing = "error" if "error" not in payload else "data"
        raise MetricsApiResponseError(
            f"Metrics API response for {operation} must include {missing!r}."
        )
    if payload["error"] is not None:
        raise MetricsApiResponseError(
            f"Metrics API response for {operation} carried an error with a success status: "
            f"{error_message(payload['error'])}"
        )
    return payload["data"]
