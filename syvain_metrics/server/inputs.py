"""JSON input the local server will hold: parsed once, then checked in one pass.

SQLite cannot store a lone surrogate (``"\\ud800"`` is valid JSON, but not UTF-8), a double
cannot hold ``1e400`` or ``10**400``, and deep nesting exhausts the recursion of every JSON
step after parsing. :func:`parse_json` refuses all of these with a :class:`BadJsonError` naming
the place, before anything else looks at the value. NUL characters are kept: JSON and
SQLite both hold them, and they read back as sent.

Example:
    >>> parse_json('{"data": [{"metadata": {"seed": 7}}]}')
    {'data': [{'metadata': {'seed': 7}}]}
    >>> parse_json('{"name": "\\\\ud800"}')
    Traceback (most recent call last):
    ...
    syvain_metrics.server.inputs.BadJsonError: name: Must not contain a lone surrogate (U+D800 to U+DFFF).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

from syvain_metrics.server.limits import MAX_JSON_DEPTH, MAX_METADATA_BYTES

METADATA = "metadata"
"""The member holding a metadata object in every body that has one (experiment, metric,
annotation); its size is bounded by :data:`MAX_METADATA_BYTES`."""


class BadJsonError(ValueError):
    """A JSON value the server refuses: ``where`` (a field path such as ``data[3].metadata``,
    ``""`` for the whole text) and ``problem`` (a sentence that never quotes the value).

    Example:
        >>> str(BadJsonError("data[0].value", "Numbers must be finite."))
        'data[0].value: Numbers must be finite.'
    """

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where}: {problem}" if where else problem)
        self.where = where
        self.problem = problem


def _has_lone_surrogate(text: str) -> bool:
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _shown(key: str) -> str:
    # A key in an error message: a lone surrogate is written as its escape.
    return key.encode("utf-8", "backslashreplace").decode("utf-8")


def parse_json(text: str | bytes, *, where: str = "") -> Any:
    """Parse a JSON text and :func:`check_json` its value; :class:`BadJsonError` otherwise (bytes
    must be UTF-8).

    Example:
        >>> parse_json(b"[1, 2.5]")
        [1, 2.5]
        >>> parse_json('{"a": ' + "[" * 40 + "]" * 40 + "}")
        Traceback (most recent call last):
        ...
        syvain_metrics.server.inputs.BadJsonError: a[0][0]...[0]: Must be nested at most 32 levels deep.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise BadJsonError(where, "Must be UTF-8 text.") from None
    try:
        # NaN and Infinity are read as floats, so the check names where they stand.
        value = json.loads(text, parse_constant=float)
    except RecursionError:
        raise BadJsonError(where, f"Must be nested at most {MAX_JSON_DEPTH} levels deep.") from None
    except ValueError:
        raise BadJsonError(where, "Must be a JSON text with finite numbers.") from None
    check_json(value, where)
    return value


def _segment(key: str | int) -> str:
    return f"[{key}]" if isinstance(key, int) else f".{_shown(key)}"


def _join(path: str, key: str | int) -> str:
    segment = _segment(key)
    return segment[1:] if not path and isinstance(key, str) else path + segment


def _scalar_problem(item: Any) -> str | None:
    if isinstance(item, str):
        if _has_lone_surrogate(item):
            return "Must not contain a lone surrogate (U+D800 to U+DFFF)."
    elif isinstance(item, float):
        if not math.isfinite(item):
            return _NOT_FINITE
    elif isinstance(item, int) and not isinstance(item, bool) and item.bit_length() > 1000:
        try:
            float(item)
        except OverflowError:
            return _NOT_FINITE
    return None


def check_json(value: Any, where: str = "") -> None:
    """Check a parsed JSON value in one iterative pass: nesting at most
    :data:`MAX_JSON_DEPTH` levels, no lone surrogate in a string or key, every number
    finite as a double, every ``metadata`` object at most :data:`MAX_METADATA_BYTES`.

    The pass keeps one frame per level open, never a copy of a container's items, so
    checking costs no memory beyond the value itself; the first bad place is the one
    reported.

    Example:
        >>> check_json({"a": [1, float("inf")]})
        Traceback (most recent call last):
        ...
        syvain_metrics.server.inputs.BadJsonError: a[1]: Numbers must be finite (no NaN or Infinity, nothing beyond a double's range).
    """
    problem = _scalar_problem(value)
    if problem is not None:
        raise BadJsonError(where, problem)
    if not isinstance(value, dict | list):
        return
    metadata: list[tuple[str, dict[str, Any]]] = []
    frames: list[tuple[Iterator[tuple[Any, Any]], str]] = [(_items(value), where)]
    while frames:
        items, path = frames[-1]
        for key, item in items:
            if isinstance(key, str) and _has_lone_surrogate(key):
                raise BadJsonError(
                    _join(path, key), "Keys must not contain a lone surrogate (U+D800 to U+DFFF)."
                )
            if isinstance(item, dict | list):
                inner = _join(path, key)
                if len(frames) >= MAX_JSON_DEPTH:
                    raise BadJsonError(
                        inner, f"Must be nested at most {MAX_JSON_DEPTH} levels deep."
                    )
                if key == METADATA and isinstance(item, dict):
                    metadata.append((inner, item))
                frames.append((_items(item), inner))
                break
            problem = _scalar_problem(item)
            if problem is not None:
                raise BadJsonError(_join(path, key), problem)
        else:
            frames.pop()
    for path, found in metadata:
        size = len(json.dumps(found, separators=(",", ":"), ensure_ascii=False).encode())
        if size > MAX_METADATA_BYTES:
            raise BadJsonError(
                path, f"Must be at most {MAX_METADATA_BYTES} bytes as compact JSON ({size})."
            )


def _items(container: dict[str, Any] | list[Any]) -> Iterator[tuple[Any, Any]]:
    return iter(container.items()) if isinstance(container, dict) else enumerate(container)


_NOT_FINITE = "Numbers must be finite (no NaN or Infinity, nothing beyond a double's range)."
