"""The metadata an experiment is created with: the caller's ``metadata=``, then ``config=``
flattened, then the captured ``environment``, within :data:`METADATA_BUDGET_BYTES`.

Precedence: a key given in ``metadata=`` wins over the same key of ``config=``; a
``metadata=`` or ``config=`` key named ``environment`` replaces the captured environment.
Space goes in the same order: ``metadata=`` is sent as given (the service judges it), the
config takes what is left, the environment what the config left (its command line is
dropped first). What was changed or left out is named by one warning.

Example:
    >>> creation_metadata({"seed": 1}, {"lr": 0.1}, capture=False)
    {'seed': 1, 'lr': 0.1}
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

from syvain_metrics.context.config import METADATA_BUDGET_BYTES, compact_size, config_metadata
from syvain_metrics.context.environment import capture_enabled, capture_environment

ENVIRONMENT_KEY = "environment"
"""The metadata key of the captured environment."""


def _entry_size(key: str, value: Any) -> int:
    return compact_size({key: value}) - 2 + 1  # without the braces, with a comma


def creation_metadata(
    metadata: Mapping[str, Any] | None, config: object, *, capture: bool | None
) -> Any:
    """The ``metadata`` of a creation request (see the module's precedence rules); the
    caller's own ``metadata`` is returned as given when there is nothing to add or when it is
    not valid metadata (its validation then says why). ``capture=None`` follows
    ``SYVAIN_METRICS_CAPTURE_ENV``.

    Example:
        >>> creation_metadata(None, None, capture=False)
        {}
    """
    given: Any = {} if metadata is None else metadata
    capturing = capture_enabled(capture)
    if config is None and not capturing:
        return given
    try:
        used = compact_size(given)
    except (TypeError, ValueError):
        return given  # not JSON: the request's validation names the problem
    if not isinstance(given, Mapping):
        return given
    out = dict(given)
    notes: list[str] = []
    if config is not None:
        found = config_metadata(config, budget=METADATA_BUDGET_BYTES - used + 1, taken=out)
        out.update(found.values)
        used += sum(_entry_size(k, v) for k, v in found.values.items())
        if found.as_text:
            notes.append(f"stored as text: {', '.join(found.as_text)}")
        if found.left_out:
            notes.append(f"left out (metadata too large): {', '.join(found.left_out)}")
        if found.overridden:
            notes.append(f"given in metadata= too, which wins: {', '.join(found.overridden)}")
    if capturing and ENVIRONMENT_KEY not in out:
        environment = capture_environment()
        left_out = None
        if used + _entry_size(ENVIRONMENT_KEY, environment) > METADATA_BUDGET_BYTES:
            environment.pop("argv", None)  # the longest part, and the least needed
            left_out = f"{ENVIRONMENT_KEY}.argv"
        if used + _entry_size(ENVIRONMENT_KEY, environment) <= METADATA_BUDGET_BYTES:
            out[ENVIRONMENT_KEY] = environment
        else:
            left_out = ENVIRONMENT_KEY
        if left_out is not None:
            notes.append(f"left out (metadata too large): {left_out}")
    if notes:
        warnings.warn(
            "syvain_metrics: the run's config does not fit its metadata as it is; "
            + "; ".join(notes),
            UserWarning,
            stacklevel=3,
        )
    return out
