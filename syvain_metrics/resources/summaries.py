"""Summaries of runs' metrics, one column per sub-series: a metric logged with different
event metadata (``{"split": "train"}`` and ``{"split": "valid"}``) is two series, and a
summary that mixed them (a ``min`` across both splits, a ``count`` of both) would answer a
question nobody asked. So each sub-series gets its own columns, ``loss[split=valid]:min``,
unless the caller asks to combine them, and then the answer says what it combined.

Example:
    >>> summary_column("loss", "min", "split=valid")
    'loss[split=valid]:min'
    >>> subseries_label({"task": "a", "split": "valid"})
    'split=valid,task=a'
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from syvain_metrics.client.registry import get_session
from syvain_metrics.client.session import Session
from syvain_metrics.contract.limits import MAX_COMPARE_SERIES
from syvain_metrics.contract.schemas.options import check_flag
from syvain_metrics.errors import MetricsValidationError
from syvain_metrics.resources.compare import Series, compare
from syvain_metrics.tables.frames import JsonCache, plain

if TYPE_CHECKING:
    from syvain_metrics.resources.experiment.base import ExperimentBase

SUMMARY_HOW = ("last", "first", "min", "max", "mean", "count", "last_step")
"""What a summary can compute per run and metric: the value of the last and first event
(in step order, then client time), the smallest, largest and mean value, the number of
events, and the step of the last event."""

Value = float | int | None


def subseries_label(metadata: Mapping[str, Any]) -> str:
    """The name of one sub-series: its event metadata as ``key=value``, keys sorted and
    joined with commas (``""`` for events without metadata).

    Example:
        >>> subseries_label({"split": "valid", "fold": 2}), subseries_label({})
        ('fold=2,split=valid', '')
    """
    return ",".join(f"{key}={plain(metadata[key])}" for key in sorted(metadata))


def summary_column(name: str, how: str, subseries: str = "") -> str:
    """The column (or key) of one summary value: ``"<metric>:<how>"``, or, for a
    sub-series, ``"<metric>[<key>=<value>,...]:<how>"``.

    Example:
        >>> summary_column("valid/acc", "max"), summary_column("loss", "last", "split=train")
        ('valid/acc:max', 'loss[split=train]:last')
    """
    return f"{name}[{subseries}]:{how}" if subseries else f"{name}:{how}"


def check_names(names: str | Sequence[str]) -> list[str]:
    """The metric names of a summary, once each; a clear error for anything else.

    Example:
        >>> check_names(["loss", "acc", "loss"])
        ['loss', 'acc']
    """
    listed = [names] if isinstance(names, str) else list(names)
    if not listed or not all(isinstance(n, str) and n for n in listed):
        raise MetricsValidationError({"names": ["Must be a metric name or a list of them."]})
    return list(dict.fromkeys(listed))


def check_hows(how: str | Sequence[str]) -> list[str]:
    """The statistics of a summary, once each, among :data:`SUMMARY_HOW`.

    Example:
        >>> check_hows("min")
        ['min']
    """
    listed = [how] if isinstance(how, str) else list(how)
    unknown = [h for h in listed if h not in SUMMARY_HOW]
    if not listed or unknown:
        raise MetricsValidationError(
            {"how": [f"Must be among {', '.join(SUMMARY_HOW)}; got {unknown or listed!r}."]}
        )
    return list(dict.fromkeys(listed))


class _Accumulator:
    __slots__ = ("count", "first", "last", "last_step", "max", "min", "total")

    def __init__(self, value: float, step: Any) -> None:
        self.first = self.last = self.min = self.max = self.total = value
        self.count = 1
        self.last_step = step

    def add(self, value: float, step: Any) -> None:
        self.last = value
        self.last_step = step
        self.count += 1
        self.total += value
        self.min = min(self.min, value)
        self.max = max(self.max, value)

    def get(self, how: str) -> Value:
        if how == "mean":
            return self.total / self.count
        if how == "last_step":
            step = self.last_step
            return (
                None
                if step is None or (isinstance(step, float) and math.isnan(step))
                else int(step)
            )
        value: float | int = getattr(self, how)
        return value


@dataclass
class Summaries:
    """What :func:`summarize_runs` computed: per run id, its values by column; every
    column in order (each metric, then its sub-series sorted, then each statistic); and,
    when asked to combine, each metric's sub-series that were combined (two or more)."""

    values: dict[str, dict[str, Value]] = field(default_factory=dict)
    columns: list[str] = field(default_factory=list)
    combined: dict[str, list[str]] = field(default_factory=dict)
    present: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    """Per (run id, metric), the columns' sub-series that run has events of."""


def _missing(how: str) -> Value:
    return 0 if how == "count" else None


def summarize_runs(
    runs: Sequence[ExperimentBase],
    names: str | Sequence[str],
    how: str | Sequence[str],
    metadata: Mapping[str, Any] | str | None,
    session: Session | None,
    last_per_step: bool = False,
    combine: bool = False,
    *,
    stacklevel: int = 3,
) -> Summaries:
    """The summaries of ``runs``, from one ``compare`` read per 64 (run, metric) series
    (with ``last_per_step``, of the rows logged last at each step of each sub-series). Each
    sub-series found gets its columns; with ``combine``, each metric gets one set of
    columns over all its sub-series, and a ``UserWarning`` names what was combined.

    Example:
        >>> summarize_runs([], "loss", ("min", "count"), None, None).columns
        ['loss:min', 'loss:count']
    """
    metric_names, hows = check_names(names), check_hows(how)
    check_flag("last_per_step", last_per_step)
    check_flag("combine", combine)
    if not runs:
        return Summaries(columns=[summary_column(n, h) for n in metric_names for h in hows])
    bound = get_session(session or next((r._session for r in runs if r._session), None))
    series = [Series(run, name, metadata=metadata) for run in runs for name in metric_names]
    labels: dict[str | None, str] = {}
    parse = JsonCache()
    found: dict[tuple[str, str, str], _Accumulator] = {}
    seen: dict[str, set[str]] = {name: set() for name in metric_names}
    for start in range(0, len(series), MAX_COMPARE_SERIES):
        rows = compare(
            series[start : start + MAX_COMPARE_SERIES],
            session=bound,
            last_per_step=last_per_step,
        )
        for run_id, name, text, value, step in zip(
            rows.column("experiment_id"),
            rows.column("metric_name"),
            rows.column("event_metadata_json"),
            rows.column("metric_value"),
            rows.column("step"),
            strict=True,
        ):
            label = labels.get(text)
            if label is None:
                # Parsed, not taken as text: the same metadata may come with its keys in
                # another order.
                label = labels[text] = subseries_label(parse(text))
            seen[name].add(label)
            key = (run_id, name, "" if combine else label)
            accumulator = found.get(key)
            if accumulator is None:
                found[key] = _Accumulator(value, step)
            else:
                accumulator.add(value, step)
    out = Summaries()
    for name in metric_names:
        if combine:
            if len(seen[name]) > 1:
                out.combined[name] = sorted(seen[name])
            parts = [""]
        else:
            parts = sorted(seen[name]) or [""]
        out.columns.extend(summary_column(name, h, part) for part in parts for h in hows)
    for run in runs:
        values: dict[str, Value] = {}
        for name in metric_names:
            parts = [""] if combine else sorted(seen[name]) or [""]
            for part in parts:
                accumulator = found.get((run.id, name, part))
                if accumulator is not None:
                    out.present.setdefault((run.id, name), []).append(part)
                for h in hows:
                    values[summary_column(name, h, part)] = (
                        _missing(h) if accumulator is None else accumulator.get(h)
                    )
        out.values[run.id] = values
    if out.combined:
        described = "; ".join(
            f"{name}: {', '.join(part or '(no metadata)' for part in parts)}"
            for name, parts in out.combined.items()
        )
        name, parts = next(iter(out.combined.items()))
        example = summary_column(name, hows[0], parts[-1])
        warnings.warn(
            f"combine=True: these summaries mix sub-series ({described}); "
            f"without combine=True each gets its own columns, like {example!r}.",
            UserWarning,
            stacklevel=stacklevel,
        )
    return out


def summarize(
    runs: Sequence[ExperimentBase],
    names: str | Sequence[str],
    how: str | Sequence[str],
    metadata: Mapping[str, Any] | str | None,
    session: Session | None,
    last_per_step: bool = False,
    combine: bool = False,
) -> dict[str, dict[str, Value]]:
    """Per run id, ``{"<metric>[<sub-series>]:<how>": value}`` (see
    :func:`summarize_runs`): the columns of the sub-series that run has, and
    ``"<metric>:<how>"`` (``None``, or 0 for a count) for a metric it lacks.

    Example:
        >>> summarize([exp], "loss", "min", None, None)[exp.id]  # doctest: +SKIP
        {'loss[split=train]:min': 0.21, 'loss[split=valid]:min': 0.35}
    """
    found = summarize_runs(
        runs, names, how, metadata, session, last_per_step, combine, stacklevel=4
    )
    hows = check_hows(how)
    out: dict[str, dict[str, Value]] = {}
    for run in runs:
        values = found.values[run.id]
        kept: dict[str, Value] = {}
        for name in check_names(names):
            for part in found.present.get((run.id, name)) or [""]:
                for h in hows:
                    column = summary_column(name, h, part)
                    kept[column] = values[column]
        out[run.id] = kept
    return out
