"""Time on a plot's x axis: the time since each run's start (``x="relative"``), the wall
clock (``x="wall"``), or, for ``x="time"``, whichever reads better: relative while the
longest run in the plot spans less than :data:`WALL_FROM_SECONDS`, wall time beyond.

A short run on a date axis is a single vertical line (every point the same second, and
matplotlib widens a near-empty date range to years); the time since its start, in a unit
chosen from the span (ms, s, min, h, days), reads at any span.

Example:
    >>> elapsed_unit(2.0), elapsed_unit(3 * 3600), elapsed_unit(40 * 86400)
    (('s', 1.0), ('h', 3600.0), ('days', 86400.0))
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from syvain_metrics.errors import MetricsValidationError

X_AXES = ("step", "time", "relative", "wall")
"""The x axes of a plot: the step; the time (the automatic choice); the time since each
run's start; the wall clock (UTC)."""

WALL_FROM_SECONDS = 2 * 86_400.0
"""``x="time"`` draws the wall clock once a run in the plot spans this long (2 days):
then dates say more than a count of days."""

_UNITS = (("ms", 0.001, 1.0), ("s", 1.0, 120.0), ("min", 60.0, 7_200.0), ("h", 3_600.0, 172_800.0))


def elapsed_unit(seconds: float) -> tuple[str, float]:
    """The unit (its name and its length in seconds) that shows ``seconds`` of elapsed
    time with readable ticks: below 1 s in ms, below 2 min in s, below 2 h in min, below
    2 days in h, else in days.

    Example:
        >>> elapsed_unit(0.01), elapsed_unit(90), elapsed_unit(1800)
        (('ms', 0.001), ('s', 1.0), ('min', 60.0))
    """
    for name, length, below in _UNITS:
        if seconds < below:
            return name, length
    return "days", 86_400.0


def check_x(x: Any) -> str:
    """``x`` as one of :data:`X_AXES` (``"client_timestamp"`` is ``"time"``), or a clear
    error.

    Example:
        >>> check_x("client_timestamp")
        'time'
    """
    if x == "client_timestamp":
        return "time"
    if not isinstance(x, str) or x not in X_AXES:
        raise MetricsValidationError(
            {
                "x": [
                    "Must be 'step', 'time' (the time since each run's start for runs "
                    "shorter than 2 days, else the wall clock), 'relative' (the time since "
                    f"each run's start) or 'wall' (UTC dates); got {x!r}."
                ]
            }
        )
    return x


@dataclass(frozen=True)
class TimeAxis:
    """How a plot's time axis is drawn: ``kind`` is ``"relative"`` (then ``unit`` and
    ``seconds``, its length) or ``"wall"``; ``starts`` maps each run (experiment id) to its
    first client time (epoch ms) in the rows.

    Example:
        >>> TimeAxis("relative", {"e1": 0}, "s", 1.0).position("e1", 1_500)
        1.5
    """

    kind: str
    starts: dict[str, int]
    unit: str = ""
    seconds: float = 1.0

    def position(self, experiment_id: str, milliseconds: int) -> Any:
        """Where a client time of a run goes on the axis (``None`` for a run not in the
        rows, on a relative axis)."""
        if self.kind == "wall":
            return dt.datetime.fromtimestamp(milliseconds / 1000, tz=dt.timezone.utc)
        start = self.starts.get(experiment_id)
        if start is None:
            return None
        return (milliseconds - start) / 1000 / self.seconds

    def label(self) -> str:
        """The axis' label."""
        if self.kind == "wall":
            return "time (UTC)"
        return f"time since start ({self.unit})"


def time_axis(x: str, experiment_ids: Sequence[str], milliseconds: Sequence[int]) -> TimeAxis:
    """The time axis ``x`` (``"time"``, ``"relative"`` or ``"wall"``) of rows with these
    runs and client times.

    Example:
        >>> time_axis("time", ["e1", "e1"], [0, 3 * 3_600_000]).label()
        'time since start (h)'
        >>> time_axis("time", ["e1", "e1"], [0, 40 * 86_400_000]).kind
        'wall'
    """
    starts: dict[str, int] = {}
    ends: dict[str, int] = {}
    for run, ms in zip(experiment_ids, milliseconds, strict=True):
        if run not in starts or ms < starts[run]:
            starts[run] = ms
        if run not in ends or ms > ends[run]:
            ends[run] = ms
    span = max((ends[run] - starts[run] for run in starts), default=0) / 1000
    kind = x if x != "time" else ("wall" if span >= WALL_FROM_SECONDS else "relative")
    if kind == "wall":
        return TimeAxis("wall", starts)
    unit, seconds = elapsed_unit(span)
    return TimeAxis("relative", starts, unit, seconds)


def format_time_axis(axes: Any, axis: TimeAxis, milliseconds: Sequence[int]) -> None:
    """Label ``axes``' x axis as ``axis`` says: concise UTC dates on a wall axis (kept at
    least 2 seconds wide, so a short run is not drawn on an axis of years), plain numbers
    in the unit on a relative one."""
    axes.set_xlabel(axis.label())
    if axis.kind != "wall":
        return
    import matplotlib.dates

    mdates: Any = matplotlib.dates  # its locators and formatters are not annotated
    locator = mdates.AutoDateLocator()
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=dt.timezone.utc))
    if milliseconds:
        low, high = min(milliseconds), max(milliseconds)
        if high - low < 2_000:
            # Matplotlib widens a date range it finds empty to years: give it seconds.
            middle = (low + high) / 2
            axes.set_xlim(
                dt.datetime.fromtimestamp((middle - 1_000) / 1000, tz=dt.timezone.utc),
                dt.datetime.fromtimestamp((middle + 1_000) / 1000, tz=dt.timezone.utc),
            )
