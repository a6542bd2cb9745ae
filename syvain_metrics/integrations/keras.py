"""Keras 3: a callback that logs a fit as one run, at the optimizer's step.

``model.fit(..., callbacks=[SyvainKerasCallback("mlp-1")])`` creates the run ``mlp-1`` with
the model's name, the optimizer's configuration and the fit's epochs and steps as its
metadata, and logs:

- ``batch/<metric>`` after every training batch (Keras's running mean since the epoch
  began), at the optimizer's iteration count after that batch (1 after the first batch);
- ``epoch/<metric>`` (validation ones included: ``epoch/val_loss``) and ``epoch`` (Keras's
  0-based epoch index) at the end of every epoch, at the same step as the epoch's last
  batch, so both kinds of series share one x-axis.

A fit that starts with the optimizer past step 0 (``fit(initial_epoch=...)`` on a model whose
optimizer state was kept or restored) resumes the same run there: one curve through
``exp.metrics(name, last_per_step=True)``. When the optimizer was rebuilt (its count back
at 0 while the fit starts at epoch ``k > 0``), the steps continue from ``k`` times the
fit's steps per epoch instead.

The run ends ``done`` at the end of the fit (``EarlyStopping`` and ``model.stop_training``
included). Keras calls no callback when a fit raises: use the callback as a context
manager so that the run ends ``error`` with the exception, wherever the fit runs (a
script, a notebook, a function that catches the error)::

    with SyvainKerasCallback("mlp-1") as callback:
        model.fit(x, y, epochs=10, callbacks=[callback])

Without it, a run the fit left open ends ``error`` when the next fit with the same callback
begins, or at interpreter exit.

Example:
    >>> callback = SyvainKerasCallback("mlp-1")              # doctest: +SKIP
    >>> model.fit(x, y, epochs=3, callbacks=[callback])       # doctest: +SKIP
    >>> callback.experiment.metrics("epoch/loss").steps       # doctest: +SKIP
    [4, 8, 12]
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

import keras  # type: ignore[import-untyped]

from syvain_metrics.client.session import Session
from syvain_metrics.integrations.callback_common import ClosingBlock, Copyable, run_for_training
from syvain_metrics.integrations.framework_run import FrameworkRun
from syvain_metrics.integrations.options import check_options
from syvain_metrics.integrations.unfinished import UnfinishedRunError
from syvain_metrics.resources.experiment import UNSET, Experiment
from syvain_metrics.resources.folder import Folder

logger = logging.getLogger("syvain_metrics")

BATCH_PREFIX = "batch/"
EPOCH_PREFIX = "epoch/"
EPOCH_SERIES = "epoch"

BATCH_WAIT_SECONDS = 2.0
"""The longest a failed fit's run waits, before it ends, for the batch values Keras's worker
threads still hold (a batch's values are handed over after its step, off the main thread)."""


def _whole(value: Any) -> int | None:
    """A Keras variable or tensor holding a count, as an ``int`` (``None`` if it is none)."""
    try:
        # The backend's own scalar first: converting the variable to numpy warns (numpy 2).
        return int(getattr(value, "value", value))
    except Exception:
        pass
    try:
        return int(keras.ops.convert_to_numpy(value))
    except Exception:  # a model without an optimizer, a backend that refuses
        return None


class SyvainKerasCallback(ClosingBlock, Copyable, keras.callbacks.Callback):  # type: ignore[misc]
    """Log a Keras fit as one run: ``batch/<metric>`` every batch, ``epoch/<metric>`` and
    ``epoch`` every epoch, all at the optimizer's step; ``done`` at the end of the fit.

    ``slug`` names the run (a new one per callback when left out; the same slug in a job
    restarted from a checkpoint continues the run); ``experiment`` logs into an existing
    experiment instead. ``folder``, ``description`` and ``metadata`` are used when the run
    is created; ``session`` is the session to use (the default one otherwise);
    ``system_metrics`` samples CPU, memory and GPUs during the fit; ``flush_timeout`` bounds
    the wait for the run's events at its end (the session's by default); ``log_batches=False``
    logs epoch values only. Bad arguments raise
    :class:`~syvain_metrics.MetricsValidationError` here, before anything is created.

    The callback may serve several fits: one that continues (the optimizer past step 0, or
    ``initial_epoch > 0``) continues the same run; one from scratch after a fit that logged
    steps (a fresh model) is a new run, ``<slug>-2`` (then ``-3``...), so that two fits never
    share steps. Batch and epoch steps never go backwards, even when the optimizer skips an
    update (a loss scale's NaN step). Used as a context manager, it ends the run ``error`` with the
    exception of a fit that raises (Keras calls no callback then).

    Example:
        >>> with SyvainKerasCallback("mlp-1", metadata={"data": "v2"}) as cb:  # doctest: +SKIP
        ...     model.fit(x, y, epochs=3, validation_split=0.2, callbacks=[cb])
    """

    async_safe = True
    """Keras may call :meth:`on_train_batch_end` from its worker threads: logging never
    blocks, and without this Keras would give up its asynchronous dispatch for the fit."""

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
        log_batches: bool = True,
    ) -> None:
        super().__init__()
        check_options(
            system_metrics=system_metrics, flush_timeout=flush_timeout, log_batches=log_batches
        )
        self._options: dict[str, Any] = {
            "folder": folder,
            "description": description,
            "metadata": metadata,
            "session": session,
            "flush_timeout": flush_timeout,
            "system_metrics": system_metrics,
            "framework": "keras",
        }
        # Validates the slug and metadata now; creates nothing until the first fit.
        self._run = FrameworkRun(slug, experiment=experiment, **self._options)
        self._given = experiment
        self._slug = self._run.slug
        self._log_batches = log_batches
        self._fits = 0
        self._lock = threading.Lock()
        self._handed = threading.Condition()
        self._begun = 0  # batches of this fit begun (the main thread counts them)
        self._ended_batches = 0  # their values handed to this callback (from any thread)
        self._offset = 0  # added to the optimizer's count when the optimizer was rebuilt
        self._base = 0  # the step before the current epoch's first batch
        self._first_epoch = True
        self._last_batch_step = -1  # the largest batch step of this fit logged

    # -- what users read ----------------------------------------------------------------

    @property
    def slug(self) -> str:
        """The run's slug.

        Example:
            >>> SyvainKerasCallback("mlp-1").slug  # doctest: +SKIP
            'mlp-1'
        """
        return self._slug

    @property
    def experiment(self) -> Experiment:
        """The run's experiment (created on first use), for reading what the fit logged.

        Example:
            >>> callback.experiment.metrics("epoch/val_loss").values  # doctest: +SKIP
            [0.91, 0.62, 0.48]
        """
        return self._run.experiment

    # -- Keras's hooks ------------------------------------------------------------------

    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        """Prepare the run of this fit (chosen, created and started at its first epoch)."""
        self._end_open(None)
        self._fits += 1
        self._begun = self._ended_batches = 0
        self._first_epoch = True
        self._offset = 0
        self._last_batch_step = -1

    def on_epoch_begin(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        """Start (or resume) the run at the fit's first epoch; note where the epoch begins."""
        iterations = self._iterations()
        if self._first_epoch:
            self._first_epoch = False
            steps = self.params.get("steps") if isinstance(self.params, dict) else None
            if iterations == 0 and epoch > 0 and isinstance(steps, int):
                self._offset = epoch * steps  # a rebuilt optimizer counts from 0 again
            start = self._offset + iterations
            self._begin_run(start if start > 0 else None)
        # Never behind a batch already logged: an optimizer that skipped an update (a loss
        # scale's NaN step) counts fewer steps than batches.
        self._base = max(self._offset + iterations, self._last_batch_step)

    def on_train_batch_begin(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        """Count the batch: a fit that fails waits for the values of those before it."""
        self._begun += 1

    def on_train_batch_end(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        """Log ``batch/<metric>`` at the optimizer's step after this batch."""
        try:
            if self._log_batches and logs:
                # Not the optimizer's count read now: Keras may call this from a worker
                # thread while the next batches already run.
                step = self._base + batch + 1
                values = {BATCH_PREFIX + str(name): value for name, value in logs.items()}
                with self._lock:
                    self._last_batch_step = max(self._last_batch_step, step)
                    self._run.log(values, step)
        finally:
            with self._handed:
                self._ended_batches += 1
                self._handed.notify_all()

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        """Log ``epoch/<metric>`` and ``epoch`` at the step of the epoch's last batch."""
        values: dict[str, object] = {
            EPOCH_PREFIX + str(name): value for name, value in (logs or {}).items()
        }
        values[EPOCH_SERIES] = epoch
        with self._lock:
            # At the epoch's last batch: the batches' step when the optimizer skipped updates.
            step = max(self._offset + self._iterations(), self._last_batch_step)
            self._run.log(values, step)

    def on_train_end(self, logs: Mapping[str, Any] | None = None) -> None:
        """End the run ``done``: the fit finished (or was stopped by a callback)."""
        self._run.end()

    # -- inside -------------------------------------------------------------------------

    def _fresh(self) -> dict[str, Any]:
        # A copy serves its own fits: no lock, model or fit in progress of this one.
        return {
            "_lock": threading.Lock(),
            "_handed": threading.Condition(),
            "_model": None,
            "_begun": 0,
            "_ended_batches": 0,
        }

    def _begin_run(self, resume_from: int | None) -> None:
        """Choose this fit's run (see the class), give it the fit's hyperparameters, start."""
        if self._fits > 1:
            self._run = run_for_training(self._run, resume_from, self._continued)
            if self._run.slug != self._slug:  # the next run: continued later by its slug
                self._slug, self._given = self._run.slug, None
        try:
            self._run.configure(self._hyperparameters())
        except Exception as error:  # never fail the fit over its hyperparameters
            logger.warning("syvain_metrics: the fit's hyperparameters are left out: %s", error)
        self._run.start(resume_from=resume_from)
        if self._run.slug != self._slug:  # its slug had finished: the next free run
            self._slug, self._given = self._run.slug, None

    def _continued(self) -> FrameworkRun:
        # A continued fit, after the run of the previous one ended: the same run again.
        return FrameworkRun(
            None if self._given is not None else self._slug,
            experiment=self._given,
            **self._options,
        )

    def _end_open(self, error: BaseException | None) -> None:
        if not self._fits or self._run.ended:
            return
        # Every batch begun before the last one finished its step, and its values are on
        # their way from a worker thread; the last one may have been the one that failed.
        with self._handed:
            self._handed.wait_for(
                lambda: self._ended_batches >= self._begun - 1, timeout=BATCH_WAIT_SECONDS
            )
        self._run.end(
            error
            if error is not None
            else UnfinishedRunError("the fit stopped before its end (Keras called no on_train_end)")
        )

    def _iterations(self) -> int:
        optimizer = getattr(self.model, "optimizer", None)
        count = _whole(optimizer.iterations) if optimizer is not None else None
        return count if count is not None and count >= 0 else 0

    def _hyperparameters(self) -> dict[str, Any]:
        """What describes the fit, kept small: the model's name, the optimizer's settings
        (those set), the epochs and steps per epoch."""
        config: dict[str, Any] = {}
        model = self.model
        if model is not None:
            config["model"] = getattr(model, "name", type(model).__name__)
            optimizer = getattr(model, "optimizer", None)
            if optimizer is not None:
                try:
                    settings = optimizer.get_config()
                except Exception:  # an optimizer of the user's own without a config
                    settings = {"name": type(optimizer).__name__}
                config["optimizer"] = {k: v for k, v in settings.items() if v is not None}
        params = self.params if isinstance(self.params, dict) else {}
        for key, name in (("epochs", "epochs"), ("steps", "steps_per_epoch")):
            if params.get(key) is not None:
                config[name] = params[key]
        return config
