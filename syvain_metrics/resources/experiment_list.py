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

import difflib
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, SupportsIndex, overload

from syvain_metrics.contract.limits import MAX_COMPARE_SERIES
from syvain_metrics.errors import MetricsValidationError
from syvain_metrics.resources.compare import Series, compare
from syvain_metrics.resources.lists import ResourceList
from syvain_metrics.resources.metric import MetricRows
from syvain_metrics.resources.summaries import (
    SUMMARY_HOW,
    summarize,
    summarize_runs,
    summary_column,
)
from syvain_metrics.tables.frames import require
from syvain_metrics.tables.options import PlotKeywords, PlotOptions, keyword_options

__all__ = [
    "SUMMARY_HOW",
    "ExperimentList",
    "check_selection",
    "metadata_value",
    "selected",
    "summarize",
    "summary_column",
]

if TYPE_CHECKING:
    import pandas
    from matplotlib.axes import Axes
    from typing_extensions import Unpack

    from syvain_metrics.resources.experiment import Experiment
    from syvain_metrics.resources.experiment.base import ExperimentBase

_MISSING: Any = object()


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


class ExperimentList(ResourceList["Experiment"]):
    """Experiments, as ``sm.Experiment.list()`` and ``folder.experiments`` return them: a
    ``list`` that also makes the runs table (:meth:`to_pandas`), picks runs by
    hyperparameter (:meth:`where`) or by slug (``runs["lr0.03-bs64"]``), summarises their
    metrics per sub-series (:meth:`summary`), reads one metric of them all
    (:meth:`compare`) and plots it (:meth:`plot`).

    Example:
        >>> runs = sm.Experiment.list(search="sweep")              # doctest: +SKIP
        >>> runs.to_pandas().set_index("slug")[["status", "lr"]]   # doctest: +SKIP
        >>> runs["sweep-adam-0.01"].status                          # doctest: +SKIP
        'done'
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
        combine: bool = False,
    ) -> pandas.DataFrame:
        """One row per run (indexed by slug), after the run's ``status`` and metadata
        columns (``include_metadata``), one column per metric, sub-series and statistic
        (``how`` among :data:`SUMMARY_HOW`; ``None`` / 0 where a run lacks it).

        A sub-series is a metric with one set of event metadata: ``loss`` logged with
        ``{"split": "train"}`` and ``{"split": "valid"}`` gives ``loss[split=train]:min``
        and ``loss[split=valid]:min`` (keys sorted, joined with commas:
        ``loss[split=valid,task=a]:last``); a metric logged without metadata keeps
        ``loss:min``. ``metadata`` narrows every metric first, as in ``exp.metrics()``
        (``{"split": "valid"}``: only the valid sub-series). ``combine=True`` gives one
        ``loss:min`` over all of a metric's sub-series, says so in a ``UserWarning``, and
        lists them in ``frame.attrs["combined"]`` (``{"loss": ["split=train",
        "split=valid"]}``). ``last_per_step=True`` counts only the row logged last at each
        step of each sub-series (a run resumed from a checkpoint: one value per step).

        Requests: one ``compare`` read per 64 (run, metric) pairs, so 5 runs and 2 metrics
        are one read; a read whose rows fit one page (50,000 rows by default) costs 2
        requests (the page, and the small one that confirms its end), so this is 2
        requests, whatever the number of runs up to 32 with 2 metrics. Needs ``pandas``.

        Example:
            >>> table = runs.summary(["loss", "acc"], how=("last", "min"))  # doctest: +SKIP
            >>> runs[table["loss[split=valid]:min"].idxmin()]               # doctest: +SKIP
            <Experiment sweep-adam-0.01 done id=...>
        """
        pd = require("pandas", "pandas")
        found = summarize_runs(self, names, how, metadata, None, last_per_step, combine)
        fixed = ["status"] if include_metadata else []
        records = []
        for run in self:
            record: dict[str, Any] = {"slug": run.slug}
            if include_metadata:
                row = run._frame_row()
                record["status"] = row["status"]
                for key, value in row.items():
                    if key not in self._columns and key != "id":
                        record[key] = value
                        if key not in fixed:
                            fixed.append(key)
            record.update(found.values[run.id])
            records.append(record)
        frame = pd.DataFrame(records, columns=["slug", *fixed, *found.columns])
        frame = frame.set_index("slug")
        if combine:
            frame.attrs["combined"] = found.combined
        return frame

    @overload
    def __getitem__(self, index: SupportsIndex) -> Experiment: ...
    @overload
    def __getitem__(self, index: slice) -> ExperimentList: ...
    @overload
    def __getitem__(self, index: str) -> Experiment: ...
    def __getitem__(self, index: SupportsIndex | slice | str) -> Experiment | ExperimentList:
        """A run by position, a slice of runs (an ``ExperimentList``), or the run with a
        slug (``KeyError`` naming the closest slugs when none has it).

        Example:
            >>> runs["sweep-adam-0.01"].metadata["lr"]  # doctest: +SKIP
            0.01
        """
        if not isinstance(index, str):
            return super().__getitem__(index)
        for run in self:
            if run.slug == index:
                return run
        slugs = [run.slug for run in self if run.slug]
        close = difflib.get_close_matches(index, slugs, n=3, cutoff=0.5)
        hint = f"; the closest: {', '.join(close)}" if close else ""
        raise KeyError(f"No run with the slug {index!r} among these {len(self)} experiments{hint}.")

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
