"""The session's sender: ``log()`` enqueues, background threads do everything else.

- ``log()`` appends ``(experiment_id, event)`` to a deque: no lock, no I/O, no network.
  Nothing it does can be left half-done by an interrupt or a signal handler that logs
  too (:mod:`~syvain_metrics.pipeline.state`): it rings a socket to wake the spooler.
  Beyond :data:`QUEUE_LIMIT` queued events (a flood), it sleeps in short slices until the
  spooler has taken the queue, so memory stays bounded and nothing is dropped.
- The *spooler* thread wakes every :data:`SPOOL_INTERVAL` seconds (or as soon as a full
  request is waiting), encodes the new events once, appends them to the spool, and groups
  them per experiment into batches of up to 1,000, sealing a batch when it is full or
  ``interval`` seconds old.
- :data:`MAX_IN_FLIGHT` *delivery* threads each take the next sealed batch and send it,
  one request at a time, retrying without limit while the process lives
  (:mod:`~syvain_metrics.pipeline.delivery`), and remove each batch from the spool once
  every event in it has an answer. Batches of one experiment may be answered in any order
  (each event carries its own step and timestamp); what waits count is kept by position
  (:class:`~syvain_metrics.pipeline.state.Outbox`), so a wait still ends only once every
  event logged before it has an answer.

Spooling never waits for the network, so a slow or absent service costs the training
loop nothing, and a hard kill loses at most the last :data:`SPOOL_INTERVAL` seconds of
events. Memory stays bounded during an outage of any length: at most
:data:`BATCHES_IN_MEMORY` sealed batches keep their bytes in memory; the others are read
back from the spool when their turn comes (without a spool, every pending event stays in
memory, as its JSON: 120-160 bytes for a typical event).

A *mark* is how anyone waits: it is queued behind everything logged before it, so when the
spooler reaches it, it knows exactly which events it covers.

Batches refused for reasons of the run or the credentials (401, 403, 404) are reported and
kept in the spool, so that ``syvain-metrics sync`` can replay them later (with the right
API key, say); batches refused for their content are reported and removed.

The spooler creates the spool on its first pass, so ``log()`` never touches the disk.
When the spool cannot be created or written (a full disk), logging carries on in memory
and the spool is tried again later (:mod:`~syvain_metrics.pipeline.spool_health`): once
the disk takes writes again, the batches held in memory meanwhile are written too, the one
being sent included, so a kill loses no more than before. Until then, ``flush()``, the end
of ``run()`` and ``close()`` say how many events a kill would lose
(:meth:`Sender.take_spool_notice`).

The threads share one :class:`~syvain_metrics.pipeline.state.SenderState`; the spooler's
side is :mod:`~syvain_metrics.pipeline.spooler`, the delivery threads' is here: each batch
goes through :meth:`Sender._handle` (:meth:`Sender._deliver`, then :meth:`Sender._settle`).

Example:
    >>> sender = session.sender                                   # doctest: +SKIP
    >>> sender.put(queued_event("exp-1", "id-1", "loss", 1.0, 0, None, None))  # doctest: +SKIP
    >>> sender.wait(["exp-1"], timeout=10).pending                 # doctest: +SKIP
    0
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from typing import TYPE_CHECKING

from syvain_metrics.contract.limits import MAX_METRICS_PER_INGEST
from syvain_metrics.errors import MetricsApiError, RejectedEvent
from syvain_metrics.pipeline.batch import Batch, QueuedEvent
from syvain_metrics.pipeline.controller import Controlling
from syvain_metrics.pipeline.delivery import KEEP_STATUSES, Outcome, Uplink, kept_note
from syvain_metrics.pipeline.spool import set_aside
from syvain_metrics.pipeline.spool_files import load_batch
from syvain_metrics.pipeline.state import (
    IDLE_SLICE,
    MAX_IN_FLIGHT,
    QUEUE_LIMIT,
    REJECTED_KEPT,
    SPOOL_INTERVAL,
    Backlog,
    Mark,
    Settled,
    held_here,
)

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

logger = logging.getLogger("syvain_metrics")

__all__ = ["MAX_IN_FLIGHT", "QUEUE_LIMIT", "SPOOL_INTERVAL", "Backlog", "Sender", "Settled"]


class Sender(Controlling):
    """Batches, spools and delivers one session's ``log()`` events (see the module docstring).

    Created by the session on the first ``log()``, which starts its threads (so that a
    signal handler that logs while they start finds the sender and queues into it); a
    forked child gets a new one.
    ``uplink`` sends a batch once and paces its retries; ``host`` is recorded in the spool
    (``syvain-metrics sync`` sends to that host only); ``spool_dir`` is where the spool goes
    (``None``: memory only); the spooler thread creates it. ``max_in_flight`` delivery
    threads send batches at once.
    """

    def __init__(
        self,
        uplink: Uplink,
        *,
        host: str,
        spool_dir: Path | None,
        interval: float,
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        super().__init__(uplink, host=host, spool_dir=spool_dir, interval=interval)
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self._spooler = threading.Thread(
            target=self._spool_loop, name="syvain-metrics-spooler", daemon=True
        )
        self._deliveries = [
            threading.Thread(
                target=self._delivery_loop, name=f"syvain-metrics-sender-{n}", daemon=True
            )
            for n in range(max_in_flight)
        ]
        self._unready = True  # threads not all started, or stopped: put() looks closer
        self._starting = threading.RLock()
        self._tried: set[int] = set()

    def _start(self) -> None:
        """Start the threads not started yet: at the first ``log()``, and again after an
        interrupt in the middle (a thread whose start was interrupted is replaced unless it
        runs already, never started twice). A signal handler that logs while this thread
        starts them just queues: the interrupted start goes on after it."""
        if held_here(self._starting):
            return
        with self._starting:
            threads = [self._spooler, *self._deliveries]
            for index, thread in enumerate(threads):
                if thread.ident is None and id(thread) in self._tried:
                    deadline = time.monotonic() + 1
                    while thread.ident is None and time.monotonic() < deadline:
                        time.sleep(0.001)  # started just before the interrupt: it shows up
                    if thread.ident is None:  # the interrupt came before it started
                        loop = self._spool_loop if index == 0 else self._delivery_loop
                        thread = threading.Thread(target=loop, name=thread.name, daemon=True)
                        if index == 0:
                            self._spooler = thread
                        else:
                            self._deliveries[index - 1] = thread
                if thread.ident is None:
                    self._tried.add(id(thread))
                    thread.start()
            self._unready = self.stopped
        if self.spool_dir is not None:
            self._bell.ring()  # create the spool now rather than at the first pass

    # -- the log() side: takes no lock -------------------------------------------------

    def put(self, item: QueuedEvent) -> None:
        """Queue one validated event (called on the user's thread, or a signal handler).

        Example:
            >>> sender.put(queued_event("exp-1", "id-1", "loss", 1.0, 0, None, None))  # doctest: +SKIP
        """
        if self._unready:
            if self.stopped:
                raise MetricsApiError(
                    "This session's log() sender has stopped (the session closed)."
                )
            self._start()
        queue = self._queue
        queue.append(item)
        size = len(queue)
        if size >= MAX_METRICS_PER_INGEST:  # a full request waits: no need to wait any longer
            if not self._bell.rung:
                self._bell.ring()
            if size >= self.queue_limit:
                self._hold_back()

    def pending(self, experiment_id: str) -> int:
        """Events of ``experiment_id`` not answered yet, queued ones included."""
        with self._lock:
            return self._unanswered((experiment_id,))

    def backlog(self) -> Backlog:
        """How the unanswered events are held right now: queued, batches with their bytes in
        memory, and batches waiting on disk only.

        Example:
            >>> session.logs.sender.backlog()  # doctest: +SKIP
            Backlog(queued=0, batches_in_memory=16, batches_on_disk_only=84)
        """
        with self._lock:
            in_memory = sum(1 for b in self._ready if b.chunks is not None)
            return Backlog(len(self._queue), in_memory, len(self._ready) - in_memory)

    def idle(self) -> bool:
        """Whether nothing is queued or waiting for an answer."""
        with self._lock:
            return self._unanswered(None) == 0

    # -- waiting -------------------------------------------------------------------------

    def wait(
        self,
        experiment_ids: Iterable[str] | None,
        timeout: float | None,
        *,
        take_rejections: bool = True,
        adopt: bool = True,
    ) -> Settled:
        """Wait until every event logged before this call (for these experiments, or all)
        has an answer, or ``timeout`` seconds pass. ``stored`` counts the events that were
        unanswered at the call and are stored now. ``take_rejections`` hands the refusals not
        reported yet to the caller (a later wait will not report them again); ``adopt``
        first takes over what forked children left in their spools."""
        targets = None if experiment_ids is None else tuple(experiment_ids)
        if self._unready and not self.stopped:
            self._start()  # nothing logged yet, but children's spools may wait
        if held_here(self._lock):
            # A signal handler interrupted this thread inside the sender: the other threads
            # need the lock this thread holds, so waiting could never end. Report instead.
            return self._answer_now(targets, take_rejections)
        with self._lock:
            if self.stopped:
                return self._answer_now(targets, take_rejections)
            before = self._unanswered(targets)
            mark = Mark(targets, adopt)
            self._marks.append(mark)  # from now on, refusals of the events it covers count
            self._queue.append(mark)
        try:
            self._bell.ring()
            # Its own gate, not a lock the sender's threads share: a KeyboardInterrupt
            # here leaves nothing held (the mark is dropped below).
            reached = mark.reached.wait(timeout)
        finally:
            with self._lock:
                mark.abandoned = True
                if mark in self._marks:
                    self._marks.remove(mark)
        rejected: list[RejectedEvent] = []
        with self._lock:
            if mark.placed and mark.goals:
                pending = 0
                for experiment_id, goal in mark.goals.items():
                    box = self._outboxes[experiment_id]
                    pending += box.unanswered(goal)
                    if take_rejections:
                        rejected.extend(r for _, r in self._take_rejections(box, goal))
            else:  # nothing to wait for, or the spooler never reached the mark
                pending = self._unanswered(targets)
        stored = max(before + mark.adopted - pending - mark.refused - mark.parked, 0)
        return Settled(stored, pending, rejected, timed_out=not reached, parked=mark.parked)

    def _answer_now(self, targets: tuple[str, ...] | None, take_rejections: bool) -> Settled:
        with self._lock:
            pending = self._unanswered(targets)
            rejected: list[RejectedEvent] = []
            if take_rejections:
                for eid, box in self._outboxes.items():
                    if targets is None or eid in targets:
                        rejected.extend(r for _, r in self._take_rejections(box, None))
        return Settled(0, pending, rejected, timed_out=False)  # nothing was waited for

    # -- closing -------------------------------------------------------------------------

    def close(self, timeout: float | None) -> Settled:
        """Wait (up to ``timeout``) for everything, then stop both threads and close the
        spool; what is still pending stays in the spool for ``syvain-metrics sync``.
        Closing again only reports what is still pending."""
        if held_here(self._lock):
            return self._answer_now(None, True)  # see wait(): stopping must wait for the lock
        with self._lock:
            if self.stopped:
                return self._answer_now(None, True)
        deadline = None if timeout is None else time.monotonic() + timeout
        settled = self.wait(None, timeout)
        self._drain_controls(deadline)  # a run's final status follows its events
        with self._lock:
            self.stopped = True  # from here on log() raises, and wait() answers at once
            self._stopping = self._unready = True
        self._bell.ring()  # the spooler's last pass; it then wakes the delivery threads
        self._spooler.join(timeout=5)
        if not self._spooler.is_alive():
            self._collect()  # what a log() racing with close() queued after the last pass
        deadline = time.monotonic() + 1
        for thread in self._deliveries:
            thread.join(timeout=max(deadline - time.monotonic(), 0))
        with self._lock:
            for mark in self._marks:
                mark.reached.open()  # a wait racing with close() ends now, with what is pending
            self._marks.clear()
            left = self._answer_now(None, True)
        if self._spooler.is_alive():
            # Stuck on a slow disk: its files stay open rather than be closed under it (a
            # closed descriptor's number could be reused by anything else in the process).
            logger.warning("syvain_metrics: the log() spooler did not stop; its spool stays open")
        else:
            for leftover in self._adopted:
                leftover.release()  # first: the spool's directory can go only once it is empty
            self._adopted.clear()
            if self.spool is not None:
                self.spool.close()
        return Settled(
            settled.stored,
            left.pending,
            settled.rejected + left.rejected,
            timed_out=settled.timed_out or left.pending > 0,
            parked=settled.parked,
        )

    def unspooled(self) -> int:
        """Events with a spool configured that are held in memory only (the spool could not
        be created or written, or was refused): a kill of this process would lose them.

        Example:
            >>> session.logs.sender.unspooled()  # doctest: +SKIP
            0
        """
        if self.spool_dir is None:
            return 0
        with self._lock:
            sealed = sum(batch.count for batch in self._memory_only.values())
            return sealed + sum(
                box.open_count for box in self._outboxes.values() if not box.open_on_disk
            )

    def take_spool_notice(self) -> str | None:
        """What to tell the user about the spool since the last notice: that it could not
        be created or written, or is refused, and how many events a kill would lose now
        (``None``: nothing to tell).

        Example:
            >>> session.logs.sender.take_spool_notice()  # doctest: +SKIP
            'the log() spool in /tmp/spool/1-ab cannot be written since ... (No space left ...'
        """
        return self._health.take_notice(self.unspooled)

    # -- the delivery threads --------------------------------------------------------------

    def _delivery_loop(self) -> None:
        while True:
            batch = self._take_ready()
            if batch is None or not self._handle(batch):
                return

    def _take_ready(self) -> Batch | None:
        """The next sealed batch for this delivery thread, or ``None`` when stopping."""
        with self._changed:
            while True:
                if self._stopping:
                    return None
                batch = self._next_sendable()
                if batch is not None:
                    break
                self._changed.wait(IDLE_SLICE)
            # Held in memory only, it stays listed until answered: a kill while it is
            # retried would lose it, so the spooler still writes it when it can.
            self._sending[id(batch)] = batch
            return batch

    def _handle(self, batch: Batch) -> bool:
        """Send one batch until it is answered, then settle it; ``False`` when the sender
        stopped first (the batch stays in the spool). Runs on each delivery thread, for
        several batches at once: whatever must happen before a batch is sent, or once it is
        settled, goes here, around these two calls.

        Example:
            >>> sender._handle(batch)  # doctest: +SKIP
            True
        """
        outcome = self._deliver(batch)
        if not outcome.finished:
            return False
        try:
            self._settle(batch, outcome)
        except Exception:  # pragma: no cover - the loop must outlive any surprise
            logger.exception("syvain_metrics: settling a delivered batch failed")
        return True

    def _deliver(self, batch: Batch) -> Outcome:
        unreadable: list[RejectedEvent] = []
        if batch.chunks is None and batch.path is not None:
            damage = ""
            try:
                read = load_batch(batch.path)
                batch.chunks, damage = read.chunks, "; ".join(read.damage)
            except (OSError, ValueError) as error:
                batch.chunks = []
                damage = str(error)
                logger.error(
                    "syvain_metrics: the spool file %s could not be read back: %s",
                    batch.path,
                    error,
                )
            missing = batch.count - sum(chunk.size for chunk in batch.chunks)
            if missing > 0:  # answered as refused, so that waits end and flush() says so
                what = "damaged lines of events" if id(batch) in self._by_line else "events"
                message = f"{missing} {what} could not be read back from {batch.path}"
                unreadable = [RejectedEvent({}, message)] * missing
                self._aside[id(batch)] = f"{message}: {damage}" if damage else message
                batch = Batch(batch.experiment_id, batch.chunks, first=batch.first)
        outcome = Outcome()
        if batch.chunks:
            outcome = self._deliver_addressed(batch)
        outcome.rejected.extend(unreadable)
        return outcome

    def _settle(self, batch: Batch, outcome: Outcome) -> None:
        # Refused for the run or the credentials, not the content: kept for a later sync.
        keep = outcome.keep or any(r.status_code in KEEP_STATUSES for r in outcome.rejected)
        with self._changed:
            # Unlisted first, so the spooler no longer writes it (a write under way is undone);
            # a batch held in memory only may name a partial file: that file does not hold it.
            memory_only = self._memory_only.pop(id(batch), None) is not None
            on_disk = batch.path is not None and not memory_only
        if outcome.unexpected:
            note = kept_note(on_disk, self.spool_dir is not None)
            outcome.rejected = [
                replace(r, message=f"{r.message} ({note})") for r in outcome.rejected
            ]
        reasons = {r.message for r in outcome.rejected}
        if len(outcome.rejected) > 1 and len(reasons) == 1:
            # One cause for the whole batch (its run could not be created): said once.
            logger.warning(
                "syvain_metrics: the service rejected %d log() events of experiment %s: %s",
                len(outcome.rejected),
                batch.experiment_id,
                reasons.pop(),
            )
            each_one: list[RejectedEvent] = []
        else:
            each_one = outcome.rejected
        for refusal in each_one:
            logger.warning(
                "syvain_metrics: the service rejected a log() event of experiment %s "
                "(%r at step %s): %s",
                batch.experiment_id,
                refusal.event.get("name"),
                refusal.event.get("step"),
                refusal.message,
            )
        parked = outcome.parked and on_disk  # offline: in the spool on purpose, nothing to say
        if keep and on_disk and not parked:
            logger.warning("syvain_metrics: kept %s for `syvain-metrics sync`", batch.path)
        elif keep and not parked:
            logger.warning(
                "syvain_metrics: %d log() events of experiment %s were not kept for "
                "`syvain-metrics sync`: no spool file holds them",
                batch.count,
                batch.experiment_id,
            )
        with self._changed:
            self._sending.pop(id(batch), None)
            box = self._outboxes[batch.experiment_id]
            box.answer(batch.first, batch.count)
            self._count_refused(batch.experiment_id, box, batch.first, len(outcome.rejected))
            if outcome.parked:
                self._count_parked(batch.experiment_id, batch.first, batch.count)
            room = max(REJECTED_KEPT - len(box.unreported), 0)
            box.unreported.extend((batch.first, r) for r in outcome.rejected[:room])
            damaged = self._aside.pop(id(batch), None)
            self._by_line.discard(id(batch))
            if batch.path is not None and not keep:
                try:
                    if damaged is None:
                        batch.path.unlink()
                    else:  # kept, not deleted: what it holds is someone's lost events
                        set_aside(batch.path, damaged)
                except FileNotFoundError:
                    pass
                except OSError as error:
                    logger.warning("syvain_metrics: cannot remove %s: %s", batch.path, error)
            batch.chunks = None
            self._check_marks()
