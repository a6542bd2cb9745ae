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
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from marshmallow import ValidationError

from syvain_metrics import routes
from syvain_metrics.errors import MetricsApiError, MetricsValidationError, PartialIngestError
from syvain_metrics.frames import progress_bar
from syvain_metrics.resources.annotation import Annotation
from syvain_metrics.resources.base import Resource, ms_time, wire
from syvain_metrics.resources.catalog import CatalogEntry, CatalogValues
from syvain_metrics.resources.folder import Folder, folder_id_of
from syvain_metrics.resources.ingestion_key import IngestionKey
from syvain_metrics.resources.log_buffer import buffer_for, derive_event_id, existing_buffer
from syvain_metrics.resources.metric import MetricRows, Series, read_rows
from syvain_metrics.resources.paging import read_by_time
from syvain_metrics.resources.point import MetricPoint
from syvain_metrics.schemas.annotation import (
    AnnotationCreateRequest,
    AnnotationListQuery,
    AnnotationListReply,
    AnnotationReply,
)
from syvain_metrics.schemas.base import flatten_messages, load_request
from syvain_metrics.schemas.catalog import (
    CatalogQuery,
    CatalogReply,
    CatalogValuesQuery,
    CatalogValuesReply,
)
from syvain_metrics.schemas.experiment import (
    ExperimentCreateRequest,
    ExperimentListQuery,
    ExperimentListReply,
    ExperimentMoveRequest,
    ExperimentReply,
    StatusUpdateRequest,
)
from syvain_metrics.schemas.ingest import IngestReply, MetricBatch
from syvain_metrics.schemas.ingestion_key import (
    IngestionKeyCreateReply,
    IngestionKeyCreateRequest,
    IngestionKeyListReply,
)
from syvain_metrics.schemas.limits import (
    ANNOTATIONS_LIMIT,
    DEFAULT_ERROR_NAME,
    DEFAULT_INGESTION_KEY_NAME,
    ERROR_DETAIL_MAX,
    ERROR_NAME_MAX,
    EXPERIMENTS_LIMIT,
    MAX_METRICS_PER_INGEST,
)
from syvain_metrics.schemas.metric_query import MetricsQuery
from syvain_metrics.session import Session, get_session

logger = logging.getLogger("syvain_metrics")


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()
"""Marks an argument that was not given (so its key is not sent)."""

_BATCH = MetricBatch()


@dataclass(frozen=True)
class IngestResult:
    """What an :meth:`Experiment.ingest` call did: metrics sent, requests made, last mode."""

    count: int
    requests: int
    mode: str | None


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


class Experiment(Resource):
    """An experiment (a run). Attributes mirror the wire fields; ``created_at`` and friends
    are aware datetimes; ``folder`` is a :class:`Folder` or ``None``.

    Example:
        >>> exp = sm.Experiment.get("0f8e2c1a-...")  # doctest: +SKIP
        >>> exp.slug, exp.status, exp.folder           # doctest: +SKIP
        ('mamba-run-001', 'running', <Folder baselines/mamba id=...>)
    """

    _repr_fields = ("slug", "status")

    id = wire[str]()
    org_id = wire[str]()
    slug = wire[str]()
    description = wire[str]()
    metadata = wire[dict[str, Any]]()
    status = wire[str]()
    error_name = wire["str | None"]()
    error_detail = wire["str | None"]()
    created_at_ms = wire[int]()
    updated_at_ms = wire[int]()
    started_at_ms = wire["int | None"]()
    done_at_ms = wire["int | None"]()
    last_heartbeat_at_ms = wire["int | None"]()
    last_event_at_ms = wire["int | None"]()
    created_at = ms_time("created_at_ms")
    updated_at = ms_time("updated_at_ms")
    started_at = ms_time("started_at_ms")
    done_at = ms_time("done_at_ms")
    last_heartbeat_at = ms_time("last_heartbeat_at_ms")
    last_event_at = ms_time("last_event_at_ms")

    @property
    def url(self) -> str:
        """The dashboard page, always absolute."""
        url: str = self._data["url"]
        if url.startswith("/") and self._session is not None:
            return f"{self._session.host}{url}"
        return url

    @property
    def folder(self) -> Folder | None:
        """The folder holding this experiment, or ``None`` at the root."""
        raw = self._data.get("folder")
        return None if raw is None else Folder(raw, session=self._session)

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
        session: Session | None = None,
    ) -> builtins.list[Experiment]:
        """Experiments, newest first, filtered by status, exact slug, free-text search and
        creation time (ms or aware datetimes). Without ``limit``, every match (paged by
        creation time); with it, at most that many.

        Example:
            >>> sm.Experiment.list(status="running", search="mamba", limit=20)  # doctest: +SKIP
            [<Experiment mamba-run-001 running id=...>]
        """
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
        reply = ExperimentListReply()

        def fetch(params: dict[str, Any]) -> builtins.list[dict[str, Any]]:
            data = bound.call(routes.LIST_EXPERIMENTS, reply=reply, query=params)
            items: builtins.list[dict[str, Any]] = data["experiments"]
            return items

        limit_value = query.pop("limit", None)
        items = read_by_time(
            fetch,
            query,
            bound="to",
            time_field="created_at_ms",
            descending=True,
            page_size=EXPERIMENTS_LIMIT[0],
            limit=limit_value,
        )
        return [cls._from_wire(item, bound) for item in items]

    @classmethod
    def create(
        cls,
        slug: str,
        *,
        description: str = "",
        metadata: Mapping[str, Any] | None = None,
        folder: Folder | str | None = UNSET,
        session: Session | None = None,
    ) -> Experiment:
        """Create an experiment. ``folder`` is a ``Folder``, an id, or ``None`` for the root;
        left out, the service picks its default.

        Example:
            >>> sm.Experiment.create("mamba-run-001", description="Baseline",
            ...                      metadata={"model": "mamba"}, folder=sub)  # doctest: +SKIP
            <Experiment mamba-run-001 created id=...>
        """
        bound = get_session(session)
        fields: dict[str, Any] = {
            "slug": slug,
            "description": description,
            "metadata": {} if metadata is None else metadata,
        }
        if folder is not UNSET:
            fields["folder_id"] = folder_id_of(folder)
        body = load_request(ExperimentCreateRequest(), fields)
        data = bound.call(routes.CREATE_EXPERIMENT, reply=ExperimentReply(), body=body)
        return cls._from_wire(data["experiment"], bound)

    @classmethod
    def get(cls, experiment_id: str, *, session: Session | None = None) -> Experiment:
        """Fetch one experiment by id.

        Example:
            >>> sm.Experiment.get("0f8e2c1a-...").status  # doctest: +SKIP
            'running'
        """
        bound = get_session(session)
        return cls({"id": experiment_id}, session=bound).refresh()

    # -- state --------------------------------------------------------------------

    def _apply(self, data: Mapping[str, Any]) -> Experiment:
        self._update(data["experiment"])
        return self

    def refresh(self) -> Experiment:
        """Reload this experiment from the service.

        Example:
            >>> exp.refresh().status  # doctest: +SKIP
            'done'
        """
        bound = self._bind(None)
        self._session = bound
        return self._apply(bound.call(routes.GET_EXPERIMENT, self.id, reply=ExperimentReply()))

    def set_status(
        self,
        status: str,
        *,
        error: BaseException | str | Mapping[str, Any] | None = None,
        timestamp_ms: int | dt.datetime | None = None,
    ) -> Experiment:
        """Move to ``running``, ``done`` or ``error`` (with ``error`` details), optionally at a
        given time.

        Example:
            >>> exp.set_status("error", error={"name": "ValueError", "detail": "loss is NaN"})  # doctest: +SKIP
            <Experiment mamba-run-001 error id=...>
        """
        fields: dict[str, Any] = {"status": status}
        payload = _error_payload(error)
        if payload is not None:
            fields["error"] = payload
        if timestamp_ms is not None:
            if isinstance(timestamp_ms, dt.datetime):
                from syvain_metrics.schemas.fields import EpochMs

                try:
                    timestamp_ms = EpochMs().deserialize(timestamp_ms)
                except Exception as exc:
                    raise MetricsValidationError({"timestamp_ms": [str(exc)]}) from None
            fields["timestamp_ms"] = timestamp_ms
        body = load_request(StatusUpdateRequest(), fields)
        bound = self._bind(None)
        return self._apply(
            bound.call(routes.UPDATE_EXPERIMENT_STATUS, self.id, reply=ExperimentReply(), body=body)
        )

    def start(self) -> Experiment:
        """Mark the experiment ``running``."""
        return self.set_status("running")

    def finish(self) -> Experiment:
        """Mark the experiment ``done``."""
        return self.set_status("done")

    def fail(self, error: BaseException | str | Mapping[str, Any] | None = None) -> Experiment:
        """Mark the experiment ``error``; ``error`` is an exception, a message or ``{name, detail}``.

        Example:
            >>> exp.fail(ValueError("loss is NaN")).error_name  # doctest: +SKIP
            'ValueError'
        """
        return self.set_status("error", error=error)

    @contextmanager
    def run(self) -> Iterator[Experiment]:
        """Run a block as this experiment: ``running`` on entry; on a clean exit, flush
        ``log()`` and mark ``done``; on an exception, flush, mark ``error`` with the
        exception's type and message, and re-raise. If the final flush fails, the run is
        marked ``error`` instead of ``done``, the events stay buffered, and the error is raised.

        Example:
            >>> with exp.run():                        # doctest: +SKIP
            ...     exp.log("loss", 0.5, step=0)
        """
        self.start()
        try:
            yield self
        except BaseException as exc:
            try:
                self.flush()
            except Exception as flush_error:
                logger.warning("could not flush log() events of %s: %s", self.slug, flush_error)
            try:
                self.fail(exc)
            except Exception as status_error:
                logger.warning("could not mark %s as error: %s", self.slug, status_error)
            raise
        try:
            self.flush()
        except Exception as flush_error:
            # Not done while metrics are unsent: mark the run failed, keep them buffered.
            try:
                self.fail(flush_error)
            except Exception as status_error:
                logger.warning("could not mark %s as error: %s", self.slug, status_error)
            raise
        self.finish()

    def move(self, folder: Folder | str | None) -> Experiment:
        """Move into ``folder`` (a ``Folder``, an id, or ``None`` for the root).

        Example:
            >>> exp.move(other_folder).folder  # doctest: +SKIP
            <Folder other id=...>
        """
        body = load_request(ExperimentMoveRequest(), {"folder_id": folder_id_of(folder)})
        bound = self._bind(None)
        return self._apply(
            bound.call(routes.MOVE_EXPERIMENT, self.id, reply=ExperimentReply(), body=body)
        )

    # -- writing metrics ----------------------------------------------------------

    def _prepare(
        self, metrics: Iterable[Mapping[str, Any] | MetricPoint]
    ) -> builtins.list[dict[str, Any]]:
        items: builtins.list[Any] = []
        for item in metrics:
            if type(item) is dict and "client_event_id" in item:
                items.append(item)  # the common case, without the ABC checks below
                continue
            if isinstance(item, MetricPoint):
                item = item.to_dict()
            if isinstance(item, Mapping) and "client_event_id" not in item:
                try:
                    event_id = derive_event_id(
                        self.id, item.get("name", ""), item.get("step"), item.get("metadata")
                    )
                except (TypeError, ValueError):
                    # Only invalid fields make derivation fail, and validation below names
                    # them; a placeholder keeps a second, misleading error away.
                    event_id = "sm-underivable"
                item = {**item, "client_event_id": event_id}
            items.append(item)
        try:
            prepared: builtins.list[dict[str, Any]] = _BATCH.deserialize(items)
        except ValidationError as error:
            raise MetricsValidationError(flatten_messages({"metrics": error.messages})) from None
        return prepared

    def ingest(
        self,
        metrics: Iterable[Mapping[str, Any] | MetricPoint],
        *,
        sync: bool | None = None,
        progress: bool = False,
    ) -> IngestResult:
        """Send metrics, any number of them, in requests of at most 1,000, in order.

        Each metric is a dict (``client_event_id``, ``name``, ``value``, ``step``, and optional
        ``metadata`` / ``timestamp_ms``) or a :class:`MetricPoint`. A missing
        ``client_event_id`` is derived as ``log()`` does. Everything is validated before the
        first request. If a request fails, :class:`PartialIngestError` says how many were
        stored and carries the rest in ``pending``: ``exp.ingest(error.pending)`` resumes
        without loss or duplication. ``progress=True`` shows a progress bar (the ``progress``
        extra, tqdm).

        Example:
            >>> exp.ingest([{"client_event_id": "run1/loss/1", "name": "loss", "value": 0.4,
            ...              "step": 1}], sync=True)  # doctest: +SKIP
            IngestResult(count=1, requests=1, mode='sync')
        """
        if sync is not None and not isinstance(sync, bool):
            raise MetricsValidationError({"sync": ["Must be True, False or None."]})
        prepared = self._prepare(metrics)
        bound = self._bind(None)
        reply = IngestReply()
        stored = 0
        requests = 0
        mode: str | None = None
        bar = progress_bar(len(prepared), f"ingest {self.slug or self.id}") if progress else None
        for start in range(0, len(prepared), MAX_METRICS_PER_INGEST):
            chunk = prepared[start : start + MAX_METRICS_PER_INGEST]
            try:
                data = bound.call(
                    routes.INGEST_METRICS,
                    self.id,
                    reply=reply,
                    query={"sync": sync},
                    body={"data": chunk},
                )
            except MetricsApiError as error:
                if bar is not None:
                    bar.close()
                raise PartialIngestError(
                    f"Ingest stopped after {stored} of {len(prepared)} metrics were stored; "
                    f"{len(prepared) - stored} are in error.pending: {error}",
                    stored=stored,
                    pending=prepared[stored:],
                    cause=error,
                ) from error
            stored += len(chunk)
            requests += 1
            mode = data["mode"]
            if bar is not None:
                bar.update(len(chunk))
        if bar is not None:
            bar.close()
        return IngestResult(count=stored, requests=requests, mode=mode)

    def log(
        self,
        name: str,
        value: float,
        *,
        step: int | None = None,
        metadata: Mapping[str, Any] | None = None,
        timestamp_ms: int | None = None,
        client_event_id: str | None = None,
    ) -> None:
        """Buffer one metric; it is sent with the next 1,000, on :meth:`flush`, at the end of
        :meth:`run`, or at exit. Validated now, so a bad value raises here.

        Without ``client_event_id``, one is derived from (experiment, name, step, metadata):
        logging the same step twice stores it once. With ``step=None`` each call is unique.

        Example:
            >>> exp.log("loss", 0.25, step=10, metadata={"split": "train"})  # doctest: +SKIP
        """
        event: dict[str, Any] = {"name": name, "value": value, "step": step}
        if metadata is not None:
            event["metadata"] = metadata
        if timestamp_ms is not None:
            event["timestamp_ms"] = timestamp_ms
        if client_event_id is not None:
            event["client_event_id"] = client_event_id
        (prepared,) = self._prepare([event])
        buffer_for(self._bind(None), self.id, self._send_buffered).add(prepared)

    def _send_buffered(self, events: builtins.list[dict[str, Any]]) -> None:
        self.ingest(events)

    def flush(self) -> int:
        """Send every buffered ``log()`` event now; returns how many were sent. On failure the
        unsent events stay buffered and the error is raised.

        Example:
            >>> exp.flush()  # doctest: +SKIP
            100
        """
        buffer = existing_buffer(self._bind(None), self.id)
        return 0 if buffer is None else buffer.flush()

    @property
    def pending_logs(self) -> int:
        """How many ``log()`` events wait to be sent."""
        buffer = existing_buffer(self._bind(None), self.id)
        return 0 if buffer is None else len(buffer)

    # -- reading metrics ----------------------------------------------------------

    def metrics(
        self,
        name: str | None = None,
        *,
        metadata: Mapping[str, Any] | str | None = None,
        step: int | None = None,
        from_step: int | None = None,
        to_step: int | None = None,
        from_time: int | dt.datetime | None = None,
        to_time: int | dt.datetime | None = None,
        sort_by: str | Sequence[str] | None = None,
        sort_direction: str | None = None,
        limit: int | None = None,
        include_experiment_meta_as_of: bool | None = None,
    ) -> MetricRows:
        """Read metric events. Without ``limit`` every matching row is returned (paging as
        needed); with ``limit``, at most that many.

        ``metadata`` is a one-key dict (``{"split": "train"}``; a non-string value matches
        by JSON equality) or a bare key (``"split"``: events that have that key).

        Example:
            >>> rows = exp.metrics("loss", metadata={"split": "train"}, from_step=0, to_step=50)  # doctest: +SKIP
            >>> rows[0].value, rows.to_pandas()                                                  # doctest: +SKIP
        """
        query = load_request(
            MetricsQuery(),
            {
                "metric_name": name,
                "metadata": metadata,
                "step": step,
                "from_step": from_step,
                "to_step": to_step,
                "from_time": from_time,
                "to_time": to_time,
                "sort_by": sort_by,
                "sort_direction": sort_direction,
                "limit": limit,
                "include_experiment_meta_as_of": include_experiment_meta_as_of,
            },
        )
        limit_value = query.pop("limit", None)
        return read_rows(self._bind(None), routes.LIST_METRICS, (self.id,), query, limit_value)

    def series(self, name: str, *, metadata: Mapping[str, Any] | str | None = None) -> Series:
        """This experiment's ``name`` metric as a :class:`Series` for :func:`sm.compare`.

        Example:
            >>> sm.compare([a.series("loss"), b.series("loss")])  # doctest: +SKIP
        """
        return Series(self, name, metadata=metadata)

    # -- annotations --------------------------------------------------------------

    def annotate(self, text: str, *, metadata: Mapping[str, Any] | None = None) -> Annotation:
        """Pin a note to the experiment (sent with its ingestion token).

        Example:
            >>> exp.annotate("Checkpoint saved", metadata={"path": "ckpt/99.pt"})  # doctest: +SKIP
            <Annotation 'Checkpoint saved' id=...>
        """
        body = load_request(
            AnnotationCreateRequest(),
            {"annotation": text, "metadata": {} if metadata is None else metadata},
        )
        bound = self._bind(None)
        data = bound.call(routes.CREATE_ANNOTATION, self.id, reply=AnnotationReply(), body=body)
        self._update(data["experiment"])
        return Annotation._from_wire(data["annotation"], bound)

    def annotations(
        self,
        from_ms: int | dt.datetime | None = None,
        to_ms: int | dt.datetime | None = None,
        limit: int | None = None,
    ) -> builtins.list[Annotation]:
        """Annotations, oldest first, optionally bounded by creation time. Without ``limit``,
        every one (paged by creation time); with it, at most that many.

        Example:
            >>> [a.text for a in exp.annotations()]  # doctest: +SKIP
            ['Checkpoint saved']
        """
        query = load_request(AnnotationListQuery(), {"from": from_ms, "to": to_ms, "limit": limit})
        bound = self._bind(None)
        reply = AnnotationListReply()

        def fetch(params: dict[str, Any]) -> builtins.list[dict[str, Any]]:
            data = bound.call(routes.LIST_ANNOTATIONS, self.id, reply=reply, query=params)
            items: builtins.list[dict[str, Any]] = data["annotations"]
            return items

        limit_value = query.pop("limit", None)
        items = read_by_time(
            fetch,
            query,
            bound="from",
            time_field="created_at_ms",
            descending=False,
            page_size=ANNOTATIONS_LIMIT[0],
            limit=limit_value,
        )
        return [Annotation._from_wire(item, bound) for item in items]

    # -- ingestion keys -----------------------------------------------------------

    def ingestion_keys(self) -> builtins.list[IngestionKey]:
        """Every ingestion key of this experiment (revoked and expired ones included).

        Example:
            >>> [k.is_active for k in exp.ingestion_keys()]  # doctest: +SKIP
            [True]
        """
        bound = self._bind(None)
        data = bound.call(routes.LIST_INGESTION_KEYS, self.id, reply=IngestionKeyListReply())
        return [IngestionKey._from_wire(item, bound) for item in data["keys"]]

    def create_ingestion_key(
        self,
        *,
        name: str = DEFAULT_INGESTION_KEY_NAME,
        ttl_ms: int | dt.timedelta | None = None,
    ) -> IngestionKey:
        """Mint an ingestion key (``ttl_ms``: 1 ms to 7 days, or a ``timedelta``). Its ``token``
        is readable on the returned object only.

        Example:
            >>> key = exp.create_ingestion_key(name="ci", ttl_ms=timedelta(hours=1))  # doctest: +SKIP
        """
        fields: dict[str, Any] = {"name": name}
        if isinstance(ttl_ms, dt.timedelta):
            ttl_ms = int(ttl_ms.total_seconds() * 1000)
        if ttl_ms is not None:
            fields["ttl_ms"] = ttl_ms
        body = load_request(IngestionKeyCreateRequest(), fields)
        bound = self._bind(None)
        data = bound.call(
            routes.CREATE_INGESTION_KEY, self.id, reply=IngestionKeyCreateReply(), body=body
        )
        return IngestionKey(data["key"], session=bound, token=data["token"])

    def forget_ingestion_credential(self) -> None:
        """Drop the session's cached ingestion token for this experiment.

        Example:
            >>> exp.forget_ingestion_credential()  # doctest: +SKIP
        """
        self._bind(None).forget_ingestion_credential(self.id)

    # -- catalog ------------------------------------------------------------------

    def catalog(self, limit: int | None = None) -> builtins.list[CatalogEntry]:
        """Metric names of this experiment and their metadata keys, alphabetically.

        Example:
            >>> exp.catalog()  # doctest: +SKIP
            [<CatalogEntry loss keys=['split']>]
        """
        query = load_request(CatalogQuery(), {"limit": limit})
        bound = self._bind(None)
        data = bound.call(routes.CATALOG, self.id, reply=CatalogReply(), query=query)
        return [CatalogEntry._from_wire(item, bound) for item in data["metrics"]]

    def catalog_values(
        self,
        metric: str,
        *,
        keys: str | Sequence[str] | None = None,
        limit: int | None = None,
    ) -> CatalogValues:
        """Metadata values seen with ``metric``, for ``keys`` (a key or a list) or all keys.

        Example:
            >>> exp.catalog_values("loss", keys=["split"]).values("split")  # doctest: +SKIP
            ['train', 'valid']
        """
        if not isinstance(metric, str) or not metric:
            raise MetricsValidationError({"metric": ["Must be a non-empty metric name."]})
        query = load_request(CatalogValuesQuery(), {"key": keys, "limit": limit})
        bound = self._bind(None)
        data = bound.call(
            routes.CATALOG_VALUES, self.id, metric, reply=CatalogValuesReply(), query=query
        )
        return CatalogValues._from_wire(data["metadata"], bound)
