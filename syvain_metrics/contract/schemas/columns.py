"""Whole-column checks: the C-level passes behind the bulk validation of metrics and rows.

Each takes a column (a list of one field's values) and answers in one pass of ``map`` or a
builtin, so 100,000 values cost milliseconds.

Example:
    >>> type_set([1, 2.0, None]) == {int, float, type(None)}
    True
    >>> all_finite([1.0, float("inf")])
    False
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from itertools import chain
from typing import Any

from syvain_metrics.contract.schemas.fields import text_ok


def type_set(values: Sequence[Any]) -> set[type]:
    """The exact types found in a column (``bool`` is not ``int`` here)."""
    return set(map(type, values))


def texts_ok(values: Sequence[str]) -> bool:
    """Every string of the column can travel as UTF-8 (see :func:`text_ok`)."""
    return all(map(str.isascii, values)) or all(map(text_ok, values))


def lengths_within(values: Sequence[str], low: int, high: int) -> bool:
    """Every string of the column has a length within ``low``..``high``."""
    return not values or (min(map(len, values)) >= low and max(map(len, values)) <= high)


def ints_within(values: Sequence[int], low: int, high: int) -> bool:
    """Every integer of the column lies within ``low``..``high``."""
    return not values or (min(values) >= low and max(values) <= high)


def all_finite(values: Sequence[float]) -> bool:
    """No NaN, no infinity, and no integer too large for a float."""
    try:
        return all(map(math.isfinite, values))
    except OverflowError:  # an int too large for a float
        return False


def finite(value: float) -> bool:
    """:func:`all_finite` for one value."""
    return all_finite([value])


_HUGE_DIGITS = re.compile(r"\d{300}")


def plain_json_objects(objects: list[Any]) -> bool:
    """Dicts with string keys whose whole content is finite JSON (one ``json.dumps`` pass)."""
    if type_set(objects) != {dict} or not type_set(list(chain.from_iterable(objects))) <= {str}:
        return False
    try:
        text = json.dumps(objects, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError):
        return False
    # Lone surrogates, and digits enough for an integer beyond a double: look closer.
    return (text.isascii() or text_ok(text)) and _HUGE_DIGITS.search(text) is None
