"""LightGBM: a callback for ``lgb.train`` and ``lgb.cv`` that logs every evaluation result.

Each (eval set, metric) pair is one series: the metric's name (``l2``, ``auc``, a custom
``feval``'s name) with the eval set as metadata (``{"eval_set": "valid_0"}``), at the
iteration as step. ``lgb.cv`` reports a mean and a standard deviation over the folds: the
mean is logged as the metric itself and the deviation as ``<metric>/std`` (same metadata).
The parameters are the run's hyperparameters.

Example:
    >>> from syvain_metrics.integrations.lightgbm import SyvainLightGBMCallback  # doctest: +SKIP
    >>> with SyvainLightGBMCallback("gbm-1") as cb:                              # doctest: +SKIP
    ...     booster = lgb.train(params, dtrain, 100, valid_sets=[dvalid], callbacks=[cb])
"""

from __future__ import annotations

import atexit
import logging
import threading
from collections.abc import Mapping
from typing import Any

import lightgbm  # noqa: F401  (the framework this module is for: fail early without it)

from syvain_metrics.client.session import Session
from syvain_metrics.integrations.callback_common import (
    EVAL_SET_KEY,
    ClosingBlock,
    Copyable,
    run_for_training,
)
from syvain_metrics.integrations.framework_run import CV_STD_SUFFIX, FrameworkRun
from syvain_metrics.integrations.unfinished import UnfinishedRunError
from syvain_metrics.resources.experiment import UNSET, Experiment
from syvain_metrics.resources.folder import Folder

logger = logging.getLogger("syvain_metrics")

_open: set[SyvainLightGBMCallback] = set()
"""Callbacks whose run is open, for the interpreter's exit: a training that early stopping
ended outside a ``with`` block ends ``done`` then."""
_open_lock = threading.Lock()
_hooked = False


def _rows(results: Any) -> list[tuple[str, dict[str, Any], float]]:
    """``(name, metadata, value)`` for each evaluation result, read by index: the items are
    tuples before LightGBM 4.7 and ``EvalResult`` named tuples since; ``train`` gives
    ``(set, metric, value, higher_better)``, ``cv`` adds the deviation as a fifth item."""
    rows: list[tuple[str, dict[str, Any], float]] = []
    for item in results or ():
        metadata = {EVAL_SET_KEY: str(item[0])}
        rows.append((str(item[1]), metadata, item[2]))
        if len(item) > 4 and item[4] is not None:
            rows.append((f"{item[1]}{CV_STD_SUFFIX}", metadata, item[4]))
    return rows


class SyvainLightGBMCallback(ClosingBlock, Copyable):
    """Log LightGBM's evaluation results to one run: pass it in ``callbacks=[...]`` of
    ``lgb.train`` or ``lgb.cv``.

    The step is LightGBM's iteration, absolute even when training continues from
    ``init_model``: the same callback (or a new one with the same ``slug``) continues the same
    run as one curve. The same callback training again from scratch (iteration 0) after a
    training that logged iterations starts a new run, ``<slug>-2`` (then ``-3``...), so that
    two trainings never share steps. The run ends ``done`` after the last iteration. LightGBM tells a callback
    nothing when training stops early (early stopping, an exception in ``feval`` or
    ``fobj``): around a ``with`` block the run ends exactly (``done``, or ``error`` with the
    exception). Without one, a run left open keeps a reference to its model and ends when
    the callback trains again, at :meth:`close`, or at the interpreter's exit: ``done`` when
    the model records an early stop, else ``error`` (with the exception that ended the
    program, if any). A NaN metric is annotated once and training goes on. The
    arguments are those of every integration (see ``FrameworkRun``); bad ones raise
    :class:`~syvain_metrics.MetricsValidationError` here.

    Example:
        >>> cb = SyvainLightGBMCallback("gbm-1", folder=sweep)            # doctest: +SKIP
        >>> with cb:                                                      # doctest: +SKIP
        ...     lgb.train(params, dtrain, valid_sets=[dvalid], callbacks=[cb,
        ...               lgb.early_stopping(10)])
    """

    order = 25
    """After ``log_evaluation`` (10) and ``record_evaluation`` (20), before
    ``early_stopping`` (30), whose exception would skip the iteration that stops training."""

    before_iteration = False

    def __init__(
        self,
        slug: str | None = None,
        *,
        experiment: Experiment | None = None,
        folder: Folder | str | None = UNSET,
        description: str = "",
        metadata: Mapping[str, Any] | None = None,
        session: Session | None = None,
        system_metrics: bool | float = False,
        flush_timeout: float | None = None,
    ) -> None:
        self._options: dict[str, Any] = {
            "session": session,
            "flush_timeout": flush_timeout,
            "system_metrics": system_metrics,
            "framework": "lightgbm",
        }
        self._run = FrameworkRun(
            slug,
            experiment=experiment,
            folder=folder,
            description=description,
            metadata=metadata,
            **self._options,
        )
        self._lock = threading.RLock()
        # The model being trained, held while the run is open: after the training loop,
        # its ``best_iteration`` tells an early stop (done) from an exception (error).
        self._model: Any = None
        self._iteration_at = (0, 0)  # the last iteration logged, and the training's end
        self._configured = False
        self._warned = False

    @property
    def run(self) -> FrameworkRun:
        """The run this callback logs to (its ``experiment`` is created on first use).

        Example:
            >>> SyvainLightGBMCallback("gbm-1").run.slug
            'gbm-1'
        """
        return self._run

    def __call__(self, env: Any) -> None:
        """Log one iteration's evaluation results (called by LightGBM).

        Example:
            >>> cb(env)  # doctest: +SKIP
        """
        with self._lock:
            try:
                self._iteration(env)
            except Exception as error:  # an env of an unknown shape: never into training
                if not self._warned:
                    self._warned = True
                    logger.warning("syvain_metrics: lightgbm: an iteration not logged: %r", error)

    def close(self, error: BaseException | None = None) -> None:
        """End the run now: ``done``, or ``error`` with ``error``. Needed only after a
        training that stopped early outside a ``with`` block; never raises.

        Example:
            >>> cb.close()  # doctest: +SKIP
        """
        with self._lock:
            self._finish(error)

    def _end_open(self, error: BaseException | None) -> None:
        self.close(error)

    def _fresh(self) -> dict[str, Any]:
        # A copy trains its own model: no lock, model or open training of this one.
        return {"_lock": threading.RLock(), "_model": None, "_iteration_at": (0, 0)}

    # -- inside -----------------------------------------------------------------------------

    def _iteration(self, env: Any) -> None:
        if self._model is not env.model or env.iteration == env.begin_iteration:
            self._begin(env)
        self._iteration_at = (env.iteration, env.end_iteration)
        by_set: dict[str, dict[str, float]] = {}
        for name, metadata, value in _rows(env.evaluation_result_list):
            by_set.setdefault(metadata[EVAL_SET_KEY], {})[name] = value
        for eval_set, values in by_set.items():
            self._run.log(values, env.iteration, metadata={EVAL_SET_KEY: eval_set})
        if env.iteration >= env.end_iteration - 1:
            self._finish(None)

    def _begin(self, env: Any) -> None:
        if self._model is not None:  # the previous training stopped before its end
            self._finish(
                None
                if self.early_stopped()
                else UnfinishedRunError(
                    f"training stopped after iteration {self._iteration_at[0] + 1} of {self._iteration_at[1]}"
                )
            )
        self._model = env.model
        resume: int | None = env.begin_iteration if env.begin_iteration > 0 else None
        previous = self._run
        self._run = run_for_training(previous, resume, self._continued)
        if self._run.slug != previous.slug:
            self._configured = False  # a new training: its own parameters
        if not self._configured:
            self._configured = True
            self._run.configure(dict(env.params or {}))
        self._run.start(resume_from=resume)
        _hook_exit()  # after the start: its exit hook then runs before FrameworkRun's
        with _open_lock:
            _open.add(self)

    def early_stopped(self) -> bool:
        """Whether the training left open ended by early stopping (its model records the
        best iteration).

        Example:
            >>> SyvainLightGBMCallback("gbm-1").early_stopped()
            False
        """
        best = getattr(self._model, "best_iteration", 0)
        return isinstance(best, int) and best > 0

    def _continued(self) -> FrameworkRun:
        """A run over the same experiment, for a callback that continues a training after
        its run ended (a run that could not be created stays a no-op)."""
        ended = self._run
        try:
            return FrameworkRun(experiment=ended.experiment, **self._options)
        except Exception:
            return ended

    def _finish(self, error: BaseException | None) -> None:
        self._model = None
        with _open_lock:
            _open.discard(self)
        self._run.end(error)


def _end_early_stopped_runs() -> None:
    """At the interpreter's exit: end ``done`` the runs that early stopping left open. The
    others are ended ``error`` by FrameworkRun's own exit hook (with the exception that
    ended the program, if any)."""
    with _open_lock:
        left = list(_open)
    for callback in left:
        if callback.early_stopped():
            callback.close()


def _hook_exit() -> None:
    # Registered once, after the first run started (which registers FrameworkRun's exit
    # hook): exit hooks run last-registered first, so this one comes before it.
    global _hooked
    with _open_lock:
        if _hooked:
            return
        _hooked = True
    atexit.register(_end_early_stopped_runs)
