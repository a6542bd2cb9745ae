"""XGBoost: a training callback that logs every evaluation of every boosting round as a run.

``xgb.train(params, dtrain, 100, evals=[(dtrain, "train"), (dvalid, "valid")],
callbacks=[SyvainXGBoostCallback("gbm-1")])`` creates the run ``gbm-1`` (its metadata the
booster's main parameters: objective, booster, ``eta``, ``max_depth``...) and logs, after
each round, the last value of each metric of each evaluation set: the series is the
metric's name (``rmse``), the evaluation set its metadata (``{"eval_set": "valid"}``), and
the step the round's index (0 for the first tree). ``exp.metrics("rmse",
metadata={"eval_set": "valid"})`` reads one set's curve.

``xgb.cv`` logs each metric's mean over the folds as ``<metric>`` and its standard deviation
as ``<metric>/std``, per evaluation set (``train``, ``test``). Training continued from a model
(``xgb.train(..., xgb_model=booster)``) continues the run at the model's number of rounds:
one curve through ``exp.metrics(name, last_per_step=True)``. The scikit-learn estimators
take it too: ``XGBRegressor(callbacks=[SyvainXGBoostCallback("gbm-1")])`` (their evaluation
sets are ``validation_0``, ``validation_1``...).

The run ends ``done`` after the last round (early stopping included); the callback never
stops training. XGBoost calls no callback when training raises (a custom objective or metric
that fails): use the callback as a context manager so that the run ends ``error`` with the
exception::

    with SyvainXGBoostCallback("gbm-1") as callback:
        xgb.train(params, dtrain, 100, evals=evals, callbacks=[callback])

Without it, a run left open ends ``error`` when the callback trains again, or at interpreter
exit. In a distributed job (``xgboost.collective``), only rank 0 logs.

Example:
    >>> callback = SyvainXGBoostCallback("gbm-1")                          # doctest: +SKIP
    >>> xgb.train(params, dtrain, 10, evals=evals, callbacks=[callback])   # doctest: +SKIP
    >>> callback.experiment.metrics("rmse", metadata={"eval_set": "valid"}).steps[-1]  # doctest: +SKIP
    9
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from typing import Any

import xgboost
from xgboost import collective

from syvain_metrics.client.session import Session
from syvain_metrics.integrations.callback_common import (
    EVAL_SET_KEY,
    ClosingBlock,
    Copyable,
    run_for_training,
)
from syvain_metrics.integrations.framework_run import CV_STD_SUFFIX, FrameworkRun
from syvain_metrics.integrations.options import check_options
from syvain_metrics.integrations.unfinished import UnfinishedRunError
from syvain_metrics.resources.experiment import UNSET, Experiment
from syvain_metrics.resources.folder import Folder

logger = logging.getLogger("syvain_metrics")

_BOOSTER_PARAMS = (
    "eta",
    "max_depth",
    "max_leaves",
    "min_child_weight",
    "gamma",
    "lambda",
    "alpha",
    "subsample",
    "colsample_bytree",
    "max_bin",
    "grow_policy",
)
"""The tree parameters recorded with the run (of the ~25 a booster holds)."""


def _number(text: str) -> object:
    """A parameter as XGBoost saves it (text) as the number it stands for, when it is one."""
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() else float(f"{value:.7g}")


def booster_params(model: Any) -> dict[str, Any]:
    """The main parameters of a booster, from its saved configuration (empty when it has
    none, such as the folds of ``xgb.cv``).

    Example:
        >>> booster_params(xgb.train({"max_depth": 2}, dtrain, 1))  # doctest: +SKIP
        {'objective': 'reg:squarederror', 'booster': 'gbtree', 'eta': 0.3, 'max_depth': 2, ...}
    """
    try:
        learner = json.loads(model.save_config())["learner"]
        params: dict[str, Any] = {
            "objective": learner["objective"]["name"],
            "booster": learner["gradient_booster"]["name"],
        }
        tree = learner["gradient_booster"].get("tree_train_param", {})
    except Exception:  # a model of another kind: no parameters rather than a failure
        return {}
    params.update({k: _number(tree[k]) for k in _BOOSTER_PARAMS if k in tree})
    return params


def _round_values(metric: str, history: Any, index: int = -1) -> dict[str, object]:
    """One round's value of one metric (the last by default): ``{metric: value}``, or for
    ``xgb.cv``'s ``(mean, std)``, ``{metric: mean, metric/std: std}``."""
    try:
        value = history[index]
    except (IndexError, KeyError, TypeError):
        return {}
    if isinstance(value, tuple) and len(value) == 2:
        return {metric: value[0], metric + CV_STD_SUFFIX: value[1]}
    return {metric: value}


class SyvainXGBoostCallback(ClosingBlock, Copyable, xgboost.callback.TrainingCallback):
    """Log every evaluation of every boosting round (``<metric>`` with the evaluation set as
    metadata; ``<metric>/std`` too under ``xgb.cv``) at the round's index; ``done`` after
    training. Never stops training.

    ``slug`` names the run (a new one per callback when left out; the same slug in a job
    restarted from a saved model continues the run); ``experiment`` logs into an existing
    experiment instead. ``folder``, ``description`` and ``metadata`` are used when the run
    is created; ``session`` is the session to use (the default one otherwise);
    ``system_metrics`` samples CPU, memory and GPUs during training; ``flush_timeout`` bounds
    the wait for the run's events at its end. Bad arguments raise
    :class:`~syvain_metrics.MetricsValidationError` here, before anything is created.

    A callback that trains again: a training that continues a model (``xgb_model=``)
    continues the same run; a training from scratch after one that logged rounds is a new
    run, ``<slug>-2`` (then ``-3``...), so that two trainings never share steps.

    Nothing is created before training starts, so the callback can be copied and pickled
    (scikit-learn's ``clone`` deep-copies it): a deep copy of a callback without a ``slug``
    logs its own run under a new slug; with one, the copies share that run. A pickled
    callback leaves its session behind (the default session of the process that loads it).

    Example:
        >>> reg = xgb.XGBRegressor(n_estimators=50,
        ...                        callbacks=[SyvainXGBoostCallback("gbm-1")])  # doctest: +SKIP
        >>> reg.fit(X, y, eval_set=[(X_valid, y_valid)], verbose=False)       # doctest: +SKIP
    """

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
        super().__init__()
        check_options(system_metrics=system_metrics, flush_timeout=flush_timeout)
        self._options: dict[str, Any] = {
            "folder": folder,
            "description": description,
            "metadata": dict(metadata or {}),
            "session": session,
            "flush_timeout": flush_timeout,
            "system_metrics": system_metrics,
            "framework": "xgboost",
        }
        # Checked now (slug, metadata) and thrown away: the run is made when training starts.
        self._slug = FrameworkRun(slug, experiment=experiment, **self._options).slug
        self._named = slug is not None or experiment is not None
        self._experiment = experiment
        self._run: FrameworkRun | None = None
        self._offset = 0
        self._rounds = 0  # rounds of the current training logged
        self._silent = False

    # -- copies -------------------------------------------------------------------------

    _shared = ("_experiment",)

    def _fresh(self) -> dict[str, Any]:
        # A copy trains on its own: nothing of this one's training.
        return {"_run": None, "_offset": 0, "_rounds": 0, "_silent": False}

    def __deepcopy__(self, memo: dict[int, Any]) -> SyvainXGBoostCallback:
        """A callback with the same options and nothing of this one's training: its own run
        (under a new slug, unless a slug or an experiment was given)."""
        twin: SyvainXGBoostCallback = super().__deepcopy__(memo)
        if not self._named:
            twin._slug = FrameworkRun(**twin._options).slug
        return twin

    # -- what users read ----------------------------------------------------------------

    @property
    def slug(self) -> str:
        """The run's slug (the last training's: ``<slug>-2`` for a second training from
        scratch).

        Example:
            >>> SyvainXGBoostCallback("gbm-1").slug  # doctest: +SKIP
            'gbm-1'
        """
        return self._slug

    @property
    def experiment(self) -> Experiment:
        """The run's experiment, for reading what training logged.

        Example:
            >>> callback.experiment.metrics("rmse").steps[:3]  # doctest: +SKIP
            [0, 1, 2]
        """
        return (self._run or self._new_run()).experiment

    # -- XGBoost's hooks ----------------------------------------------------------------

    def before_training(self, model: Any) -> Any:
        """Start the run (resumed at the model's rounds when training continues a model)."""
        self._end_open(None)
        self._silent = collective.is_distributed() and collective.get_rank() != 0
        if self._silent:
            return model  # only rank 0 logs: the others make no call at all
        try:
            self._offset = int(model.num_boosted_rounds())
        except Exception:  # a model that cannot tell: count from 0
            self._offset = 0
        resume = self._offset if self._offset > 0 else None
        if self._run is None:
            run = self._new_run()
        else:
            run = run_for_training(self._run, resume, self._new_run)
            if run.slug != self._slug:  # a training from scratch: the next run of the series
                self._slug, self._experiment = run.slug, None
        self._run = run
        self._rounds = 0
        params = booster_params(model)
        if params:
            try:
                run.configure(params)
            except Exception as error:  # never fail training over its parameters
                logger.warning("syvain_metrics: the booster's parameters are left out: %s", error)
        run.start(resume_from=resume)
        if run.slug != self._slug:  # its slug had finished: the next free run, continued later
            self._slug, self._experiment = run.slug, None
        return model

    def after_iteration(self, model: Any, epoch: int, evals_log: Mapping[str, Any]) -> bool:
        """Log the round's value of each metric of each evaluation set; never stop."""
        if self._run is None or self._silent:
            return False
        self._log_round(epoch, evals_log, -1)
        self._rounds = max(self._rounds, epoch + 1)
        return False

    def after_training(self, model: Any) -> Any:
        """Log the rounds not logged yet (a callback listed before this one that stops
        training, such as ``EarlyStopping``, keeps XGBoost from calling this one at the last
        round), then end the run ``done``."""
        if self._run is None or self._silent:
            return model
        # XGBoost passes no evaluation log here: its callback container (the caller) holds it.
        history = getattr(sys._getframe(1).f_locals.get("self"), "history", None)
        if isinstance(history, Mapping):
            rounds = max((len(h) for m in history.values() for h in m.values()), default=0)
            for epoch in range(self._rounds, rounds):
                self._log_round(epoch, history, epoch)
            self._rounds = max(self._rounds, rounds)
        self._run.end()
        return model

    # -- inside -------------------------------------------------------------------------

    def _new_run(self) -> FrameworkRun:
        if self._experiment is not None:
            return FrameworkRun(experiment=self._experiment, **self._options)
        return FrameworkRun(self._slug, **self._options)

    def _log_round(self, epoch: int, evals_log: Mapping[str, Any], index: int) -> None:
        assert self._run is not None
        for data_name, metrics in evals_log.items():
            values: dict[str, object] = {}
            for metric, history in metrics.items():
                values.update(_round_values(str(metric), history, index))
            if values:
                self._run.log(values, self._offset + epoch, metadata={EVAL_SET_KEY: str(data_name)})

    def _end_open(self, error: BaseException | None) -> None:
        run = self._run
        if run is not None and not run.ended and not self._silent:
            run.end(
                error
                if error is not None
                else UnfinishedRunError(
                    "the training stopped before its end (XGBoost called no after_training)"
                )
            )
