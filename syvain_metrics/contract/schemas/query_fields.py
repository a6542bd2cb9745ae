"""The fields of query parameters, in the two forms one declaration is loaded from.

The SDK loads Python values (``limit=50``, a ``datetime``, ``metadata={"split": "train"}``)
and sends them; the local server loads the strings of a query string (``limit=50``,
``sort_by=step,client_timestamp``). :mod:`syvain_metrics.contract.queries` picks one field
of each form for every parameter it declares.

Example:
    >>> SortKeys(choices=("step", "client_timestamp")).deserialize(["step"])
    'step'
    >>> SortBy(choices=("step", "client_timestamp")).deserialize("step,client_timestamp")
    ['step', 'client_timestamp']
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, pre_load, validate, validates_schema

from syvain_metrics.contract.limits import MAX_SAFE_INTEGER
from syvain_metrics.contract.schemas.fields import _Field

JsonLoader = Callable[[str], Any]
"""Parses the JSON text of a query value; raises :class:`ValidationError` saying why not."""

_INTEGER = re.compile(r"-?[0-9]{1,30}")

# -- what the SDK loads: Python values -----------------------------------------------------


def metadata_filter(value: Any) -> dict[str, str]:
    """Turn a user's ``metadata=`` filter into query parameters.

    A ``str`` selects events that have that key; a one-key ``dict`` selects by value:
    a ``str`` value goes as ``metadata_value``, any other JSON value as compact
    ``metadata_value_json``.

    Example:
        >>> metadata_filter({"split": "train"})
        {'metadata_key': 'split', 'metadata_value': 'train'}
        >>> metadata_filter({"layer": 3})
        {'metadata_key': 'layer', 'metadata_value_json': '3'}
    """
    if isinstance(value, str):
        if not value:
            raise ValidationError("A metadata key must not be empty.")
        return {"metadata_key": value}
    if not isinstance(value, Mapping) or len(value) != 1:
        raise ValidationError(
            "Must be a metadata key (str) or a dict with exactly one key, e.g. {'split': 'train'}."
        )
    ((key, wanted),) = value.items()
    if not isinstance(key, str) or not key:
        raise ValidationError("A metadata key must be a non-empty string.")
    if isinstance(wanted, str):
        return {"metadata_key": key, "metadata_value": wanted}
    try:
        text = json.dumps(wanted, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as error:
        raise ValidationError(f"The metadata value must be finite JSON: {error}.") from None
    return {"metadata_key": key, "metadata_value_json": text}


class MetadataFilter(_Field):
    """The ``metadata=`` argument of metric reads (see :func:`metadata_filter`)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        return metadata_filter(value)


class SortKeys(_Field):
    """``sort_by``: one key or a list of keys, sent comma-joined."""

    def __init__(self, *, choices: Sequence[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.choices = tuple(choices)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        keys = [value] if isinstance(value, str) else value
        if not isinstance(keys, list | tuple) or not keys:
            raise ValidationError(f"Must be one of {', '.join(self.choices)} or a list of them.")
        bad = [k for k in keys if k not in self.choices]
        if bad:
            raise ValidationError(
                f"Unknown sort key {bad[0]!r}; must be among {', '.join(self.choices)}."
            )
        return ",".join(keys)


# -- what the server loads: the strings of a query string -----------------------------------


class QueryInt(_Field):
    """A decimal integer string within ``minimum``..``maximum`` (no maximum: any size).

    Example:
        >>> QueryInt(minimum=1).deserialize("20")
        20
    """

    default_error_messages = {
        "invalid": "Must be an integer.",
        "low": "Must be at least {minimum}.",
        "high": "Must be at most {maximum}.",
    }

    def __init__(
        self, *, minimum: int = 0, maximum: int | None = MAX_SAFE_INTEGER, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.minimum = minimum
        self.maximum = maximum

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        if not isinstance(value, str) or not _INTEGER.fullmatch(value):
            raise self.make_error("invalid")
        number = int(value)
        if number < self.minimum:
            raise self.make_error("low", minimum=self.minimum)
        if self.maximum is not None and number > self.maximum:
            raise self.make_error("high", maximum=self.maximum)
        return number


class QueryBool(_Field):
    """``true`` or ``false``, as the contract writes booleans.

    Example:
        >>> QueryBool().deserialize("true")
        True
    """

    default_error_messages = {"invalid": "Must be true or false."}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if value not in ("true", "false"):
            raise self.make_error("invalid")
        return bool(value == "true")


class SortBy(_Field):
    """A comma-joined list of sort keys, loaded as a list.

    Example:
        >>> SortBy(choices=("step", "client_timestamp")).deserialize("step")
        ['step']
    """

    def __init__(self, *, choices: tuple[str, ...], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.choices = choices

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> list[str]:
        keys = value.split(",") if isinstance(value, str) else []
        bad = [key for key in keys if key not in self.choices]
        if not keys or bad:
            raise ValidationError(
                f"Must be a comma-joined list of {', '.join(self.choices)}"
                + (f"; got {bad[0]!r}." if bad else ".")
            )
        return keys


class JsonText(_Field):
    """A JSON text, loaded as the value it encodes by the loader the reader trusts.

    Example:
        >>> JsonText(json.loads).deserialize('[1, "a"]')
        [1, 'a']
    """

    default_error_messages = {"invalid": "Must be a JSON text with finite numbers."}

    def __init__(self, loads: JsonLoader, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.loads = loads

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if not isinstance(value, str):
            raise self.make_error("invalid")
        return self.loads(value)


def check_metadata_filter(data: Mapping[str, Any]) -> None:
    """At most one value form, and either needs ``metadata_key`` (contract, endpoint 11)."""
    if "metadata_value" in data and "metadata_value_json" in data:
        raise ValidationError(
            "Give metadata_value or metadata_value_json, not both.",
            field_name="metadata_value_json",
        )
    for name in ("metadata_value", "metadata_value_json"):
        if name in data and "metadata_key" not in data:
            raise ValidationError(f"Required with {name}.", field_name="metadata_key")


def metadata_fields(loads: JsonLoader) -> dict[str, _Field]:
    """The three metadata filter parameters as the server reads them."""
    return {
        "metadata_key": fields.String(validate=validate.Length(min=1)),
        "metadata_value": fields.String(),
        "metadata_value_json": JsonText(loads),
    }


class _SeriesWire(Schema):
    """One decoded ``series`` value; keys whose value is null count as absent."""

    class Meta:
        unknown = RAISE

    experiment_id = fields.String(required=True, validate=validate.Length(min=1))
    metric_name = fields.String(required=True, validate=validate.Length(min=1))

    @pre_load
    def _drop_nulls(self, data: Any, **kwargs: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None}
        return data

    @validates_schema
    def _metadata_rule(self, data: dict[str, Any], **kwargs: Any) -> None:
        check_metadata_filter(data)


def series_wire(loads: JsonLoader) -> Schema:
    """The schema of one decoded ``series`` value, its JSON metadata read by ``loads``."""
    schema: type[Schema] = type("SeriesWire", (_SeriesWire,), dict(metadata_fields(loads)))
    return schema()


class SeriesParam(_Field):
    """One ``series`` query value: a compact JSON object loaded by :func:`series_wire`.

    Example:
        >>> SeriesParam(json.loads).deserialize('{"experiment_id":"e1","metric_name":"loss"}')
        {'experiment_id': 'e1', 'metric_name': 'loss'}
    """

    default_error_messages = {
        "invalid": "Must be a JSON object with experiment_id and metric_name."
    }

    def __init__(self, loads: JsonLoader, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.loads = loads
        self.schema = series_wire(loads)

    def _deserialize(
        self, value: Any, attr: str | None, data: Any, **kwargs: Any
    ) -> dict[str, Any]:
        decoded = self.loads(value) if isinstance(value, str) else None
        if not isinstance(decoded, dict):
            raise self.make_error("invalid")
        loaded: dict[str, Any] = self.schema.load(decoded)
        return loaded
