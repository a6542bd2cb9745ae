"""Checks of plain keyword options (flags, page sizes) that are not part of a request body.

Example:
    >>> check_page_size(None), check_page_size(5_000)
    (None, 5000)
    >>> check_flag("progress", "yes")
    Traceback (most recent call last):
    ...
    syvain_metrics.errors.MetricsValidationError: Invalid input: progress: Must be True or False.
"""

from __future__ import annotations

from typing import Any

from syvain_metrics.contract.limits import MAX_METRIC_ROWS_LIMIT
from syvain_metrics.errors import MetricsValidationError


def check_flag(name: str, value: Any) -> bool:
    """``value`` if it is a ``bool``; else a :class:`MetricsValidationError` naming ``name``."""
    if not isinstance(value, bool):
        raise MetricsValidationError({name: ["Must be True or False."]})
    return value


def check_page_size(value: Any) -> int | None:
    """Rows per request of a paged read: ``None`` (the session's) or 1 to 100,000."""
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not 1 <= value <= MAX_METRIC_ROWS_LIMIT
    ):
        raise MetricsValidationError(
            {"page_size": [f"Must be an integer between 1 and {MAX_METRIC_ROWS_LIMIT:,}."]}
        )
    return value
