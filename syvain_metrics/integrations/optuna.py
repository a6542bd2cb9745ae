"""Optuna: one folder per study, one run per trial.

:class:`SyvainOptunaCallback` goes in ``study.optimize(..., callbacks=[cb])``. Each trial
becomes a run ``<study>-trial-<number>`` in the study's folder, with the trial's parameters as
its metadata (beside ``optuna.study``, ``optuna.trial`` and the direction), the intermediate
values reported with ``trial.report`` as the objective's series at their steps, and the
objective's value one step after the last report (at step 0 without reports), so that no
step holds two values. ``COMPLETE`` ends the run ``done``, ``PRUNED`` ``error``
("pruned at step N"), ``FAIL`` ``error``. Optuna passes a callback neither a failed trial's
exception nor a trial whose exception ends ``optimize``: wrapping the objective with
:meth:`SyvainOptunaCallback.track` records both, and logs each report as it happens.

Example:
    >>> from syvain_metrics.integrations.optuna import SyvainOptunaCallback  # doctest: +SKIP
    >>> cb = SyvainOptunaCallback()                                         # doctest: +SKIP
    >>> study.optimize(cb.track(objective), n_trials=20, callbacks=[cb])    # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from syvain_metrics.client.registry import get_session
from syvain_metrics.client.session import Session
from syvain_metrics.contract.limits import FOLDER_NAME_MAX, SLUG_MAX
from syvain_metrics.contract.schemas.base import load_request
from syvain_metrics.contract.schemas.folder import FolderCreateRequest
from syvain_metrics.errors import MetricsValidationError
from syvain_metrics.integrations.callback_common import TrialRun
from syvain_metrics.integrations.framework_run import FrameworkRun
from syvain_metrics.resources.experiment.values import flatten_metrics
from syvain_metrics.resources.folder import Folder

logger = logging.getLogger("syvain_metrics")

_Key = tuple[str, int, str]
"""A trial, the same in the objective and in the callback: study name, number, start time."""


class TrialFailedError(Exception):
    """The error a failed trial's run records when its exception is unknown (Optuna keeps
    none: wrap the objective with :meth:`SyvainOptunaCallback.track` to record it).

    Example:
        >>> str(TrialFailedError("trial 3 failed"))
        'trial 3 failed'
    """


@dataclass
class _Trial:
    """A trial run by a tracked objective, until the callback ends its run."""

    key: _Key
    trial_id: int
    run: _Run | None = None
    steps: set[int] = field(default_factory=set)
    returned: Any = None
    ended: bool = False


def _key(study_name: str, number: int, start: dt.datetime | None) -> _Key:
    return (study_name, number, "" if start is None else start.isoformat())


def _last_step(trial: FrozenTrial) -> int | None:
    return max(trial.intermediate_values) if trial.intermediate_values else None


def _pruned(step: int | None) -> optuna.TrialPruned:
    if step is None:
        return optuna.TrialPruned("pruned before reporting a step")
    return optuna.TrialPruned(f"pruned at step {step}")


class SyvainOptunaCallback:
    """Log each trial of a study as a run: ``study.optimize(objective, callbacks=[cb])``.

    ``folder`` holds the study's runs: a :class:`~syvain_metrics.Folder`, or a folder name
    (found, or created at the root); by default a folder named after the study. The run of
    trial 7 of study ``lgbm-sweep`` is ``lgbm-sweep-trial-7`` (trial numbers are unique
    across the processes that share a study's storage). ``metric_name`` names the
    objective's series; a multi-objective study logs ``study.metric_names`` when set, else
    ``<metric_name>_0``, ``<metric_name>_1``... (or pass one name per objective). Nothing the
    service does raises into ``optimize``: without a ``flush_timeout``, a trial's run does
    not wait for its events when it ends if the session has a spool (they wait there, and
    ``done`` follows them), so a slow service costs no trial its whole wait. Bad arguments raise
    :class:`~syvain_metrics.MetricsValidationError` here.

    Example:
        >>> cb = SyvainOptunaCallback("sweeps", metric_name="val_loss")     # doctest: +SKIP
        >>> study.optimize(cb.track(objective), n_trials=50, callbacks=[cb]) # doctest: +SKIP
    """

    def __init__(
        self,
        folder: Folder | str | None = None,
        *,
        session: Session | None = None,
        metric_name: str | Sequence[str] = "value",
        flush_timeout: float | None = None,
    ) -> None:
        names = [metric_name] if isinstance(metric_name, str) else list(metric_name)
        if not names or not all(isinstance(name, str) for name in names):
            raise MetricsValidationError({"metric_name": ["Give a name, or one per objective."]})
        flatten_metrics(dict.fromkeys(names, 0.0))  # a name the contract refuses fails now
        if isinstance(folder, str):
            load_request(FolderCreateRequest(), {"name": folder, "parent_id": None})
        elif folder is not None and not isinstance(folder, Folder):
            raise MetricsValidationError({"folder": ["Give a Folder, a folder name or None."]})
        self._folder = folder
        self._session = session
        self._names = names
        self._flush_timeout = flush_timeout
        self._folders: dict[str, Folder | None] = {}
        self._again: dict[str, int] = {}
        self._called = False  # the callback has run: it ends the tracked trials
        self._settled: set[_Key] = set()
        self._trials: dict[_Key, _Trial] = {}
        self._lock = threading.RLock()
        self._warned: set[str] = set()

    # -- what Optuna calls ------------------------------------------------------------------

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Log a finished trial (called by ``optimize`` after each one); never raises.

        Example:
            >>> cb(study, study.best_trial)  # doctest: +SKIP
        """
        key = _key(study.study_name, trial.number, trial.datetime_start)
        with self._lock:
            self._called = True
            tracked = self._trials.pop(key, None)
            if key in self._settled:  # ended already, by the next trial's start
                self._settled.discard(key)
                return
        try:
            self._finish(study, trial, tracked)
        except Exception as error:  # never into optimize
            self._warn("trial", "logging trial %s failed: %s", trial.number, error)

    def track(self, objective: Callable[[optuna.Trial], Any]) -> Callable[[optuna.Trial], Any]:
        """Wrap an objective so that its trial's run starts with its first ``trial.report``
        (each report logged at once), and an exception ends the run ``error`` with it (or
        "pruned at step N" for ``TrialPruned``) before it is raised on, even one that ends
        ``optimize``. Pass the callback to ``optimize`` too: it ends the runs of the trials
        that returned. Works as a decorator.

        Example:
            >>> @cb.track                      # doctest: +SKIP
            ... def objective(trial):
            ...     return (trial.suggest_float("x", -10, 10) - 2) ** 2
            >>> study.optimize(objective, n_trials=20, callbacks=[cb])  # doctest: +SKIP
        """

        @functools.wraps(objective)
        def tracked(trial: optuna.Trial) -> Any:
            entry = self._begin(trial)
            original = trial.report

            def report(value: float, step: int) -> None:
                original(value, step)  # Optuna's checks first: what it refuses is not logged
                self._report(trial, entry, value, step)

            trial.report = report  # type: ignore[method-assign]
            try:
                result = objective(trial)
            except optuna.TrialPruned:
                self._end_early(trial, entry, _pruned(max(entry.steps, default=None)))
                raise
            except BaseException as error:
                self._end_early(trial, entry, error)
                raise
            finally:
                trial.__dict__.pop("report", None)
            entry.returned = result
            return result

        return tracked

    # -- the tracked objective's side -------------------------------------------------------

    def _begin(self, trial: optuna.Trial) -> _Trial:
        key = _key(trial.study.study_name, trial.number, trial.datetime_start)
        entry = _Trial(key, trial._trial_id)
        with self._lock:
            left = [] if self._called else [t for t in self._trials.values() if not t.ended]
            self._trials[key] = entry
        for stale in left:  # trials no callback ended: is it passed to ``optimize``?
            self._settle(trial.study, stale)
        return entry

    def _settle(self, study: optuna.Study, entry: _Trial) -> None:
        try:
            frozen = study._storage.get_trial(entry.trial_id)
        except Exception:
            return
        if not frozen.state.is_finished():
            return  # still running (``n_jobs``)
        with self._lock:
            if self._called or self._trials.pop(entry.key, None) is None:
                return  # the callback has it
            self._settled.add(entry.key)
        self._warn("callback", "pass the callback to optimize(callbacks=[...]) as well")
        self._finish(study, frozen, entry)

    def _report(self, trial: optuna.Trial, entry: _Trial, value: float, step: int) -> None:
        if step in entry.steps:
            return  # Optuna keeps the first value reported at a step
        entry.steps.add(step)
        try:
            if entry.run is None:
                entry.run = self._new_run(trial.study, entry.key, trial.params)
            entry.run.log({self._names[0]: value}, step)
        except Exception as error:
            self._warn("report", "logging a report of trial %s failed: %s", trial.number, error)

    def _end_early(self, trial: optuna.Trial, entry: _Trial, error: BaseException) -> None:
        entry.ended = True
        try:
            if entry.run is None:
                entry.run = self._new_run(trial.study, entry.key, trial.params)
            entry.run.start()
            entry.run.end(error)
        except Exception as failure:
            self._warn("trial", "ending trial %s failed: %s", trial.number, failure)

    # -- the end of a trial -----------------------------------------------------------------

    def _finish(self, study: optuna.Study, trial: FrozenTrial, tracked: _Trial | None) -> None:
        if tracked is not None and tracked.ended:
            return  # the tracked objective ended it with its exception
        run = tracked.run if tracked is not None else None
        if run is None:
            key = _key(study.study_name, trial.number, trial.datetime_start)
            run = self._new_run(study, key, trial.params)
        else:
            late = {k: v for k, v in trial.params.items() if k not in run.configured}
            if late:  # suggested after the first report: the run exists already
                run.configure(late)
        last = _last_step(trial)
        if tracked is None:
            for step, value in sorted(trial.intermediate_values.items()):
                run.log({self._names[0]: value}, step)
        if trial.state == TrialState.COMPLETE and trial.values is not None:
            # One step after the last report: a step never holds two values of one series.
            run.log(self._values(study, trial.values), 0 if last is None else last + 1)
        run.start()
        run.end(self._error(trial, tracked, last))

    def _error(self, trial: FrozenTrial, tracked: _Trial | None, last: int | None) -> Any:
        if trial.state == TrialState.COMPLETE:
            return None
        if trial.state == TrialState.PRUNED:
            return _pruned(last)
        if tracked is not None:  # it returned: Optuna refused the value
            returned = tracked.returned
            return TrialFailedError(
                f"trial {trial.number} failed: the objective returned {returned!r}"
            )
        return TrialFailedError(f"trial {trial.number} failed (track() records the exception)")

    def _values(self, study: optuna.Study, values: Sequence[float]) -> dict[str, float]:
        if len(values) == 1 and len(self._names) == 1:
            return {self._names[0]: values[0]}
        names = self._names if len(self._names) == len(values) else None
        if names is None:
            given = study.metric_names
            names = given if given else [f"{self._names[0]}_{i}" for i in range(len(values))]
        return dict(zip(names, values, strict=True))

    # -- runs and folders -------------------------------------------------------------------

    def _new_run(self, study: optuna.Study, key: _Key, params: Mapping[str, Any]) -> _Run:
        """The trial's run, created now. A slug taken by another trial (a study created
        again under the same name, its numbers starting over) gets a suffix, ``-2``...: a
        trial never writes into another one's run."""
        name, number, started = key
        directions = [d.name.lower() for d in study.directions]
        about: dict[str, Any] = {"study": name, "trial": number, "started": started}
        if len(directions) == 1:
            about["direction"] = directions[0]
        else:
            about["directions"] = directions
        folder = self._folder_for(name)
        with self._lock:
            again = self._again.get(name, 1)
        while True:
            suffix = f"-trial-{number}" + (f"-{again}" if again > 1 else "")
            run = _Run(
                name[: SLUG_MAX - len(suffix)] + suffix,
                folder=folder,
                metadata={"optuna": about},
                session=self._session,
                flush_timeout=self._flush_timeout,
                framework="optuna",
            )
            run.configure(dict(params))
            if _holds(run, started):
                return run
            if again >= _MAX_AGAIN:
                self._warn("slug", "run %s is shared with an earlier trial", run.slug)
                return run
            again += 1
            with self._lock:  # the next trials of this study skip the slugs found taken
                self._again[name] = max(again, self._again.get(name, 1))

    def _folder_for(self, study_name: str) -> Folder | None:
        if isinstance(self._folder, Folder):
            return self._folder
        name = (self._folder or study_name)[:FOLDER_NAME_MAX]
        with self._lock:
            if name in self._folders:
                return self._folders[name]
            folder: Folder | None = None
            try:
                session = get_session(self._session)
                if session.writes:  # another rank makes no call
                    folder = Folder.create(name, exist_ok=True, session=session)
            except Exception as error:  # once per study: each try may wait for retries
                self._warn("folder", "folder %r not made (%s): runs go to the root", name, error)
            self._folders[name] = folder
            return folder

    def _warn(self, kind: str, message: str, *args: Any) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            logger.warning("syvain_metrics: optuna: " + message, *args)


_MAX_AGAIN = 100
"""The most suffixes tried for a taken slug (then the run is shared, with a warning)."""


def _holds(run: FrameworkRun, started: str) -> bool:
    """Whether ``run`` (created now, or found with its slug) is the trial that started at
    ``started``; ``True`` when that cannot be told (a creation waiting for the service)."""
    try:
        stored = run.experiment.metadata
    except Exception:
        return True  # its start fails the same way, and is logged there
    about = stored.get("optuna")
    return isinstance(about, Mapping) and about.get("started") == started


class _Run(TrialRun):
    """A trial's run, remembering which parameters its creation carried."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.configured: set[str] = set()

    def configure(self, config: object) -> None:
        if isinstance(config, Mapping):
            self.configured.update(str(k) for k in config)
        super().configure(config)
