"""Calls about a run that wait in the spool when the service cannot take them now.

- **Creation during an outage.** ``Experiment.create()`` when the service cannot be reached
  (no connection, timeouts, 5xx after the retries) returns an experiment whose creation
  waits in the spool as a control record (:mod:`~syvain_metrics.pipeline.control`), under
  a placeholder id (``pending-...``) that never reaches the wire. ``log()`` works at once;
  the session's sender creates the run when the service answers (idempotently: by slug with
  ``exist_ok``, by its ``Idempotency-Key`` always), then sends its events with their
  original ids; ``syvain-metrics sync`` does the same after the process ended. Once created,
  ``exp.id`` is the real id. Until then, what needs the service (reads, ``exp.url``,
  ``refresh()``) raises :class:`~syvain_metrics.ExperimentNotCreatedError`.
- **Offline mode** (``Session(offline=True)``, ``SYVAIN_METRICS_OFFLINE=1``): every creation,
  status change and annotation waits in the spool, and nothing is sent.
- **Status changes and annotations of such a run** wait in the spool too, behind the events
  logged before them, each status with the time it happened; ``run()``'s transitions do the
  same for any run when the service cannot take them, or while the run's events are still
  on their way: its final status never overtakes its events.
- ``log()`` records an annotation (a metric's first non-finite value, say) with
  :meth:`DeferredCalls._annotate_later`, which never blocks nor raises.

Example:
    >>> exp = sm.Experiment.create("run-1", exist_ok=True)  # the service is down  # doctest: +SKIP
    >>> exp.id                                                                     # doctest: +SKIP
    'pending-5b0c...'
    >>> exp.url                                                                    # doctest: +SKIP
    Traceback (most recent call last):
    syvain_metrics.errors.ExperimentNotCreatedError: Experiment 'run-1' is not created yet...
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from syvain_metrics.client.control import find_by_slug, slug_taken
from syvain_metrics.contract import operations
from syvain_metrics.contract.schemas.annotation import AnnotationCreateRequest
from syvain_metrics.contract.schemas.base import load_request
from syvain_metrics.contract.schemas.envelope import IN_PROGRESS
from syvain_metrics.errors import (
    ExperimentNotCreatedError,
    MetricsApiError,
    MetricsApiRequestError,
)
from syvain_metrics.pipeline.batch import new_idempotency_key
from syvain_metrics.pipeline.control import ControlRecord, is_pending_id, new_pending_id
from syvain_metrics.pipeline.logs import INTERRUPT_FLUSH_SECONDS
from syvain_metrics.resources.annotation import Annotation
from syvain_metrics.resources.experiment.base import ExperimentBase

if TYPE_CHECKING:
    from typing_extensions import Self

    from syvain_metrics.client.session import Session

logger = logging.getLogger("syvain_metrics")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _creation_waits(error: MetricsApiRequestError) -> bool:
    """Whether a creation that failed now may succeed later: an outage, or the same call
    (its Idempotency-Key) still in progress on a slow service — the key replayed later gets
    its answer.

    Example:
        >>> _creation_waits(MetricsApiRequestError("taken", status_code=409, retryable=False))
        False
    """
    return _outage(error) or getattr(error, "error_code", None) == IN_PROGRESS


SLUG_TAKEN = "slug_exists"
"""The service's error code for a slug another experiment has."""


def _taken_hint(slug: str) -> str:
    """What to write instead of creating a slug that is taken.

    Example:
        >>> _taken_hint("probe")
        "To get the existing run, write sm.Experiment.create('probe', exist_ok=True); for a new run, choose another slug."
    """
    return (
        f"To get the existing run, write sm.Experiment.create({slug!r}, exist_ok=True); "
        "for a new run, choose another slug."
    )


def _outage(error: MetricsApiRequestError) -> bool:
    """Whether a failure says the service cannot be reached or cannot answer now (no
    connection, timeouts, 5xx, 408 or 429 after the retries): what a later try may get
    through. A call of the same key still in progress (409) is not one.

    Example:
        >>> _outage(MetricsApiRequestError("HTTP 503", status_code=503, retryable=True))
        True
        >>> _outage(MetricsApiRequestError("in progress", status_code=409, retryable=True))
        False
    """
    status = error.status_code
    return error.retryable and (status is None or status >= 500 or status in (408, 429))


_STATUS_FIELDS = ("status", "started_at_ms", "done_at_ms", "error_name", "error_detail")


def _updater(
    experiment: DeferredCalls, *, keep_status: bool = False
) -> Callable[[dict[str, Any]], None]:
    """What the sender calls with the service's answer to a record: the experiment object
    takes the new fields (weakly held: a record never keeps an experiment alive).
    ``keep_status``: the answer to a creation or an annotation does not undo a status
    change shown here and still on its way (its own answer brings the service's view)."""
    ref = weakref.ref(experiment)

    def update(data: dict[str, Any]) -> None:
        target = ref()
        if target is None:
            return
        fresh = dict(data)
        if keep_status and target._data.get("status", "created") != "created":
            fresh.update({key: target._data.get(key) for key in _STATUS_FIELDS})
        target._update(fresh)

    return update


class DeferredCalls(ExperimentBase):
    """Creation, status changes and annotations that wait in the spool (see the module
    docstring)."""

    # -- creation --------------------------------------------------------------------

    @classmethod
    def _create_call(
        cls, bound: Session, body: Mapping[str, Any], *, exist_ok: bool, defer: bool
    ) -> Self:
        """Create now; with ``defer``, when the service cannot be reached (or offline), leave
        the creation in the spool and return the run at once."""
        key = new_idempotency_key()  # the same on every try, here, in the sender, in sync
        if bound.offline:
            return cls._create_later(bound, body, exist_ok=exist_ok, key=key, reason=None)
        try:
            data = bound.call(operations.CREATE_EXPERIMENT, body=body, idempotency_key=key)
            return cls._from_wire(data["experiment"], bound)
        except MetricsApiRequestError as error:
            if defer and _creation_waits(error):
                return cls._create_later(bound, body, exist_ok=exist_ok, key=key, reason=error)
            if not (exist_ok and slug_taken(error)):
                if error.error_code == SLUG_TAKEN:
                    raise error.with_hint(_taken_hint(str(body["slug"]))) from None
                raise
        try:
            return cls._from_wire(find_by_slug(bound, str(body["slug"])), bound)
        except MetricsApiRequestError as error:
            if defer and _outage(error):
                return cls._create_later(bound, body, exist_ok=exist_ok, key=key, reason=error)
            raise

    @classmethod
    def _create_later(
        cls,
        bound: Session,
        body: Mapping[str, Any],
        *,
        exist_ok: bool,
        key: str,
        reason: MetricsApiError | None,
    ) -> Self:
        record = ControlRecord.create(body, exist_ok=exist_ok, key=key)
        experiment = cls(
            {
                "id": record.experiment_id,
                "slug": body["slug"],
                "description": body.get("description", ""),
                "metadata": dict(body.get("metadata") or {}),
                "status": "created",
                "created_at_ms": _now_ms(),
            },
            session=bound,
        )
        experiment._log_id = record.experiment_id  # for the session's life (see base.py)
        record.on_applied = _updater(experiment, keep_status=True)
        if bound.closed or not bound.logs.put_control(record):
            raise MetricsApiError("This session is closed; open a new one with sm.connect().")
        if reason is not None:
            logger.warning(
                "syvain_metrics: the service cannot be reached (%s); experiment %r will be "
                "created when it answers, its log() events wait in the spool until then "
                "(`syvain-metrics sync` sends them if this process ends first)",
                reason,
                body["slug"],
            )
        return experiment

    # -- what needs the service --------------------------------------------------------------

    def _not_created(self, what: str) -> ExperimentNotCreatedError:
        offline = self._session is not None and self._session.offline
        why = (
            "the session is offline: it waits in the spool for `syvain-metrics sync`"
            if offline
            else "its creation waits in the spool until the service answers (this "
            "session's sender creates it, or `syvain-metrics sync` after the process ended)"
        )
        return ExperimentNotCreatedError(
            f"Experiment {self.slug!r} is not created yet, so {what} is not available: {why}. "
            "log() and status changes work meanwhile."
        )

    @property
    def url(self) -> str:
        """The dashboard page, always absolute (raises
        :class:`~syvain_metrics.ExperimentNotCreatedError` while the run's creation waits)."""
        if is_pending_id(self.id):
            raise self._not_created("its dashboard page (exp.url)")
        return super().url

    def _settle_logs(self) -> None:
        if is_pending_id(self.id):
            raise self._not_created("reading it")
        super()._settle_logs()

    def _defers_calls(self) -> bool:
        """Whether a status change or annotation must wait in the spool: the run is not
        created yet, the session is offline, or earlier ones still wait (order is kept)."""
        session = self._bind()
        return (
            session.offline
            or is_pending_id(self.id)
            or session.logs.controls_pending(self._log_id) > 0
        )

    # -- status changes -----------------------------------------------------------------------

    def _status_later(self, body: Mapping[str, Any], at_ms: int | None = None) -> Self:
        """Leave a status change in the spool, behind the events logged so far, with the time
        it happened; this object shows it at once."""
        when = body.get("timestamp_ms")
        when = (at_ms if at_ms is not None else _now_ms()) if when is None else int(when)
        status = str(body["status"])
        record = ControlRecord.status(self._log_id, status, body.get("error"), timestamp_ms=when)
        record.on_applied = _updater(self)
        if not self._bind().logs.put_control(record):
            logger.warning(
                "syvain_metrics: the session is closed: the status %r of %s is not recorded",
                status,
                self.slug,
            )
            return self
        local = dict(self._data)
        local["status"] = status
        if status == "running" and local.get("started_at_ms") is None:
            local["started_at_ms"] = when
        if status in ("done", "error"):
            local["done_at_ms"] = when
        error = body.get("error") if status == "error" else None
        local["error_name"] = None if error is None else error.get("name")
        local["error_detail"] = None if error is None else error.get("detail")
        self._data = local
        return self

    def _status_now_or_later(self, body: Mapping[str, Any], *, attempts: int | None = None) -> Self:
        """Apply a status change now; leave it in the spool, with the time it happened, when
        calls about the run wait already or the service cannot be reached (a refusal of the
        service is raised). ``attempts``: tries first (the session's retry policy by
        default)."""
        at_ms = _now_ms()
        if self._defers_calls():
            return self._status_later(body, at_ms)
        try:
            data = self._bind().call(
                operations.UPDATE_EXPERIMENT_STATUS, self.id, body=body, attempts=attempts
            )
        except MetricsApiRequestError as failure:
            if not _outage(failure):
                raise
            logger.warning(
                "syvain_metrics: the service cannot be reached (%s); the status %r of %s "
                "waits in the spool with its time",
                failure,
                body["status"],
                self.slug,
            )
            return self._status_later(body, at_ms)
        self._update(data["experiment"])
        return self

    def _record_status(
        self,
        status: str,
        error: Mapping[str, Any] | None,
        *,
        after_events: bool,
        strict: bool,
        attempts: int | None = None,
    ) -> None:
        """A transition of ``run()``: applied now when possible (see
        :meth:`_status_now_or_later`); left in the spool behind the run's events when they
        are still on their way (``after_events``). ``strict``: a refusal of the service is
        raised (else logged)."""
        if not self._bind().is_main_process:
            return  # only rank 0 of a job changes the status
        body: dict[str, Any] = {"status": status}
        if error is not None:
            body["error"] = dict(error)
        if after_events:
            self._status_later(body)
            return
        try:
            self._status_now_or_later(body, attempts=attempts)
        except MetricsApiError as failure:
            if strict:
                raise
            logger.warning("could not mark %s as %s: %s", self.slug, status, failure)

    def _interrupted_wait(self, wait: float) -> float:
        """After Ctrl-C: the end of the run, and the interpreter's exit after it, take at
        most 10 s in all, like after SIGTERM (see ``INTERRUPT_FLUSH_SECONDS``); what is left
        stays in the spool (the final status with it)."""
        return self._bind().logs.bound_exit(min(wait, INTERRUPT_FLUSH_SECONDS))

    # -- annotations ------------------------------------------------------------------------------

    def _annotate_later(self, text: str, metadata: Mapping[str, Any]) -> None:
        """Record an annotation behind the events logged so far, sent by the sender (or
        ``sync``); for ``log()``: never blocks, never raises (a failure is logged).

        Example:
            >>> exp._annotate_later("loss became NaN at step 40,000", {"step": 40000})  # doctest: +SKIP
        """
        try:
            body = load_request(
                AnnotationCreateRequest(), {"annotation": text, "metadata": dict(metadata)}
            )
            record = ControlRecord.annotation(self._log_id, body["annotation"], body["metadata"])
            self._bind().logs.put_control(record)
        except Exception as error:
            logger.warning(
                "syvain_metrics: the annotation %r is not recorded: %s", text[:80], error
            )

    def _annotation_later(self, body: Mapping[str, Any]) -> Annotation:
        """``annotate()`` of a run whose calls wait: the annotation waits in the spool too;
        the object returned shows it with a placeholder id."""
        bound = self._bind()
        record = ControlRecord.annotation(self._log_id, body["annotation"], body["metadata"])
        bound.logs.put_control(record)
        return Annotation(
            {
                "id": new_pending_id(),
                "experiment_id": self.id,
                "annotation": body["annotation"],
                "metadata": dict(body["metadata"]),
                "created_at_ms": _now_ms(),
            },
            session=bound,
        )
