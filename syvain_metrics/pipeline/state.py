"""The state one sender's threads share: per-experiment outboxes, the batches ready to
send, the marks waits are waiting on, and the spool's health.

:class:`SenderState` holds it and the few operations the threads make under its lock
(sealing a batch, releasing marks); the spooler thread
(:mod:`~syvain_metrics.pipeline.spooler`) and the delivery threads and the ``log()`` side
(:mod:`~syvain_metrics.pipeline.sender`) build on it.

The user's threads never wait on a lock the sender's threads share with them except the
sender's own ``RLock`` (``with lock:`` on a C lock; see :class:`SenderState`): ``log()``
rings a :class:`Doorbell` (a socket, no lock) and a wait sleeps on its own :class:`Gate`.
A ``threading.Event`` or ``Condition`` would not do: their ``__enter__`` is Python code,
and a ``KeyboardInterrupt`` (Ctrl-C, ``_thread.interrupt_main()``) or a signal handler's
exception landing just after it took the lock leaves that lock held for ever.

Example:
    >>> state = SenderState(uplink, host=url, spool_dir=None, interval=1.0)  # doctest: +SKIP
"""

from __future__ import annotations

import itertools
import logging
import socket
import threading
import time
import weakref
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from syvain_metrics.contract.event_ids import EventIdSource
from syvain_metrics.errors import RejectedEvent
from syvain_metrics.pipeline.batch import Batch, Chunk
from syvain_metrics.pipeline.delivery import Uplink
from syvain_metrics.pipeline.spool import Leftover, Spool
from syvain_metrics.pipeline.spool_health import SpoolHealth

logger = logging.getLogger("syvain_metrics")

_HOLD_SLICE = 0.001
"""Seconds a ``log()`` held back by :data:`QUEUE_LIMIT` sleeps between two looks."""

SPOOL_INTERVAL = 0.2
"""Seconds between two passes of the spooler: the most a hard kill can lose."""

BATCHES_IN_MEMORY = 16
"""Sealed batches that keep their bytes in memory, those in flight included (about 16,000
events, 2-2.5 MB); with a spool, the rest wait on disk only."""

MAX_IN_FLIGHT = 6
"""Delivery threads per sender: up to this many ingest requests in flight at once, so a
service that takes seconds per request still drains several batches at a time (at 2 s a
request: 3,000 events/s rather than 500). A fast service rarely has more than one batch
ready, so the others only work when the service is slow or a backlog drains. Events
carry their own step and timestamp, so batches of one experiment may be stored in any
order; a batch's own parts (a split to find refused events) are still sent one after
the other."""

QUEUE_LIMIT = 100_000
"""Events the ``log()`` queue holds before ``log()`` waits for the spooler (about 30 MB
at 250-350 bytes per queued event). A normal loop never comes near it: the spooler takes
the queue every :data:`SPOOL_INTERVAL` seconds, or as soon as 1,000 events wait, and even
a tight loop of bare ``log()`` calls queues well under 100,000 events in that time. A
flood (a cell replaying a history of millions of values) is held back to the spooler's
pace instead of growing memory without bound; nothing is dropped."""

STALL = 5.0
"""Seconds without any pass of the spooler after which a ``log()`` held back by
:data:`QUEUE_LIMIT` stops waiting (the spooler is stuck on a slow disk): logging must
go on, so the queue may then grow until the spooler moves again."""

REJECTED_KEPT = 1_000
"""Rejected events kept per experiment for the next ``flush()`` to report (each is also
logged as a warning when it happens)."""


IDLE_SLICE = 5.0
"""Longest a background thread sleeps before looking whether the sender stops (the spooler
tells it at once; this is in case the spooler is stuck on a slow disk)."""


@dataclass
class Outbox:
    """The events of one experiment in this session: counts, the batch being filled, and
    the refusals not reported yet."""

    collected: int = 0
    done: int = 0  # every event before this position has an answer
    refused: int = 0
    # Batches answered while one before them is still in flight: first position -> count.
    ahead: dict[int, int] = field(default_factory=dict)
    ahead_count: int = 0
    open_chunks: list[Chunk] = field(default_factory=list)
    open_count: int = 0
    open_first: int = 0
    open_since: float = 0.0
    open_path: Path | None = None
    open_on_disk: bool = False
    unreported: list[tuple[int, RejectedEvent]] = field(default_factory=list)

    def answer(self, first: int, count: int) -> None:
        """Note that the ``count`` events from position ``first`` have an answer.

        Example:
            >>> box = Outbox(collected=3)
            >>> box.answer(2, 1); box.done, box.unanswered()
            (0, 2)
            >>> box.answer(0, 2); box.done, box.unanswered()
            (3, 0)
        """
        if first != self.done:
            self.ahead[first] = count
            self.ahead_count += count
            return
        self.done += count
        while self.done in self.ahead:
            moved = self.ahead.pop(self.done)
            self.ahead_count -= moved
            self.done += moved

    def unanswered(self, goal: int | None = None) -> int:
        """Events before position ``goal`` (all when ``None``) without an answer.

        Example:
            >>> box = Outbox(collected=5); box.answer(3, 2)
            >>> box.unanswered(), box.unanswered(3)
            (3, 3)
        """
        if goal is None:
            return self.collected - self.done - self.ahead_count
        ahead = sum(count for first, count in self.ahead.items() if first < goal)
        return max(goal - self.done - ahead, 0)


@dataclass
class Settled:
    """What a wait saw: events ``stored``, ``pending`` (still retrying), ``rejected``, and
    ``parked``: left in the spool unsent on purpose (offline mode; a forked child's events of
    a run its parent creates), for the parent or ``syvain-metrics sync`` to send."""

    stored: int
    pending: int
    rejected: list[RejectedEvent]
    timed_out: bool
    parked: int = 0


@dataclass(frozen=True)
class Backlog:
    """See :meth:`Sender.backlog`."""

    queued: int
    batches_in_memory: int
    batches_on_disk_only: int


class Gate:
    """A one-shot signal opened by the sender's threads and waited on by one caller, with
    no lock shared between them: the waiter sleeps on a lock of its own that ``open()``
    releases, so a ``KeyboardInterrupt`` in the wait leaves nothing held that another
    thread needs.

    Example:
        >>> gate = Gate()
        >>> gate.wait(0.01)
        False
        >>> gate.open(); gate.wait(None)
        True
    """

    __slots__ = ("_latch", "is_open")

    def __init__(self) -> None:
        self._latch = threading.Lock()
        self._latch.acquire()
        self.is_open = False

    def open(self) -> None:
        """Let the waiter through (called with the sender's lock held: never twice at once)."""
        if not self.is_open:
            self.is_open = True
            self._latch.release()

    def wait(self, timeout: float | None) -> bool:
        """Wait until opened or ``timeout`` seconds pass; whether it is open."""
        if self.is_open:
            return True
        limit = -1.0 if timeout is None else min(max(timeout, 0.0), threading.TIMEOUT_MAX)
        # The latch stays taken when the wait ends: one caller waits on a gate, once.
        return self._latch.acquire(timeout=limit) or self.is_open


class Doorbell:
    """Wakes the spooler thread. Ringing takes no lock (one byte sent on a non-blocking
    socket), so a thread that an exception interrupts, or a signal handler, may ring at any
    moment without leaving anything held. ``rung`` spares ``log()`` a system call while a
    wake-up is already on its way.

    A socket pair rather than a pipe: it can be waited on with a timeout everywhere
    (Windows included) and without ``select()``'s limit on descriptor numbers. Its sockets
    are closed only once nothing refers to the bell, so a late ring never writes into a
    descriptor number that the process reused. A forked child makes a sender of its own.

    Example:
        >>> bell = Doorbell()
        >>> bell.ring(); bell.wait(1.0), bell.rung
        (True, False)
        >>> bell.wait(0.01)
        False
    """

    def __init__(self) -> None:
        self._clapper, self._ear = socket.socketpair()
        self._clapper.setblocking(False)
        self.rung = False
        # Not at interpreter exit: the sender still drains then, from an atexit hook.
        weakref.finalize(self, _close_all, self._clapper, self._ear).atexit = False

    def ring(self) -> None:
        """Wake the waiter (or its next wait)."""
        self.rung = True
        try:  # noqa: SIM105 - no context manager on this path: fewer frames to interrupt
            self._clapper.send(b"\0")
        except OSError:
            pass  # full: a wake-up waits already

    def wait(self, timeout: float) -> bool:
        """Sleep until rung or ``timeout`` seconds pass; whether it was rung. The next
        ``log()`` that finds work waiting rings again."""
        self.rung = False
        try:
            self._ear.settimeout(timeout)
            return bool(self._ear.recv(4096))
        except OSError:  # TimeoutError included
            return False


def _close_all(*sockets: socket.socket) -> None:
    for each in sockets:
        each.close()


@dataclass(eq=False)
class Mark:
    """Queued behind the events a wait covers; ``goals`` are, per experiment, the position
    before which every event must have an answer. ``adopt``: take over dead children's
    spools first. Listed from the start of its wait, so that ``refused`` counts the
    refusals of the events it covers (those before its goals, once it is placed)."""

    experiment_ids: tuple[str, ...] | None  # None: every experiment
    adopt: bool
    reached: Gate = field(default_factory=Gate)
    goals: dict[str, int] = field(default_factory=dict)
    adopted: int = 0  # events taken over from children's spools when it was placed
    placed: bool = False
    refused: int = 0
    parked: int = 0  # events it covers left in the spool unsent on purpose
    abandoned: bool = False

    def covers(self, experiment_id: str, first: int) -> bool:
        """Whether the event at position ``first`` of ``experiment_id`` is one it waits for.

        Example:
            >>> mark = Mark(("exp-1",), adopt=False, goals={"exp-1": 1000}, placed=True)
            >>> mark.covers("exp-1", 999), mark.covers("exp-1", 1000), mark.covers("exp-2", 0)
            (True, False, False)
        """
        if self.experiment_ids is not None and experiment_id not in self.experiment_ids:
            return False
        return not self.placed or first < self.goals.get(experiment_id, 0)


def held_here(lock: Any) -> bool:
    """Whether this thread holds ``lock`` already: true only for a signal handler that
    interrupted this very thread inside the sender."""
    is_owned = getattr(lock, "_is_owned", None)
    return bool(is_owned is not None and is_owned())


class SenderState:
    """What a sender's threads share (see the module docstring).

    ``uplink`` sends a batch once and paces its retries; ``host`` is recorded in the spool
    (``syvain-metrics sync`` sends to that host only); ``spool_dir`` is where the spool goes
    (``None``: memory only).

    On a user's thread, the shared lock is only ever taken as ``with self._lock:`` on the C
    ``RLock`` (never through ``self._changed``, whose ``__enter__`` is Python code): CPython
    checks for a pending interrupt or signal at calls, function starts and backward jumps,
    never between a ``with`` statement's C ``__enter__`` and the start of its protected
    block, so an interrupt there either comes before the lock is taken or is handled by
    ``__exit__``. A signal handler that runs while its thread is inside that block sees it
    held (:func:`held_here`) and does not wait for the other threads.
    """

    tags: Mapping[str, Any] | None = None
    """Metadata every event carries, merged when it is encoded (an event's own key wins)."""

    def __init__(
        self,
        uplink: Uplink,
        *,
        host: str,
        spool_dir: Path | None,
        interval: float,
    ) -> None:
        self.ids = EventIdSource()
        self.spool_dir = spool_dir
        self.interval = interval
        self._uplink = uplink
        self.host = host
        self._health = SpoolHealth(spool_dir, host=host)
        # Sealed batches held in memory only (the spool could not be written), by id, in
        # order, the one being sent included until it has its answer; the spooler writes
        # them once the disk takes writes again.
        self._memory_only: dict[int, Batch] = {}
        self._sending: dict[int, Batch] = {}  # by id: the batches in flight
        self._aside: dict[int, str] = {}  # batches whose spool file read back damaged
        # Batches of children's spools whose count holds one per damaged line, not per event.
        self._by_line: set[int] = set()
        self._queue: deque[Any] = deque()
        self.queue_limit = QUEUE_LIMIT
        self._bell = Doorbell()
        self._stopping = False
        self._passes = 0  # the spooler's passes begun and ended: progress, for log()
        # Not Thread.is_alive(), which an interrupt on the user's thread can corrupt.
        self._spooling = True
        self._held_back: set[int] = set()  # threads whose log() waits for the spooler
        self._stalled_at = -1  # the spooler's passes when a held-back log() gave up
        # Reentrant: a signal handler may call flush()/close() on a thread that was inside.
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._outboxes: dict[str, Outbox] = {}
        self._in_hand: dict[str, int] = {}  # taken off the queue, not in an outbox yet
        self._ready: deque[Batch] = deque()
        self._marks: list[Mark] = []
        self._adopted: list[Leftover] = []
        self._numbers = itertools.count(1)
        self.stopped = False

    @property
    def spool(self) -> Spool | None:
        """The spool, once the spooler created it."""
        return self._health.spool

    def _unanswered(self, targets: tuple[str, ...] | None) -> int:
        """Events of ``targets`` (all when ``None``) without an answer; lock held."""
        queued = sum(
            1
            for item in list(self._queue)
            if type(item) is tuple and (targets is None or item[0] in targets)
        )
        in_hand = sum(n for eid, n in self._in_hand.items() if targets is None or eid in targets)
        boxes = [b for eid, b in self._outboxes.items() if targets is None or eid in targets]
        return queued + in_hand + sum(b.unanswered() for b in boxes)

    def _hold_back(self) -> None:
        """A flood: sleep in short slices, taking no lock, until the spooler has taken the
        queue below its limit. Not when this thread is a signal handler that interrupted
        the sender (or a held-back ``log()``): the spooler may need what that thread holds,
        and nested handlers must not pile up; nor once the spooler is stuck for
        :data:`STALL` seconds: logging goes on, in memory."""
        me = threading.get_ident()
        if me in self._held_back or held_here(self._lock):
            return
        passes = self._passes
        if passes == self._stalled_at:
            return  # still stuck since a wait gave up
        self._held_back.add(me)
        try:
            since = time.monotonic()
            while len(self._queue) >= self.queue_limit and not self._stopping:
                if self._passes != passes:
                    passes, since = self._passes, time.monotonic()
                elif time.monotonic() - since > STALL or not self._spooling:
                    self._stalled_at = passes
                    logger.warning(
                        "syvain_metrics: the log() spooler made no progress for %.0f s; "
                        "log() goes on queueing in memory (%d events queued)",
                        STALL,
                        len(self._queue),
                    )
                    return
                if not self._bell.rung:
                    self._bell.ring()
                time.sleep(_HOLD_SLICE)
        finally:
            self._held_back.discard(me)

    def _pause(self, seconds: float) -> bool:
        """Sleep ``seconds`` on a background thread (between two tries of a batch or of a
        control record); ``True`` when the sender stops instead.

        Example:
            >>> sender._pause(0.5)  # doctest: +SKIP
            False
        """
        deadline = time.monotonic() + seconds
        with self._changed:
            while not self._stopping:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(min(left, IDLE_SLICE))
        return True

    def _held_in_memory(self) -> int:
        """Sealed batches holding their bytes, in flight included (lock held)."""
        ready = sum(1 for b in self._ready if b.chunks is not None)
        return ready + sum(1 for b in self._sending.values() if b.chunks is not None)

    def _seal(self, experiment_id: str, box: Outbox) -> None:
        with self._changed:
            path = box.open_path
            chunks: list[Chunk] | None = box.open_chunks
            on_disk = path is not None and box.open_on_disk
            if path is not None and self.spool is not None:
                self.spool.seal(path)
            in_memory = self._held_in_memory()
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

    def _check_marks(self) -> None:
        """Release the marks whose events all have an answer (called with the lock held)."""
        for mark in list(self._marks):
            # done is a frontier (every event before it answered), so done >= goal suffices.
            if mark.placed and all(
                self._outboxes[eid].done >= goal for eid, goal in mark.goals.items()
            ):
                self._marks.remove(mark)
                mark.reached.open()

    def _count_parked(self, experiment_id: str, first: int, count: int) -> None:
        """Add ``count`` events from position ``first`` parked unsent (lock held)."""
        for mark in self._marks:
            if mark.covers(experiment_id, first):
                mark.parked += count

    def _count_refused(self, experiment_id: str, box: Outbox, first: int, count: int) -> None:
        """Add ``count`` refusals of events from position ``first`` (lock held)."""
        box.refused += count
        for mark in self._marks:
            if mark.covers(experiment_id, first):
                mark.refused += count

    @staticmethod
    def _take_rejections(box: Outbox, goal: int | None) -> list[tuple[int, RejectedEvent]]:
        """The refusals of events before ``goal`` (all when ``None``), now reported."""
        taken = [(f, r) for f, r in box.unreported if goal is None or f < goal]
        box.unreported = [(f, r) for f, r in box.unreported if goal is not None and f >= goal]
        taken.sort(key=lambda pair: pair[0])  # batches may be answered in any order
        return taken
