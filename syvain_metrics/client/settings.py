"""The checks of a session's settings, made before anything is built from them.

Example:
    >>> check_settings(timeout=0, ingest_timeout=60.0, flush_interval=1.0, flush_timeout=30.0,
    ...                max_response_bytes=1, retry=None, pool_size=1, clock=print)
    Traceback (most recent call last):
    ...
    syvain_metrics.errors.MetricsValidationError: Invalid input: timeout: Must be a finite number of seconds above 0 (at most 86400).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from syvain_metrics.client.retry import RetryPolicy
from syvain_metrics.errors import MetricsValidationError
from syvain_metrics.pipeline.spool import configured_root as configured_spool_root

MAX_SECONDS = 86_400.0
"""The longest timeout a session takes (a day): beyond, it is no longer a bound."""


class _UserCache:
    def __repr__(self) -> str:
        return "USER_CACHE"


USER_CACHE: Any = _UserCache()
"""The default ``spool_dir``: ``$SYVAIN_METRICS_SPOOL_DIR``, else the user's cache directory."""

SpoolDir = str | os.PathLike[str] | _UserCache | None
"""What ``Session(spool_dir=...)`` takes."""


def check_settings(
    *,
    timeout: object,
    ingest_timeout: object,
    flush_interval: object,
    flush_timeout: object,
    max_response_bytes: object,
    retry: object,
    pool_size: object,
    clock: object,
) -> None:
    """Raise :class:`~syvain_metrics.MetricsValidationError` naming the first bad setting."""
    for name, value in (
        ("timeout", timeout),
        ("ingest_timeout", ingest_timeout),
        ("flush_interval", flush_interval),
        ("flush_timeout", flush_timeout),
    ):
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not 0 < value <= MAX_SECONDS
        ):
            raise MetricsValidationError(
                {name: [f"Must be a finite number of seconds above 0 (at most {MAX_SECONDS:g})."]}
            )
    if (
        isinstance(max_response_bytes, bool)
        or not isinstance(max_response_bytes, int)
        or max_response_bytes < 1
    ):
        raise MetricsValidationError(
            {"max_response_bytes": ["Must be a whole number of bytes above 0."]}
        )
    if retry is not None and not isinstance(retry, RetryPolicy):
        raise MetricsValidationError({"retry": ["Must be a RetryPolicy or None."]})
    if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1:
        raise MetricsValidationError({"pool_size": ["Must be a whole number above 0."]})
    if not callable(clock):
        raise MetricsValidationError({"clock": ["Must be a callable returning seconds."]})


def spool_root(spool_dir: SpoolDir) -> Path | None:
    """Where the session's spools live (``None``: in memory only).

    Example:
        >>> spool_root("/tmp/spool"), spool_root(None)
        (PosixPath('/tmp/spool'), None)
    """
    if spool_dir is None:
        return None
    if isinstance(spool_dir, _UserCache):
        return configured_spool_root()
    if not isinstance(spool_dir, str | os.PathLike):
        raise MetricsValidationError({"spool_dir": ["Must be a directory path or None."]})
    return Path(spool_dir)


OFFLINE_ENV = "SYVAIN_METRICS_OFFLINE"
"""Set to ``1`` (or ``true``, ``yes``, ``on``) for offline mode when a session does not say."""


def offline_mode(offline: object) -> bool:
    """Whether a session is offline: ``offline`` when given (True or False), else
    ``$SYVAIN_METRICS_OFFLINE``.

    Example:
        >>> offline_mode(True), offline_mode(False)
        (True, False)
    """
    if offline is None:
        return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")
    if not isinstance(offline, bool):
        raise MetricsValidationError({"offline": ["Must be True, False or None."]})
    return offline
