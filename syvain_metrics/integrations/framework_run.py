"""One run driven by a framework's hooks instead of a ``with exp.run():`` block.

A framework calls its logger or callback at moments of its own choosing: hyperparameters at
the start, metrics (sometimes twice at one step), an end that may be a failure. A
:class:`FrameworkRun` turns those calls into the run lifecycle of ``exp.run()``: the run is
created on first need (with the hyperparameters as its metadata), enters ``running`` (or
``resume()`` when the framework starts past step 0), and ends ``done`` or ``error`` with the
exception, through the same flush and status rules as ``run()``. No call raises into
training for the service's sake: a failure is logged once and the run goes on without it.
A run the framework never ends (a fit that raised where no hook is called) is ended at
interpreter exit (:mod:`~syvain_metrics.integrations.unfinished`).

Example:
    >>> run = FrameworkRun("mlp-1", framework="lightning")    # doctest: +SKIP
    >>> run.configure({"lr": 0.1, "model": {"width": 64}})    # doctest: +SKIP
    >>> run.log({"loss": 0.5}, step=0)                         # doctest: +SKIP
    >>> run.end()                                              # doctest: +SKIP
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any

from syvain_metrics.client.registry import get_session
from syvain_metrics.client.session import Session
from syvain_metrics.context.config import as_mapping, config_metadata
from syvain_metrics.contract.limits import SLUG_MAX
from syvain_metrics.contract.schemas.base import load_request
from syvain_metrics.contract.schemas.experiment import ExperimentCreateRequest
from syvain_metrics.errors import MetricsValidationError
from syvain_metrics.integrations import unfinished
from syvain_metrics.integrations.options import check_options, default_slug, next_free_run
from syvain_metrics.integrations.options import finished as _finished
from syvain_metrics.resources.experiment import UNSET, Experiment
from syvain_metrics.resources.experiment.values import as_number, as_step, flatten_usable, is_flat
from syvain_metrics.resources.folder import Folder, folder_id_of

logger = logging.getLogger("syvain_metrics")

CV_STD_SUFFIX = "/std"
"""The series of a cross-validation's standard deviation beside its mean (``rmse`` and
``rmse/std``), for every boosting library alike."""

CHECKPOINT_SPOOL_SECONDS = 5.0
"""The longest :meth:`FrameworkRun.checkpoint` waits for the spooler (a pass takes
milliseconds; a disk that stalls longer costs the checkpoint this much at most)."""

HYPERPARAMETERS_NOTE = "hyperparameters"
"""The annotation that carries hyperparameters given after the run was created (the
contract has no call that changes an experiment's metadata)."""


def _same(a: Any, b: Any) -> bool:
    return bool(a == b) or (a != a and b != b)  # NaN repeats are repeats too


class FrameworkRun:
    """The run behind a framework integration: created lazily, steps deduplicated, ended
    truthfully, never raising into training.

    ``slug`` names the run (a new one per job when left out; pass the same slug to a job
    restarted from a checkpoint to continue the same run). ``experiment`` uses an existing
    experiment instead. A run that has finished is not trained into again from scratch: the
    training goes to the next run that has not, ``<slug>-2``, ``-3``... (one warning says
    so); a training resumed from a checkpoint continues it. ``folder``, ``description`` and
    ``metadata`` are used when the run is created; ``system_metrics`` samples CPU, memory and GPUs while it runs (see
    ``exp.run()``). Bad arguments raise :class:`~syvain_metrics.MetricsValidationError` here,
    before training starts.

    Example:
        >>> run = FrameworkRun("mlp-1", framework="keras")   # doctest: +SKIP
        >>> run.log({"loss": 0.5, "val": {"loss": 0.6}}, step=10)  # doctest: +SKIP
        >>> run.end(ValueError("diverged"))                   # doctest: +SKIP
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
        flush_timeout: float | None = None,
        system_metrics: bool | float = False,
        framework: str = "run",
    ) -> None:
        check_options(system_metrics=system_metrics, flush_timeout=flush_timeout)
        if folder is not UNSET:
            folder_id_of(folder)  # a Folder, an id or None
        if experiment is not None and slug is not None:
            raise MetricsValidationError({"slug": ["Give a slug or an experiment, not both."]})
        self._named = slug is not None or experiment is not None
        self._slug = slug if slug is not None else default_slug(framework)
        # Checked now, so that a bad slug or metadata fails before training, not at step 0.
        load_request(
            ExperimentCreateRequest(),
            {"slug": self._slug, "description": description, "metadata": dict(metadata or {})},
        )
        self._folder = folder
        self._description = description
        self._metadata = dict(metadata or {})
        self._session = session
        self._flush_timeout = flush_timeout
        self._system_metrics = system_metrics
        self._framework = framework
        self._config: dict[str, Any] = {}
        self._experiment = experiment
        self._block: AbstractContextManager[Experiment] | None = None
        self._ended = False
        self._broken = False
        self._warned: set[str] = set()
        self._last: dict[str, tuple[int | None, Any]] = {}
        self._max_step = -1
        self._lock = threading.RLock()
        self._lineage = (self.slug, 1)  # the first slug and this run's number after it
        self._reopen = False
        self._entered = False
        self._held: list[tuple[str, dict[str, Any]]] = []  # notes before the run is chosen

    # -- what the integrations read -------------------------------------------------------

    @property
    def slug(self) -> str:
        """The run's slug (what ``Experiment.create`` gets).

        Example:
            >>> FrameworkRun("mlp-1").slug
            'mlp-1'
        """
        return self._experiment.slug if self._experiment is not None else self._slug

    @property
    def started(self) -> bool:
        """Whether the run has entered ``running`` (and not ended yet)."""
        return self._block is not None and not self._ended

    @property
    def entered(self) -> bool:
        """Whether this run has entered its experiment (``running``) in this process."""
        return self._entered

    @property
    def ended(self) -> bool:
        """Whether :meth:`end` has been called."""
        return self._ended

    @property
    def max_step(self) -> int:
        """The largest step logged so far (-1 before the first).

        Example:
            >>> FrameworkRun("mlp-1").max_step
            -1
        """
        return self._max_step

    @property
    def experiment(self) -> Experiment:
        """The experiment, created on first use (with the hyperparameters given so far).

        Example:
            >>> FrameworkRun("mlp-1").experiment.slug  # doctest: +SKIP
            'mlp-1'
        """
        with self._lock:
            if self._experiment is None:
                self._experiment = Experiment.create(
                    self._slug,
                    description=self._description,
                    metadata=self._metadata or None,
                    folder=self._folder,
                    exist_ok=True,
                    config=self._config or None,
                    session=self._session,
                )
            return self._experiment

    # -- what the integrations call -------------------------------------------------------

    def configure(self, config: object) -> None:
        """Add hyperparameters: a dict, ``Namespace``, dataclass, pydantic or OmegaConf
        object, flattened with dots and fitted to the metadata's size like ``config=``.
        Given after the run was created, they are recorded as an annotation
        (``"hyperparameters"``, its metadata the values), since metadata cannot change.

        Example:
            >>> run = FrameworkRun("mlp-1")
            >>> run.configure({"lr": 0.1})
        """
        fitted = config_metadata(config)  # raises for an object of no known kind
        with self._lock:
            if self._experiment is None:
                self._config.update(as_mapping(config) or {})
                return
        self._guarded("configure", self._annotate, HYPERPARAMETERS_NOTE, fitted.values)

    def start(self, *, resume_from: int | None = None) -> None:
        """Create the run if needed and enter ``running`` — or, with ``resume_from`` (the
        step a restarted job continues from), resume it there. Called again, nothing happens.

        Example:
            >>> FrameworkRun("mlp-1").start(resume_from=500)  # doctest: +SKIP
        """
        with self._lock:
            if self._block is not None or self._ended or self._broken:
                return
            self._guarded("start", self._enter, resume_from)

    def log(
        self,
        values: Mapping[str, object],
        step: int | None = None,
        *,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """Log a mapping of metrics at the framework's ``step`` (the next step after the
        largest so far when ``None``). A value logged again for the same name, step and
        metadata is dropped: frameworks that report one value twice store it once. Starts
        the run on first use; never raises.

        Example:
            >>> run.log({"loss": 0.5, "epoch": 0}, step=10)  # doctest: +SKIP
        """
        if self._ended or self._broken:
            return
        if self._block is None:
            self.start()
            if self._block is None:
                return
        self._guarded("log", self._log, values, step, metadata)

    def annotate(self, text: str, metadata: Mapping[str, Any] | None = None) -> None:
        """Pin a note to the run without waiting for the service (it travels behind the
        events logged before it); never raises.

        Example:
            >>> run.annotate("pruned at step 40", {"step": 40})  # doctest: +SKIP
        """
        if self._broken:
            return
        self._guarded("annotate", self._annotate, text, dict(metadata or {}))

    def end(self, error: BaseException | None = None) -> None:
        """End the run: ``done`` without ``error``, else ``error`` with the exception (a
        ``sys.exit(0)`` counts as done, like ``run()``). Waits for the run's events like
        ``run()`` does; never raises for the service's sake. Called again, nothing happens.

        Example:
            >>> run.end()                                 # doctest: +SKIP
            >>> run.end(RuntimeError("loss diverged"))    # doctest: +SKIP
        """
        with self._lock:
            if self._ended:
                return
            self._ended = True
            if self._block is None:
                if self._experiment is None or self._broken:
                    return  # nothing was created: nothing to end
                self._guarded("start", self._enter, None)
            block, self._block = self._block, None
        if block is None:
            return
        unfinished.closed(self)
        try:
            if error is None:
                block.__exit__(None, None, None)
            else:
                block.__exit__(type(error), error, error.__traceback__)
        except Exception as failure:  # a FlushError, a session closed under the run
            logger.warning("syvain_metrics: the run %s ended with: %s", self.slug, failure)

    def successor(self) -> FrameworkRun:
        """A new run with the same options for a framework that trains again from scratch
        with the same logger or callback: its slug is this one's with ``-2``, ``-3``, ...
        (an experiment given as ``experiment=`` is followed by runs named after its slug).
        A training that continues from a checkpoint continues this run instead (see
        :meth:`start`'s ``resume_from``).

        Example:
            >>> FrameworkRun("gbm-1").successor().slug
            'gbm-1-2'
            >>> FrameworkRun("gbm-1").successor().successor().slug
            'gbm-1-3'
        """
        base, number = self._lineage
        suffix = f"-{number + 1}"
        follower = FrameworkRun(
            base[: SLUG_MAX - len(suffix)] + suffix,  # a slug at its longest still gets one
            folder=self._folder,
            description=self._description,
            metadata=self._metadata or None,
            session=self._session,
            flush_timeout=self._flush_timeout,
            system_metrics=self._system_metrics,
            framework=self._framework,
        )
        follower._config = dict(self._config)
        follower._lineage = (base, number + 1)
        return follower

    def reopening(self) -> FrameworkRun:
        """Let this run open a new lifecycle on its experiment although it has finished
        (Lightning's ``test()`` after ``fit()`` in one process), instead of going to the
        next free run. Returns the run.

        Example:
            >>> FrameworkRun("mlp-1").reopening().slug
            'mlp-1'
        """
        self._reopen = True
        return self

    def checkpoint(self, timeout: float = CHECKPOINT_SPOOL_SECONDS) -> None:
        """The framework saved a checkpoint: wait (briefly) until every value logged so far
        is in the spool on disk, so that a job killed now and resumed from that checkpoint
        loses none of the steps before it. Nothing is sent or waited for on the network;
        never raises.

        Example:
            >>> run.checkpoint()  # doctest: +SKIP
        """
        experiment = self._experiment
        if experiment is None or self._broken or not self.started:
            return
        self._guarded("checkpoint", self._spool_now, experiment, timeout)

    def _spool_now(self, experiment: Experiment, timeout: float) -> None:
        bound = experiment._session or get_session(self._session)
        if bound.spool_dir is not None and not bound.logs.spool_now(timeout):
            logger.info("syvain_metrics: values logged before a checkpoint are not on disk yet")

    def __getstate__(self) -> dict[str, Any]:
        """What a copy in another process keeps: the options, the hyperparameters and the
        slug (a run nobody named gets a new one), never the session, the experiment
        object or a started run (scikit-learn's ``clone()``, ``GridSearchCV(n_jobs=...)``,
        ray pickle callbacks).

        Example:
            >>> import pickle
            >>> pickle.loads(pickle.dumps(FrameworkRun("gbm-1"))).slug
            'gbm-1'
        """
        folder = self._folder
        return {
            "slug": self.slug if self._named else None,
            "folder": None if folder is UNSET else folder_id_of(folder),
            "folder_given": folder is not UNSET,
            "description": self._description,
            "metadata": self._metadata,
            "flush_timeout": self._flush_timeout,
            "system_metrics": self._system_metrics,
            "framework": self._framework,
            "config": self._config,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(  # type: ignore[misc]
            state["slug"],
            folder=state["folder"] if state["folder_given"] else UNSET,
            description=state["description"],
            metadata=state["metadata"] or None,
            flush_timeout=state["flush_timeout"],
            system_metrics=state["system_metrics"],
            framework=state["framework"],
        )
        self._config = dict(state["config"])

    def __deepcopy__(self, memo: dict[int, Any]) -> FrameworkRun:
        """A copy in this process: like a pickled one, with the same session.

        Example:
            >>> import copy
            >>> copy.deepcopy(FrameworkRun("gbm-1")).started
            False
        """
        twin = FrameworkRun.__new__(FrameworkRun)
        twin.__setstate__(self.__getstate__())
        twin._session = self._session
        return twin

    def suspend(self, timeout: float | None = None) -> None:
        """Send what is logged so far (waiting at most ``timeout`` seconds) and leave the run
        ``running``: for a job about to be requeued, which resumes the run later.

        Example:
            >>> run.suspend(timeout=10)  # doctest: +SKIP
        """
        if self._experiment is None or self._broken:
            return
        unfinished.closed(self)  # left running on purpose: the exit must not end it
        self._guarded("flush", self._experiment.flush, timeout)

    # -- inside -----------------------------------------------------------------------------

    def _enter(self, resume_from: int | None) -> None:
        experiment = self.experiment
        reopen = _finished(experiment) and resume_from is None and self._reopen
        if _finished(experiment) and not resume_from and not self._reopen:
            follower = next_free_run(self)  # never into a finished run from scratch
            self._slug, self._lineage = follower._slug, follower._lineage
            experiment = self._experiment = follower.experiment
        bound = experiment._session or get_session(self._session)
        wait = bound.flush_timeout if self._flush_timeout is None else self._flush_timeout
        block: AbstractContextManager[Experiment]
        if reopen:  # this process's own choice: run() refuses a finished run
            block = experiment._lifecycle(wait, None, self._system_metrics)
        else:
            block = experiment.run(
                flush_timeout=wait,
                resume_from=resume_from,
                system_metrics=self._system_metrics,
            )
        block.__enter__()
        self._block = block
        self._entered = True
        if resume_from is not None:  # a step left out continues after the checkpoint's
            self._max_step = max(self._max_step, resume_from - 1)
        unfinished.opened(self)
        held, self._held = self._held, []
        for text, metadata in held:
            experiment._annotate_later(text, metadata)

    def _log(
        self, values: Mapping[str, object], step: int | None, metadata: Mapping[str, Any] | None
    ) -> None:
        with self._lock:  # frameworks log from several threads (Keras's batch callbacks)
            self._log_locked(values, step, metadata)

    def _log_locked(
        self, values: Mapping[str, object], step: int | None, metadata: Mapping[str, Any] | None
    ) -> None:
        if type(step) is not int:
            step = as_step(step)
            if step is None:
                step = self._max_step + 1
        fresh: dict[str, object] = {}
        last = self._last
        tags = repr(sorted(metadata.items())) if metadata else ""
        # A flat mapping (what frameworks pass) goes as it is: log() checks the names once.
        pairs = values.items() if is_flat(values) else flatten_usable(values)
        for name, raw in pairs:
            kind = type(raw)
            value = raw if kind is float or kind is int else as_number(raw)
            key = f"{name}\x00{tags}" if tags else name
            seen = last.get(key)
            if seen is not None and seen[0] == step and _same(seen[1], value):
                continue  # the same value reported twice at one step
            last[key] = (step, value)
            fresh[name] = value
        if isinstance(step, int) and step > self._max_step:
            self._max_step = step
        if fresh:
            assert self._experiment is not None
            try:
                self._experiment.log(fresh, step=step, metadata=metadata)
            except MetricsValidationError:
                usable = dict(flatten_usable(fresh))  # a bad name costs only its own value
                if usable == fresh:
                    raise  # the step or the metadata: nothing of the call can go
                if usable:
                    self._experiment.log(usable, step=step, metadata=metadata)

    def _annotate(self, text: str, metadata: dict[str, Any]) -> None:
        experiment = self.experiment
        if self._block is None and not self._entered and _finished(experiment):
            self._held.append((text, metadata))  # for the run its start chooses
            return
        experiment._annotate_later(text, metadata)

    def _guarded(self, what: str, call: Any, *args: Any) -> None:
        """Run ``call``; a failure is logged once per kind and never reaches training. Bad
        input to the integration's own API (a validation error) is logged the same way: the
        framework, not the user, made the call."""
        try:
            call(*args)
        except Exception as error:
            if what == "start":
                self._broken = True  # without a run, every later call is a no-op
            if what not in self._warned:
                self._warned.add(what)
                logger.warning(
                    "syvain_metrics: %s of run %s failed (%s: %s); training goes on%s",
                    what,
                    self.slug,
                    type(error).__name__,
                    error,
                    " without this run" if self._broken else "",
                )
