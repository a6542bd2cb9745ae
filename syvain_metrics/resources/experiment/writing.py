"""Writing metrics: ``ingest()`` for any number of metrics, ``log()`` / ``flush()`` for a
training loop.

Example:
    >>> exp.ingest([{"name": "loss", "value": 0.4, "step": 1}], sync=True)  # doctest: +SKIP
    IngestResult(count=1, requests=1, mode='sync')
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, SupportsFloat, SupportsIndex, overload

from marshmallow import ValidationError

from syvain_metrics.contract import operations
from syvain_metrics.contract.event_ids import record_event_id
from syvain_metrics.contract.limits import MAX_METRICS_PER_INGEST
from syvain_metrics.contract.schemas.base import flatten_messages
from syvain_metrics.contract.schemas.ingest import (
    IngestReply,
    MetricBatch,
    check_metrics,
    is_plain_context,
    is_plain_metric,
    is_plain_name,
)
from syvain_metrics.contract.schemas.options import check_flag
from syvain_metrics.errors import MetricsApiError, MetricsValidationError, PartialIngestError
from syvain_metrics.pipeline.batch import queued_event
from syvain_metrics.resources.experiment.deferred import DeferredCalls
from syvain_metrics.resources.experiment.values import (
    NO_VALUE,
    as_number,
    as_step,
    flatten_metrics,
    is_number,
    non_finite_kind,
    plain,
    plain_record,
)
from syvain_metrics.resources.point import MetricPoint
from syvain_metrics.tables.frames import progress_bar

_BATCH = MetricBatch()
_CHECK_WINDOW = 10_000
"""Metrics validated together before an ingest sends anything (a window's columns are
temporary)."""
_FLOAT_MAX = sys.float_info.max
_FLOAT_MIN = -_FLOAT_MAX


def _kind_of(value: Any) -> str:
    """``None``, or ``a str``: what a skipped value was, without its (maybe long) text."""
    return "None" if value is None else f"a {type(value).__name__}"


def _copied_metadata(event: Mapping[str, Any]) -> dict[str, Any] | None:
    """A checked event's metadata, copied deep: the caller may change theirs afterwards."""
    metadata = event.get("metadata")
    return None if metadata is None else json.loads(json.dumps(metadata))


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


class MetricWriting(DeferredCalls):
    """``ingest()``, ``log()``, ``flush()`` and ``pending_logs`` of an experiment."""

    def _with_ids(self, metrics: Sequence[Any], convert: bool = True) -> list[Any]:
        """Metrics as dicts with ``client_event_id`` (derived when missing), numpy scalars
        converted when ``convert``."""
        items: list[Any] = []
        for item in metrics:
            if convert:
                item = plain_record(item)
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

    def _prepare(self, metrics: Sequence[Any], convert: bool = True) -> list[dict[str, Any]]:
        """Wire-ready metrics (validated, converted, ids given)."""
        try:
            prepared: list[dict[str, Any]] = _BATCH.deserialize(self._with_ids(metrics, convert))
        except ValidationError as error:
            raise MetricsValidationError(flatten_messages({"metrics": error.messages})) from None
        return prepared

    @staticmethod
    def _check_all(items: Sequence[Any]) -> bool:
        """Validate every metric before anything is sent, a window at a time, in place: no
        copy of the whole input is made. ``True`` when some record holds numpy scalars
        (the requests' bodies convert them again; else they skip that pass)."""
        converted = False
        for start in range(0, len(items), _CHECK_WINDOW):
            originals = items[start : start + _CHECK_WINDOW]
            window = [
                m.to_dict() if isinstance(m, MetricPoint) else plain_record(m) for m in originals
            ]
            converted = converted or any(
                w is not m and type(m) is dict for w, m in zip(window, originals, strict=True)
            )
            try:
                check_metrics(window, offset=start)
            except ValidationError as error:
                raise MetricsValidationError(
                    flatten_messages({"metrics": error.messages})
                ) from None
        return converted

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
        convert = self._check_all(items)
        bound = self._bind()
        reply = IngestReply()
        total = len(items)
        stored = 0
        requests = 0
        mode: str | None = None
        bar = progress_bar(total, f"ingest {self.slug or self.id}") if progress else None
        try:
            for start in range(0, total, MAX_METRICS_PER_INGEST):
                chunk = self._prepare(items[start : start + MAX_METRICS_PER_INGEST], convert)
                try:
                    data = bound.call(
                        operations.INGEST_METRICS,
                        self.id,
                        reply=reply,
                        query={"sync": sync},
                        body={"data": chunk},
                    )
                except MetricsApiError as error:
                    pending = chunk + self._prepare(items[start + len(chunk) :], convert)
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

    @overload
    def log(
        self,
        name: str,
        value: SupportsFloat,
        *,
        step: SupportsIndex | None = None,
        metadata: Mapping[str, Any] | None = None,
        timestamp_ms: int | None = None,
        client_event_id: str | None = None,
    ) -> None: ...

    @overload
    def log(
        self,
        metrics: Mapping[str, object],
        /,
        *,
        step: SupportsIndex | None = None,
        metadata: Mapping[str, Any] | None = None,
        timestamp_ms: int | None = None,
    ) -> None: ...

    def log(
        self,
        name: str | Mapping[str, object],
        value: SupportsFloat = NO_VALUE,
        *,
        step: SupportsIndex | None = None,
        metadata: Mapping[str, Any] | None = None,
        timestamp_ms: int | None = None,
        client_event_id: str | None = None,
    ) -> None:
        """Record metrics from a training loop: one metric, or a mapping of them at one step.

            exp.log("loss", 0.25, step=10)                        # one metric
            exp.log({"loss": 0.25, "acc": 0.91}, step=10)         # several, one step
            exp.log({"train": {"loss": 0.25}}, step=10)           # nested: "train/loss"

        ``log()`` checks the call, queues the events and returns: it never waits for the
        network and never raises a network error. The session's sender delivers them within
        ``flush_interval`` (1 s), keeping them in a spool on disk until the service
        acknowledges them, retrying through outages for as long as the process lives. Safe
        from any thread.

        Values: Python numbers, numpy scalars (``np.float32``, ``np.int64``, ...) and torch
        tensors of one element (``.item()`` is called, a device sync for a GPU tensor);
        ``step`` may be a numpy integer too. A non-finite value (NaN, inf, -inf) is not
        sent and never raises: it is counted (``exp.non_finite``, and what ``flush()``,
        ``run()`` and ``close()`` report), the first of each name per run gives one
        ``UserWarning`` and an annotation on the run ("loss became NaN at step 40,000").

        Mapping form: every value shares ``step``, ``metadata`` and the timestamp of the
        call; nested mappings are flattened with ``/``. A value that is not a number (a
        string, a list, ``None``, a bool) is skipped with one ``UserWarning`` per name per
        run. ``client_event_id`` is for the one-metric form only.

        Bad input raises :class:`~syvain_metrics.MetricsValidationError` at once, before
        anything of the call is queued: a bad name (not a string, empty, over 500
        characters), step, timestamp or metadata (which must be finite JSON). Every value is
        its own event, with its own ``client_event_id`` (used again on every retry, so
        nothing is stored twice): two values at the same step are both kept. Pass
        ``client_event_id`` yourself to make a re-run of the same code idempotent. Without
        ``timestamp_ms``, the event carries the time of the call (not of its delivery).

        An experiment that came from the service finished (``done`` or ``error``: from
        ``Experiment.create(..., exist_ok=True)``, ``get()`` or a list) and was not entered
        since raises :class:`~syvain_metrics.RunFinishedError` before anything is queued
        (a cell run again would store every value twice); a run this process ended takes
        more values (an evaluation after ``run()``).

        Example:
            >>> exp.log("loss", 0.25, step=10, metadata={"split": "train"})  # doctest: +SKIP
            >>> exp.log({"loss": 0.25, "acc": np.float32(0.9)}, step=10)      # doctest: +SKIP
        """
        if self._arrived_finished:
            self._refuse_log()
        if type(name) is not str and isinstance(name, Mapping):
            self._log_many(name, value, step, metadata, timestamp_ms, client_event_id)
            return
        if value is NO_VALUE:
            raise MetricsValidationError({"value": ["Missing: log(name, value) needs a value."]})
        number: Any = value
        kind = type(number)
        if kind is not float and kind is not int:
            number = as_number(number)  # numpy and torch scalars: then the fast path below
        index: Any = step
        if index is not None and type(index) is not int:
            index = as_step(index)
        session = self._bind()
        if session.closed:  # nothing would ever send it
            raise MetricsApiError("This session is closed; log() needs an open session.")
        sender = session.logs.sender
        event_id = sender.ids.next_id() if client_event_id is None else client_event_id
        if timestamp_ms is None:
            # The time of the call, not of delivery, which may come much later after an outage.
            timestamp_ms = time.time_ns() // 1_000_000
        if is_plain_metric(event_id, name, number, index, metadata, timestamp_ms):
            sender.put(
                queued_event(self._log_id, event_id, name, number, index, metadata, timestamp_ms)
            )
            return
        fields: dict[str, Any] = {"client_event_id": event_id, "name": name, "value": number}
        fields["step"] = index
        if metadata is not None:
            fields["metadata"] = plain(metadata)  # numpy scalars: off the fast path
        if timestamp_ms is not None:
            fields["timestamp_ms"] = plain(timestamp_ms)
        non_finite = non_finite_kind(number)
        if non_finite is not None:
            # Checked like any event (a bad name still raises), then counted, not sent.
            checked = fields
            if not is_plain_metric(event_id, name, 0.0, index, metadata, timestamp_ms):
                (checked,) = self._prepare([{**fields, "value": 0.0}])
            told = self._skip_non_finite(checked["name"], non_finite, checked["step"])
            if told is not None:
                warnings.warn(told, UserWarning, stacklevel=2)
            return
        (event,) = self._prepare([fields])
        sender.put(
            queued_event(
                self._log_id,
                event_id,
                event["name"],
                event["value"],
                event["step"],
                _copied_metadata(event),
                event.get("timestamp_ms"),
            )
        )

    def _log_many(
        self,
        metrics: Mapping[Any, Any],
        value: Any,
        step: Any,
        metadata: Mapping[str, Any] | None,
        timestamp_ms: int | None,
        client_event_id: str | None,
    ) -> None:
        """``log(mapping, ...)``: everything checked first, then every number queued, then
        what was skipped told."""
        if value is not NO_VALUE:
            raise MetricsValidationError(
                {"value": ["Not with a mapping of metrics: the mapping holds the values."]}
            )
        if client_event_id is not None:
            raise MetricsValidationError(
                {"client_event_id": ["Not with a mapping of metrics: each value gets its own."]}
            )
        pairs = flatten_metrics(metrics)
        step = as_step(step)
        session = self._bind()
        if session.closed:
            raise MetricsApiError("This session is closed; log() needs an open session.")
        if timestamp_ms is None:
            timestamp_ms = time.time_ns() // 1_000_000
        shared: Mapping[str, Any] | None = metadata
        if not is_plain_context(step, metadata, timestamp_ms):
            step, shared, timestamp_ms = self._check_shared(step, metadata, timestamp_ms)
        numbers: list[tuple[str, int | float]] = []
        non_finite: list[tuple[str, str]] = []
        non_numeric: list[tuple[str, Any]] = []
        for metric, raw in pairs:
            if not is_plain_name(metric):  # only a name UTF-8 cannot carry is left
                raise MetricsValidationError(
                    {f"metrics[{metric!r}]": ["A metric name must be text UTF-8 can carry."]}
                )
            number = as_number(raw)
            if not is_number(number):
                non_numeric.append((metric, raw))
                continue
            try:
                if type(number) is not int:
                    number = float(number)
                elif not _FLOAT_MIN <= number <= _FLOAT_MAX:
                    raise OverflowError
            except OverflowError:
                raise MetricsValidationError(
                    {f"metrics[{metric!r}]": ["Must be a number a float can hold."]}
                ) from None
            kind = non_finite_kind(number)
            if kind is None:
                numbers.append((metric, number))
            else:
                non_finite.append((metric, kind))
        # Everything is checked: from here on nothing raises before the numbers are queued.
        sender = session.logs.sender
        ids = sender.ids
        for metric, number in numbers:
            sender.put(
                queued_event(
                    self._log_id, ids.next_id(), metric, number, step, shared, timestamp_ms
                )
            )
        told = [self._skip_non_finite(metric, kind, step) for metric, kind in non_finite]
        told += [
            f"syvain_metrics: log() skipped {metric!r} of run {self._label!r}: "
            f"{_kind_of(raw)} is not a number (told once per name per run)"
            for metric, raw in non_numeric
            if session.logs.skipped.first_warning(self._log_id, metric)
        ]
        for message in told:
            if message is not None:
                warnings.warn(message, UserWarning, stacklevel=3)

    def _check_shared(
        self, step: Any, metadata: Mapping[str, Any] | None, timestamp_ms: int
    ) -> tuple[int | None, dict[str, Any] | None, int | None]:
        """The shared fields of a mapping call, checked by the schema (for a precise error)
        and converted; metadata copied deep, once for every event of the call."""
        probe: dict[str, Any] = {"client_event_id": "sm-probe", "name": "probe", "value": 0.0}
        probe.update(step=step, metadata=plain(metadata), timestamp_ms=plain(timestamp_ms))
        try:
            (event,) = self._prepare([probe])
        except MetricsValidationError as error:
            raise MetricsValidationError(
                {key.removeprefix("metrics[0]."): found for key, found in error.errors.items()}
            ) from None
        return event["step"], _copied_metadata(event), event.get("timestamp_ms")

    def _skip_non_finite(self, name: str, kind: str, step: int | None) -> str | None:
        """Count a non-finite value instead of sending it; the first of its name in this run
        is annotated (off this thread: it cannot raise or block here) and its warning
        returned, for the caller to give once everything else is done (a warning may raise
        where warnings are errors, ``-W error``)."""
        label = self._label
        if not self._bind().logs.skipped.count_non_finite(self._log_id, name, label=label):
            return None
        where = "(logged without a step)" if step is None else f"at step {step:,}"
        text = f"{name} became {kind} {where}"
        self._annotate_later(text, {"metric": name, "step": step, "value": kind})
        return (
            f"syvain_metrics: {text} in run {label!r}; non-finite values are not sent, only "
            "counted (exp.non_finite), and this first one is annotated on the run"
        )

    @property
    def _label(self) -> str:
        return self.slug or self.id

    @property
    def non_finite(self) -> dict[str, int]:
        """How many non-finite values (NaN, inf, -inf) ``log()`` skipped for this run in
        this process, by metric name; they are never sent.

        Example:
            >>> exp.log("loss", float("nan"), step=40_000)  # doctest: +SKIP
            >>> exp.non_finite  # doctest: +SKIP
            {'loss': 1}
        """
        return self._bind().logs.skipped.non_finite(self._log_id)

    def flush(self, timeout: float | None = None) -> int:
        """Wait until every ``log()`` event of this experiment logged so far (from any thread)
        is stored; returns how many it waited for. ``timeout=None`` waits as long as it takes.

        Raises :class:`~syvain_metrics.FlushError` if the wait ran out (those events are still
        spooled and retrying) or if the service rejected some events (each listed with its
        answer; the others are stored). Rejected events are reported once.

        In offline mode (``Session(offline=True)``) nothing is sent: the events wait in the
        spool for ``syvain-metrics sync``, and ``flush()`` returns 0 (none stored) once they
        are all there, without raising. So does a forked worker's ``flush()`` of a run its
        parent is still creating: its parent (or ``sync``) sends them.

        Non-finite values ``log()`` skipped are reported too: ``FlushError.non_finite`` has
        the run's counts by name; when nothing else failed, the values skipped since the
        last such warning are told by one ``UserWarning`` ("2 non-finite values of loss were
        not sent (run 'run-1')"), so each is told once by a report that succeeded.

        Example:
            >>> exp.flush(timeout=60)  # doctest: +SKIP
            100
        """
        logs = self._bind().logs
        settled = logs.wait([self._log_id], timeout)
        error = logs.incomplete(settled, [self._log_id])
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
