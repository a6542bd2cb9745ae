"""Ingest payloads: one metric, a batch of metrics, and the ingest request and reply.

:class:`MetricBatch` validates a whole list of metrics with column passes (types,
lengths, ranges, finiteness) and falls back to the per-metric
:class:`MetricInputSchema` only to name the first bad fields.

Example:
    >>> MetricBatch().deserialize([{"client_event_id": "a", "name": "loss", "value": 1}])
    [{'client_event_id': 'a', 'name': 'loss', 'value': 1.0, 'step': None}]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from itertools import chain, repeat
from typing import Any

from marshmallow import ValidationError, fields, post_load, pre_load, validate

from syvain_metrics.contract.limits import (
    CLIENT_EVENT_ID_MAX,
    INGEST_MODES,
    MAX_METRICS_PER_INGEST,
    MAX_SAFE_INTEGER,
    METRIC_NAME_MAX,
)
from syvain_metrics.contract.queries import Param, Query
from syvain_metrics.contract.schemas.base import RequestSchema, ResponseSchema
from syvain_metrics.contract.schemas.columns import (
    all_finite,
    ints_within,
    lengths_within,
    plain_json_objects,
    texts_ok,
    type_set,
)
from syvain_metrics.contract.schemas.fields import (
    FiniteNumber,
    JsonObject,
    SafeInteger,
    _Field,
    text_ok,
)

INGEST_KEYS = ("client_event_id", "name", "value", "step", "metadata", "timestamp_ms")
"""The fields of one metric, in the order they are sent."""


class MetricInputSchema(RequestSchema):
    """One metric to ingest. ``step`` is always sent (``None`` allowed); ``metadata`` and
    ``timestamp_ms`` only when given, ``timestamp_ms`` never as ``null``."""

    client_event_id = fields.String(
        required=True, validate=validate.Length(min=1, max=CLIENT_EVENT_ID_MAX)
    )
    name = fields.String(required=True, validate=validate.Length(min=1, max=METRIC_NAME_MAX))
    value = FiniteNumber(required=True)
    step = SafeInteger(minimum=0, allow_none=True, load_default=None)
    metadata = JsonObject()
    timestamp_ms = SafeInteger(minimum=0)

    @pre_load
    def _drop_null_optionals(self, data: Any, **kwargs: Any) -> Any:
        # ``None`` means "not given" for the two keys that are sent only when given.
        if isinstance(data, Mapping) and any(
            data.get(key, ...) is None for key in ("metadata", "timestamp_ms")
        ):
            return {k: v for k, v in data.items() if v is not None or k == "step"}
        return data

    @post_load
    def _wire_order(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return {key: data[key] for key in INGEST_KEYS if key in data}


class MetricBatch(_Field):
    """A list of metrics to ingest, validated column by column.

    Loads to a list of wire-ready dicts in the order of :data:`INGEST_KEYS`.
    ``max_length`` bounds one request body; the SDK validates a whole ``ingest()``
    call with no bound and splits it afterwards. ``as_given=True`` keeps the dicts of a
    plainly valid list as they are (a value may be an ``int``, ``step`` may be missing):
    for a reader that needs the check, not new dicts.

    Example:
        >>> MetricBatch().deserialize([{"client_event_id": "a", "name": "", "value": 1}])
        Traceback (most recent call last):
        ...
        marshmallow.exceptions.ValidationError: {0: {'name': ['Length must be between 1 and 500.']}}
    """

    default_error_messages = {
        "invalid": "Must be a list of metrics.",
        "too_many": "At most {max} metrics per request, got {count}.",
    }

    def __init__(
        self, *, max_length: int | None = None, as_given: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.max_length = max_length
        self.as_given = as_given

    def _deserialize(
        self, value: Any, attr: str | None, data: Any, **kwargs: Any
    ) -> list[dict[str, Any]]:
        if not isinstance(value, list | tuple):
            raise self.make_error("invalid")
        if self.max_length is not None and len(value) > self.max_length:
            raise self.make_error("too_many", max=self.max_length, count=len(value))
        items: Sequence[Any] = value
        if self.as_given and _plain_and_valid(items):
            return list(items)
        fast = _fast_batch(items)
        return fast if fast is not None else _slow_batch(items)


def _plain_and_valid(items: Sequence[Any], *, ids_optional: bool = False) -> bool:
    """Whether every item is a plain, well-typed, valid dict, told by whole-column C passes;
    ``False`` means "look closer". ``ids_optional`` lets ``client_event_id`` be missing
    (it is derived later)."""
    if type_set(items) != {dict}:
        return False
    if not set(chain.from_iterable(items)) <= set(INGEST_KEYS):
        return False
    ids: list[Any] = list(map(dict.get, items, repeat("client_event_id")))
    if ids_optional:
        ids = [i for i in ids if i is not None]
    names: list[Any] = list(map(dict.get, items, repeat("name")))
    values: list[Any] = list(map(dict.get, items, repeat("value")))
    steps: list[Any] = list(map(dict.get, items, repeat("step")))
    if ids and (
        type_set(ids) != {str}
        or not lengths_within(ids, 1, CLIENT_EVENT_ID_MAX)
        or not texts_ok(ids)
    ):
        return False
    if not ids and not ids_optional:
        return False
    if (
        type_set(names) != {str}
        or not lengths_within(names, 1, METRIC_NAME_MAX)
        or not texts_ok(names)
    ):
        return False
    if not type_set(values) <= {float, int} or not all_finite(values):
        return False
    step_types = type_set(steps)
    if not step_types <= {int, type(None)}:
        return False
    stepped = [s for s in steps if s is not None]
    if stepped and not ints_within(stepped, 0, MAX_SAFE_INTEGER):
        return False
    metadata = [m["metadata"] for m in items if "metadata" in m]
    if metadata and not plain_json_objects(metadata):
        return False
    stamps = [m["timestamp_ms"] for m in items if "timestamp_ms" in m]
    return not stamps or (type_set(stamps) == {int} and ints_within(stamps, 0, MAX_SAFE_INTEGER))


def check_metrics(items: Sequence[Any], *, offset: int = 0) -> None:
    """Validate metrics without building anything (``client_event_id`` may be missing: it is
    derived when sent); raises ``ValidationError`` keyed by index plus ``offset``.

    Example:
        >>> check_metrics([{"name": "loss", "value": 1.0, "step": 0}])
        >>> check_metrics([{"name": "loss", "value": "x"}], offset=1000)
        Traceback (most recent call last):
        ...
        marshmallow.exceptions.ValidationError: {1000: {'value': ['Must be a number.']}}
    """
    if not items or _plain_and_valid(items, ids_optional=True):
        return
    probe = [
        {**item, "client_event_id": "sm-placeholder"}
        if isinstance(item, Mapping) and "client_event_id" not in item
        else item
        for item in items
    ]
    try:
        _slow_batch(probe)
    except ValidationError as error:
        messages = error.messages
        if isinstance(messages, dict):
            messages = {offset + index: found for index, found in messages.items()}
        raise ValidationError(messages) from None


def _fast_batch(items: Sequence[Any]) -> list[dict[str, Any]] | None:
    """Validate plain well-typed dicts with whole-column C passes; ``None`` means "look closer"."""
    if not items:
        return []
    if not _plain_and_valid(items):
        return None
    ids: list[Any] = list(map(dict.get, items, repeat("client_event_id")))
    names: list[Any] = list(map(dict.get, items, repeat("name")))
    values: list[Any] = list(map(dict.get, items, repeat("value")))
    steps: list[Any] = list(map(dict.get, items, repeat("step")))
    out: list[dict[str, Any]] = []
    append = out.append
    for item, event_id, name, number, step in zip(items, ids, names, values, steps, strict=True):
        row = {"client_event_id": event_id, "name": name, "value": float(number), "step": step}
        if len(item) > 3 + ("step" in item):
            if "metadata" in item:
                row["metadata"] = dict(item["metadata"])
            if "timestamp_ms" in item:
                row["timestamp_ms"] = item["timestamp_ms"]
        append(row)
    return out


_FLAT_VALUES = (str, int, float, bool, type(None))


def is_plain_metric(
    event_id: Any,
    name: Any,
    value: Any,
    step: Any,
    metadata: Any,
    timestamp_ms: Any,
) -> bool:
    """Whether one metric (``log()``'s common case) is plainly typed and valid under the
    rules of :class:`MetricInputSchema`, told by a few scalar tests; ``False`` means "let the
    schema look": anything unusual (nested metadata, a bad field) goes there for conversion
    or a precise error. ``log()`` converts numpy and torch scalars before asking.

    Example:
        >>> is_plain_metric("id-1", "loss", 1, 3, {"split": "train"}, None)
        True
        >>> is_plain_metric("id-1", "loss", float("nan"), 3, None, None)
        False
    """
    kind = type(value)
    if kind is not float and kind is not int:
        return False
    if type(event_id) is not str or not 0 < len(event_id) <= CLIENT_EVENT_ID_MAX:
        return False
    if type(name) is not str or not 0 < len(name) <= METRIC_NAME_MAX:
        return False
    if not (name.isascii() and event_id.isascii()) and not (text_ok(name) and text_ok(event_id)):
        return False
    try:
        if not math.isfinite(value):
            return False
    except OverflowError:
        return False
    return is_plain_context(step, metadata, timestamp_ms)


def is_plain_name(name: Any) -> bool:
    """Whether ``name`` is plainly a valid metric name (a string of 1 to 500 characters that
    UTF-8 can carry); ``False`` means "let the schema say what is wrong".

    Example:
        >>> is_plain_name("train/loss"), is_plain_name(""), is_plain_name(3)
        (True, False, False)
    """
    return (
        type(name) is str and 0 < len(name) <= METRIC_NAME_MAX and (name.isascii() or text_ok(name))
    )


def is_plain_context(step: Any, metadata: Any, timestamp_ms: Any) -> bool:
    """Whether the fields one ``log()`` call shares among its values (``step``,
    ``metadata``, ``timestamp_ms``) are plainly typed and valid: an int step or ``None``,
    flat metadata of strings, bools, nulls and finite numbers, an int timestamp or ``None``.

    Example:
        >>> is_plain_context(3, {"split": "train"}, None)
        True
        >>> is_plain_context(3, {"nested": {"a": 1}}, None)
        False
    """
    if step is not None and (type(step) is not int or not 0 <= step <= MAX_SAFE_INTEGER):
        return False
    if timestamp_ms is not None and (
        type(timestamp_ms) is not int or not 0 <= timestamp_ms <= MAX_SAFE_INTEGER
    ):
        return False
    if metadata is None:
        return True
    if type(metadata) is not dict:
        return False
    for key, item in metadata.items():
        # Flat string, bool, null or finite-number values only; the rest to the schema.
        if type(key) is not str or type(item) not in _FLAT_VALUES:
            return False
        if not key.isascii() and not text_ok(key):
            return False
        if type(item) is str and not item.isascii() and not text_ok(item):
            return False
        if type(item) is float and not math.isfinite(item):
            return False
        if type(item) is int and abs(item) > MAX_SAFE_INTEGER:
            return False
    return True


_METRIC_INPUT = MetricInputSchema()


def _slow_batch(items: Sequence[Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    errors: dict[int, Any] = {}
    for index, item in enumerate(items):
        if not isinstance(item, Mapping):
            errors[index] = {"_schema": ["Must be a metric (a dict or a MetricPoint)."]}
            continue
        try:
            out.append(_METRIC_INPUT.load(dict(item)))
        except ValidationError as error:
            errors[index] = error.messages
        if len(errors) >= 10:  # enough to act on; a 100k batch need not list every failure
            break
    if errors:
        raise ValidationError(errors)
    return out


class IngestRequest(RequestSchema):
    """Body of ``POST /experiments/{id}/ingest``: at most 1,000 metrics."""

    checked_by_fields = ("data",)  # each metric is checked, text included, by MetricBatch

    data = MetricBatch(required=True, max_length=MAX_METRICS_PER_INGEST)


class CheckedIngestRequest(IngestRequest):
    """:class:`IngestRequest` for a reader that stores the request's own text: plainly valid
    metrics are checked and kept as given (``MetricBatch(as_given=True)``)."""

    data = MetricBatch(required=True, max_length=MAX_METRICS_PER_INGEST, as_given=True)


INGEST = Query("IngestQuery", (Param("sync", "flag"),))
"""Query of ``POST /experiments/{id}/ingest`` (endpoint 13)."""


class IngestReply(ResponseSchema):
    """``{ok: true, mode}``."""

    ok = fields.Boolean(required=True, validate=validate.Equal(True))
    mode = fields.String(required=True, validate=validate.OneOf(INGEST_MODES))
