"""Writing metrics: ``ingest()`` for any number of metrics, ``log()`` / ``flush()`` for a
training loop.

Example:
    >>> exp.ingest([{"name": "loss", "value": 0.4, "step": 1}], sync=True)  # doctest: +SKIP
    IngestResult(count=1, requests=1, mode='sync')
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from marshmallow import ValidationError

from syvain_metrics import routes
from syvain_metrics.errors import MetricsApiError, MetricsValidationError, PartialIngestError
from syvain_metrics.frames import progress_bar
from syvain_metrics.resources.experiment_base import ExperimentBase
from syvain_metrics.resources.log_buffer import buffer_for, derive_event_id, existing_buffer
from syvain_metrics.resources.point import MetricPoint
from syvain_metrics.schemas.base import flatten_messages
from syvain_metrics.schemas.ingest import IngestReply, MetricBatch
from syvain_metrics.schemas.limits import MAX_METRICS_PER_INGEST

_BATCH = MetricBatch()


@dataclass(frozen=True)
class IngestResult:
    """What an :meth:`Experiment.ingest` call did: metrics sent, requests made, last mode.

    Example:
        >>> IngestResult(count=2500, requests=3, mode="sync").requests
        3
    """

    count: int
    requests: int
    mode: str | None


class MetricWriting(ExperimentBase):
    """``ingest()``, ``log()``, ``flush()`` and ``pending_logs`` of an experiment."""

    def _prepare(self, metrics: Iterable[Mapping[str, Any] | MetricPoint]) -> list[dict[str, Any]]:
        items: list[Any] = []
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
            prepared: list[dict[str, Any]] = _BATCH.deserialize(items)
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
        bound = self._bind()
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
        session = self._bind()
        if session.closed:  # nothing would ever send it
            raise MetricsApiError("This session is closed; log() needs an open session.")
        buffer_for(session, self.id, self._send_buffered).add(prepared)

    def _send_buffered(self, events: list[dict[str, Any]]) -> None:
        self.ingest(events)

    def flush(self) -> int:
        """Send every buffered ``log()`` event now; returns how many were sent. On failure the
        unsent events stay buffered and the error is raised.

        Example:
            >>> exp.flush()  # doctest: +SKIP
            100
        """
        buffer = existing_buffer(self._bind(), self.id)
        return 0 if buffer is None else buffer.flush()

    @property
    def pending_logs(self) -> int:
        """How many ``log()`` events wait to be sent."""
        buffer = existing_buffer(self._bind(), self.id)
        return 0 if buffer is None else len(buffer)
