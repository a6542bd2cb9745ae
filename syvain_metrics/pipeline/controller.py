"""The sender's side of control records (:mod:`~syvain_metrics.pipeline.control`): placing
them behind the events logged before them, keeping them in the spool, and applying them.

- ``put_control()`` (any thread, never blocks nor raises) queues a record behind the
  ``log()`` events already queued, like a wait's mark.
- The spooler thread, on reaching it, seals the experiment's open batch, notes how many of
  the experiment's events come before it (its *goal*) and writes it to the spool.
- The *control* thread (started with the first record, not in offline mode) applies each
  record once its goal is reached and the records of its experiment made before it are
  applied, retrying what may succeed later with the delivery's policy, for as long as the
  process lives; a record applied is removed from the spool (a creation is kept, with its
  real id, while events of the run may still wait in the spool).
- Delivery asks :meth:`Controlling._deliver_addressed` to send a batch: the batch of a run
  whose creation waits is held until the service created the run, then sent to its real id
  (with its events' original ids); in offline mode a batch is *parked*: left in the spool,
  unsent, for ``syvain-metrics sync``.

Example:
    >>> class Sender(Controlling): ...  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from syvain_metrics.errors import MetricsApiError, MetricsApiRequestError, RejectedEvent
from syvain_metrics.pipeline.batch import Batch
from syvain_metrics.pipeline.control import (
    ControlRecord,
    batches_of,
    file_number,
    is_pending_id,
    read_record,
    rewrite_record,
    write_record,
)
from syvain_metrics.pipeline.delivery import KEEP_STATUSES, Outcome, deliver
from syvain_metrics.pipeline.spool import CONTROL_GLOB
from syvain_metrics.pipeline.spooler import Spooler

logger = logging.getLogger("syvain_metrics")

_IDLE_LOOK = 0.5
"""Seconds between two looks of the control thread when nothing woke it."""

_DRAIN_LOOK = 0.02
"""Seconds between two looks of ``close()`` waiting for the records to be applied."""

_NOT_HERE = "-"
"""What :meth:`Controlling._await_creation` answers for a run created by another process."""


class Controlling(Spooler):
    """Control records in a sender (see the module docstring)."""

    if TYPE_CHECKING:
        _unready: bool

        def _start(self) -> None:
            """Defined by :class:`~syvain_metrics.pipeline.sender.Sender`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._controls: list[ControlRecord] = []  # placed, not applied yet, in order
        # Taken off the queue by the spooler, not placed yet (lock held to change).
        self._records_in_hand: list[ControlRecord] = []
        self._resolved: dict[str, str] = {}  # placeholder -> the real id
        self._refused_creates: dict[str, RejectedEvent] = {}  # placeholder -> why, for good
        self._creates: dict[str, ControlRecord] = {}  # placeholder -> its creation record
        self._control_wake = threading.Event()
        self._control_thread: threading.Thread | None = None
        self.parked = 0

    # -- any thread ----------------------------------------------------------------------

    def put_control(self, record: ControlRecord) -> bool:
        """Queue ``record`` behind the events queued so far; False (and nothing done) once
        the sender has stopped. Never blocks, never raises."""
        if self.stopped:
            return False
        if self._unready:
            self._start()  # the first thing a run sends may be its creation, before any log()
        # One append, nothing else: an interrupt cannot leave the record half put (counted
        # as waiting but never queued, or the reverse).
        self._queue.append(record)
        self._bell.ring()  # placed by the spooler's next pass, at once
        return True

    def controls_pending(self, experiment_id: str | None = None) -> int:
        """Control records (of ``experiment_id``, or all) not applied yet, queued included.

        Example:
            >>> session.logs.sender.controls_pending()  # doctest: +SKIP
            0
        """
        with self._lock:
            queue = self._queue
            queued = [item for item in list(queue) if type(item) is ControlRecord] if queue else []
            return sum(
                1
                for record in (*queued, *self._records_in_hand, *self._controls)
                if experiment_id is None or record.experiment_id == experiment_id
            )

    def resolved_id(self, experiment_id: str) -> str | None:
        """The real id of a run created by a record (``None`` while it waits)."""
        return self._resolved.get(experiment_id)

    def with_placeholders(self, experiment_ids: list[str]) -> list[str]:
        """``experiment_ids`` and the placeholders of the runs among them that a record
        created here: events and records queued before the creation was applied are filed
        under the placeholder, and a read of the real id must wait for them too.

        Example:
            >>> session.logs.sender.with_placeholders(["exp-1"])  # doctest: +SKIP
            ['exp-1', 'pending-0a1b...']
        """
        wanted = set(experiment_ids)
        extra = [key for key, real in list(self._resolved.items()) if real in wanted]
        return [*experiment_ids, *(key for key in extra if key not in wanted)]

    # -- the spooler thread ----------------------------------------------------------------

    def _take(self, item: Any) -> None:
        if type(item) is ControlRecord:
            self._records_in_hand.append(item)  # still counted as waiting until placed

    def _place(self, item: Any) -> None:
        if isinstance(item, ControlRecord):
            self._place_control(item, queued=True)
        else:
            super()._place(item)

    def _place_control(self, record: ControlRecord, *, queued: bool = False) -> None:
        key = record.experiment_id
        box = self._outboxes.get(key)
        if box is not None and box.open_count:
            self._seal(key, box)  # its events go before it, in a batch numbered before it
        record.goal = 0 if box is None else box.collected
        spool = self.spool
        if spool is not None and self._health.writing:
            try:
                write_record(spool.directory, next(self._numbers), record)
            except OSError as error:
                logger.warning(
                    "syvain_metrics: the %s could not be written to the spool (%s); it is "
                    "held in memory only",
                    record.describe(),
                    error,
                )
        with self._changed:
            if queued:
                self._records_in_hand.remove(record)
            if key in self._refused_creates:
                # Its run could not be created here: the record waits in the spool for
                # `syvain-metrics sync`, and nothing waits for it in this process.
                self._changed.notify_all()
                return
            self._controls.append(record)
            if record.kind == "create":
                self._creates[key] = record
            self._changed.notify_all()
        if not self._uplink.offline and self._uplink.control is not None:
            self._start_control_thread()
        self._control_wake.set()

    def _adopt_children(self, targets: tuple[str, ...] | None) -> int:
        """Take over dead children's batches, then their control records (an annotation of a
        non-finite value logged by a worker, a run it created): each placed behind the
        child's batches, in the child's order, and moved to this process's spool."""
        known = len(self._adopted)
        adopted = super()._adopt_children(targets)
        for leftover in self._adopted[known:]:
            for path in sorted(leftover.directory.glob(CONTROL_GLOB), key=file_number):
                try:
                    record = read_record(path)
                except (OSError, ValueError):
                    # Left where it is, for `syvain-metrics sync` to report.
                    logger.warning("syvain_metrics: skipping unreadable spool file %s", path)
                    continue
                self._place_control(record)
                if record.path != path:  # now in this process's spool
                    with contextlib.suppress(OSError):
                        path.unlink()
        return adopted

    def _check_marks(self) -> None:
        super()._check_marks()
        if self._controls:
            self._control_wake.set()  # an answer may have reached a record's goal

    # -- the control thread ----------------------------------------------------------------

    def _start_control_thread(self) -> None:
        if self._control_thread is None:
            self._control_thread = threading.Thread(
                target=self._control_loop, name="syvain-metrics-control", daemon=True
            )
            self._control_thread.start()

    def _control_loop(self) -> None:
        while not self._stopping:
            record = self._next_due()
            if record is None:
                self._control_wake.wait(_IDLE_LOOK)
                self._control_wake.clear()
                continue
            try:
                self._apply(record)
            except Exception:  # pragma: no cover - the loop must outlive any surprise
                logger.exception("syvain_metrics: applying a %s failed", record.describe())
                self._pause(_IDLE_LOOK)

    def _next_due(self) -> ControlRecord | None:
        """The first record that may be applied now: its creation is done, the records of its
        experiment before it are applied, and its events have their answers."""
        with self._lock:
            blocked: set[str] = set()
            for record in self._controls:
                key = record.experiment_id
                if key in blocked:
                    continue
                blocked.add(key)  # later records of this run wait for this one
                if record.kind == "create":
                    return record
                if is_pending_id(key) and key not in self._resolved:
                    continue  # its run is not created (yet, or here): it waits
                box = self._outboxes.get(key)
                if box is None or box.done >= record.goal:
                    return record
        return None

    def _apply(self, record: ControlRecord) -> None:
        control = self._uplink.control
        assert control is not None  # the thread starts only with one
        target = None if record.kind == "create" else self._resolved.get(record.experiment_id)
        if target is None and record.kind != "create":
            target = record.experiment_id
        failures = 0
        while True:
            try:
                data = control(record, target)
                break
            except MetricsApiRequestError as error:
                if not error.retryable:
                    self._refused(record, error.status_code, str(error))
                    return
                pause = self._uplink.policy.delivery_wait(failures, error.retry_after)
                reason: Exception = error
            except MetricsApiError as error:  # a broken answer: the contract says retry
                pause = self._uplink.policy.delivery_wait(failures)
                reason = error
            except Exception as error:  # the HTTP libraries failing: not worth a tight loop
                pause = max(self._uplink.policy.delivery_wait(failures), 1.0)
                reason = error
            failures += 1
            if failures in (1, 10) or failures % 100 == 0:
                logger.warning(
                    "syvain_metrics: the %s is not applied yet (try %d, next in %.1f s): %s",
                    record.describe(),
                    failures,
                    pause,
                    reason,
                )
            if self._pause(pause):
                return  # stays in the spool for `syvain-metrics sync`
        self._applied(record, data)

    def _applied(self, record: ControlRecord, data: dict[str, Any]) -> None:
        if record.kind == "create":
            real = str(data["id"])
            record.resolved_id = real
            if record.path is not None:
                try:  # kept, with its real id, while events of the run may wait in the spool
                    rewrite_record(record.path, record)
                except OSError as error:
                    logger.warning("syvain_metrics: cannot update %s: %s", record.path, error)
            with self._changed:
                self._resolved[record.experiment_id] = real
        elif record.path is not None:
            with contextlib.suppress(FileNotFoundError):
                record.path.unlink()
        with self._changed:
            self._controls.remove(record)
            self._changed.notify_all()
        self._tell(record, data)
        self._control_wake.set()

    def _refused(self, record: ControlRecord, status: int | None, message: str) -> None:
        """A record the service refused for good: reported, and left in the spool when the
        refusal is about the run or the credentials (a later ``sync`` may succeed)."""
        logger.warning("syvain_metrics: the service refused the %s: %s", record.describe(), message)
        keep = status in KEEP_STATUSES or record.kind == "create"
        if record.path is not None and not keep:
            with contextlib.suppress(OSError):
                record.path.unlink()
        with self._changed:
            dropped = [record]
            if record.kind == "create":
                self._refused_creates[record.experiment_id] = RejectedEvent(
                    {}, f"the run could not be created: {message}", status
                )
                # The run's other records cannot be applied here: left in the spool for sync.
                dropped = [r for r in self._controls if r.experiment_id == record.experiment_id]
            for gone in dropped:
                self._controls.remove(gone)
            self._changed.notify_all()
        self._control_wake.set()

    @staticmethod
    def _tell(record: ControlRecord, data: dict[str, Any]) -> None:
        if record.on_applied is None:
            return
        try:
            record.on_applied(data)
        except Exception:  # pragma: no cover - a callback must not stop the thread
            logger.exception("syvain_metrics: updating the experiment after its %s", record.kind)

    # -- delivery ----------------------------------------------------------------------------

    def _deliver_addressed(self, batch: Batch) -> Outcome:
        """Send ``batch`` (called by the delivery): parked in offline mode; to the real id
        once the run of a placeholder is created."""
        if self._uplink.offline:
            with self._lock:
                self.parked += batch.count
            return Outcome(keep=True, parked=True)
        key = batch.experiment_id
        if is_pending_id(key):
            real = self._await_creation(key)
            if real is None:
                return Outcome(finished=False)  # stopping: the batch stays in the spool
            if real is _NOT_HERE:
                return Outcome(keep=True, parked=True)
            if isinstance(real, RejectedEvent):
                refusal = real
                return Outcome(
                    rejected=[replace(refusal, event=event) for event in batch.events()],
                    keep=True,
                )
            batch = replace(batch, experiment_id=real)  # same body, same Idempotency-Key
        return deliver(self._uplink, batch, wait=self._pause)

    def _next_sendable(self) -> Batch | None:
        """Take the first ready batch that may be sent now (lock held): the batches of a run
        whose creation waits stay ready, in their order, so that they hold no delivery thread
        and the other runs keep flowing; they are taken once the service created the run."""
        ready = self._ready
        for index, batch in enumerate(ready):
            key = batch.experiment_id
            waits = (
                not self._uplink.offline
                and key in self._creates
                and key not in self._resolved
                and key not in self._refused_creates
            )
            if not waits:
                del ready[index]
                return batch
        return None

    def _await_creation(self, key: str) -> str | RejectedEvent | None:
        with self._changed:
            while not self._stopping:
                real = self._resolved.get(key)
                if real is not None:
                    return real
                refused = self._refused_creates.get(key)
                if refused is not None:
                    return refused
                if key not in self._creates:
                    return _NOT_HERE  # a forked child's: its parent or `sync` creates the run
                self._changed.wait(_IDLE_LOOK)
        return None

    # -- closing -------------------------------------------------------------------------------

    def _live_controls(self) -> bool:
        """Whether some record may still be applied here (lock held): not one of a run
        created by another process (a forked child's records of its parent's run)."""
        return any(
            not is_pending_id(r.experiment_id)
            or (r.experiment_id in self._creates and r.experiment_id not in self._refused_creates)
            for r in self._controls
        )

    def _drain_controls(self, deadline: float | None) -> None:
        """While closing: give the records until ``deadline`` (monotonic; ``None``: no limit)
        to be applied; what is left stays in the spool for ``syvain-metrics sync``. Then drop
        the creations whose runs have nothing left in this process's spool."""
        if not self._uplink.offline and self._control_thread is not None:
            # On the user's thread: a short sleep between looks, never a wait on a condition
            # that an interrupt could leave half-acquired.
            while True:
                with self._lock:
                    live = self._live_controls() and not self._stopping
                remaining = None if deadline is None else deadline - time.monotonic()
                if not live or (remaining is not None and remaining <= 0):
                    break
                time.sleep(_DRAIN_LOOK if remaining is None else min(remaining, _DRAIN_LOOK))
        with self._lock:
            resolved = [
                record
                for key, record in self._creates.items()
                if key in self._resolved
                and record.path is not None
                and not any(r.experiment_id == key for r in self._controls)
            ]
        for record in resolved:
            path = record.path
            if path is not None and not batches_of(path.parent, record.experiment_id):
                with contextlib.suppress(OSError):
                    path.unlink()  # nothing of the run waits in the spool any more
