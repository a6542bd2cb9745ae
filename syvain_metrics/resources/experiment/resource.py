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
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from syvain_metrics.client.registry import get_session
from syvain_metrics.client.session import Session
from syvain_metrics.context.creation import creation_metadata
from syvain_metrics.contract import operations
from syvain_metrics.contract.limits import (
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
from syvain_metrics.resources.experiment.annotations import Annotating
from syvain_metrics.resources.experiment.catalog import Cataloging
from syvain_metrics.resources.experiment.deferred import DeferredCalls
from syvain_metrics.resources.experiment.ingestion_keys import IngestionKeys
from syvain_metrics.resources.experiment.reading import MetricReading
from syvain_metrics.resources.experiment.resuming import Resuming
from syvain_metrics.resources.experiment.running import RunBlock, error_payload
from syvain_metrics.resources.experiment.stand_in import StandInRun
from syvain_metrics.resources.experiment.system_metrics import SystemSampling
from syvain_metrics.resources.experiment.values import plain
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

LIST_SETTLE_SECONDS = 5.0
"""The longest ``Experiment.list()`` waits for status changes this process still holds."""


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()
"""Marks an argument that was not given (so its key is not sent)."""


def _folder_id(run: Experiment) -> str | None:
    folder = run.folder
    return None if folder is None else folder.id


class Experiment(
    RunBlock,
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
        metadata = plain(metadata)  # numpy scalars compare like the numbers stored
        check_selection(metadata, where)
        folder_id = UNSET if folder is UNSET else folder_id_of(folder)
        client_side = folder is not UNSET or metadata is not None or where is not None
        bound = get_session(session)
        query = load_request(
            ExperimentListQuery(),
            plain(
                {
                    "status": status,
                    "slug": slug,
                    "search": search,
                    "from": from_ms,
                    "to": to_ms,
                    "limit": limit,
                }
            ),
        )
        cut = query.pop("limit", None) if client_side else None
        # A run that just ended may have its status waiting behind its last events.
        bound.logs.settle_controls(min(bound.timeout, LIST_SETTLE_SECONDS))

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
        the existing ones, not the arguments. When that run has finished (``done`` or
        ``error``), ``run()`` and ``log()`` refuse it before writing anything
        (:class:`~syvain_metrics.RunFinishedError`, naming the choices): the cell run again
        never stores its values twice. A taken slug without ``exist_ok`` raises the
        service's 409, its message saying what to write instead.

        Metadata values may be numpy scalars (``np.int64``, ``np.float32``, ``np.bool_``,
        nested too): they are stored as Python numbers and bools.

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
            "metadata": creation_metadata(plain(metadata), config, capture=capture_environment),
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
        combine: bool = False,
    ) -> dict[str, float | int | None]:
        """Summary values of this run's metrics, one key per metric, sub-series and
        statistic of ``how`` (among ``last``, ``first``, ``min``, ``max``, ``mean``,
        ``count``, ``last_step``): ``"loss[split=valid]:min"`` for the events logged with
        ``{"split": "valid"}``, ``"loss:min"`` for those without metadata, or for a metric
        without events (``None``; a count 0). ``metadata`` narrows first; ``combine=True``
        gives one ``"loss:min"`` over every sub-series, with a ``UserWarning`` naming
        them (:meth:`ExperimentList.summary`). One read of every (narrowed) series at once:
        2 requests while the rows fit one page. ``last_per_step=True`` counts only the row
        logged last at each step (a resumed run).

        Example:
            >>> exp.summary(["loss", "acc"], how=("last", "max"))  # doctest: +SKIP
            {'loss[split=train]:last': 0.12, 'loss[split=train]:max': 2.3, 'acc:last': 0.91, ...}
        """
        self._settle_logs()
        return summarize([self], names, how, metadata, self._bind(), last_per_step, combine)[
            self.id
        ]

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
        payload = error_payload(error)
        if payload is not None:
            fields["error"] = payload
        if timestamp_ms is not None:
            fields["timestamp_ms"] = timestamp_ms
        body = load_request(StatusUpdateRequest(), fields)
        if status == "running":
            self._arrived_finished = False  # entered by this process (on every rank)
        if not self._bind().is_main_process:
            return self  # checked first all the same: only rank 0 of a job changes the status
        return self._status_now_or_later(body)

    def start(self) -> Experiment:
        """Mark the experiment ``running``. A run that has finished is refused, like
        :meth:`run` without ``resume_from`` (:class:`~syvain_metrics.RunFinishedError`):
        ``resume(step)`` continues it.

        Example:
            >>> exp.start().status  # doctest: +SKIP
            'running'
        """
        self._refuse_finished()
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
