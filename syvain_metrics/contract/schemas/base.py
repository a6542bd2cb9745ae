"""Schema bases and the two ways a load can fail: bad user input, or a server that broke the contract.

Example:
    >>> from marshmallow import fields
    >>> class Named(RequestSchema):
    ...     name = fields.String(required=True)
    >>> load_request(Named(), {})
    Traceback (most recent call last):
    ...
    syvain_metrics.errors.MetricsValidationError: Invalid input: name: Missing data for required field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from marshmallow import INCLUDE, RAISE, Schema, ValidationError, post_load

from syvain_metrics.contract.schemas.fields import find_unsendable
from syvain_metrics.errors import MetricsApiResponseError, MetricsValidationError


def _check_sendable(schema: Schema, data: dict[str, Any], skip: tuple[str, ...]) -> None:
    """Refuse what JSON cannot carry (a lone surrogate, an integer beyond a double) by field."""
    for name, value in data.items():
        if name in skip:
            continue
        found = find_unsendable(value, _wire_name(schema, name))
        if found is not None:
            where, why = found
            raise ValidationError({where: [why]})


def _wire_name(schema: Schema, name: str) -> str:
    field = schema.fields.get(name)
    return (field.data_key if field is not None and field.data_key else None) or name


class RequestSchema(Schema):
    """Validates what the user asks to send. Unknown keys are an error; so is text or a
    number JSON cannot carry to the service."""

    checked_by_fields: ClassVar[tuple[str, ...]] = ()
    """Fields whose own check already covers what JSON can carry (bulk paths)."""

    class Meta:
        unknown = RAISE

    @post_load
    def _sendable(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        _check_sendable(self, data, self.checked_by_fields)
        return data


class ResponseSchema(Schema):
    """Loads what the service sent. Unknown keys are kept: the service adds fields over time."""

    class Meta:
        unknown = INCLUDE


class QuerySchema(Schema):
    """Validates query parameters and loads them under their wire names, in wire order.

    ``None`` means "leave the parameter out". A field whose loaded value is a dict
    (such as a metadata filter) contributes that dict's keys in its place.
    """

    wire_order: ClassVar[tuple[str, ...]] = ()
    """Field names in the order their parameters are sent (declaration order if empty)."""

    class Meta:
        unknown = RAISE

    @post_load
    def _to_wire(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        _check_sendable(self, data, ())
        out: dict[str, Any] = {}
        for name in self.wire_order or tuple(self.fields):
            value = data.get(name)
            if value is None:
                continue
            if isinstance(value, dict):
                out.update(value)
            else:
                out[self.fields[name].data_key or name] = value
        return out


def flatten_messages(messages: Any, prefix: str = "") -> dict[str, list[str]]:
    """Turn marshmallow's nested error messages into ``{"data[3].value": [...]}``.

    Example:
        >>> flatten_messages({"data": {3: {"value": ["Must be a number."]}}})
        {'data[3].value': ['Must be a number.']}
    """
    if isinstance(messages, Mapping):
        flat: dict[str, list[str]] = {}
        for key, value in messages.items():
            if isinstance(key, int):
                path = f"{prefix}[{key}]"
            elif key == "_schema":
                path = prefix or "_schema"
            else:
                path = f"{prefix}.{key}" if prefix else str(key)
            for sub_path, sub_messages in flatten_messages(value, path).items():
                flat.setdefault(sub_path, []).extend(sub_messages)
        return flat
    if isinstance(messages, list | tuple):
        if all(isinstance(m, str) for m in messages):
            return {prefix or "_schema": [str(m) for m in messages]}
        merged: dict[str, list[str]] = {}
        for item in messages:
            for sub_path, sub_messages in flatten_messages(item, prefix).items():
                merged.setdefault(sub_path, []).extend(sub_messages)
        return merged
    return {prefix or "_schema": [str(messages)]}


def load_request(schema: Schema, data: Mapping[str, Any]) -> dict[str, Any]:
    """Validate user input with ``schema``; raise :class:`MetricsValidationError` naming each field.

    Example:
        >>> from syvain_metrics.contract.schemas.folder import FolderCreateRequest
        >>> load_request(FolderCreateRequest(), {"name": "runs"})
        {'name': 'runs', 'parent_id': None}
    """
    try:
        loaded: dict[str, Any] = schema.load(data)
    except ValidationError as error:
        raise MetricsValidationError(flatten_messages(error.messages)) from None
    return loaded


def load_response(schema: Schema, data: Any, *, operation: str) -> dict[str, Any]:
    """Load a response ``data`` payload; raise :class:`MetricsApiResponseError` naming the operation.

    Example:
        >>> from syvain_metrics.contract.schemas.folder import FolderReply
        >>> load_response(FolderReply(), {"nope": 1}, operation="get_folder")
        Traceback (most recent call last):
        ...
        syvain_metrics.errors.MetricsApiResponseError: Metrics API response for get_folder did not match the expected schema: folder: Missing data for required field.
    """
    loaded = _loaded(schema, data)
    if isinstance(loaded, str):
        # Raised here, out of any handler and without the answer: a reporter that records
        # local variables or contexts must not find it (an ingestion key's answer holds its
        # token).
        del data
        raise MetricsApiResponseError(f"Metrics API response for {operation} {loaded}")
    return loaded


def _loaded(schema: Schema, data: Any) -> dict[str, Any] | str:
    """``data`` loaded by ``schema``, or what is wrong with it; never raises."""
    if not isinstance(data, Mapping):
        return (
            "did not match the expected schema: "
            f"data must be a JSON object, got {type(data).__name__}."
        )
    try:
        loaded: dict[str, Any] = schema.load(data)
    except ValidationError as error:
        problems = "; ".join(
            f"{path}: {' '.join(msgs)}" for path, msgs in flatten_messages(error.messages).items()
        )
        return f"did not match the expected schema: {problems[:4_000]}"
    except RecursionError:
        return "is nested too deeply."
    except (TypeError, KeyError, ValueError, OverflowError, AttributeError) as error:
        # A shape no field check foresaw: still the service's fault, never a raw error.
        return f"did not match the expected schema ({type(error).__name__})."
    return loaded
