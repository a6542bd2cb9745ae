"""Writing metrics: ``ingest()`` for any number of metrics, ``log()`` / ``flush()`` for a
training loop.

Example:
    >>> exp.ingest([{"name": "loss", "value": 0.4, "step": 1}], sync=True)  # doctest: +SKIP
    IngestResult(count=1, requests=1, mode='sync')
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from marshmallow import ValidationError

from syvain_metrics.contract import operations
from syvain_metrics.contract.event_ids import record_event_id
from syvain_metrics.contract.limits import MAX_METRICS_PER_INGEST
from syvain_metrics.contract.schemas.base import flatten_messages
from syvain_metrics.contract.schemas.ingest import (
    IngestReply,
    MetricBatch,
    check_metrics,
    is_plain_metric,
)
from syvain_metrics.contract.schemas.options import check_flag
from syvain_metrics.errors import MetricsApiError, MetricsValidationError, PartialIngestError
from syvain_metrics.pipeline.batch import queued_event
from syvain_metrics.resources.experiment.base import ExperimentBase
from syvain_metrics.resources.point import MetricPoint
from syvain_metrics.tables.frames import progress_bar

_BATCH = MetricBatch()
_CHECK_WINDOW = 10_000
"""Metrics validated together before an ingest sends anything (a window's columns are
temporary)."""


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

    def _with_ids(self, metrics: Sequence[Mapping[str, Any] | MetricPoint]) -> list[Any]:
        """Metrics as dicts, each with its ``client_event_id`` (derived when missing)."""
        items: list[Any] = []
        for item in metrics:
            if type(item) is dict and "client_event_id" in item:
                items.append(item)  # the common case, without the ABC checks below
                continue
            if isinstance(item, MetricPoint):
                item = item.to_dict()
            if isinstance(item, Mapping) and "client_event_id" not in item:
                try:
                    event_id = record_event_id(self.id, item)
                except (TypeError, ValueError):
                    # Only invalid fields make derivation fail, and validation names them;
                    # a placeholder keeps a second, misleading error away.
                    event_id = "sm-underivable"
                item = {**item, "client_event_id": event_id}
            items.append(item)
        return items

    def _prepare(self, metrics: Sequence[Mapping[str, Any] | MetricPoint]) -> list[dict[str, Any]]:
        """Wire-ready metrics (validated, converted, ids given)."""
        try:
            prepared: list[dict[str, Any]] = _BATCH.deserialize(self._with_ids(metrics))
        except ValidationError as error:
            raise MetricsValidationError(flatten_messages({"metrics": error.messages})) from None
        return prepared

    @staticmethod
    def _check_all(items: Sequence[Any]) -> None:
        """Validate every metric before anything is sent, a window at a time, in place: no
        copy of the whole input is made."""
        for start in range(0, len(items), _CHECK_WINDOW):
            window = [
                m.to_dict() if isinstance(m, MetricPoint) else m
                for m in items[start : start + _CHECK_WINDOW]
            ]
            try:
                check_metrics(window, offset=start)
            except ValidationError as error:
                raise MetricsValidationError(
                    flatten_messages({"metrics": error.messages})
                ) from None

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
        ``client_event_id`` is derived from the whole record (name, value, step, metadata,
        timestamp): sending the same list again stores it once, and records that differ in
        any field are all kept. Everything is validated before the first request, in place;
        each request's body is then built and encoded on its own, so a list of millions
        costs little memory beyond itself. If a request fails, :class:`PartialIngestError`
        says how many were stored and carries the rest in ``pending``:
        ``exp.ingest(error.pending)`` resumes without loss or duplication.
        ``progress=True`` shows a progress bar (the ``progress`` extra: ``tqdm.auto``, a
        widget in a notebook).

        Example:
            >>> exp.ingest([{"client_event_id": "run1/loss/1", "name": "loss", "value": 0.4,
            ...              "step": 1}], sync=True)  # doctest: +SKIP
            IngestResult(count=1, requests=1, mode='sync')
        """
        if sync is not None and not isinstance(sync, bool):
            raise MetricsValidationError({"sync": ["Must be True, False or None."]})
        check_flag("progress", progress)
        if isinstance(metrics, str | bytes | Mapping) or not isinstance(metrics, Iterable):
            raise MetricsValidationError({"metrics": ["Must be a list of metrics."]})
        items = metrics if isinstance(metrics, Sequence) else list(metrics)
        self._check_all(items)
        bound = self._bind()
        reply = IngestReply()
        total = len(items)
        stored = 0
        requests = 0
        mode: str | None = None
        bar = progress_bar(total, f"ingest {self.slug or self.id}") if progress else None
        try:
            for start in range(0, total, MAX_METRICS_PER_INGEST):
                chunk = self._prepare(items[start : start + MAX_METRICS_PER_INGEST])
                try:
                    data = bound.call(
                        operations.INGEST_METRICS,
                        self.id,
                        reply=reply,
                        query={"sync": sync},
                        body={"data": chunk},
                    )
                except MetricsApiError as error:
                    pending = chunk + self._prepare(items[start + len(chunk) :])
                    raise PartialIngestError(
                        f"Ingest stopped after {stored} of {total} metrics were stored; "
                        f"{total - stored} are in error.pending: {error}",
                        stored=stored,
                        pending=pending,
                        cause=error,
                    ) from error
                stored += len(chunk)
                requests += 1
                mode = data["mode"]
                if bar is not None:
                    bar.update(len(chunk))
        finally:
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
        """Record one metric from a training loop: validated here (a bad name, a NaN or bad
        metadata raises at once), then queued; it never waits for the network and never
        raises a network error. The session's sender delivers it within ``flush_interval``
        (1 s), keeping it in a spool on disk until the service acknowledges it, retrying
        through outages for as long as the process lives. Safe from any thread.

        Every call is its own event, with its own ``client_event_id`` (used again on every
        retry, so nothing is stored twice): two values at the same step are both kept. Pass
        ``client_event_id`` yourself to make a re-run of the same code idempotent. Without
        ``timestamp_ms``, the event carries the time of the call (not of its delivery).

        Example:
            >>> exp.log("loss", 0.25, step=10, metadata={"split": "train"})  # doctest: +SKIP
        """
        session = self._bind()
        if session.closed:  # nothing would ever send it
            raise MetricsApiError("This session is closed; log() needs an open session.")
        sender = session.logs.sender
        event_id = sender.ids.next_id() if client_event_id is None else client_event_id
        if timestamp_ms is None:
            # The time of the call, not of delivery, which may come much later after an outage.
            timestamp_ms = time.time_ns() // 1_000_000
        if is_plain_metric(event_id, name, value, step, metadata, timestamp_ms):
            sender.put(
                queued_event(self._log_id, event_id, name, value, step, metadata, timestamp_ms)
            )
            return
        fields: dict[str, Any] = {"client_event_id": event_id, "name": name, "value": value}
        fields["step"] = step
        if metadata is not None:
            fields["metadata"] = metadata
        if timestamp_ms is not None:
            fields["timestamp_ms"] = timestamp_ms
        (event,) = self._prepare([fields])
        # Converted (numpy scalars) and copied deep: the caller may change theirs afterwards.
        copied = json.loads(json.dumps(event.get("metadata"))) if "metadata" in event else None
        sender.put(
            queued_event(
                self._log_id,
                event_id,
                event["name"],
                event["value"],
                event["step"],
                copied,
                event.get("timestamp_ms"),
            )
        )

    def flush(self, timeout: float | None = None) -> int:
        """Wait until every ``log()`` event of this experiment logged so far (from any thread)
        is stored; returns how many it waited for. ``timeout=None`` waits as long as it takes.

        Raises :class:`~syvain_metrics.FlushError` if the wait ran out (those events are still
        spooled and retrying) or if the service rejected some events (each listed with its
        answer; the others are stored). Rejected events are reported once.

        Example:
            >>> exp.flush(timeout=60)  # doctest: +SKIP
            100
        """
        logs = self._bind().logs
        settled = logs.wait([self._log_id], timeout)
        error = logs.incomplete(settled)
        if error is not None:
            raise error
        return 0 if settled is None else settled.stored

    @property
    def pending_logs(self) -> int:
        """How many ``log()`` events of this experiment are not stored yet (in this process).

        Example:
            >>> exp.pending_logs  # doctest: +SKIP
            0
        """
        return self._bind().logs.pending(self._log_id)
