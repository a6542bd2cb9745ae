"""What ``log()`` accepts as a value or a step beyond Python numbers: numpy scalars, torch
tensors of one element, and nested mappings of values (flattened with ``/``).

numpy and torch are never imported here: a type is recognised by its module's name, once,
and the converter found for it is cached by exact type, so a numpy scalar costs ``log()`` a
dictionary look-up and a ``float()``.

Example:
    >>> as_number(2.5), as_step(7)
    (2.5, 7)
    >>> flatten_metrics({"train": {"loss": 0.5}, "lr": 0.1})
    [('train/loss', 0.5), ('lr', 0.1)]
"""

from __future__ import annotations

import logging
import math
import numbers
import reprlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

from syvain_metrics.contract.limits import METRIC_NAME_MAX
from syvain_metrics.errors import MetricsValidationError

Converter = Callable[[Any], Any]

logger = logging.getLogger("syvain_metrics")


class _NoValue:
    def __repr__(self) -> str:
        return "<no value>"


NO_VALUE: Any = _NoValue()
"""``log()``'s ``value`` when not given (the mapping form holds its values)."""

_VALUE_CONVERTERS: dict[type, Converter | None] = {}
_STEP_CONVERTERS: dict[type, Converter | None] = {}
_CACHE_LIMIT = 256
"""Types remembered per table (numpy and torch have a few dozen scalar types)."""
_UNSEEN: Any = object()


def _is_torch_tensor(kind: type) -> bool:
    # torch.Tensor reports ``torch`` as its module; subclasses (nn.Parameter) have it in
    # their bases.
    return any(k.__name__ == "Tensor" and k.__module__ == "torch" for k in kind.__mro__)


def _tensor_item(value: Any) -> Any:
    # ``.item()`` is what users write themselves; one element only, so a batch is an error.
    return value.item() if value.numel() == 1 else value


def _numpy_value(kind: type) -> Converter | None:
    numpy = sys.modules.get("numpy")
    if numpy is None:
        return None
    if issubclass(kind, numpy.floating | numpy.integer):
        return float
    if kind is numpy.ndarray:  # a 0-d array (what some reductions return)
        return _zero_d_array
    return None


def _zero_d_array(array: Any) -> Any:
    return float(array) if array.ndim == 0 and array.dtype.kind in "fiu" else array


def _numpy_step(kind: type) -> Converter | None:
    numpy = sys.modules.get("numpy")
    if numpy is not None and issubclass(kind, numpy.integer):
        return int
    return None


def _classify(kind: type, *, step: bool) -> Converter | None:
    module = kind.__module__ or ""
    if module == "numpy" or module.startswith("numpy."):
        return _numpy_step(kind) if step else _numpy_value(kind)
    if _is_torch_tensor(kind):
        return _tensor_item
    return None


def _learn(kind: type, table: dict[type, Converter | None], *, step: bool) -> Converter | None:
    convert = _classify(kind, step=step)
    if len(table) < _CACHE_LIMIT:
        table[kind] = convert
    return convert


_PLAIN_TYPES = frozenset((str, int, float, bool, type(None)))
_PLAIN_DEPTH = 64
"""Nesting walked by :func:`plain` (deeper, or a structure that holds itself, is left to
the schema's error)."""


def _numpy_plain(value: Any) -> Any:
    """A numpy scalar or 0-d array as the Python value it holds; anything else as it is. A
    ``float32`` or ``float16`` gives the decimal it prints as (``np.float32(0.1)`` is 0.1,
    not 0.10000000149011612): hyperparameters keep the value that was typed, and filters
    by it match."""
    numpy = sys.modules.get("numpy")
    if numpy is None:
        return value
    if isinstance(value, numpy.ndarray):
        if value.ndim != 0:
            return value  # an array is not a scalar: left to the schema's error
        value = value[()]
    if isinstance(value, numpy.floating) and value.itemsize < 8:
        return float(str(value))
    if isinstance(value, numpy.bool_ | numpy.integer | numpy.floating):
        return value.item()
    return value


def _flat_plain(mapping: dict[Any, Any]) -> bool:
    for item in mapping.values():  # noqa: SIM110 - a loop: no generator on ingest's path
        if type(item) not in _PLAIN_TYPES:
            return False
    return True


def plain(value: Any, _depth: int = 0) -> Any:
    """``value`` with every numpy scalar in it (``np.int64``, ``np.float32``, ``np.bool_``,
    a 0-d array) as a Python number or bool, mappings, lists and tuples walked: what the
    SDK's metadata, filters and options go through before they are checked. Returns
    ``value`` itself when nothing in it changes (no copy); functions (filters) stay.

    Example:
        >>> plain({"lr": 0.1, "layers": (64, 64)})
        {'lr': 0.1, 'layers': (64, 64)}
        >>> plain({"bs": np.int64(32), "lr": np.float32(0.1), "ok": [np.bool_(True)]})  # doctest: +SKIP
        {'bs': 32, 'lr': 0.1, 'ok': [True]}
    """
    kind = type(value)
    if kind in _PLAIN_TYPES or _depth > _PLAIN_DEPTH:
        return value
    if kind is dict and _flat_plain(value):
        return value  # the common case: nothing to convert (no copy, few checks)
    if isinstance(value, Mapping):
        walked = {key: plain(item, _depth + 1) for key, item in value.items()}
        same = all(walked[key] is item for key, item in value.items())
        return value if same else walked
    if kind is list or kind is tuple:
        items = [plain(item, _depth + 1) for item in value]
        if all(new is old for new, old in zip(items, value, strict=True)):
            return value
        return items if kind is list else tuple(items)
    module = kind.__module__ or ""
    if module == "numpy" or module.startswith("numpy."):
        return _numpy_plain(value)
    return value


def plain_record(record: Any) -> Any:
    """One metric of ``ingest()`` with numpy scalars as Python values: ``value`` and
    ``step`` as ``log()`` converts them, ``timestamp_ms`` and ``metadata`` by
    :func:`plain`. The record itself when nothing changes (a list is checked in place).

    Example:
        >>> plain_record({"name": "loss", "value": np.float32(0.5), "step": np.int64(3)})  # doctest: +SKIP
        {'name': 'loss', 'value': 0.5, 'step': 3}
    """
    if type(record) is not dict:
        return record  # a MetricPoint or a mapping: converted as a dict by the caller
    changed: dict[str, Any] = {}
    for key, item in record.items():
        kind = type(item)
        if kind in _PLAIN_TYPES or (kind is dict and _flat_plain(item)):
            continue
        if key == "value":
            new = as_number(item)
        elif key == "step":
            new = as_step(item)
        else:
            new = plain(item)
        if new is not item:
            changed[key] = new
    return {**record, **changed} if changed else record


def as_number(value: Any) -> Any:
    """``value`` as a Python number when it is a numpy scalar, a 0-d numpy array or a torch
    tensor of one element; anything else is returned as it is (for the schema to judge).

    Example:
        >>> as_number(0.5), as_number("x")
        (0.5, 'x')
    """
    kind = type(value)
    if kind is float or kind is int:
        return value
    convert = _VALUE_CONVERTERS.get(kind, _UNSEEN)
    if convert is _UNSEEN:
        convert = _learn(kind, _VALUE_CONVERTERS, step=False)
    if convert is None:
        return value
    try:
        return convert(value)
    except Exception:  # a conversion that fails leaves the value to the schema's error
        return value


def as_step(step: Any) -> Any:
    """``step`` as a Python int when it is a numpy integer or a torch tensor of one element;
    anything else is returned as it is.

    Example:
        >>> as_step(3), as_step(None)
        (3, None)
    """
    kind = type(step)
    if kind is int or step is None:
        return step
    convert = _STEP_CONVERTERS.get(kind, _UNSEEN)
    if convert is _UNSEEN:
        convert = _learn(kind, _STEP_CONVERTERS, step=True)
    if convert is None:
        return step
    try:
        return convert(step)
    except Exception:
        return step


def non_finite_kind(value: Any) -> str | None:
    """``"NaN"``, ``"inf"`` or ``"-inf"`` for a non-finite float, else ``None``.

    Example:
        >>> non_finite_kind(float("-inf")), non_finite_kind(1.0)
        ('-inf', None)
    """
    if type(value) is not float or math.isfinite(value):
        return None
    if value != value:
        return "NaN"
    return "inf" if value > 0 else "-inf"


def is_number(value: Any) -> bool:
    """Whether ``value`` (already converted by :func:`as_number`) is a number ``log()``
    sends or counts: an int or a float, not a bool.

    Example:
        >>> is_number(1), is_number(True), is_number(None)
        (True, False, False)
    """
    kind = type(value)
    if kind is float or kind is int:
        return True
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def flatten_metrics(metrics: Mapping[Any, Any]) -> list[tuple[str, Any]]:
    """The ``(name, value)`` pairs of a mapping of metrics, nested mappings flattened with
    ``/`` (``{"train": {"loss": 1}}`` gives ``train/loss``), in the mapping's order.

    Raises :class:`~syvain_metrics.MetricsValidationError` for a key that is not a string,
    an empty key, or a name longer than the contract allows (a mapping that contains itself
    stops there too).

    Example:
        >>> flatten_metrics({"a": {"b": {"c": 1}}})
        [('a/b/c', 1)]
        >>> flatten_metrics({"": 1})
        Traceback (most recent call last):
        ...
        syvain_metrics.errors.MetricsValidationError: Invalid input: metrics['']: A metric name must not be empty.
    """
    out: list[tuple[str, Any]] = []
    _flatten_into(out, "", metrics)
    return out


def _flatten_into(out: list[tuple[str, Any]], prefix: str, metrics: Mapping[Any, Any]) -> None:
    for key, value in metrics.items():
        if not isinstance(key, str):
            where = f"metrics[{prefix!r}][{reprlib.repr(key)}]" if prefix else f"metrics[{key!r}]"
            raise MetricsValidationError({where: ["A metric name must be a string."]})
        name = prefix + key
        if not key:
            raise MetricsValidationError(
                {f"metrics[{name!r}]": ["A metric name must not be empty."]}
            )
        if len(name) > METRIC_NAME_MAX:
            raise MetricsValidationError(
                {
                    f"metrics[{reprlib.repr(name)}]": [
                        f"A metric name has at most {METRIC_NAME_MAX} characters, "
                        f"got {len(name):,}."
                    ]
                }
            )
        if isinstance(value, Mapping):
            _flatten_into(out, name + "/", value)
        else:
            out.append((name, value))


def flatten_usable(values: Mapping[str, object]) -> list[tuple[str, object]]:
    """:func:`flatten_metrics` for a framework's mapping: a name the contract refuses (too
    long, empty, not a string) costs only its own value, with a warning, not the whole
    mapping.

    Example:
        >>> flatten_usable({"loss": 0.5, "": 1.0})
        [('loss', 0.5)]
    """
    try:
        return flatten_metrics(values)
    except MetricsValidationError:
        pass
    usable: list[tuple[str, object]] = []
    for key, value in values.items():
        try:
            usable.extend(flatten_metrics({key: value}))
        except MetricsValidationError as error:
            logger.warning("syvain_metrics: a metric is left out: %s", error)
    return usable


def is_flat(values: Mapping[str, object]) -> bool:
    """Whether no value of ``values`` is itself a mapping (numbers are checked first: fast).

    Example:
        >>> is_flat({"loss": 0.5}), is_flat({"train": {"loss": 0.5}})
        (True, False)
    """
    for value in values.values():
        kind = type(value)
        if kind is not float and kind is not int and isinstance(value, Mapping):
            return False
    return True
