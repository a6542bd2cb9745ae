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
import re
from collections.abc import Iterator
from typing import Any, Protocol

from marshmallow import Schema, ValidationError

from syvain_metrics.contract.queries import Query, WireQuerySchema
from syvain_metrics.server.errors import from_validation, invalid
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
    suspects: list[str] = []  # numbers a double cannot hold, NaN, Infinity

    def constant(name: str) -> float:
        suspects.append(name)
        return float(name)

    def real(text: str) -> float:
        number = float(text)
        if number - number != 0:  # an infinity (1e400) or NaN
            suspects.append(text)
        return number

    def integer(text: str) -> int:
        if len(text) > 300:  # perhaps beyond a double (about 1.8e308)
            suspects.append(text)
        return int(text)

    try:
        # NaN and Infinity are read as floats, so the check names where they stand.
        value = json.loads(text, parse_constant=constant, parse_float=real, parse_int=integer)
    except RecursionError:
        raise BadJsonError(where, f"Must be nested at most {MAX_JSON_DEPTH} levels deep.") from None
    except ValueError:
        raise BadJsonError(where, "Must be a JSON text with finite numbers.") from None
    if suspects or _SURROGATE_ESCAPE.search(text) or not _shallow_and_small(value):
        check_json(value, where)  # finds and names the problem, if there is one
    return value


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
"""What a lone surrogate needs in a parsed text: an escape of one (decoded UTF-8 holds no
surrogate otherwise). Text without one, and without a suspect number, needs only the
nesting and metadata checks; text with one (perhaps a valid pair) gets the full pass."""


def _shallow_and_small(value: Any) -> bool:
    """True when ``value`` nests at most :data:`MAX_JSON_DEPTH` levels and every ``metadata``
    object is small enough: the containers only, level by level, and each metadata object's
    size once per distinct flat object (a flat one holds nothing more to walk)."""
    level = [value] if type(value) in _CONTAINERS else []
    depth = 1
    sizes: dict[tuple[Any, ...], int] = {}
    while level:
        if depth > MAX_JSON_DEPTH:
            return False
        inner: list[Any] = []
        for container in level:
            if type(container) is list:
                inner += [item for item in container if type(item) in _CONTAINERS]
                continue
            for key, item in container.items():
                if type(item) not in _CONTAINERS:
                    continue
                if key == METADATA and type(item) is dict:
                    size = _flat_size(item, sizes)
                    if size is not None:
                        if size > MAX_METADATA_BYTES:
                            return False
                        if depth < MAX_JSON_DEPTH:  # its own level is within bounds
                            continue
                    if _compact_size(item) > MAX_METADATA_BYTES:
                        return False
                inner.append(item)
        level = inner
        depth += 1
    return True


_CONTAINERS = (dict, list)  # what json.loads makes, exactly these types


def _flat_size(found: dict[str, Any], sizes: dict[tuple[Any, ...], int]) -> int | None:
    """The compact size of a flat object (``None``: it holds a container); equal flat objects
    (most of a batch's) are measured once, and the types keep ``1`` and ``true`` apart."""
    try:
        key = (tuple(found.items()), tuple(map(type, found.values())))
        size = sizes.get(key)
    except TypeError:  # a list or an object inside
        return None
    if size is None:
        size = sizes[key] = _compact_size(found)
    return size


def _compact_size(found: dict[str, Any]) -> int:
    return len(json.dumps(found, separators=(",", ":"), ensure_ascii=False).encode())


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
        size = _compact_size(found)
        if size > MAX_METADATA_BYTES:
            raise BadJsonError(
                path, f"Must be at most {MAX_METADATA_BYTES} bytes as compact JSON ({size})."
            )


def _items(container: dict[str, Any] | list[Any]) -> Iterator[tuple[Any, Any]]:
    return iter(container.items()) if isinstance(container, dict) else enumerate(container)


_NOT_FINITE = "Numbers must be finite (no NaN or Infinity, nothing beyond a double's range)."


# -- a request's body and query, loaded by the contract's schemas ----------------------------


def parse_body(raw: bytes) -> dict[str, Any]:
    """The body's JSON object, checked by :func:`parse_json` (nesting, lone surrogates, finite
    numbers, metadata size); a 400 :class:`~syvain_metrics.server.errors.ApiError` naming the
    place otherwise.

    Example:
        >>> parse_body(b'{"name": "runs"}')
        {'name': 'runs'}
    """
    if not raw.strip():
        return {}
    try:
        value = parse_json(raw)
    except BadJsonError as error:
        if not error.where:  # not JSON at all, or too deep to read
            problem = f"Must be a JSON object. {error.problem}"
            raise invalid("body", problem, what="request body") from None
        raise invalid(error.where, error.problem, what="request body") from None
    if not isinstance(value, dict):
        raise invalid("body", "Must be a JSON object.", what="request body")
    return value


def load_body(schema: Schema, value: dict[str, Any]) -> dict[str, Any]:
    """``value`` loaded by the operation's body schema; a 400 naming each field otherwise."""
    try:
        loaded: dict[str, Any] = schema.load(value)
    except ValidationError as error:
        raise from_validation(error, what="request body") from None
    return loaded


def query_json(text: str) -> Any:
    """A JSON query value (a compare series, a metadata value) as the server holds it: checked
    by :func:`parse_json`, refused with a :class:`ValidationError` saying why.

    Example:
        >>> query_json("1e400")
        Traceback (most recent call last):
        ...
        marshmallow.exceptions.ValidationError: Numbers must be finite (no NaN or Infinity, nothing beyond a double's range).
    """
    try:
        return parse_json(text)
    except BadJsonError as error:
        raise ValidationError(error.problem) from None


def query_schema(query: Query) -> WireQuerySchema:
    """The schema reading ``query`` out of a query string (:meth:`Query.wire_schema`)."""
    return query.wire_schema(query_json)()


class MultiValues(Protocol):
    """What the loader needs of a query mapping (werkzeug's ``MultiDict`` fits)."""

    def __iter__(self) -> Iterator[str]: ...

    def getlist(self, key: str) -> list[str]: ...


def load_query(schema: WireQuerySchema, args: MultiValues) -> dict[str, Any]:
    """Validate a query mapping with ``schema``; raise a 400 ``ApiError`` naming the field.
    Unknown parameters are an error too (a misspelt filter must not return unfiltered rows),
    and a parameter that is not repeatable must appear at most once.

    Example:
        >>> from werkzeug.datastructures import MultiDict
        >>> from syvain_metrics.contract.schemas.annotation import ANNOTATION_LIST
        >>> load_query(query_schema(ANNOTATION_LIST), MultiDict([("limit", "0")]))
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
