"""The state one sender's threads share: per-experiment outboxes, the batches ready to
send, the marks waits are waiting on, and the spool's health.

:class:`SenderState` holds it and the few operations both threads make under its lock
(sealing a batch, releasing marks); the spooler thread
(:mod:`~syvain_metrics.pipeline.spooler`) and the delivery thread and the ``log()`` side
(:mod:`~syvain_metrics.pipeline.sender`) build on it.

Example:
    >>> state = SenderState(uplink, host=url, spool_dir=None, interval=1.0)  # doctest: +SKIP
"""

from __future__ import annotations

import itertools
import threading
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

SPOOL_INTERVAL = 0.2
"""Seconds between two passes of the spooler: the most a hard kill can lose."""

BATCHES_IN_MEMORY = 16
"""Sealed batches that keep their bytes in memory (about 16,000 events, 2-2.5 MB); with a spool,
the rest wait on disk only."""

REJECTED_KEPT = 1_000
"""Rejected events kept per experiment for the next ``flush()`` to report (each is also
logged as a warning when it happens)."""


@dataclass
class Outbox:
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
class Mark:
    """Queued behind the events a wait covers; ``goals`` are, per experiment, how many events
    must have an answer. ``adopt``: take over dead children's spools first."""

    experiment_ids: tuple[str, ...] | None  # None: every experiment
    adopt: bool
    reached: threading.Event = field(default_factory=threading.Event)
    goals: dict[str, int] = field(default_factory=dict)
    adopted: int = 0  # events taken over from children's spools when it was placed
    abandoned: bool = False


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
        self._sending: Batch | None = None
        self._aside: dict[int, str] = {}  # batches whose spool file read back damaged
        # Batches of children's spools whose count holds one per damaged line, not per event.
        self._by_line: set[int] = set()
        self._queue: deque[Any] = deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
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
        return queued + in_hand + sum(b.collected - b.done for b in boxes)

    def _seal(self, experiment_id: str, box: Outbox) -> None:
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

    def _check_marks(self) -> None:
        """Release the marks whose events all have an answer (called with the lock held)."""
        for mark in list(self._marks):
            if all(self._outboxes[eid].done >= goal for eid, goal in mark.goals.items()):
                self._marks.remove(mark)
                mark.reached.set()

    @staticmethod
    def _take_rejections(box: Outbox, goal: int | None) -> list[tuple[int, RejectedEvent]]:
        """The refusals of events before ``goal`` (all when ``None``), now reported."""
        taken = [(f, r) for f, r in box.unreported if goal is None or f < goal]
        box.unreported = [(f, r) for f, r in box.unreported if goal is not None and f >= goal]
        return taken
