"""Many runs at once: the runs table, choosing runs by hyperparameter, summaries of their
metrics and one plot of them all.

Choosing by metadata happens in the client (the service has no such filter): the runs
are listed, then kept or dropped here.

Example:
    >>> runs = sm.Experiment.list(folder=sweep, metadata={"optimizer": "sgd"})  # doctest: +SKIP
    >>> runs.to_pandas()[["slug", "status", "lr"]]                              # doctest: +SKIP
    >>> runs.summary(["loss", "acc"], how=("last", "min"))                      # doctest: +SKIP
    >>> runs.plot("loss", metadata={"split": "valid"}, hue="lr", logy=True)     # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from syvain_metrics.client.registry import get_session
from syvain_metrics.client.session import Session
from syvain_metrics.contract.limits import MAX_COMPARE_SERIES
from syvain_metrics.contract.schemas.options import check_flag
from syvain_metrics.errors import MetricsValidationError
from syvain_metrics.resources.compare import Series, compare
from syvain_metrics.resources.lists import ResourceList
from syvain_metrics.resources.metric import MetricRows
from syvain_metrics.tables.frames import require
from syvain_metrics.tables.options import PlotKeywords, PlotOptions, keyword_options

if TYPE_CHECKING:
    import pandas
    from matplotlib.axes import Axes
    from typing_extensions import Unpack

    from syvain_metrics.resources.experiment import Experiment
    from syvain_metrics.resources.experiment.base import ExperimentBase

SUMMARY_HOW = ("last", "first", "min", "max", "mean", "count", "last_step")
"""What a summary can compute per run and metric: the value of the last and first event
(in step order, then client time), the smallest, largest and mean value, the number of
events, and the step of the last event."""

_MISSING: Any = object()


def summary_column(name: str, how: str) -> str:
    """The column (or key) of one summary value: ``"<metric>:<how>"``.

    Example:
        >>> summary_column("valid/acc", "max")
        'valid/acc:max'
    """
    return f"{name}:{how}"


def metadata_value(metadata: Mapping[str, Any], key: str) -> Any:
    """The value of ``key`` in ``metadata``; a dotted key (``"model.width"``) also reaches
    into nested objects. A missing key gives a private marker that equals nothing.

    Example:
        >>> metadata_value({"model": {"width": 512}}, "model.width")
        512
    """
    if key in metadata:
        return metadata[key]
    found: Any = metadata
    for part in key.split("."):
        if not isinstance(found, Mapping) or part not in found:
            return _MISSING
        found = found[part]
    return found


def check_selection(
    metadata: Mapping[str, Any] | None, where: Callable[[Any], bool] | None
) -> None:
    """Refuse a malformed client-side selection before any request."""
    if metadata is not None and (
        not isinstance(metadata, Mapping) or not all(isinstance(k, str) for k in metadata)
    ):
        raise MetricsValidationError(
            {"metadata": ["Must be a dict of metadata keys to values (or to predicates)."]}
        )
    if where is not None and not callable(where):
        raise MetricsValidationError({"where": ["Must be a function of an experiment."]})


def selected(
    experiment: ExperimentBase,
    metadata: Mapping[str, Any] | None,
    where: Callable[[Any], bool] | None,
) -> bool:
    """Whether ``experiment`` passes the client-side selection: every ``metadata`` key has
    that value (or the value passes the function given for it), and ``where(experiment)``."""
    for key, expected in (metadata or {}).items():
        value = metadata_value(experiment.metadata or {}, key)
        if value is _MISSING:
            return False
        if callable(expected):
            if not expected(value):
                return False
        elif value != expected:
            return False
    return where is None or bool(where(experiment))


def _names(names: str | Sequence[str]) -> list[str]:
    listed = [names] if isinstance(names, str) else list(names)
    if not listed or not all(isinstance(n, str) and n for n in listed):
        raise MetricsValidationError({"names": ["Must be a metric name or a list of them."]})
    return list(dict.fromkeys(listed))


def _hows(how: str | Sequence[str]) -> list[str]:
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

    def get(self, how: str) -> float | int | None:
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


def summarize(
    runs: Sequence[ExperimentBase],
    names: str | Sequence[str],
    how: str | Sequence[str],
    metadata: Mapping[str, Any] | str | None,
    session: Session | None,
    last_per_step: bool = False,
) -> dict[str, dict[str, float | int | None]]:
    """Per run id, ``{"<metric>:<how>": value}`` (``None`` where a run has no such event),
    computed from one ``compare`` read per 64 (run, metric) series (with ``last_per_step``,
    of the rows logged last at each step)."""
    metric_names, hows = _names(names), _hows(how)
    check_flag("last_per_step", last_per_step)
    if not runs:
        return {}
    bound = get_session(session or next((r._session for r in runs if r._session), None))
    series = [Series(run, name, metadata=metadata) for run in runs for name in metric_names]
    found: dict[tuple[str, str], _Accumulator] = {}
    for start in range(0, len(series), MAX_COMPARE_SERIES):
        rows = compare(
            series[start : start + MAX_COMPARE_SERIES],
            session=bound,
            last_per_step=last_per_step,
        )
        for run_id, name, value, step in zip(
            rows.column("experiment_id"),
            rows.column("metric_name"),
            rows.column("metric_value"),
            rows.column("step"),
            strict=True,
        ):
            accumulator = found.get((run_id, name))
            if accumulator is None:
                found[(run_id, name)] = _Accumulator(value, step)
            else:
                accumulator.add(value, step)
    out: dict[str, dict[str, float | int | None]] = {}
    for run in runs:
        values: dict[str, float | int | None] = {}
        for name in metric_names:
            accumulator = found.get((run.id, name))
            for h in hows:
                missing = 0 if h == "count" else None
                values[summary_column(name, h)] = (
                    missing if accumulator is None else accumulator.get(h)
                )
        out[run.id] = values
    return out


class ExperimentList(ResourceList["Experiment"]):
    """Experiments, as ``sm.Experiment.list()`` and ``folder.experiments`` return them: a
    ``list`` that also makes the runs table (:meth:`to_pandas`), picks runs by
    hyperparameter (:meth:`where`), summarises their metrics (:meth:`summary`), reads one
    metric of them all (:meth:`compare`) and plots it (:meth:`plot`).

    Example:
        >>> runs = sm.Experiment.list(search="sweep")              # doctest: +SKIP
        >>> runs.to_pandas().set_index("slug")[["status", "lr"]]   # doctest: +SKIP
    """

    _noun = "experiments"
    _columns = (
        "slug",
        "status",
        "folder",
        "created",
        "started",
        "done",
        "duration",
        "description",
        "error",
    )

    def to_pandas(self) -> pandas.DataFrame:
        """The runs table: one row per run with ``slug``, ``status``, ``folder`` (its path),
        ``created`` / ``started`` / ``done`` (UTC datetimes), ``duration`` (a timedelta),
        ``description``, ``error`` (the error name), one column per metadata key (nested
        keys joined with dots: ``model.width``; a key that clashes with a fixed column is
        ``metadata.<key>``) and ``id``. Needs the ``pandas`` extra.

        Example:
            >>> sm.Experiment.list().to_pandas().groupby("optimizer")["duration"].mean()  # doctest: +SKIP
        """
        return super().to_pandas()

    def where(
        self,
        metadata: Mapping[str, Any] | None = None,
        predicate: Callable[[Experiment], bool] | None = None,
    ) -> ExperimentList:
        """The runs whose metadata has every given value (a value may be a function that
        says yes or no: ``{"lr": lambda lr: lr < 0.01}``; dotted keys reach nested objects)
        and for which ``predicate(run)`` is true. No request: this filters the list.

        Example:
            >>> runs.where({"optimizer": "sgd"}, lambda e: e.status == "done")  # doctest: +SKIP
            <ExperimentList 2: <Experiment sweep-sgd-0.1 done id=...>, ...>
        """
        check_selection(metadata, predicate)
        return ExperimentList(run for run in self if selected(run, metadata, predicate))

    def summary(
        self,
        names: str | Sequence[str],
        how: str | Sequence[str] = ("last", "min", "max"),
        *,
        metadata: Mapping[str, Any] | str | None = None,
        include_metadata: bool = True,
        last_per_step: bool = False,
    ) -> pandas.DataFrame:
        """One row per run (indexed by slug), one column ``"<metric>:<how>"`` per metric and
        statistic (``how`` among :data:`SUMMARY_HOW`; ``None`` / 0 where a run lacks the
        metric), after the run's ``status`` and metadata columns (``include_metadata``).
        ``metadata`` narrows every metric to one series, as in ``exp.metrics()``.
        ``last_per_step=True`` counts only the row logged last at each step of each series
        (a run resumed from a checkpoint that logged steps again: one value per step).

        Requests: one ``compare`` read per 64 (run, metric) pairs, so 5 runs and 2 metrics
        are one read; a read whose rows fit one page (50,000 rows by default) costs 2
        requests (the page, and the small one that confirms its end), so this is 2
        requests, whatever the number of runs up to 32 with 2 metrics. Needs ``pandas``.

        Example:
            >>> runs.summary(["loss", "acc"], how=("last", "min"), metadata={"split": "valid"})  # doctest: +SKIP
        """
        pd = require("pandas", "pandas")
        values = summarize(self, names, how, metadata, None, last_per_step)
        columns = [summary_column(n, h) for n in _names(names) for h in _hows(how)]
        records = []
        for run in self:
            record: dict[str, Any] = {"slug": run.slug}
            if include_metadata:
                row = run._frame_row()
                record["status"] = row["status"]
                record.update({k: v for k, v in row.items() if k not in self._columns})
                record.pop("id", None)
            record.update(values[run.id])
            records.append(record)
        frame = pd.DataFrame(records, columns=None if records else ["slug", *columns])
        return frame.set_index("slug")

    def compare(
        self,
        name: str,
        *,
        metadata: Mapping[str, Any] | str | None = None,
        from_step: int | None = None,
        to_step: int | None = None,
        progress: bool = False,
        last_per_step: bool = False,
    ) -> MetricRows:
        """Every run's ``name`` metric (narrowed by ``metadata``), read with the runs'
        current metadata (``include_experiment_meta_as_of``), so frames carry it and plots
        can colour by it: one ``compare`` read per 64 runs. ``last_per_step=True`` keeps
        only the row logged last at each step of each series.

        Example:
            >>> runs.compare("loss", metadata={"split": "valid"}).to_pandas(wide=True)  # doctest: +SKIP
        """
        series = [Series(run, name, metadata=metadata) for run in self]
        if not series:
            return MetricRows()
        parts = [
            compare(
                series[start : start + MAX_COMPARE_SERIES],
                from_step=from_step,
                to_step=to_step,
                include_experiment_meta_as_of=True,
                progress=progress,
                last_per_step=last_per_step,
            )
            for start in range(0, len(series), MAX_COMPARE_SERIES)
        ]
        if len(parts) == 1:
            return parts[0]
        return MetricRows([row for part in parts for row in part.to_dicts()])

    @keyword_options(PlotOptions)
    def plot(
        self,
        name: str,
        *,
        metadata: Mapping[str, Any] | str | None = None,
        **options: Unpack[PlotKeywords],
    ) -> Axes:
        """Plot ``name`` for every run (:meth:`compare`, then :meth:`MetricRows.plot`): one
        line per run, coloured by ``hue`` (a metadata key of the runs) when given; the title
        is ``name`` unless given.

        Example:
            >>> runs.plot("loss", metadata={"split": "valid"}, hue="lr", logy=True)  # doctest: +SKIP
            <Axes: title={'center': 'loss'}, xlabel='step'>
        """
        rows = self.compare(name, metadata=metadata)
        if options.get("title") is None:
            options["title"] = name
        return rows.plot(**options)
