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


def _member(path: str, key: str) -> str:
    return f"{path}.{_shown(key)}" if path else _shown(key)


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


def check_json(value: Any, where: str = "") -> None:
    """Check a parsed JSON value in one iterative pass: nesting at most
    :data:`MAX_JSON_DEPTH` levels, no lone surrogate in a string or key, every number
    finite as a double, every ``metadata`` object at most :data:`MAX_METADATA_BYTES`.

    Example:
        >>> check_json({"a": [1, float("inf")]})
        Traceback (most recent call last):
        ...
        syvain_metrics.server.inputs.BadJsonError: a[1]: Numbers must be finite (no NaN or Infinity, nothing beyond a double's range).
    """
    metadata: list[tuple[str, dict[str, Any]]] = []
    stack: list[tuple[Any, str, int]] = [(value, where, 0)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, str):
            if _has_lone_surrogate(item):
                raise BadJsonError(path, "Must not contain a lone surrogate (U+D800 to U+DFFF).")
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise BadJsonError(path, _NOT_FINITE)
        elif isinstance(item, int):
            if item.bit_length() > 1000:
                try:
                    float(item)
                except OverflowError:
                    raise BadJsonError(path, _NOT_FINITE) from None
        elif isinstance(item, dict | list):
            if depth >= MAX_JSON_DEPTH:
                raise BadJsonError(path, f"Must be nested at most {MAX_JSON_DEPTH} levels deep.")
            if isinstance(item, list):
                # Reversed onto the stack, so the first bad place is the one reported.
                stack.extend(
                    (item[i], f"{path}[{i}]", depth + 1) for i in reversed(range(len(item)))
                )
                continue
            members: list[tuple[Any, str, int]] = []
            for key, member in item.items():
                if not isinstance(key, str) or _has_lone_surrogate(key):
                    raise BadJsonError(
                        _member(path, str(key)),
                        "Keys must not contain a lone surrogate (U+D800 to U+DFFF).",
                    )
                inner = _member(path, key)
                if key == METADATA and isinstance(member, dict):
                    metadata.append((inner, member))
                members.append((member, inner, depth + 1))
            stack.extend(reversed(members))
    for path, found in metadata:
        size = len(json.dumps(found, separators=(",", ":"), ensure_ascii=False).encode())
        if size > MAX_METADATA_BYTES:
            raise BadJsonError(
                path, f"Must be at most {MAX_METADATA_BYTES} bytes as compact JSON ({size})."
            )


_NOT_FINITE = "Numbers must be finite (no NaN or Infinity, nothing beyond a double's range)."
