"""Query-string schemas of the local server, built on the SDK's limits.

Query values arrive as strings (a repeated key as several); each schema here parses
them into Python values and rejects anything the contract does not allow, naming the
parameter in ``field=``. Unknown parameters are an error too, so a client that
misspells one finds out at once instead of getting unfiltered rows.

Example:
    >>> from werkzeug.datastructures import MultiDict
    >>> query = MultiDict([("step", "3"), ("sort_direction", "desc")])
    >>> sorted(load_query(MetricsListQuery(), query).items())
    [('sort_direction', 'desc'), ('step', 3)]
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar, Protocol

from marshmallow import (
    RAISE,
    Schema,
    ValidationError,
    fields,
    pre_load,
    validate,
    validates_schema,
)

from syvain_metrics.contract.limits import (
    COMPARE_SORT_KEYS,
    EXPERIMENT_STATUSES,
    MAX_COMPARE_SERIES,
    MAX_SAFE_INTEGER,
    METRIC_SORT_KEYS,
    SORT_DIRECTIONS,
)
from syvain_metrics.contract.schemas.fields import _Field
from syvain_metrics.server.errors import from_validation, invalid
from syvain_metrics.server.inputs import BadJsonError, parse_json

_INTEGER = re.compile(r"-?[0-9]{1,30}")


class MultiValues(Protocol):
    """What the loader needs of a query mapping (werkzeug's ``MultiDict`` fits)."""

    def __iter__(self) -> Iterator[str]: ...

    def getlist(self, key: str) -> list[str]: ...


def clamp_limit(value: int | None, bounds: tuple[int, int]) -> int:
    """The default when ``value`` is ``None``, else ``value`` clamped to the maximum.

    Example:
        >>> clamp_limit(None, (100, 1000)), clamp_limit(5000, (100, 1000))
        (100, 1000)
    """
    default, maximum = bounds
    return default if value is None else min(value, maximum)


def parse_json_text(text: str) -> Any:
    """Parse a JSON query value the server will hold (see
    :func:`~syvain_metrics.server.inputs.parse_json`); ``ValueError`` otherwise.

    Example:
        >>> parse_json_text('{"a": 1.0}')
        {'a': 1.0}
        >>> parse_json_text("1e400")
        Traceback (most recent call last):
        ...
        syvain_metrics.server.inputs.BadJsonError: Numbers must be finite (no NaN or Infinity, nothing beyond a double's range).
    """
    return parse_json(text)


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
        >>> SortBy(choices=("step", "client_timestamp")).deserialize("step,client_timestamp")
        ['step', 'client_timestamp']
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
    """A JSON text (finite numbers only), loaded as the value it encodes.

    Example:
        >>> JsonText().deserialize('[1, "a"]')
        [1, 'a']
    """

    default_error_messages = {"invalid": "Must be a JSON text with finite numbers."}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if not isinstance(value, str):
            raise self.make_error("invalid")
        try:
            return parse_json_text(value)
        except BadJsonError as error:
            raise ValidationError(error.problem) from None


class QuerySchema(Schema):
    """A query schema: unknown parameters are an error; ``repeated`` names list parameters."""

    repeated: ClassVar[frozenset[str]] = frozenset()

    class Meta:
        unknown = RAISE


def load_query(schema: QuerySchema, args: MultiValues) -> dict[str, Any]:
    """Validate a query mapping with ``schema``; raise a 400 :class:`ApiError` naming the field.

    A parameter that is not repeatable must appear at most once.

    Example:
        >>> from werkzeug.datastructures import MultiDict
        >>> load_query(AnnotationListQuery(), MultiDict([("limit", "0")]))
        Traceback (most recent call last):
        ...
        syvain_metrics.server.errors.ApiError: Invalid query: limit: Must be at least 1.
    """
    data: dict[str, Any] = {}
    for key in args:
        values = args.getlist(key)
        if key in schema.repeated:
            data[key] = values
        elif len(values) > 1:
            raise invalid(key, "Must be given at most once.", what="query")
        else:
            data[key] = values[0]
    try:
        loaded: dict[str, Any] = schema.load(data)
    except ValidationError as error:
        raise from_validation(error, what="query") from None
    return loaded


def _limit() -> QueryInt:
    return QueryInt(minimum=1, maximum=None)


def _ms(name: str | None = None) -> QueryInt:
    return QueryInt(minimum=0, data_key=name)


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


class EmptyQuery(QuerySchema):
    """Endpoints that take no query parameters."""


class FolderListQuery(QuerySchema):
    """``GET /folders``."""

    path = fields.String()


class ExperimentListQuery(QuerySchema):
    """``GET /experiments``."""

    status = fields.String(validate=validate.OneOf(EXPERIMENT_STATUSES))
    slug = fields.String()
    search = fields.String()
    from_ms = _ms("from")
    to_ms = _ms("to")
    limit = _limit()


class _MetricFilters(QuerySchema):
    """Per-series filters shared by list-metrics and each compare series."""

    metric_name = fields.String(validate=validate.Length(min=1))
    metadata_key = fields.String(validate=validate.Length(min=1))
    metadata_value = fields.String()
    metadata_value_json = JsonText()

    @validates_schema
    def _metadata_rule(self, data: dict[str, Any], **kwargs: Any) -> None:
        check_metadata_filter(data)


class _RangeQuery(QuerySchema):
    """Step, bounds, order and limit: shared by list-metrics and compare (the contract's
    "parameters of 11 without the per-series filters")."""

    step = QueryInt(minimum=0)
    from_step = QueryInt(minimum=0)
    to_step = QueryInt(minimum=0)
    from_time = _ms()
    to_time = _ms()
    sort_direction = fields.String(validate=validate.OneOf(SORT_DIRECTIONS))
    limit = _limit()
    include_experiment_meta_as_of = QueryBool()


class MetricsListQuery(_MetricFilters, _RangeQuery):
    """``GET /experiments/{id}/metrics``."""

    sort_by = SortBy(choices=METRIC_SORT_KEYS)


class SeriesWire(Schema):
    """One decoded ``series`` value; keys whose value is null count as absent."""

    class Meta:
        unknown = RAISE

    experiment_id = fields.String(required=True, validate=validate.Length(min=1))
    metric_name = fields.String(required=True, validate=validate.Length(min=1))
    metadata_key = fields.String(validate=validate.Length(min=1))
    metadata_value = fields.String()
    metadata_value_json = JsonText()

    @pre_load
    def _drop_nulls(self, data: Any, **kwargs: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None}
        return data

    @validates_schema
    def _metadata_rule(self, data: dict[str, Any], **kwargs: Any) -> None:
        check_metadata_filter(data)


_SERIES_WIRE = SeriesWire()


class SeriesParam(_Field):
    """One ``series`` query value: a compact JSON object loaded by :class:`SeriesWire`.

    Example:
        >>> SeriesParam().deserialize('{"experiment_id":"e1","metric_name":"loss"}')
        {'experiment_id': 'e1', 'metric_name': 'loss'}
    """

    default_error_messages = {
        "invalid": "Must be a JSON object with experiment_id and metric_name."
    }

    def _deserialize(
        self, value: Any, attr: str | None, data: Any, **kwargs: Any
    ) -> dict[str, Any]:
        try:
            decoded = parse_json_text(value) if isinstance(value, str) else None
        except BadJsonError as error:
            raise ValidationError(error.problem) from None
        if not isinstance(decoded, dict):
            raise self.make_error("invalid")
        loaded: dict[str, Any] = _SERIES_WIRE.load(decoded)
        return loaded


class CompareQuery(_RangeQuery):
    """``GET /metrics``: 1 to 64 ``series`` plus the shared bounds."""

    repeated = frozenset({"series"})

    series = fields.List(
        SeriesParam(), required=True, validate=validate.Length(min=1, max=MAX_COMPARE_SERIES)
    )
    sort_by = SortBy(choices=COMPARE_SORT_KEYS)


class IngestQuery(QuerySchema):
    """``POST /experiments/{id}/ingest``."""

    sync = QueryBool()


class CatalogQuery(QuerySchema):
    """``GET /experiments/{id}/catalog``."""

    limit = _limit()


class CatalogValuesQuery(QuerySchema):
    """``GET /experiments/{id}/catalog/{metric}``; ``key`` may repeat."""

    repeated = frozenset({"key"})

    key = fields.List(fields.String(validate=validate.Length(min=1)))
    limit = _limit()


class AnnotationListQuery(QuerySchema):
    """``GET /experiments/{id}/annotations``."""

    from_ms = _ms("from")
    to_ms = _ms("to")
    limit = _limit()
