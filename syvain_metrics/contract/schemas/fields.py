"""marshmallow fields for the contract's value rules: finite numbers, safe integers, JSON objects.

Example:
    >>> from marshmallow import Schema
    >>> class Point(Schema):
    ...     value = FiniteNumber(required=True)
    >>> Point().load({"value": 1})
    {'value': 1.0}
"""

from __future__ import annotations

import datetime as dt
import json
import math
import numbers
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from marshmallow import ValidationError, fields, validate

from syvain_metrics.contract.limits import MAX_SAFE_INTEGER, MAX_TIME_MS, MIN_TIME_MS

if TYPE_CHECKING:
    _Field = fields.Field[Any]
else:  # marshmallow 3 fields are not subscriptable at run time
    _Field = fields.Field


def is_real(value: object) -> bool:
    """True for an int or float (numpy scalars included), False for ``bool`` and everything else.

    Example:
        >>> is_real(1.5), is_real(True), is_real("1")
        (True, False, False)
    """
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def find_non_finite(value: object, path: str = "") -> str | None:
    """Return the path of the first NaN or infinity inside a JSON value, else ``None``.

    Example:
        >>> find_non_finite({"a": [1, float("nan")]})
        'a[1]'
    """
    if isinstance(value, float):
        return None if math.isfinite(value) else path
    if isinstance(value, dict):
        for key, item in value.items():
            found = find_non_finite(item, f"{path}.{key}" if path else str(key))
            if found is not None:
                return found
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found = find_non_finite(item, f"{path}[{index}]")
            if found is not None:
                return found
    return None


_SURROGATE = "Must not contain a lone surrogate (text that is not valid Unicode)."
_HUGE = "Numbers must fit in a double (at most about 1.8e308)."


def text_ok(value: str) -> bool:
    """Whether a string can travel as UTF-8 JSON (no lone surrogate such as ``"\\ud800"``).

    Example:
        >>> text_ok("héllo"), text_ok("\\ud800")
        (True, False)
    """
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def find_unsendable(value: object, path: str = "") -> tuple[str, str] | None:
    """The path of the first thing JSON cannot carry to the service, and why: a string with a
    lone surrogate (as a key or a value), or an integer beyond a double's range.

    Example:
        >>> find_unsendable({"a": [1, 10**400]})
        ('a[1]', 'Numbers must fit in a double (at most about 1.8e308).')
        >>> find_unsendable({"ckpt": "ckpt-\\udcff.pt"})[0]
        'ckpt'
    """
    if isinstance(value, str):
        return None if text_ok(value) else (path or "_schema", _SURROGATE)
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return None
    if isinstance(value, int):
        try:
            float(value)
        except OverflowError:
            return (path or "_schema", _HUGE)
        return None
    if isinstance(value, Mapping):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and not text_ok(key):
                return (path or "_schema", "Keys: " + _SURROGATE)
            found = find_unsendable(item, where)
            if found is not None:
                return found
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found = find_unsendable(item, f"{path}[{index}]")
            if found is not None:
                return found
    return None


def check_json_object(value: object) -> dict[str, Any]:
    """Validate a JSON object with finite numbers only; return a plain ``dict`` copy.

    Raises ``ValidationError`` naming the bad place.

    Example:
        >>> check_json_object({"split": "train", "lr": 0.1})
        {'split': 'train', 'lr': 0.1}
    """
    if not isinstance(value, dict):
        raise ValidationError("Must be a JSON object (a dict).")
    try:
        # One C-level pass checks types, string keys and finiteness together.
        json.dumps(value, allow_nan=False)
    except ValueError as error:
        where = find_non_finite(value)
        if where is not None:
            raise ValidationError(
                f"Numbers must be finite (no NaN or Infinity) at {where}."
            ) from error
        raise ValidationError(f"Must be JSON-serialisable: {error}.") from error
    except TypeError as error:
        raise ValidationError(f"Must be JSON-serialisable: {error}.") from error
    if any(not isinstance(key, str) for key in value):
        raise ValidationError("Keys must be strings.")
    unsendable = find_unsendable(value)
    if unsendable is not None:
        where, why = unsendable
        raise ValidationError(f"{why} (at {where})")
    return dict(value)


class FiniteNumber(_Field):
    """A finite real number (no bool, no string, no NaN/Infinity), loaded as ``float``.

    Example:
        >>> FiniteNumber().deserialize(3)
        3.0
    """

    default_error_messages = {
        "invalid": "Must be a number.",
        "finite": "Must be a finite number (no NaN or Infinity).",
    }

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> float:
        if not is_real(value):
            raise self.make_error("invalid")
        try:
            number = float(value)
        except OverflowError:  # an int beyond a float's range
            raise self.make_error("finite") from None
        if not math.isfinite(number):
            raise self.make_error("finite")
        return number

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> Any:
        return value


class SafeInteger(_Field):
    """A whole number within ``minimum``..2^53-1. A whole float (``3.0``) is accepted as ``3``.

    Example:
        >>> SafeInteger(minimum=0).deserialize(3.0)
        3
    """

    default_error_messages = {
        "invalid": "Must be an integer.",
        "range": "Must be between {minimum} and {maximum}.",
    }

    def __init__(self, *, minimum: int = 0, maximum: int = MAX_SAFE_INTEGER, **kwargs: Any):
        super().__init__(**kwargs)
        self.minimum = minimum
        self.maximum = maximum

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        return self.check(value)

    def check(self, value: Any) -> int:
        """Validate one value and return it as ``int`` (the bulk paths call this directly)."""
        if isinstance(value, bool):
            raise self.make_error("invalid")
        if isinstance(value, numbers.Integral) or (is_real(value) and float(value).is_integer()):
            number = int(value)
        else:
            raise self.make_error("invalid")
        if not self.minimum <= number <= self.maximum:
            raise self.make_error("range", minimum=self.minimum, maximum=self.maximum)
        return number

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> Any:
        return value


class EpochMs(SafeInteger):
    """Milliseconds since the epoch, given as an ``int`` or a timezone-aware ``datetime``.

    Example:
        >>> import datetime as dt
        >>> EpochMs().deserialize(dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc))
        1767225600000
    """

    default_error_messages = {
        "naive": "A datetime must be timezone-aware (e.g. tzinfo=timezone.utc).",
        "invalid": "Must be an integer of milliseconds or an aware datetime.",
    }

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        if isinstance(value, dt.datetime):
            if value.tzinfo is None or value.utcoffset() is None:
                raise self.make_error("naive")
            value = math.floor(value.timestamp() * 1000)
        return self.check(value)


class DurationMs(SafeInteger):
    """A duration in milliseconds, given as an ``int`` or a ``datetime.timedelta``.

    Example:
        >>> import datetime as dt
        >>> DurationMs(minimum=1).deserialize(dt.timedelta(hours=1))
        3600000
    """

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        if isinstance(value, dt.timedelta):
            value = value // dt.timedelta(milliseconds=1)
        return self.check(value)


def time_ms(**kwargs: Any) -> fields.Integer:
    """A millisecond timestamp in an answer: an integer a ``datetime`` can hold.

    Example:
        >>> time_ms().deserialize(10**30)
        Traceback (most recent call last):
        ...
        marshmallow.exceptions.ValidationError: ['Must be greater than or equal to -62135596800000 and less than or equal to 253402300799999.']
    """
    return fields.Integer(
        strict=True, validate=validate.Range(min=MIN_TIME_MS, max=MAX_TIME_MS), **kwargs
    )


class JsonObject(_Field):
    """A JSON object whose numbers are all finite; loaded as a ``dict`` copy.

    Example:
        >>> JsonObject().deserialize({"split": "train"})
        {'split': 'train'}
    """

    def _deserialize(
        self, value: Any, attr: str | None, data: Any, **kwargs: Any
    ) -> dict[str, Any]:
        return check_json_object(value)

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> Any:
        return value


class JsonValue(_Field):
    """Any JSON value, passed through (used for output fields the contract leaves open).

    Example:
        >>> JsonValue().deserialize([1, "a"])
        [1, 'a']
    """

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        return value


class StringList(_Field):
    """A list of strings; a bare string is taken as a list of one.

    Example:
        >>> StringList().deserialize("split")
        ['split']
    """

    default_error_messages = {
        "invalid": "Must be a string or a list of strings.",
        "empty": "Must not contain an empty string.",
    }

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> list[str]:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
            raise self.make_error("invalid")
        if not all(items):
            raise self.make_error("empty")
        return list(items)


class Flag(_Field):
    """``True`` or ``False`` and nothing else (``"yes"`` or ``1`` are not taken as true).

    Example:
        >>> Flag().deserialize(True)
        True
        >>> Flag().deserialize("yes")
        Traceback (most recent call last):
        ...
        marshmallow.exceptions.ValidationError: Must be True or False.
    """

    default_error_messages = {"invalid": "Must be True or False."}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid")
        return value

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> Any:
        return value
