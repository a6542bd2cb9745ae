"""``config=`` at creation: a run's hyperparameters, from whatever object holds them, as
creation metadata.

A config is a mapping, an ``argparse.Namespace``, a dataclass instance, a pydantic model
(v2 ``model_dump()``, v1 ``dict()``) or an OmegaConf config (``OmegaConf.to_container``,
found through the object's own module). Its keys become top-level metadata keys; nested
sections are flattened with dots (``{"model": {"width": 512}}`` -> ``"model.width": 512``),
so that each hyperparameter is a column of the dashboard's runs list and of
``Experiment.list().to_pandas()``, a ``hue`` of a plot, and a key of
``Experiment.list(metadata={"model.width": 512})``.

Values are made JSON: numpy / torch scalars by ``.item()``, paths by ``os.fspath``, enums by
their value, dates by ``isoformat()``, tuples and sets as lists. What cannot travel as it is
— a non-finite number (kept as the text ``"nan"``, ``"inf"``), any other object (kept as its
``str()``), a value that would take the run's metadata past :data:`METADATA_BUDGET_BYTES`
(left out) — is reported by one warning naming the keys; creating the run never fails
because of its config. The text of a key whose last word names a secret (``hub_token``,
``api_key``, ``password``) is stored as ``***``.

Example:
    >>> import argparse
    >>> config_metadata(argparse.Namespace(lr=0.1, layers=(2, 2))).values
    {'lr': 0.1, 'layers': [2, 2]}
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import enum
import json
import math
import os
import re
import sys
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from syvain_metrics.contract.schemas.fields import text_ok
from syvain_metrics.errors import MetricsValidationError

METADATA_BUDGET_BYTES = 16 * 1024
"""Largest metadata object, as compact UTF-8 JSON, that the SDK builds from ``config=`` and
the captured environment. The contract sets no size; this is the local server's bound (a
service may be as strict), so a config never makes the creation itself fail."""

_DEPTH = 16
"""Nesting deeper than this is kept as text: the server bounds JSON depth."""

_ARRAY_ITEMS = 1_000
"""numpy arrays and torch tensors up to this size become lists; larger ones, text."""

_SECRET_KEY = re.compile(
    r"(?:^|[._-])(?:token|secret|passwd|password|credentials?|api_?key|access_?key|"
    r"private_?key|auth)$",
    re.IGNORECASE,
)
"""A config key whose last word names a secret (``hub_token``, ``wandb.api_key``,
``db.password``): its text value is stored as ``***``, like such options in argv."""

MASKED = "***"

_KINDS = "a dict, an argparse.Namespace, a dataclass, a pydantic model or an OmegaConf config"


@dataclass
class ConfigMetadata:
    """A config as flat metadata (``values``), and the keys that did not fit as they were:
    ``as_text`` (stored as text), ``left_out`` (too large, not stored), ``overridden``
    (already taken by the caller's own metadata).

    Example:
        >>> config_metadata({"lr": float("nan")}).as_text
        ['lr']
    """

    values: dict[str, Any] = field(default_factory=dict)
    as_text: list[str] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)
    overridden: list[str] = field(default_factory=list)


def as_mapping(config: object) -> Mapping[Any, Any] | None:
    """The mapping a config object holds, or ``None`` when it is none of the known kinds.

    Example:
        >>> as_mapping(argparse.Namespace(seed=1))
        {'seed': 1}
    """
    if isinstance(config, Mapping):
        return config
    if isinstance(config, argparse.Namespace):
        return vars(config)
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        # Fields one level at a time (not dataclasses.asdict, which deep-copies every value).
        return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    module = sys.modules.get(type(config).__module__.partition(".")[0])
    omegaconf = getattr(module, "OmegaConf", None) if module is not None else None
    if omegaconf is not None and hasattr(omegaconf, "to_container"):
        try:
            container = omegaconf.to_container(config, resolve=True)
        except Exception:  # an interpolation that cannot be resolved: keep it as written
            container = omegaconf.to_container(config, resolve=False)
        return container if isinstance(container, Mapping) else None
    dump = getattr(config, "model_dump", None)  # pydantic v2
    if callable(dump) and not isinstance(config, type):
        dumped = dump()
        return dumped if isinstance(dumped, Mapping) else None
    legacy = getattr(config, "dict", None)  # pydantic v1
    if callable(legacy) and hasattr(config, "__fields__") and not isinstance(config, type):
        dumped = legacy()
        return dumped if isinstance(dumped, Mapping) else None
    return None


def _nested(value: object) -> Mapping[Any, Any] | None:
    """The mapping inside a value of a config, or ``None`` (also when reading it fails: the
    value is then kept as text)."""
    if isinstance(value, str | bytes | int | float | type(None)):
        return None
    try:
        return as_mapping(value)
    except Exception:
        return None


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


class _Converter:
    """Turns config values into JSON values, noting which ones became text."""

    # A fresh converter per top-level key, so that ``lossy`` names the key.

    def __init__(self) -> None:
        self.lossy = False

    def text(self, value: object) -> str:
        self.lossy = True
        try:
            shown = str(value)
        except Exception:
            shown = f"<{type(value).__name__}>"
        return shown if text_ok(shown) else shown.encode("utf-8", "replace").decode("utf-8")

    def value(self, value: Any, depth: int = 0) -> Any:
        if isinstance(value, enum.Enum):  # before str and int: an enum may be either
            value = value.value if isinstance(value.value, str | int | float) else value.name
            value = value if type(value) in (str, int, float) else str(value)
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, str):
            return value if text_ok(value) else self.text(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value if abs(value) <= sys.float_info.max else self.text(value)
        if isinstance(value, float):
            return value if math.isfinite(value) else self.text(value)
        if isinstance(value, os.PathLike):
            return self.value(os.fspath(value), depth)
        if isinstance(value, dt.date | dt.time):
            return value.isoformat()
        if depth < _DEPTH:
            item = _scalar_item(value)
            if item is not None:
                return self.value(item[0], depth + 1)
            nested = _nested(value)
            if nested is not None:
                return {str(k): self.value(v, depth + 1) for k, v in nested.items()}
            if isinstance(value, list | tuple | set | frozenset):
                items = sorted(value, key=repr) if isinstance(value, set | frozenset) else value
                return [self.value(v, depth + 1) for v in items]
        return self.text(value)


def _scalar_item(value: object) -> tuple[Any] | None:
    """``(value.item(),)`` for a numpy scalar or a one-element numpy array / torch tensor,
    ``(value.tolist(),)`` for a small one, recognised by module name (neither library is
    imported here)."""
    module = type(value).__module__.partition(".")[0]
    if module not in ("numpy", "torch"):
        return None
    try:
        size = getattr(value, "size", None)
        count = size() if module == "torch" and callable(size) else size
        if count == 1:
            return (value.item(),)  # type: ignore[attr-defined]
        if isinstance(count, int) and count <= _ARRAY_ITEMS:
            return (value.tolist(),)  # type: ignore[attr-defined]
    except Exception:
        return None
    return None


def _flatten(mapping: Mapping[Any, Any], prefix: str, out: dict[str, Any], depth: int = 0) -> None:
    for key, item in mapping.items():
        name = f"{prefix}{key}"
        nested = _nested(item) if depth < _DEPTH else None  # a cycle ends as text
        if nested:
            _flatten(nested, f"{name}.", out, depth + 1)
        else:
            out[name] = item


def config_metadata(
    config: object, budget: int = METADATA_BUDGET_BYTES, taken: Collection[str] = ()
) -> ConfigMetadata:
    """``config`` as flat metadata within ``budget`` bytes of compact JSON (a value that does
    not fit is left out, the next ones still tried), without the keys in ``taken``. Raises
    :class:`~syvain_metrics.MetricsValidationError` for an object of no known kind.

    Example:
        >>> config_metadata({"opt": {"name": "sgd", "lr": 0.1}}).values
        {'opt.name': 'sgd', 'opt.lr': 0.1}
    """
    try:
        mapping = as_mapping(config)
    except Exception as error:
        raise MetricsValidationError(
            {"config": [f"Could not be read: {type(error).__name__}: {error}"]}
        ) from error
    if mapping is None:
        raise MetricsValidationError(
            {"config": [f"Must be {_KINDS}, not {type(config).__name__}."]}
        )
    flat: dict[str, Any] = {}
    _flatten(mapping, "", flat)
    result = ConfigMetadata()
    used = 2  # the braces
    for key, raw in flat.items():
        converter = _Converter()
        name = key if text_ok(key) else key.encode("utf-8", "replace").decode("utf-8")
        if name in taken:
            result.overridden.append(name)
            continue
        value = converter.value(raw)
        if isinstance(value, str) and value and _SECRET_KEY.search(name):
            value = MASKED  # a credential passed as a hyperparameter is not the run's to keep
        size = len(_compact({name: value}).encode("utf-8")) - 2 + (1 if result.values else 0)
        if used + size > budget:
            result.left_out.append(name)
            continue
        used += size
        result.values[name] = value
        if converter.lossy:
            result.as_text.append(name)
    return result


def compact_size(value: Mapping[str, Any]) -> int:
    """Bytes of ``value`` as compact UTF-8 JSON.

    Example:
        >>> compact_size({"a": 1})
        7
    """
    return len(_compact(value).encode("utf-8"))
