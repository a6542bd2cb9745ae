"""Experiments: runs that carry a status, metrics, annotations and ingestion keys.

Example:
    >>> import syvain_metrics as sm
    >>> exp = sm.Experiment.create("mamba-run-001", metadata={"model": "mamba"})  # doctest: +SKIP
    >>> with exp.run():                                                            # doctest: +SKIP
    ...     for step in range(100):
    ...         exp.log("loss", 1 / (step + 1), step=step, metadata={"split": "train"})
    >>> exp.metrics("loss", metadata={"split": "train"}).values[:3]               # doctest: +SKIP
    [1.0, 0.5, 0.333...]
"""

from __future__ import annotations

import builtins
import datetime as dt
import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from syvain_metrics.client.registry import get_session
from syvain_metrics.client.session import Session, spooled_safely
from syvain_metrics.context.creation import creation_metadata
from syvain_metrics.contract import operations
from syvain_metrics.contract.limits import (
    DEFAULT_ERROR_NAME,
    ERROR_DETAIL_MAX,
    ERROR_NAME_MAX,
    EXPERIMENTS_LIMIT,
)
from syvain_metrics.contract.schemas.base import load_request
from syvain_metrics.contract.schemas.experiment import (
    ExperimentCreateRequest,
    ExperimentListQuery,
    ExperimentListReply,
    ExperimentMoveRequest,
    StatusUpdateRequest,
)
from syvain_metrics.contract.schemas.options import check_flag
from syvain_metrics.errors import FlushError, MetricsValidationError
from syvain_metrics.resources.experiment.annotations import Annotating
from syvain_metrics.resources.experiment.catalog import Cataloging
from syvain_metrics.resources.experiment.deferred import DeferredCalls
from syvain_metrics.resources.experiment.ingestion_keys import IngestionKeys
from syvain_metrics.resources.experiment.reading import MetricReading
from syvain_metrics.resources.experiment.resuming import Resuming
from syvain_metrics.resources.experiment.stand_in import StandInRun
from syvain_metrics.resources.experiment.system_metrics import SystemSampling
from syvain_metrics.resources.experiment.termination import SigtermGuard
from syvain_metrics.resources.experiment.writing import MetricWriting
from syvain_metrics.resources.experiment_list import (
    ExperimentList,
    check_selection,
    selected,
    summarize,
)
from syvain_metrics.resources.folder import Folder, folder_id_of
from syvain_metrics.resources.lists import read_created

if TYPE_CHECKING:
    from collections.abc import Callable

logger = logging.getLogger("syvain_metrics")

_FLUSH_SLICE = 0.2
"""Seconds of one wait while a run ends, between two looks at whether SIGTERM came."""


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()
"""Marks an argument that was not given (so its key is not sent)."""


def _folder_id(run: Experiment) -> str | None:
    folder = run.folder
    return None if folder is None else folder.id


def _clean_exit(exc: BaseException) -> bool:
    """``sys.exit(0)`` / ``sys.exit()`` end a run as done; every other exception as error."""
    return isinstance(exc, SystemExit) and exc.code in (0, None)


def _error_payload(error: BaseException | str | Mapping[str, Any] | None) -> dict[str, Any] | None:
    if error is None:
        return None
    if isinstance(error, BaseException):
        # Derived from an exception: cut to the limits rather than fail the status update.
        return {
            "name": type(error).__name__[:ERROR_NAME_MAX] or DEFAULT_ERROR_NAME,
            "detail": str(error)[:ERROR_DETAIL_MAX],
        }
    if isinstance(error, str):
        return {"name": DEFAULT_ERROR_NAME, "detail": error}
    if isinstance(error, Mapping):
        return dict(error)
    raise MetricsValidationError({"error": ["Must be an exception, a string or {name, detail}."]})


class Experiment(
    SystemSampling,
    MetricWriting,
    MetricReading,
    Resuming,
    Annotating,
    IngestionKeys,
    Cataloging,
    DeferredCalls,
):
    """An experiment (a run). Attributes mirror the wire fields; ``created_at`` and friends
    are aware datetimes; ``folder`` is a :class:`Folder` or ``None``.

    Example:
        >>> exp = sm.Experiment.get("0f8e2c1a-...")  # doctest: +SKIP
        >>> exp.slug, exp.status, exp.folder           # doctest: +SKIP
        ('mamba-run-001', 'running', <Folder baselines/mamba id=...>)
    """

    # -- class-level operations ---------------------------------------------------

    @classmethod
    def list(
        cls,
        status: str | None = None,
        slug: str | None = None,
        search: str | None = None,
        from_ms: int | dt.datetime | None = None,
        to_ms: int | dt.datetime | None = None,
        limit: int | None = None,
        *,
        folder: Folder | str | None = UNSET,
        metadata: Mapping[str, Any] | None = None,
        where: Callable[[Experiment], bool] | None = None,
        session: Session | None = None,
    ) -> ExperimentList:
        """Experiments, newest first, filtered by status, exact slug, free-text search and
        creation time (ms or aware datetimes). Without ``limit``, every match (paged by
        creation time); with it, at most that many.

        ``folder`` (a ``Folder``, an id, or ``None`` for the root), ``metadata`` (values the
        run's metadata must have; a value may be a function: ``{"lr": lambda v: v < 0.1}``;
        dotted keys reach nested objects) and ``where`` (a function of the experiment) are
        applied by the client, since the service has no such filters: every run matching
        the service-side filters is listed, then ``limit`` cuts the runs that pass.

        Returns an :class:`ExperimentList`: ``.to_pandas()`` is the runs table.

        Example:
            >>> sm.Experiment.list(status="running", search="mamba", limit=20)  # doctest: +SKIP
            <ExperimentList 1: <Experiment mamba-run-001 running id=...>>
            >>> sm.Experiment.list(folder=sweep, metadata={"optimizer": "sgd"}).to_pandas()  # doctest: +SKIP
        """
        check_selection(metadata, where)
        folder_id = UNSET if folder is UNSET else folder_id_of(folder)
        client_side = folder is not UNSET or metadata is not None or where is not None
        bound = get_session(session)
        query = load_request(
            ExperimentListQuery(),
            {
                "status": status,
                "slug": slug,
                "search": search,
                "from": from_ms,
                "to": to_ms,
                "limit": limit,
            },
        )
        cut = query.pop("limit", None) if client_side else None

        items = read_created(
            bound,
            operations.LIST_EXPERIMENTS,
            (),
            ExperimentListReply(),
            "experiments",
            query,
            newest_first=True,
            largest_page=EXPERIMENTS_LIMIT[1],
        )
        runs = (cls._from_wire(item, bound) for item in items)
        if client_side:
            runs = (
                run
                for run in runs
                if (folder_id is UNSET or _folder_id(run) == folder_id)
                and selected(run, metadata, where)
            )
        found = ExperimentList(runs)
        return found if cut is None else found[:cut]

    @classmethod
    def create(
        cls,
        slug: str,
        *,
        description: str = "",
        metadata: Mapping[str, Any] | None = None,
        folder: Folder | str | None = UNSET,
        exist_ok: bool = False,
        config: object = None,
        capture_environment: bool | None = None,
        defer: bool = True,
        session: Session | None = None,
    ) -> Experiment:
        """Create an experiment. ``folder`` is a ``Folder``, an id, or ``None`` for the root;
        left out, the service picks its default.

        With ``exist_ok=True`` an experiment that already has this slug is returned as it
        is (one more request to find it) instead of raising the service's 409, so a notebook
        cell that creates a run can be run again. Its description, metadata and folder are
        the existing ones, not the arguments.

        ``config`` (a dict, ``argparse.Namespace``, dataclass, pydantic model or OmegaConf
        config) is added to the metadata, nested keys joined with dots (``model.width``);
        ``metadata=`` wins on a shared key, and a value that cannot be stored as it is is
        named by one warning (kept as text, or left out past the metadata's size). The
        ``environment`` key records the git commit, host, command line (secrets masked),
        Python, SDK and imported frameworks' versions, and GPUs: ``capture_environment=False``
        (or ``SYVAIN_METRICS_CAPTURE_ENV=0``) leaves it out.

        When the service cannot be reached (no connection, timeouts, 5xx after the
        retries), or the session is offline, the creation waits in the spool and the run is
        returned at once (``defer=False`` raises instead): ``log()``, ``run()`` and status
        changes work, and the session's sender creates the run when the service answers
        (``syvain-metrics sync`` after the process ended), then sends its events. Until
        then ``exp.id`` is a placeholder (``pending-...``) and reads raise
        :class:`~syvain_metrics.ExperimentNotCreatedError`. Without ``exist_ok``, a slug
        found taken then is reported as a failure of that run (its events stay in the spool).

        In a job of several ranks (torchrun, SLURM, MPI), with the session's
        ``ranks="zero"`` (the default) only rank 0 creates the run: other ranks get a
        stand-in whose writing calls send nothing; with ``ranks="all"`` every rank calls
        ``create`` and all get the same experiment (``exist_ok`` is implied).

        Example:
            >>> sm.Experiment.create("mamba-run-001", description="Baseline",
            ...                      metadata={"model": "mamba"}, folder=sub)  # doctest: +SKIP
            <Experiment mamba-run-001 created id=...>
            >>> sm.Experiment.create("mamba-run-001", exist_ok=True)  # doctest: +SKIP
            <Experiment mamba-run-001 created id=...>
        """
        check_flag("exist_ok", exist_ok)
        bound = get_session(session)
        fields: dict[str, Any] = {
            "slug": slug,
            "description": description,
            "metadata": creation_metadata(metadata, config, capture=capture_environment),
        }
        if folder is not UNSET:
            fields["folder_id"] = folder_id_of(folder)
        body = load_request(ExperimentCreateRequest(), fields)
        check_flag("defer", defer)
        if not bound.writes:  # checked first all the same: bad input fails on every rank
            return _RankStandIn(body, session=bound)
        # Every rank of the job creates the same run at once: all but one find it.
        exist_ok = exist_ok or (bound.ranks == "all" and bound.rank.distributed)
        return cls._create_call(bound, body, exist_ok=exist_ok, defer=defer)

    @classmethod
    def get(cls, experiment_id: str, *, session: Session | None = None) -> Experiment:
        """Fetch one experiment by id.

        Example:
            >>> sm.Experiment.get("0f8e2c1a-...").status  # doctest: +SKIP
            'running'
        """
        bound = get_session(session)
        return cls({"id": experiment_id}, session=bound).refresh()

    def summary(
        self,
        names: str | builtins.list[str] | tuple[str, ...],
        how: str | builtins.list[str] | tuple[str, ...] = ("last", "min", "max"),
        *,
        metadata: Mapping[str, Any] | str | None = None,
        last_per_step: bool = False,
    ) -> dict[str, float | int | None]:
        """Summary values of this run's metrics: ``{"<metric>:<how>": value}`` for each
        metric of ``names`` and statistic of ``how`` (among ``last``, ``first``, ``min``,
        ``max``, ``mean``, ``count``, ``last_step``; ``None`` without events). One read of
        every (narrowed) series at once: 2 requests while the rows fit one page.
        ``last_per_step=True`` counts only the row logged last at each step (a resumed run).

        Example:
            >>> exp.summary(["loss", "acc"], how=("last", "max"))  # doctest: +SKIP
            {'loss:last': 0.12, 'loss:max': 2.3, 'acc:last': 0.91, 'acc:max': 0.93}
        """
        self._settle_logs()
        return summarize([self], names, how, metadata, self._bind(), last_per_step)[self.id]

    # -- state --------------------------------------------------------------------

    def _apply(self, data: Mapping[str, Any]) -> Experiment:
        self._update(data["experiment"])
        return self

    def refresh(self) -> Experiment:
        """Reload this experiment from the service, once the status changes and annotations
        this session still holds for it are applied (up to the session's ``timeout``).

        Example:
            >>> exp.refresh().status  # doctest: +SKIP
            'done'
        """
        self._settle_logs()
        bound = self._bind()
        self._session = bound
        return self._apply(bound.call(operations.GET_EXPERIMENT, self.id))

    def set_status(
        self,
        status: str,
        *,
        error: BaseException | str | Mapping[str, Any] | None = None,
        timestamp_ms: int | dt.datetime | None = None,
    ) -> Experiment:
        """Move to ``running``, ``done`` or ``error`` (with ``error`` details), optionally at a
        given time. When the service cannot be reached (after the retries), for a run not
        created yet, in offline mode, or while earlier changes of the run wait in the spool,
        the change waits there too (with the time it happened), applied by the session's
        sender or ``syvain-metrics sync``, and this object shows it at once.

        Example:
            >>> exp.set_status("error", error={"name": "ValueError", "detail": "loss is NaN"})  # doctest: +SKIP
            <Experiment mamba-run-001 error id=...>
        """
        fields: dict[str, Any] = {"status": status}
        payload = _error_payload(error)
        if payload is not None:
            fields["error"] = payload
        if timestamp_ms is not None:
            fields["timestamp_ms"] = timestamp_ms
        body = load_request(StatusUpdateRequest(), fields)
        if not self._bind().is_main_process:
            return self  # checked first all the same: only rank 0 of a job changes the status
        return self._status_now_or_later(body)

    def start(self) -> Experiment:
        """Mark the experiment ``running``.

        Example:
            >>> exp.start().status  # doctest: +SKIP
            'running'
        """
        return self.set_status("running")

    def finish(self) -> Experiment:
        """Mark the experiment ``done``.

        Example:
            >>> exp.finish().done_at  # doctest: +SKIP
            datetime.datetime(2026, 11, 26, 18, 30, tzinfo=datetime.timezone.utc)
        """
        return self.set_status("done")

    def fail(self, error: BaseException | str | Mapping[str, Any] | None = None) -> Experiment:
        """Mark the experiment ``error``; ``error`` is an exception, a message or ``{name, detail}``.

        Example:
            >>> exp.fail(ValueError("loss is NaN")).error_name  # doctest: +SKIP
            'ValueError'
        """
        return self.set_status("error", error=error)

    @contextmanager
    def run(
        self,
        *,
        flush_timeout: float | None = None,
        resume_from: int | None = None,
        system_metrics: bool | float = False,
    ) -> Iterator[Experiment]:
        """Run a block as this experiment: ``running`` on entry; on leaving, wait for the
        block's ``log()`` events (up to ``flush_timeout``, by default the session's), then mark
        the run ``done`` after a clean exit (``sys.exit(0)`` included) or ``error`` with the
        exception otherwise, and re-raise it. ``resume_from`` (a job restarted from the
        checkpoint of that step) enters through :meth:`resume`, which records it on the run.

        On the main thread, SIGTERM (how schedulers stop jobs) ends the block like an
        exception: events are flushed (at most 10 s), the run is marked ``error`` ("terminated
        by SIGTERM") and the program exits with status 143. A SIGTERM handler of your own is
        called instead (and restored afterwards): if the block then ends by an exception, the
        run is marked terminated; if it ends cleanly, as usual, with the wait cut to 10 s. A
        SIGTERM while the run is ending cuts the wait to 10 s, and is passed on once the
        status the block earned is recorded.

        ``system_metrics=True`` samples CPU, memory and GPUs every 10 s while the block runs
        (a number: every that many seconds; see :meth:`start_system_metrics`).
        The status changes never fail the job for the service's sake: when the service
        cannot take them now (or the run is not created yet), they wait in the spool with
        the time they happened, applied by the session's sender or by ``syvain-metrics
        sync``. When the wait ends with events safe in the spool but not acknowledged yet (a
        slow or absent service), the run is not marked ``error`` and nothing is raised:
        ``done`` follows the events, never overtaking them (an ``error`` is recorded at once
        when the service takes it). When events were
        rejected, or are held in memory only (no spool), the run is marked ``error`` and
        :class:`~syvain_metrics.FlushError` is raised on a clean exit.

        Ctrl-C (``KeyboardInterrupt``) ends like SIGTERM: the wait for events, and the
        interpreter's exit after it, take at most 10 s in all; the ``error`` status
        ("KeyboardInterrupt") waits in the spool when it cannot be applied by then.

        Example:
            >>> with exp.run():                        # doctest: +SKIP
            ...     exp.log("loss", 0.5, step=0)
            >>> with exp.run(resume_from=500):         # doctest: +SKIP
            ...     exp.log("loss", 0.4, step=500)
        """
        wait = self._bind().flush_timeout if flush_timeout is None else flush_timeout
        sampler = self._system_sampler(system_metrics)  # refused before the run starts
        if resume_from is None:
            self._record_status("running", None, after_events=False, strict=True)
        else:
            self.resume(resume_from)
        guard = SigtermGuard.install()
        if sampler is not None:
            sampler.start()
        error: BaseException | None = None
        try:
            try:
                yield self
            except BaseException as exc:
                error = exc
            guard.defer()
            if sampler is not None:
                sampler.stop()  # its last sample is flushed with the block's events
            self._end_run(error, guard, wait)
        finally:
            guard.restore()  # raises Terminated for a SIGTERM deferred while ending
        if error is not None:
            raise error

    def _end_run(self, error: BaseException | None, guard: SigtermGuard, wait: float) -> None:
        clean = error is None or _clean_exit(error)
        if isinstance(error, KeyboardInterrupt):
            wait = self._interrupted_wait(wait)
        flush_error: Exception | None = None
        try:
            self._flush_ending(wait, guard)
        except Exception as exc:  # FlushError, or a session closed under the block
            flush_error = exc
        except KeyboardInterrupt as again:  # Ctrl-C while waiting: stop waiting at once
            self._bind().logs.exit_deadline = time.monotonic()
            self._record_status("error", _error_payload(again), after_events=True, strict=False)
            raise
        if guard.signalled_at is not None:
            # Whatever is left is spooled: closing and exiting need not wait any longer.
            self._bind().logs.exit_deadline = guard.cut(float("inf"))
        if guard.signalled_in_block and not clean:
            self._record_failure(
                {"name": "Terminated", "detail": "terminated by SIGTERM"}, flush_error
            )
        elif not clean:
            self._record_failure(error, flush_error)
        elif isinstance(flush_error, FlushError) and spooled_safely(flush_error):
            # Safe on disk, only not acknowledged yet: the job succeeded; "done" follows them.
            logger.warning(
                "syvain_metrics: %d log() events of %s are not acknowledged yet; they wait in "
                "the spool %s and the status 'done' follows them (sent by this process while "
                "it runs, or by `syvain-metrics sync`)",
                flush_error.pending,
                self.slug,
                flush_error.spool_dir,
            )
            self._record_status("done", None, after_events=True, strict=False)
        elif flush_error is not None:
            # Not done while metrics are missing: mark the run failed; they stay spooled.
            self._record_failure(flush_error, None)
            raise flush_error
        else:
            self._record_status("done", None, after_events=False, strict=False)

    def _flush_ending(self, wait: float, guard: SigtermGuard) -> None:
        """Flush within ``wait`` seconds, in short slices so that a SIGTERM arriving meanwhile
        can cut the wait to its own bound. A failure reports what all slices stored."""
        deadline = time.monotonic() + wait
        stored = 0
        while True:
            remaining = guard.cut(deadline) - time.monotonic()
            try:
                stored += self.flush(timeout=max(0.0, min(remaining, _FLUSH_SLICE)))
                return
            except FlushError as error:
                stored += error.stored
                if error.rejected or not error.timed_out or remaining <= _FLUSH_SLICE:
                    raise FlushError(
                        stored=stored,
                        pending=error.pending,
                        rejected=error.rejected,
                        timed_out=error.timed_out,
                        spool_dir=error.spool_dir,
                        unspooled=error.unspooled,
                        non_finite=error.non_finite,
                    ) from None

    def _record_failure(
        self, reason: BaseException | Mapping[str, Any] | None, flush_error: Exception | None
    ) -> None:
        if flush_error is not None:
            logger.warning("could not flush log() events of %s: %s", self.slug, flush_error)
        # Recorded at once when the service takes it (a failed job shows so without delay);
        # with events still on their way, one try only: when it cannot, it waits in the spool.
        struggling = isinstance(flush_error, FlushError) and flush_error.pending > 0
        self._record_status(
            "error",
            _error_payload(reason),
            after_events=False,
            strict=False,
            attempts=1 if struggling else None,
        )

    def move(self, folder: Folder | str | None) -> Experiment:
        """Move into ``folder`` (a ``Folder``, an id, or ``None`` for the root).

        Example:
            >>> exp.move(other_folder).folder  # doctest: +SKIP
            <Folder other id=...>
        """
        body = load_request(ExperimentMoveRequest(), {"folder_id": folder_id_of(folder)})
        bound = self._bind()
        return self._apply(bound.call(operations.MOVE_EXPERIMENT, self.id, body=body))


class _RankStandIn(StandInRun, Experiment):
    """What ``Experiment.create()`` returns on a rank that does not write (see
    :mod:`~syvain_metrics.resources.experiment.stand_in`)."""
