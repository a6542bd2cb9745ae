"""What ``SyvainLogger`` does, for both Lightning distributions, without importing either.

``lightning`` (``lightning.pytorch``) and ``pytorch_lightning`` ship separate ``Logger``
classes and separate rank-zero switches, so each gets its own thin logger class
(:mod:`syvain_metrics.integrations.lightning`,
:mod:`syvain_metrics.integrations.pytorch_lightning`): the class names its distribution's
base class, decorators and exception type, and every method hands over to
:class:`LoggerCore` here.

What Lightning calls, and what the run does:

* ``log_hyperparams(params)`` -> hyperparameters, flattened with dots, become the run's
  metadata (the run is created at the first metrics, so they are part of its creation).
* ``log_metrics(metrics, step)`` -> ``log()`` at Lightning's own step, enqueued only. The
  ``epoch`` value Lightning adds to every call is stored once per step.
* ``finalize("success")`` -> ``done``; ``finalize("failed")`` -> ``error`` with the exception
  being handled (SIGTERM: "terminated by SIGTERM"); ``finalize("finished")`` (a SLURM
  requeue) -> what is logged is sent, the run stays ``running`` for the requeued job.
* A fit started from a checkpoint (``trainer.fit(..., ckpt_path=...)``) continues the run
  through ``resume()``: one curve, read with ``last_per_step=True``.

Example:
    >>> from syvain_metrics.integrations.lightning import SyvainLogger   # doctest: +SKIP
    >>> trainer = L.Trainer(logger=SyvainLogger("mnist-mlp"))             # doctest: +SKIP
"""

from __future__ import annotations

import logging
import sys
import weakref
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from syvain_metrics.client.session import Session
from syvain_metrics.context.config import config_metadata
from syvain_metrics.integrations.framework_run import FrameworkRun
from syvain_metrics.integrations.options import check_options
from syvain_metrics.resources.experiment import UNSET, Experiment
from syvain_metrics.resources.experiment.termination import Terminated
from syvain_metrics.resources.folder import Folder

logger = logging.getLogger("syvain_metrics")

LOGGER_NAME = "syvain"
"""``SyvainLogger.name``: with ``version`` (the run's slug), where Lightning's
``ModelCheckpoint`` puts checkpoints by default (``<root>/syvain/<slug>/checkpoints``), so a
job restarted with the same slug finds them."""

_SETUP_PROBE = "_call_setup_hook"
"""The Lightning function that reads ``logger.experiment`` during setup only to create it
early (``_ = logger.experiment``), before the hyperparameters are logged."""


class LoggerCore:
    """The behaviour of both ``SyvainLogger`` classes: one :class:`FrameworkRun` per fit.

    Example:
        >>> core = LoggerCore("mlp-1")
        >>> core.core_version
        'mlp-1'
    """

    sigterm_exception: ClassVar[type[BaseException] | None] = None
    """The distribution's ``SIGTERMException`` (a ``SystemExit`` the loops raise after SIGTERM)."""

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
        # Validated now, on every rank: a bad slug fails before training, not at step 0.
        check_options(system_metrics=system_metrics, flush_timeout=flush_timeout)
        self._options: dict[str, Any] = {
            "folder": folder,
            "description": description,
            "metadata": metadata,
            "session": session,
            "system_metrics": system_metrics,
            "flush_timeout": flush_timeout,
            "framework": "lightning",
        }
        self._run = FrameworkRun(slug, experiment=experiment, **self._options)
        self._flush_timeout = flush_timeout
        self._trainer: weakref.ReferenceType[Any] | None = None
        self._hyperparameters: dict[str, Any] | None = None
        self._checkpoint_pending = False
        self._restored_step: int | None = None  # the checkpoint's step of a resumed fit
        self._refused = False  # the service refused the run: later stages stay quiet

    # -- what the thin classes expose -----------------------------------------------------

    @property
    def core_version(self) -> str:
        """The run's slug (Lightning's ``version``).

        Example:
            >>> LoggerCore("mlp-1").core_version
            'mlp-1'
        """
        return self._run.slug

    @property
    def run(self) -> FrameworkRun:
        """The :class:`FrameworkRun` of the current (or last) fit.

        Example:
            >>> LoggerCore("mlp-1").run.slug
            'mlp-1'
        """
        return self._run

    def core_experiment(self, dummy: Callable[[], Any]) -> Any:
        """``logger.experiment``: the run's experiment, created on first use. Lightning's own
        early read during setup gets ``dummy()`` instead, so that the run is created later,
        with the hyperparameters as its metadata.

        Example:
            >>> core.core_experiment(_DummyExperiment).slug  # doctest: +SKIP
            'mlp-1'
        """
        probe, trainer = _setup_probe()
        if probe:
            if trainer is not None:
                self._keep_trainer(trainer)
            return dummy()
        return self._current_run().experiment

    def core_hyperparams(self, params: Mapping[str, Any]) -> None:
        """Hyperparameters (already a plain mapping): the run's metadata, or an annotation
        once the run exists. Never raises into training.

        Example:
            >>> LoggerCore("mlp-1").core_hyperparams({"lr": 0.1, "model": {"width": 64}})
        """
        given = dict(params)
        try:
            # Compared flattened: values holding arrays or tensors have no truth value.
            flat = config_metadata(given).values
            if flat == self._hyperparameters:
                return  # a later validate() or test() logs the same ones again
            self._current_run().configure(given)
            self._hyperparameters = flat
        except Exception as error:  # an object of no known kind: training goes on
            logger.warning("syvain_metrics: hyperparameters not recorded (%s)", error)

    def core_metrics(self, metrics: Mapping[str, Any], step: int | None) -> None:
        """One ``log_metrics`` call: enqueued at Lightning's step; starts (or resumes) the
        run at the first call of a fit.

        Example:
            >>> core.core_metrics({"train_loss": 0.5, "epoch": 0}, step=10)  # doctest: +SKIP
        """
        run = self._current_run()
        if not run.started:
            run.start(resume_from=self._resume_step(step))
        run.log(metrics, step)
        if self._checkpoint_pending:
            self._checkpoint_pending = False
            run.checkpoint()

    def core_graph(self, model: Any) -> None:
        """``log_graph(model)``, which Lightning calls at every fit's start: the module leads
        to its trainer, which tells later whether the fit restarted from a checkpoint.

        Example:
            >>> core.core_graph(lightning_module)  # doctest: +SKIP
        """
        trainer = getattr(model, "_trainer", None)
        if trainer is not None:
            self._keep_trainer(trainer)
            self._restored_step = None
            self._note_restored_step(trainer)

    def core_checkpoint(self) -> None:
        """A checkpoint was saved: the values logged before it reach the spool on disk, so
        a job killed now and resumed from it loses none of them.

        Example:
            >>> core.core_checkpoint()  # doctest: +SKIP
        """
        self._run.checkpoint()
        # Lightning logs a batch's metrics after its batch-end callbacks, which save the
        # checkpoint: that batch's values come next, and a resumed fit will not log them.
        self._checkpoint_pending = True

    def core_finalize(self, status: str) -> None:
        """End of a fit: ``success`` -> ``done``; ``failed`` -> ``error`` with the exception
        being handled; ``finished`` (SLURM requeue) -> send, stay ``running``.

        Example:
            >>> core.core_finalize("success")  # doctest: +SKIP
        """
        run = self._run
        if status == "finished":
            run.suspend(self._flush_timeout)
            return
        if self._hyperparameters is not None and not run.started and not run.ended:
            run.start()  # a fit that logged no metrics still shows its run and hyperparameters
        if status == "success":
            run.end()
            return
        error = sys.exc_info()[1]
        if error is None:
            error = RuntimeError(f"the Lightning fit ended with status {status!r}")
        elif self.sigterm_exception is not None and isinstance(error, self.sigterm_exception):
            # Lightning's SIGTERMException is a SystemExit without a code, which counts as a
            # clean exit: the run was stopped, not finished.
            error = Terminated()
        run.end(error)

    # -- inside -----------------------------------------------------------------------------

    def _current_run(self) -> FrameworkRun:
        """The run of this fit: after an ended fit (``trainer.test()`` after ``fit()``, or a
        second ``fit()``), a new run lifecycle on the same experiment, although it has
        finished: this process ended it, and each stage logs its own series."""
        if self._run.ended and not self._refused:
            previous = self._run
            try:
                if previous.max_step >= 0 or self._hyperparameters is not None:
                    again = FrameworkRun(experiment=previous.experiment, **self._options)
                    self._run = again.reopening()
                else:
                    self._run = FrameworkRun(previous.slug, **self._options)
            except Exception as error:  # its creation was refused: later stages log nothing
                logger.warning("syvain_metrics: no run for this stage (%s)", error)
                self._refused = True
        return self._run

    def _keep_trainer(self, trainer: Any) -> None:
        try:
            self._trainer = weakref.ref(trainer)
        except TypeError:
            self._trainer = None

    def _resume_step(self, step: int | None) -> int | None:
        """The step to resume from when this fit restarted from a checkpoint, else ``None``:
        the checkpoint's step, read when Lightning restored it (the first step logged may be
        later, with ``log_every_n_steps``). Without the trainer (a logger used outside a
        ``Trainer``), the run is only started: a rerun still reads as one curve."""
        trainer = self._trainer() if self._trainer is not None else None
        if trainer is None or step is None or not _fitting_from_checkpoint(trainer):
            return None
        restored = self._restored_step if self._restored_step is not None else step
        return int(restored) if restored > 0 else None

    def _note_restored_step(self, trainer: Any) -> None:
        """Read the step a fit from a checkpoint restores, right after Lightning restores it
        (``log_graph`` is called before, at the fit's start)."""
        connector: Any = getattr(trainer, "_checkpoint_connector", None)
        restore = getattr(connector, "restore_training_state", None)
        if not _fitting_from_checkpoint(trainer) or restore is None:
            return
        core = weakref.ref(self)

        def restore_and_note() -> None:
            try:
                restore()
            finally:
                del connector.restore_training_state  # the class's own method again
                noted = core()
                if noted is not None:
                    noted._restored_step = _trainer_step(trainer)

        connector.restore_training_state = restore_and_note


def _fitting_from_checkpoint(trainer: Any) -> bool:
    state = getattr(trainer, "state", None)
    fitting = str(getattr(getattr(state, "fn", None), "value", "")) == "fit"
    return fitting and bool(getattr(trainer, "ckpt_path", None))


def _trainer_step(trainer: Any) -> int | None:
    """The restored global step (the step the next batch logs at)."""
    try:
        return int(trainer.global_step)
    except Exception:
        return None


def _setup_probe() -> tuple[bool, Any]:
    """Whether ``logger.experiment`` is being read by Lightning's setup itself (not by a hook
    of the user's that it calls), and its trainer."""
    frame = sys._getframe(2)  # the caller of core_experiment
    # Above it: the property and Lightning's rank-zero wrapper, both named ``experiment``.
    while frame is not None and frame.f_code.co_name == "experiment":
        frame = frame.f_back  # type: ignore[assignment]
    if frame is None or frame.f_code.co_name != _SETUP_PROBE:
        return False, None
    return True, frame.f_locals.get("trainer")
