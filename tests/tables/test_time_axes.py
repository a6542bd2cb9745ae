"""Time axes of plots and wide frames, against the local server: a run of 2 seconds, one of
3 hours and one of 40 days each read well (the time since the run's start for the short
ones, dates for the long one), and the axis can be chosen."""

from __future__ import annotations

from collections.abc import Iterator

import matplotlib
import matplotlib.pyplot as plt
import pandas as pd
import pytest
from matplotlib.axes import Axes

import syvain_metrics as sm

pytest.importorskip("waitress", reason="the local server needs the 'local' extra")
matplotlib.use("Agg")

T0 = 1_795_716_954_000  # 2026-11-26 18:15:54 UTC
POINTS = 21


def logged_over(slug: str, span_ms: int, start_ms: int = T0) -> sm.Experiment:
    """A run with POINTS loss values spread evenly over ``span_ms`` of client time."""
    run = sm.Experiment.create(slug)
    run.ingest(
        [
            {
                "name": "loss",
                "value": 1 / (step + 1),
                "step": step,
                "timestamp_ms": start_ms + span_ms * step // (POINTS - 1),
            }
            for step in range(POINTS)
        ],
        sync=True,
    )
    return run


def visible_ticks(axes: Axes) -> list[str]:
    """The x tick labels inside the axes' limits, as drawn."""
    axes.figure.canvas.draw()
    low, high = axes.get_xlim()
    return [
        tick.get_text()
        for tick, where in zip(axes.get_xticklabels(), axes.get_xticks(), strict=True)
        if low <= where <= high
    ]


@pytest.fixture(autouse=True)
def close_figures() -> Iterator[None]:
    yield
    plt.close("all")


def test_a_two_second_run_is_drawn_in_seconds_since_its_start(
    metrics_session: sm.Session,
) -> None:
    rows = logged_over("two-seconds", 2_000).metrics("loss")
    axes = rows.plot(x="time")
    assert axes.get_xlabel() == "time since start (s)"
    ticks = visible_ticks(axes)
    assert ticks[0] in ("0.0", "0.00")
    assert ticks[-1] in ("2.0", "2.00")
    assert len(set(ticks)) == len(ticks) >= 4  # distinct labels, not one repeated second
    (line,) = axes.get_lines()
    assert list(line.get_xdata()) == pytest.approx([2.0 * i / (POINTS - 1) for i in range(POINTS)])
    # The same run on a wall-clock axis: seconds of one minute, not years.
    wall = rows.plot(x="wall")
    assert wall.get_xlabel() == "time (UTC)"
    low, high = wall.get_xlim()
    assert 2 / 86_400 <= high - low < 10 / 86_400  # matplotlib dates count days
    assert len(set(visible_ticks(wall))) >= 3


def test_a_three_hour_run_is_drawn_in_hours(metrics_session: sm.Session) -> None:
    axes = logged_over("three-hours", 3 * 3_600_000).metrics("loss").plot(x="time")
    assert axes.get_xlabel() == "time since start (h)"
    ticks = visible_ticks(axes)
    assert ticks[0] == "0.0"
    assert ticks[-1] == "3.0"
    assert len(set(ticks)) == len(ticks) >= 4


def test_a_forty_day_run_is_drawn_on_dates_unless_asked(metrics_session: sm.Session) -> None:
    run = logged_over("forty-days", 40 * 86_400_000)
    axes = run.metrics("loss").plot(x="time")
    assert axes.get_xlabel() == "time (UTC)"
    ticks = visible_ticks(axes)
    # Concise dates: month names and days of the month, from late November into January.
    assert "Dec" in ticks
    assert "Jan" in ticks
    assert len(set(ticks)) == len(ticks) >= 4
    relative = run.metrics("loss").plot(x="relative")
    assert relative.get_xlabel() == "time since start (days)"
    days = visible_ticks(relative)
    assert days[0] == "0"
    assert days[-1] == "40"


def test_runs_started_at_different_times_share_the_relative_axis(
    metrics_session: sm.Session,
) -> None:
    early = logged_over("early", 60_000)
    late = logged_over("late", 30_000, start_ms=T0 + 86_400_000)  # a day later
    axes = sm.ExperimentList([early, late]).plot("loss", x="time")
    assert axes.get_xlabel() == "time since start (s)"
    starts = sorted(float(line.get_xdata()[0]) for line in axes.get_lines())
    ends = sorted(float(line.get_xdata()[-1]) for line in axes.get_lines())
    assert starts == [0.0, 0.0]
    assert ends == pytest.approx([30.0, 60.0])


def test_annotations_sit_at_their_time_since_the_run_start(metrics_session: sm.Session) -> None:
    run = logged_over("annotated", 10_000, start_ms=0)
    note = run.annotate("checkpoint")
    axes = run.metrics("loss").plot(x="relative", annotations=[note])
    # The annotation is created now, the run's points in 1970: far right, in seconds.
    marks = [line for line in axes.get_lines() if line.get_linestyle() == "--"]
    assert len(marks) == 1
    assert marks[0].get_xdata()[0] == pytest.approx(note.created_at_ms / 1000, rel=1e-9)


def test_wide_frames_by_relative_time_align_runs(metrics_session: sm.Session) -> None:
    early = logged_over("early", 2_000)
    late = logged_over("late", 2_000, start_ms=T0 + 3_600_000)
    rows = sm.compare([early, late], "loss")
    wide = rows.to_pandas(wide=True, index="relative")
    assert wide.index.name == "time since start"
    assert wide.index[0] == pd.Timedelta(0)
    assert wide.index[-1] == pd.Timedelta(seconds=2)
    assert wide.notna().all().all()  # both runs at every position
    by_clock = rows.to_pandas(wide=True, index="wall")
    assert by_clock.index.name == "time"
    assert len(by_clock) == 2 * POINTS
    assert by_clock.index.equals(rows.to_pandas(wide=True, index="time").index)


def test_a_bad_x_or_index_is_a_clear_error(metrics_session: sm.Session) -> None:
    rows = logged_over("bad-axis", 2_000).metrics("loss")
    with pytest.raises(sm.MetricsValidationError, match=r"'relative'.*'wall'.*got 'clock'"):
        rows.plot(x="clock")
    with pytest.raises(sm.MetricsValidationError, match=r"'relative'.*got 'elapsed'"):
        rows.to_pandas(wide=True, index="elapsed")
    assert plt.get_fignums() == []  # refused before a figure was made
