"""The session's sender: ``log()`` enqueues, two background threads do everything else.

- ``log()`` appends ``(experiment_id, event)`` to a deque: no lock, no I/O, no network.
- The *spooler* thread wakes every :data:`SPOOL_INTERVAL` seconds (or as soon as a full
  request is waiting), encodes the new events once, appends them to the spool, and groups
  them per experiment into batches of up to 1,000, sealing a batch when it is full or
  ``interval`` seconds old.
- The *delivery* thread sends sealed batches in order, one request each, retrying without
  limit while the process lives (:mod:`~syvain_metrics.pipeline.delivery`), and removes
  each batch from the spool once every event in it has an answer.

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
When the spool cannot be created or written (a full disk, a file where its directory
should be), logging carries on in memory and the spooler tries again after
:data:`SPOOL_RETRY_FIRST` seconds, then twice as long each time up to
:data:`SPOOL_RETRY_CAP` (one attempt each time): once the disk takes writes again, the
batches held in memory meanwhile are written too, the one being sent included, so a kill
loses no more than before. Until then, ``flush()``, the end of ``run()`` and ``close()``
say how many events a kill would lose (:meth:`Sender.take_spool_notice`). A spool
directory found in place already that is not this user's (another user's, a link) is
never used nor tried again: the session keeps its events in memory only, and says so
once, with the reason.

Example:
    >>> sender = session.sender                                   # doctest: +SKIP
    >>> sender.put(queued_event("exp-1", "id-1", "loss", 1.0, 0, None, None))  # doctest: +SKIP
    >>> sender.wait(["exp-1"], timeout=10).pending                 # doctest: +SKIP
    0
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from syvain_metrics.contract.event_ids import EventIdSource
from syvain_metrics.contract.limits import MAX_METRICS_PER_INGEST
from syvain_metrics.errors import MetricsApiError, RejectedEvent
from syvain_metrics.pipeline.batch import Batch, Chunk, QueuedEvent, encode_chunk
from syvain_metrics.pipeline.delivery import KEEP_STATUSES, Outcome, Uplink, deliver
from syvain_metrics.pipeline.spool import (
    CHILDREN,
    Leftover,
    Spool,
    UntrustedSpoolError,
    claim_leftovers,
    load_batch,
    set_aside,
)

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

logger = logging.getLogger("syvain_metrics")

SPOOL_INTERVAL = 0.2
"""Seconds between two passes of the spooler: the most a hard kill can lose."""

BATCHES_IN_MEMORY = 16
"""Sealed batches that keep their bytes in memory (about 16,000 events, 2-2.5 MB); with a spool,
the rest wait on disk only."""

SPOOL_RETRY_FIRST = 1.0
"""Seconds after a failed spool write or creation (a full disk) before the spooler tries
again."""

SPOOL_RETRY_CAP = 15.0
"""The longest pause between two tries of a spool that failed (doubling up to it)."""

_Verb = Literal["created", "written"]
"""What a spool failure failed to do."""

REJECTED_KEPT = 1_000
"""Rejected events kept per experiment for the next ``flush()`` to report (each is also
logged as a warning when it happens)."""


@dataclass
class _Outbox:
    """The events of one experiment in this session: counts, the batch being filled, and
    the refusals not reported yet."""

    collected: int = 0
    done: int = 0
    refused: int = 0
    open_chunks: list[Chunk] = field(default_factory=list)
    open_count: int = 0
    open_first: int = 0
    open_since: float = 0.0
    open_path: Path | None = None
    open_on_disk: bool = False
    unreported: list[tuple[int, RejectedEvent]] = field(default_factory=list)


@dataclass
class Settled:
    """What a wait saw: events ``stored``, ``pending`` (still retrying), ``rejected``."""

    stored: int
    pending: int
    rejected: list[RejectedEvent]
    timed_out: bool


@dataclass(frozen=True)
class Backlog:
    """See :meth:`Sender.backlog`."""

    queued: int
    batches_in_memory: int
    batches_on_disk_only: int


@dataclass(eq=False)
class _Mark:
    """Queued behind the events a wait covers; ``goals`` are, per experiment, how many events
    must have an answer. ``adopt``: take over dead children's spools first."""

    experiment_ids: tuple[str, ...] | None  # None: every experiment
    adopt: bool
    reached: threading.Event = field(default_factory=threading.Event)
    goals: dict[str, int] = field(default_factory=dict)
    adopted: int = 0  # events taken over from children's spools when it was placed
    abandoned: bool = False


def _held_here(lock: Any) -> bool:
    """Whether this thread holds ``lock`` already: true only for a signal handler that
    interrupted this very thread inside the sender."""
    is_owned = getattr(lock, "_is_owned", None)
    return bool(is_owned is not None and is_owned())


class Sender:
    """Batches, spools and delivers one session's ``log()`` events (see the module docstring).

    Created by the session on the first ``log()``; a forked child gets a new one.
    ``uplink`` sends a batch once and paces its retries; ``host`` is recorded in the spool
    (``syvain-metrics sync`` sends to that host only); ``spool_dir`` is where the spool goes
    (``None``: memory only); the spooler thread creates it.
    """

    def __init__(
        self,
        uplink: Uplink,
        *,
        host: str,
        spool_dir: Path | None,
        interval: float,
    ) -> None:
        self.ids = EventIdSource()
        self.spool: Spool | None = None
        self.spool_dir = spool_dir
        self.interval = interval
        self._uplink = uplink
        self.host = host
        self._spooling = False
        self._spool_retry_at = 0.0
        self._spool_backoff = SPOOL_RETRY_FIRST
        # Sealed batches held in memory only (the spool could not be written), by id, in
        # order, the one being sent included until it has its answer; the spooler writes
        # them once the disk takes writes again.
        self._memory_only: dict[int, Batch] = {}
        self._sending: Batch | None = None
        self._spool_failure: str | None = None  # the error of the current trouble
        self._spool_error = ""  # the last error, for the notice after it is over
        self._spool_verb: _Verb = "written"  # what failed
        self._spool_refused: str | None = None  # why spool_dir is never used, if it is not
        self._spool_failed_since: float | None = None  # wall clock, for people
        self._spool_notice_due = False
        self._aside: dict[int, str] = {}  # batches whose spool file read back damaged
        # Batches of children's spools whose count holds one per damaged line, not per event.
        self._by_line: set[int] = set()
        self._queue: deque[Any] = deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        # Reentrant: a signal handler may call flush()/close() on a thread that was inside.
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._outboxes: dict[str, _Outbox] = {}
        self._in_hand: dict[str, int] = {}  # taken off the queue, not in an outbox yet
        self._ready: deque[Batch] = deque()
        self._marks: list[_Mark] = []
        self._adopted: list[Leftover] = []
        self._numbers = itertools.count(1)
        self.stopped = False
        self._spooler = threading.Thread(
            target=self._spool_loop, name="syvain-metrics-spooler", daemon=True
        )
        self._delivery = threading.Thread(
            target=self._delivery_loop, name="syvain-metrics-sender", daemon=True
        )
        self._spooler.start()
        self._delivery.start()
        if spool_dir is not None:
            self._wake.set()  # create the spool now rather than at the first pass

    # -- the log() side: never blocks --------------------------------------------------

    def put(self, item: QueuedEvent) -> None:
        """Queue one validated event (called on the user's thread)."""
        if self.stopped:
            raise MetricsApiError("This session's log() sender has stopped (the session closed).")
        queue = self._queue
        queue.append(item)
        if len(queue) >= MAX_METRICS_PER_INGEST:
            self._wake.set()

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

    def _unanswered(self, targets: tuple[str, ...] | None) -> int:
        """Events of ``targets`` (all when ``None``) without an answer; lock held."""
        queued = sum(
            1
            for item in list(self._queue)
            if type(item) is tuple and (targets is None or item[0] in targets)
        )
        in_hand = sum(n for eid, n in self._in_hand.items() if targets is None or eid in targets)
        boxes = [b for eid, b in self._outboxes.items() if targets is None or eid in targets]
        return queued + in_hand + sum(b.collected - b.done for b in boxes)

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
        if _held_here(self._lock):
            # A signal handler interrupted this thread inside the sender: the other threads
            # need the lock this thread holds, so waiting could never end. Report instead.
            return self._answer_now(targets, take_rejections)
        with self._lock:
            if self.stopped:
                return self._answer_now(targets, take_rejections)
            before = self._unanswered(targets)
            refused_before = {eid: box.refused for eid, box in self._outboxes.items()}
            mark = _Mark(targets, adopt)
            self._queue.append(mark)
        self._wake.set()
        reached = mark.reached.wait(timeout)
        rejected: list[RejectedEvent] = []
        with self._lock:
            mark.abandoned = True
            if mark in self._marks:
                self._marks.remove(mark)
            if mark.goals:
                pending = 0
                for experiment_id, goal in mark.goals.items():
                    box = self._outboxes[experiment_id]
                    pending += max(goal - box.done, 0)
                    if take_rejections:
                        rejected.extend(r for _, r in self._take_rejections(box, goal))
            else:  # nothing to wait for, or the spooler never reached the mark
                pending = self._unanswered(targets)
            refused = sum(
                box.refused - refused_before.get(eid, 0)
                for eid, box in self._outboxes.items()
                if targets is None or eid in targets
            )
        stored = max(before + mark.adopted - pending - refused, 0)
        return Settled(stored, pending, rejected, timed_out=not reached)

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
        if _held_here(self._lock):
            return self._answer_now(None, True)  # see wait(): stopping must wait for the lock
        with self._lock:
            if self.stopped:
                return self._answer_now(None, True)
        settled = self.wait(None, timeout)
        with self._lock:
            self.stopped = True  # from here on log() raises, and wait() answers at once
        self._stop.set()
        self._wake.set()
        with self._changed:
            self._changed.notify_all()
        self._spooler.join(timeout=5)
        if not self._spooler.is_alive():
            self._collect()  # what a log() racing with close() queued after the last pass
        self._delivery.join(timeout=1)
        with self._lock:
            for mark in self._marks:
                mark.reached.set()  # a wait racing with close() ends now, with what is pending
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
        )

    # -- the spooler thread --------------------------------------------------------------

    def _spool_loop(self) -> None:
        while True:
            self._wake.wait(SPOOL_INTERVAL)
            self._wake.clear()
            stopping = self._stop.is_set()
            try:
                self._collect()  # when stopping: what arrived meanwhile goes to the spool
            except Exception:  # pragma: no cover - keep spooling whatever happens
                logger.exception("syvain_metrics: the log() spooler hit an unexpected error")
            if stopping:
                return

    def _collect(self) -> None:
        if self.spool is None:
            self._create_spool()  # first: this pass's events go to it
        queue = self._queue
        taken: list[Any] = []
        with self._lock:  # so pending() never misses the events in hand
            while queue:
                item = queue.popleft()
                taken.append(item)
                if type(item) is tuple:
                    self._in_hand[item[0]] = self._in_hand.get(item[0], 0) + 1
        fresh: dict[str, list[QueuedEvent]] = {}
        for item in taken:
            if type(item) is tuple:
                items = fresh.get(item[0])
                if items is None:
                    items = fresh[item[0]] = []
                items.append(item)
            else:
                self._fill(fresh)
                fresh = {}
                self._place(item)
        self._fill(fresh)
        now = time.monotonic()
        self._seal_old(now)
        if self._memory_only or (self.spool is not None and not self._spooling):
            self._respool(now)

    def _create_spool(self) -> None:
        """One attempt at creating the spool, when it is due: at the first pass, then at
        the pace of :meth:`_spool_failed`; never again once the directory is refused."""
        if (
            self.spool_dir is None
            or self._spool_refused is not None
            or time.monotonic() < self._spool_retry_at
        ):
            return
        try:
            spool = Spool.create(self.spool_dir, host=self.host)
        except UntrustedSpoolError as error:
            self._refuse_spool(error)
        except OSError as error:
            self._spool_failed(error, "created")
        else:
            self.spool = spool
            self._spooling = True  # recovery is declared once events are written

    def _fill(self, fresh: dict[str, list[QueuedEvent]]) -> None:
        """Encode each experiment's new events (one chunk per pass and batch), spool them,
        and add them to the open batch, sealing full ones."""
        now = time.monotonic()
        for experiment_id, items in fresh.items():
            with self._lock:
                box = self._outboxes.setdefault(experiment_id, _Outbox())
            start = 0
            while start < len(items):
                if not box.open_count:
                    box.open_first = box.collected
                    box.open_since = now
                    box.open_path = None
                    box.open_on_disk = self._spooling
                taken = items[start : start + MAX_METRICS_PER_INGEST - box.open_count]
                start += len(taken)
                chunk = self._encode(experiment_id, taken)
                if chunk.size:
                    self._spool_chunk(experiment_id, box, chunk)
                with self._lock:
                    box.open_chunks.append(chunk)
                    box.open_count += chunk.size
                    box.collected += chunk.size
                    self._in_hand[experiment_id] -= len(taken)
                if box.open_count >= MAX_METRICS_PER_INGEST:
                    self._seal(experiment_id, box)

    def _encode(self, experiment_id: str, items: list[QueuedEvent]) -> Chunk:
        try:
            return encode_chunk(items)
        except (TypeError, ValueError):  # pragma: no cover - events are validated before
            good = []
            for item in items:
                try:
                    encode_chunk([item])
                except (TypeError, ValueError) as error:
                    self._refuse_unencodable(item, error)
                else:
                    good.append(item)
            return encode_chunk(good)

    def _refuse_unencodable(self, item: QueuedEvent, error: Exception) -> None:
        logger.error("syvain_metrics: a log() event could not be encoded: %s", error)
        with self._changed:
            box = self._outboxes.setdefault(item[0], _Outbox())
            refusal = RejectedEvent({"name": item[2], "step": item[4]}, f"not encodable: {error}")
            box.unreported.append((box.collected - 1, refusal))
            box.refused += 1
            self._check_marks()

    def _spool_chunk(self, experiment_id: str, box: _Outbox, chunk: Chunk) -> None:
        if self.spool is None or not self._spooling or not box.open_on_disk:
            box.open_on_disk = False
            return
        try:
            if box.open_path is None:
                box.open_path = self.spool.directory / f"b-{next(self._numbers):09d}.jsonl"
            self.spool.append(experiment_id, int(box.open_path.stem[2:]), [chunk])
            if self._spool_failure is not None:
                self._spool_recovered()
        except OSError as error:
            # A full or read-only disk must not stop logging: carry on in memory, and try
            # the disk again later. What the file holds already is removed once answered.
            self._spool_failed(error)
            box.open_on_disk = False

    def _spool_failed(self, error: OSError, verb: _Verb = "written") -> None:
        """Spooling stops until the next try, at most :data:`SPOOL_RETRY_CAP` seconds away."""
        if self._spool_failure is None:
            logger.warning(
                "syvain_metrics: the log() spool in %s cannot be %s (%s); pending events are "
                "kept in memory only until it can be",
                self.spool_dir,
                verb,
                error,
            )
            self._spool_failed_since = time.time()
            with self._lock:  # take_spool_notice() reads and clears it on the user's thread
                self._spool_notice_due = True  # once per episode; FlushError tells the rest
        self._spool_verb = verb
        self._spool_failure = self._spool_error = error.strerror or str(error)
        self._spooling = False
        self._spool_retry_at = time.monotonic() + self._spool_backoff
        self._spool_backoff = min(self._spool_backoff * 2, SPOOL_RETRY_CAP)

    def _respool(self, now: float) -> None:
        """Once the spool may be tried again: write the batches held in memory only, oldest
        first, each to a file of its own; stop at the first failure."""
        spool = self.spool
        if spool is None or (not self._spooling and now < self._spool_retry_at):
            return
        self._spooling = True  # new batches try the disk again too: a probe if none waits
        while True:
            with self._lock:
                batch = next(iter(self._memory_only.values()), None)
            if batch is None:
                break
            chunks = batch.chunks or []
            try:
                path = spool.append(batch.experiment_id, next(self._numbers), chunks)
            except OSError as error:
                self._spool_failed(error)
                return
            spool.seal(path)
            stale: Path | None = path
            with self._changed:
                if self._memory_only.pop(id(batch), None) is batch:  # not answered meanwhile
                    stale, batch.path = batch.path, path  # a partial file of the batch, if any
                    in_memory = sum(1 for b in self._ready if b.chunks is not None)
                    if in_memory > BATCHES_IN_MEMORY and batch is not self._sending:
                        batch.chunks = None  # on disk only until its turn comes
            if stale is not None:
                with contextlib.suppress(OSError):
                    stale.unlink()
            if self._spool_failure is not None:
                self._spool_recovered()

    def _refuse_spool(self, error: UntrustedSpoolError) -> None:
        """``spool_dir`` is not this user's: events stay in memory only for good. Retrying
        would meet the same directory, so the user is told once instead, with the reason."""
        self._spool_refused = str(error)
        logger.warning(
            "syvain_metrics: the log() spool is refused (%s); pending events are kept in "
            "memory only",
            error,
        )
        with self._lock:
            self._spool_notice_due = True

    def _spool_recovered(self) -> None:
        """A spool write succeeded after a failure: the trouble is over."""
        logger.warning("syvain_metrics: the log() spool is written again")
        self._spool_failure = None
        self._spool_backoff = SPOOL_RETRY_FIRST

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
        with self._lock:
            due, self._spool_notice_due = self._spool_notice_due, False
        if not due or self.spool_dir is None:
            return None
        where = f"the log() spool in {self.spool_dir}"
        if self._spool_refused is not None:
            return (
                f"{where} is refused ({self._spool_refused}); log() events are held in memory "
                f"only until they are sent, and the {self.unspooled()} pending now would be "
                "lost if this process were killed"
            )
        since = time.strftime("%H:%M:%S", time.localtime(self._spool_failed_since or 0))
        verb = self._spool_verb
        if self._spool_failure is None:
            return (
                f"{where} could not be {verb} from {since} for a while ({self._spool_error}); "
                "it is written again, and no pending event is held in memory only"
            )
        return (
            f"{where} cannot be {verb} since {since} ({self._spool_error}); "
            f"{self.unspooled()} pending events are held in memory only and would be lost if "
            f"this process were killed (the spool is tried again every {SPOOL_RETRY_CAP:g} s "
            "at most)"
        )

    def _seal(self, experiment_id: str, box: _Outbox) -> None:
        with self._changed:
            path = box.open_path
            chunks: list[Chunk] | None = box.open_chunks
            on_disk = path is not None and box.open_on_disk
            if path is not None and self.spool is not None:
                self.spool.seal(path)
            in_memory = sum(1 for b in self._ready if b.chunks is not None)
            if on_disk and in_memory >= BATCHES_IN_MEMORY:
                chunks = None  # on disk only until its turn comes
            batch = Batch(experiment_id, chunks, box.open_count, box.open_first, path)
            self._ready.append(batch)
            if self.spool_dir is not None and not on_disk:
                self._memory_only[id(batch)] = batch
            box.open_chunks = []
            box.open_count = 0
            box.open_path = None
            self._changed.notify_all()

    def _seal_old(self, now: float) -> None:
        for experiment_id, box in list(self._outboxes.items()):
            if box.open_count and now - box.open_since >= self.interval:
                self._seal(experiment_id, box)

    def _place(self, mark: _Mark) -> None:
        """Everything logged before ``mark`` is collected: seal it and note the goals."""
        if mark.abandoned:
            return
        if mark.adopt:
            try:
                mark.adopted = self._adopt_children(mark.experiment_ids)
            except OSError as error:
                logger.warning("syvain_metrics: cannot look at child spools: %s", error)
        targets = mark.experiment_ids
        if targets is None:
            targets = tuple(self._outboxes)
        for experiment_id in targets:
            box = self._outboxes.get(experiment_id)
            if box is not None and box.open_count:
                self._seal(experiment_id, box)
        with self._changed:
            for experiment_id in targets:
                box = self._outboxes.get(experiment_id)
                if box is not None:
                    mark.goals[experiment_id] = box.collected
            self._marks.append(mark)
            self._check_marks()

    def _adopt_children(self, targets: tuple[str, ...] | None) -> int:
        """Take over the spools of forked children that ended without sending everything
        (read and checked once; beyond :data:`BATCHES_IN_MEMORY` they wait on disk only,
        like evicted ones); return how many events of ``targets`` (all when ``None``) were
        taken over, a damaged line counting as one."""
        adopted = 0
        if self.spool_dir is None or self._spool_refused is not None:
            return adopted  # a refused directory is not looked into
        for leftover in claim_leftovers(self.spool_dir / CHILDREN):
            self._adopted.append(leftover)
            for path in leftover.batch_files:
                try:
                    read = load_batch(path)
                except (OSError, ValueError):
                    # Left where it is, for `syvain-metrics sync` to report and set aside.
                    logger.warning("syvain_metrics: skipping unreadable spool file %s", path)
                    continue
                experiment_id = read.experiment_id
                with self._lock:
                    box = self._outboxes.setdefault(experiment_id, _Outbox())
                if box.open_count:
                    self._seal(experiment_id, box)  # keep this session's order: earlier first
                # How many events a damaged line held is unknown: each counts as one, so that
                # it is reported as refused and its file set aside, never silently deleted.
                count = sum(chunk.size for chunk in read.chunks) + len(read.damage)
                with self._changed:
                    in_memory = sum(1 for b in self._ready if b.chunks is not None)
                    # Already read and checked: kept unless memory is full, or the file is
                    # damaged (then read again at its turn, which finds and reports it).
                    keep = not read.damage and in_memory < BATCHES_IN_MEMORY
                    chunks = read.chunks if keep else None
                    batch = Batch(experiment_id, chunks, count, box.collected, path)
                    if read.damage:
                        self._by_line.add(id(batch))
                    self._ready.append(batch)
                    box.collected += count
                    self._changed.notify_all()
                if targets is None or experiment_id in targets:
                    adopted += count
        return adopted

    # -- the delivery thread ---------------------------------------------------------------

    def _delivery_loop(self) -> None:
        while True:
            with self._changed:
                while not self._ready and not self._stop.is_set():
                    self._changed.wait()
                if self._stop.is_set():
                    return
                batch = self._ready.popleft()
                # Held in memory only, it stays listed until answered: a kill while it is
                # retried would lose it, so the spooler still writes it when it can.
                self._sending = batch
            outcome = self._deliver(batch)
            if not outcome.finished:
                return  # stopping: the batch stays in the spool
            try:
                self._settle(batch, outcome)
            except Exception:  # pragma: no cover - the loop must outlive any surprise
                logger.exception("syvain_metrics: settling a delivered batch failed")

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
            outcome = deliver(self._uplink, batch, wait=self._stop.wait)
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
            note = _kept_note(on_disk, self.spool_dir is not None)
            outcome.rejected = [
                replace(r, message=f"{r.message} ({note})") for r in outcome.rejected
            ]
        for refusal in outcome.rejected:
            logger.warning(
                "syvain_metrics: the service rejected a log() event of experiment %s "
                "(%r at step %s): %s",
                batch.experiment_id,
                refusal.event.get("name"),
                refusal.event.get("step"),
                refusal.message,
            )
        if keep and on_disk:
            logger.warning("syvain_metrics: kept %s for `syvain-metrics sync`", batch.path)
        elif keep:
            logger.warning(
                "syvain_metrics: %d log() events of experiment %s were not kept for "
                "`syvain-metrics sync`: no spool file holds them",
                batch.count,
                batch.experiment_id,
            )
        with self._changed:
            self._sending = None
            box = self._outboxes[batch.experiment_id]
            box.done += batch.count
            box.refused += len(outcome.rejected)
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

    def _check_marks(self) -> None:
        """Release the marks whose events all have an answer (called with the lock held)."""
        for mark in list(self._marks):
            if all(self._outboxes[eid].done >= goal for eid, goal in mark.goals.items()):
                self._marks.remove(mark)
                mark.reached.set()

    @staticmethod
    def _take_rejections(box: _Outbox, goal: int | None) -> list[tuple[int, RejectedEvent]]:
        """The refusals of events before ``goal`` (all when ``None``), now reported."""
        taken = [(f, r) for f, r in box.unreported if goal is None or f < goal]
        box.unreported = [(f, r) for f, r in box.unreported if goal is not None and f >= goal]
        return taken


def _kept_note(on_disk: bool, spooled: bool) -> str:
    """What became of a batch the HTTP libraries kept failing on, for its events' messages.

    Example:
        >>> _kept_note(False, False)
        'not kept: the session has no spool (spool_dir=None)'
    """
    if on_disk:
        return "kept on disk for `syvain-metrics sync`"
    if not spooled:
        return "not kept: the session has no spool (spool_dir=None)"
    return "not kept: held in memory only, the spool could not be written"
