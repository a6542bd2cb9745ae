"""Hugging Face ``Trainer`` runs as experiments: :class:`SyvainCallback`.

Give the callback to the ``Trainer``; every ``Trainer.log()`` (training losses, evaluation
metrics, the end-of-training summary) is logged at ``state.global_step``, the ``TrainingArguments``
and the model's config become the run's hyperparameters, and the run ends ``done`` when
``train()`` returns or ``error`` with the exception when it raises:

    trainer = Trainer(model, args, train_dataset=ds, callbacks=[SyvainCallback("bert-tiny")])
    trainer.train()

Example:
    >>> from syvain_metrics.integrations.transformers import SyvainCallback  # doctest: +SKIP
    >>> trainer = Trainer(model, args, callbacks=[SyvainCallback("bert-1")])  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import logging
import sys
import threading
import weakref
from collections.abc import Mapping
from types import FrameType
from typing import Any

from transformers import Trainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from syvain_metrics.client.session import Session
from syvain_metrics.contract.limits import SLUG_MAX
from syvain_metrics.integrations.callback_common import Copyable, TrialRun, run_for_training
from syvain_metrics.integrations.framework_run import FrameworkRun, _same
from syvain_metrics.integrations.options import default_slug
from syvain_metrics.resources.experiment import UNSET, Experiment
from syvain_metrics.resources.folder import Folder

__all__ = ["SyvainCallback"]

logger = logging.getLogger("syvain_metrics")

_FRAMES = 12
"""How far up the stack ``on_init_end`` looks for the ``Trainer`` being built (the hook is
called three frames below ``Trainer.__init__``; subclasses add a few)."""

_WATCHED = "_syvain_metrics_callbacks"
"""The attribute of a wrapped ``trainer.train`` naming the callbacks it reports to."""


class SyvainCallback(Copyable, TrainerCallback):
    """Log a ``Trainer``'s training to a Syvain Metrics run.

    ``slug`` names the run (a new ``transformers-<time>-<random>`` one when left out; give the
    same slug to a job resumed with ``train(resume_from_checkpoint=...)`` to continue the same
    run, from the checkpoint's step; another ``train()`` from step 0 after one that logged
    steps makes the next run, ``<slug>-2`` then ``-3``..., so that two trainings never share
    steps). ``experiment`` uses an existing experiment instead (its next runs are named after
    its slug).
    ``folder``, ``description`` and ``metadata`` are used when the run is created;
    ``system_metrics`` samples CPU, memory and GPUs while it trains; ``flush_timeout`` bounds
    the wait for the run's events when training ends (the session's by default). It writes
    through ``session`` or the default session (``sm.connect()``). Bad arguments raise
    :class:`~syvain_metrics.MetricsValidationError` here, before training; nothing is
    created before ``train()``.

    What it records:

    - every ``Trainer.log()`` call (``loss``, ``grad_norm``, ``learning_rate``, ``eval_*``,
      the ``train_runtime``/``train_loss``/``total_flos`` summary at the last step), once,
      at ``state.global_step``; a value repeated at one step (``epoch``) is stored once;
      values that are not numbers are left out (one warning per name);
    - the ``TrainingArguments`` (``args.to_dict()``, secrets masked by transformers) and the
      model's config under ``model.``, flattened and fitted to the metadata's size (a long
      ``id2label`` never fails the run);
    - ``done`` when ``train()`` returns; ``error`` with the exception when it raises,
      Ctrl-C and SIGTERM included: the callback wraps ``train`` of the ``Trainer`` it is given
      to (``Trainer(callbacks=[...])``). Given later (``trainer.add_callback``), a failure of
      the current ``train()`` is recorded at interpreter exit from the uncaught exception;
    - only the main process (``state.is_world_process_zero``) writes;
    - ``hyperparameter_search``: one run per trial, ``<slug>-<trial name>`` (or
      ``<slug>-trial-<n>``), the trial's parameters in its metadata (``trial_params.<name>``);
      a pruned trial ends ``error`` (``TrialPruned``); without a ``flush_timeout``, a trial's
      run does not wait for its events when it ends if the session has a spool (``done``
      follows them there), so a slow service costs no trial its whole wait.

    Example:
        >>> nlp = sm.Folder.create('nlp', exist_ok=True)  # doctest: +SKIP
        >>> callback = SyvainCallback("bert-tiny", folder=nlp)     # doctest: +SKIP
        >>> Trainer(model, args, callbacks=[callback]).train()     # doctest: +SKIP
        >>> callback.experiment.status                             # doctest: +SKIP
        'done'
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
        self._options: dict[str, Any] = {
            "folder": folder,
            "description": description,
            "session": session,
            "system_metrics": system_metrics,
            "flush_timeout": flush_timeout,
        }
        self._metadata = dict(metadata or {})
        self._given = experiment
        # Built now so that bad arguments fail before training, creating nothing.
        self._run = FrameworkRun(
            slug if slug is not None or experiment is not None else default_slug("transformers"),
            experiment=experiment,
            metadata=metadata,
            framework="transformers",
            **self._options,
        )
        self._base = self._run.slug
        self._began = False  # whether this process started the current run
        self._ran = False  # whether this process started a run at all
        self._trials = 0
        self._train_depth = 0  # inside a wrapped train(), which ends the run itself
        self._step = -1
        self._at_step: dict[str, object] = {}  # what was logged at self._step
        self._lock = threading.RLock()

    # -- what users read --------------------------------------------------------------------

    @property
    def experiment(self) -> Experiment:
        """The current run's experiment (the last trial's during a hyperparameter search),
        created on first use.

        Example:
            >>> callback.experiment.metrics("loss")  # doctest: +SKIP
        """
        return self._run.experiment

    @property
    def slug(self) -> str:
        """The current run's slug.

        Example:
            >>> SyvainCallback("bert-1").slug  # doctest: +SKIP
            'bert-1'
        """
        return self._run.slug

    # -- the Trainer's hooks ----------------------------------------------------------------

    def on_init_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Find the ``Trainer`` being built and watch its ``train()`` for exceptions."""
        trainer = _calling_trainer()
        if trainer is not None:
            self._watch(trainer)

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Create (or resume) the run with the hyperparameters, on the main process only."""
        if not state.is_world_process_zero:
            return
        trainer = _calling_trainer()
        if trainer is not None:
            self._watch(trainer)  # for the next train() when added after the Trainer was built
        with self._lock:
            if self._began or self._run.ended:
                # A train() that raised unseen (the previous trial's, or a train() that a
                # callback added late could not watch), or a second train(): a fresh run.
                self._end(RuntimeError("training stopped before on_train_end"))
                self._run = self._next_run(state)
            elif state.is_hyper_param_search:
                self._run = self._next_run(state)
            self._step, self._at_step = -1, {}
            self._began = True
            self._run.configure(_hyperparameters(args, kwargs.get("model")))
            step = int(state.global_step or 0)
            self._run.start(resume_from=step if step > 0 else None)
            self._ran = self._run.started  # False when the run could not start: no late logs
            if self._given is not None and self._run.slug != self._given.slug:
                self._given = None  # its run had finished: continued later by the new slug

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Log ``logs`` at ``state.global_step`` (evaluation metrics arrive here too, so
        ``on_evaluate`` logs nothing)."""
        if not state.is_world_process_zero or not logs:
            return
        step = int(state.global_step)
        values = dict(logs)  # text among them is skipped by log(), with one warning per name
        with self._lock:
            if not self._ran:
                return  # a log() before any train(): no run to attach it to
            if step != self._step:
                self._step, self._at_step = step, {}
            if self._run.ended:
                values = {k: v for k, v in values.items() if not _same_at(self._at_step, k, v)}
            self._at_step.update(values)
            if not self._run.ended:
                self._run.log(values, step=step)
                return
        if values:
            self._log_late(values, step)

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """A checkpoint was saved: what was logged before it is made safe on disk (not sent),
        so that a job killed now and resumed from that checkpoint loses no step."""
        if state.is_world_process_zero and self._run.started:
            self._run.checkpoint()

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """End the run ``done`` (inside a watched ``train()``, the wrapper does it when
        ``train()`` returns, so that an exception raised after this hook still counts)."""
        if not state.is_world_process_zero or self._train_depth > 0:
            return
        self._end(None)

    # -- inside -----------------------------------------------------------------------------

    def _fresh(self) -> dict[str, Any]:
        # A copy (a pickled Trainer, say) watches its own train(): no lock or depth of this one.
        return {"_lock": threading.RLock(), "_train_depth": 0}

    def _new_run(self, slug: str, metadata: Mapping[str, Any]) -> FrameworkRun:
        return FrameworkRun(
            None if self._given is not None else slug,
            experiment=self._given,
            metadata=metadata,
            framework="transformers",
            **self._options,
        )

    def _next_run(self, state: TrainerState) -> FrameworkRun:
        """The run of the next ``train()``: a trial's own run; the same run resumed when it
        starts past step 0 (from a checkpoint); else a new one, ``<slug>-2``, ``-3``..., so
        that a run stays one curve."""
        if not state.is_hyper_param_search:
            previous = self._run
            run = run_for_training(
                previous,
                int(state.global_step or 0),
                lambda: self._new_run(previous.slug, self._metadata),
            )
            if run.slug != previous.slug:  # the next run: continued later by its slug
                self._given = None
            return run
        name = state.trial_name or f"trial-{self._trials}"
        self._trials += 1
        suffix = f"-{name}"
        slug = self._base[: SLUG_MAX - len(suffix)] + suffix
        metadata = dict(self._metadata)
        metadata["trial"] = name
        for key, value in (state.trial_params or {}).items():
            metadata[f"trial_params.{key}"] = value  # flat, like the hyperparameters
        try:
            return TrialRun(slug, metadata=metadata, framework="transformers", **self._options)
        except Exception as error:  # a trial's parameters the metadata cannot hold
            logger.warning(
                "syvain_metrics: trial %s logged without its parameters: %s", name, error
            )
            return TrialRun(
                slug, metadata=self._metadata, framework="transformers", **self._options
            )

    def _end(self, error: BaseException | None) -> None:
        with self._lock:
            if not self._began:
                return  # never started here (another rank, or train() failed before its start)
            self._began = False
        self._run.end(error)

    def _log_late(self, values: dict[str, object], step: int) -> None:
        """Values logged after the run ended (``trainer.evaluate()`` after ``train()``): added
        to the same run at the last step, the run's status left as it is."""
        try:
            self._run.experiment.log(values, step=step)
        except Exception as error:
            logger.warning("syvain_metrics: metrics after training were not logged: %s", error)

    def _watch(self, trainer: Trainer) -> None:
        train = trainer.train
        watchers = getattr(train, _WATCHED, None)
        if watchers is not None:
            watchers.add(self)
            return
        trainer.train = _WatchedTrain(train, [self])  # type: ignore[method-assign]


class _WatchedTrain:
    """``Trainer.train`` wrapped so that the callbacks end their run with its exception (or
    ``done`` when it returns). An object, not a closure, so that the ``Trainer`` still
    pickles (ray does): a pickled one watches the same callbacks' copies."""

    def __init__(self, train: Any, callbacks: list[SyvainCallback]) -> None:
        functools.update_wrapper(self, train)
        self._train = train
        setattr(self, _WATCHED, weakref.WeakSet(callbacks))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        reporting = list(getattr(self, _WATCHED))
        for callback in reporting:
            callback._train_depth += 1
        try:
            result = self._train(*args, **kwargs)
        except BaseException as error:
            for callback in reporting:
                callback._train_depth -= 1
                if callback._train_depth == 0:
                    callback._end(error)
            raise
        for callback in reporting:
            callback._train_depth -= 1
            if callback._train_depth == 0:
                callback._end(None)
        return result

    def __reduce__(self) -> tuple[Any, ...]:
        return (_WatchedTrain, (self._train, list(getattr(self, _WATCHED))))


def _same_at(logged: Mapping[str, object], name: str, value: object) -> bool:
    return name in logged and _same(logged[name], value)


def _calling_trainer() -> Trainer | None:
    """The ``Trainer`` whose method called the hook: the callback API passes none."""
    frame: FrameType | None = sys._getframe(2)
    for _ in range(_FRAMES):
        if frame is None:
            return None
        candidate = frame.f_locals.get("self")
        if isinstance(candidate, Trainer):
            return candidate
        frame = frame.f_back
    return None


def _hyperparameters(args: TrainingArguments, model: Any) -> dict[str, Any]:
    """``args.to_dict()`` (tokens already masked), then the model's config under ``model``:
    the arguments first, so that they are kept when the two do not fit together."""
    values: dict[str, Any] = {}
    try:
        values.update(args.to_dict())  # type: ignore[no-untyped-call]
    except Exception as error:
        logger.warning("syvain_metrics: the training arguments could not be read: %s", error)
    config = getattr(model, "config", None)
    to_dict = getattr(config, "to_dict", None)
    if callable(to_dict):
        try:
            values["model"] = to_dict()
        except Exception as error:
            logger.warning("syvain_metrics: the model's config could not be read: %s", error)
    return values
