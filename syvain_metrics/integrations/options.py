"""What every integration takes besides the run's identity: option checks made before
training starts, and the slug of a run nobody named.

Example:
    >>> check_options(system_metrics=10, flush_timeout=None)
"""

from __future__ import annotations

import datetime as dt
import math
import secrets

from syvain_metrics.errors import MetricsValidationError


def default_slug(framework: str) -> str:
    """A slug for a run nobody named: the framework, the time and four random characters.

    Example:
        >>> default_slug("lightning").startswith("lightning-")
        True
    """
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{framework}-{now}-{secrets.token_hex(2)}"


def check_options(*, system_metrics: object, flush_timeout: object, **flags: object) -> None:
    """Refuse, before training starts, options of a callback that could only fail later.

    Example:
        >>> check_options(system_metrics=False, flush_timeout=None, log_batches=True)
        >>> check_options(system_metrics=False, flush_timeout=-1)
        Traceback (most recent call last):
        syvain_metrics.errors.MetricsValidationError: ...
    """
    problems: dict[str, list[str]] = {}
    for name, value in flags.items():
        if not isinstance(value, bool):
            problems[name] = [f"Must be True or False; got {value!r}."]
    if not isinstance(system_metrics, bool) and not (
        isinstance(system_metrics, int | float)
        and math.isfinite(system_metrics)
        and system_metrics > 0
    ):
        problems["system_metrics"] = [
            f"Must be True, False or a number of seconds > 0; got {system_metrics!r}."
        ]
    if flush_timeout is not None and (
        isinstance(flush_timeout, bool)
        or not isinstance(flush_timeout, int | float)
        or not flush_timeout >= 0
    ):
        problems["flush_timeout"] = [
            f"Must be None or a number of seconds >= 0; got {flush_timeout!r}."
        ]
    if problems:
        raise MetricsValidationError(problems)
