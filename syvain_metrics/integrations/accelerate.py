"""``accelerate`` experiment tracking into Syvain Metrics: :class:`SyvainTracker`.

Give an instance to ``Accelerator(log_with=...)``; ``init_trackers`` starts the run with its
``config`` as hyperparameters, ``accelerator.log(values, step=...)`` logs at that step (the
next one when ``step`` is left out), and ``end_training()`` ends the run ``done``:

    accelerator = Accelerator(log_with=[SyvainTracker("mlp-1")])
    accelerator.init_trackers("mlp", config={"lr": 0.1})
    accelerator.log({"loss": loss}, step=step)
    accelerator.end_training()

Example:
    >>> from syvain_metrics.integrations.accelerate import SyvainTracker  # doctest: +SKIP
    >>> accelerator = Accelerator(log_with=[SyvainTracker("mlp-1")])       # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from accelerate.state import PartialState  # type: ignore[import-untyped]
from accelerate.tracking import GeneralTracker, on_main_process  # type: ignore[import-untyped]

from syvain_metrics.client.session import Session
from syvain_metrics.integrations.framework_run import FrameworkRun
from syvain_metrics.resources.experiment import UNSET, Experiment
from syvain_metrics.resources.folder import Folder

__all__ = ["SyvainTracker"]

logger = logging.getLogger("syvain_metrics")


class SyvainTracker(GeneralTracker):  # type: ignore[misc]  # accelerate's base is untyped
    """An ``accelerate`` tracker writing to a Syvain Metrics run, from the main process only.

    ``slug`` names the run (a new ``accelerate-<time>-<random>`` one when left out; give the
    same slug to a job restarted from a checkpoint to continue the same run, and pass
    ``resume_from=<step>``). ``experiment`` uses an existing experiment instead.
    ``folder``, ``description`` and ``metadata`` are used when the run is created;
    ``system_metrics`` samples CPU, memory and GPUs while it runs; ``flush_timeout`` bounds
    the wait for the run's events at ``end_training()``. It writes through ``session`` or
    the default session (``sm.connect()``). Bad arguments raise
    :class:`~syvain_metrics.MetricsValidationError` here, before training.

    Constructing it is cheap and creates nothing (``accelerate`` builds it on every
    process); the run is created by ``init_trackers`` on the main process. A ``log()``
    without ``step`` logs at the step after the largest so far; a value repeated at one step
    is stored once. ``end_training()`` ends the run ``done``: call it (accelerate asks for
    it too). A run left open (accelerate has no exception hook) is ended when the
    interpreter exits: ``error`` with the program's uncaught exception ("terminated by
    SIGTERM" after a SIGTERM), or ``error`` "the process exited before the framework ended
    the run" when ``end_training()`` never came. Nothing the service does raises into
    training.

    Example:
        >>> vision = sm.Folder.create('vision', exist_ok=True)  # doctest: +SKIP
        >>> tracker = SyvainTracker("mlp-1", folder=vision)            # doctest: +SKIP
        >>> accelerator = Accelerator(log_with=[tracker])             # doctest: +SKIP
        >>> accelerator.init_trackers("mlp", config={"lr": 0.1})      # doctest: +SKIP
        >>> accelerator.log({"loss": 0.5}, step=0)                    # doctest: +SKIP
        >>> accelerator.end_training()                                # doctest: +SKIP
    """

    name = "syvain"
    requires_logging_directory = False
    main_process_only = True

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
        resume_from: int | None = None,
    ) -> None:
        super().__init__()
        # Validates now, creates nothing: the experiment is made by start() on the main process.
        self._run = FrameworkRun(
            slug,
            experiment=experiment,
            folder=folder,
            description=description,
            metadata=metadata,
            session=session,
            system_metrics=system_metrics,
            flush_timeout=flush_timeout,
            framework="accelerate",
        )
        self._resume_from = resume_from
        self._began = False

    @property
    def tracker(self) -> Experiment:
        """The run's experiment (created on first use).

        Example:
            >>> accelerator.get_tracker("syvain").tracker.slug  # doctest: +SKIP
            'mlp-1'
        """
        return self._run.experiment

    @property
    def slug(self) -> str:
        """The run's slug.

        Example:
            >>> SyvainTracker("mlp-1").slug  # doctest: +SKIP
            'mlp-1'
        """
        return self._run.slug

    @on_main_process  # type: ignore[untyped-decorator]
    def start(self) -> None:
        """Called by ``init_trackers``, before the ``config``: the run itself is created
        (with the config as its metadata) and enters ``running`` (or resumes at
        ``resume_from``) when the config or the first values arrive."""
        self._began = True

    @on_main_process  # type: ignore[untyped-decorator]
    def store_init_configuration(self, values: Mapping[str, Any]) -> None:
        """The ``config`` of ``init_trackers`` as the run's hyperparameters (flattened with
        dots, fitted to the metadata's size; given after the run was created, an
        annotation), then the run starts.

        Example:
            >>> tracker.store_init_configuration({"lr": 0.1, "model": {"width": 64}})  # doctest: +SKIP
        """
        try:
            self._run.configure(dict(values))
        except Exception as error:  # a config of no known kind: the run goes on without it
            logger.warning("syvain_metrics: the hyperparameters were not recorded: %s", error)
        self._start()

    @on_main_process  # type: ignore[untyped-decorator]
    def log(self, values: Mapping[str, Any], step: int | None = None, **kwargs: Any) -> None:
        """Log ``values`` at ``step`` (the step after the largest so far when ``None``);
        ``log_kwargs={"syvain": {"metadata": {...}}}`` of ``accelerator.log`` gives every
        value that metadata.

        Example:
            >>> accelerator.log({"loss": 0.5, "acc": 0.9}, step=10)  # doctest: +SKIP
        """
        self._start()
        self._run.log(values, step=step, metadata=kwargs.get("metadata"))

    def finish(self) -> None:
        """End the run ``done`` (``end_training()`` calls it on every process: only the
        main process that started the run ends it).

        Example:
            >>> accelerator.end_training()  # doctest: +SKIP
        """
        if self.main_process_only and not PartialState().is_main_process:
            return
        self._end(None)

    def _start(self) -> None:
        self._began = True
        if not self._run.started:
            self._run.start(resume_from=self._resume_from)

    def _end(self, error: BaseException | None) -> None:
        if not self._began:
            return  # never started on this process: nothing to end
        self._began = False
        self._run.end(error)
