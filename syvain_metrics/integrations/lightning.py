"""``SyvainLogger``: a Lightning logger (``lightning.pytorch``) that logs a fit as one run.

``Trainer(logger=SyvainLogger("mnist-mlp"))`` records every value Lightning logs at its own
step, the module's hyperparameters as the run's metadata, and the run's end: ``done``, or
``error`` with the exception (Ctrl-C and SIGTERM included). Only rank zero talks to the
service; ``log_metrics`` only enqueues, so the fit never waits for the network; nothing the
service does raises into training. With ``pytorch_lightning`` (the older distribution), use
``from syvain_metrics.integrations.pytorch_lightning import SyvainLogger``: the same logger
over that distribution's base class.

Example:
    >>> import lightning as L                                            # doctest: +SKIP
    >>> from syvain_metrics.integrations.lightning import SyvainLogger  # doctest: +SKIP
    >>> trainer = L.Trainer(max_steps=1000, logger=SyvainLogger("mnist-mlp"))  # doctest: +SKIP
    >>> trainer.fit(model, loader)                                      # doctest: +SKIP
"""

from __future__ import annotations

from argparse import Namespace
from collections.abc import Mapping
from typing import Any

from lightning.fabric.loggers.logger import _DummyExperiment, rank_zero_experiment
from lightning.fabric.utilities.logger import _convert_params, _sanitize_callable_params
from lightning.pytorch.loggers.logger import Logger
from lightning.pytorch.utilities import exceptions, rank_zero_only

from syvain_metrics.client.session import Session
from syvain_metrics.integrations.lightning_common import LOGGER_NAME, LoggerCore
from syvain_metrics.resources.experiment import UNSET, Experiment
from syvain_metrics.resources.folder import Folder

__all__ = ["SyvainLogger"]


class SyvainLogger(LoggerCore, Logger):
    """A ``lightning.pytorch`` logger that records a fit as a Syvain Metrics run.

    ``slug`` names the run (a new one per fit when left out; give a job restarted from a
    checkpoint the same slug to continue the same run); ``experiment`` uses an existing
    experiment instead. ``folder``, ``description`` and ``metadata`` apply when the run is
    created; ``system_metrics`` samples CPU, memory and GPUs while it runs;
    ``flush_timeout`` bounds the wait for the run's events at the end (the session's by
    default). Bad arguments raise :class:`~syvain_metrics.MetricsValidationError` here.

    A fit with ``ckpt_path=`` continues the run (``resume()``, one curve with
    ``last_per_step=True``); ``trainer.test()`` after ``fit()`` logs to the same run.

    Example:
        >>> mnist = sm.Folder.create('mnist', exist_ok=True)  # doctest: +SKIP
        >>> logger = SyvainLogger("mnist-mlp", folder=mnist)              # doctest: +SKIP
        >>> trainer = L.Trainer(logger=logger)                            # doctest: +SKIP
        >>> trainer.fit(model, loader)                                    # doctest: +SKIP
        >>> logger.experiment.metrics("train_loss").values[-1]           # doctest: +SKIP
        0.031
    """

    # SIGTERMException: the SystemExit its loops raise after SIGTERM (absent from old releases).
    sigterm_exception = getattr(exceptions, "SIGTERMException", None)

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
        LoggerCore.__init__(
            self,
            slug,
            experiment=experiment,
            folder=folder,
            description=description,
            metadata=metadata,
            session=session,
            system_metrics=system_metrics,
            flush_timeout=flush_timeout,
        )

    @property
    def name(self) -> str:
        """``"syvain"``: with ``version``, the folder of Lightning's default checkpoints.

        Example:
            >>> SyvainLogger("mlp-1").name  # doctest: +SKIP
            'syvain'
        """
        return LOGGER_NAME

    @property
    def version(self) -> str:
        """The run's slug.

        Example:
            >>> SyvainLogger("mlp-1").version  # doctest: +SKIP
            'mlp-1'
        """
        return self.core_version

    @property
    @rank_zero_experiment
    def experiment(self) -> Experiment:
        """The run's :class:`~syvain_metrics.Experiment` on rank zero (created on first use);
        a stand-in that does nothing on other ranks.

        Example:
            >>> trainer.logger.experiment.annotate("lr halved")  # doctest: +SKIP
        """
        return self.core_experiment(_DummyExperiment)  # type: ignore[no-any-return]

    @rank_zero_only
    def log_hyperparams(
        self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any
    ) -> None:
        """Record hyperparameters (a dict, ``Namespace`` or ``AttributeDict``; nested sections
        flattened with dots) as the run's metadata.

        Example:
            >>> logger.log_hyperparams({"lr": 0.1, "model": {"width": 64}})  # doctest: +SKIP
        """
        self.core_hyperparams(_sanitize_callable_params(_convert_params(params)))

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Enqueue ``metrics`` at Lightning's ``step`` (a value repeated at one step is stored
        once).

        Example:
            >>> logger.log_metrics({"train_loss": 0.5, "epoch": 0}, step=10)  # doctest: +SKIP
        """
        self.core_metrics(metrics, step)

    @rank_zero_only
    def log_graph(self, model: Any, input_array: Any = None) -> None:
        """Nothing is drawn; the module leads to its trainer (a fit from a checkpoint resumes
        the run).

        Example:
            >>> logger.log_graph(model)  # doctest: +SKIP
        """
        self.core_graph(model)

    @rank_zero_only
    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        """A checkpoint was saved: what was logged before it is made safe on disk (not sent),
        so that a job killed now and resumed from that checkpoint loses no step.

        Example:
            >>> logger.after_save_checkpoint(checkpoint_callback)  # doctest: +SKIP
        """
        self.core_checkpoint()

    def save(self) -> None:
        """Nothing: Lightning calls this after every ``log_metrics``, and the events are
        already on their way.

        Example:
            >>> logger.save()  # doctest: +SKIP
        """

    @rank_zero_only
    def finalize(self, status: str) -> None:
        """End the run: ``"success"`` -> ``done``; ``"failed"`` -> ``error`` with the
        exception (SIGTERM: "terminated by SIGTERM"); ``"finished"`` (a SLURM requeue) ->
        what was logged is sent and the run stays ``running``.

        Example:
            >>> logger.finalize("success")  # doctest: +SKIP
        """
        self.core_finalize(status)
