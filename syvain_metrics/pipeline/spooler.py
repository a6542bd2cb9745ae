"""The spooler thread of a sender: from the ``log()`` queue to batches on disk.

It wakes every :data:`~syvain_metrics.pipeline.state.SPOOL_INTERVAL` seconds (or as soon
as a full request is waiting), encodes the new events once, appends them to the spool,
and groups them per experiment into batches of up to 1,000, sealing a batch when it is
full or ``interval`` seconds old. It places the marks waits queue (sealing what they
cover), takes over the spools forked children left, and writes the batches held in memory
only once the disk takes writes again (:mod:`~syvain_metrics.pipeline.spool_health`).

Example:
    >>> class Sender(Spooler): ...  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Any

from syvain_metrics.contract.limits import MAX_METRICS_PER_INGEST
from syvain_metrics.errors import RejectedEvent
from syvain_metrics.pipeline.batch import Batch, Chunk, QueuedEvent, encode_chunk
from syvain_metrics.pipeline.spool import CHILDREN, claim_leftovers, drop_if_empty
from syvain_metrics.pipeline.spool_files import load_batch
from syvain_metrics.pipeline.state import (
    BATCHES_IN_MEMORY,
    SPOOL_INTERVAL,
    Mark,
    Outbox,
    SenderState,
)

logger = logging.getLogger("syvain_metrics")


class Spooler(SenderState):
    """The spooler thread's side of a sender (its loop is :meth:`_spool_loop`)."""

    def _spool_loop(self) -> None:
        try:
            while True:
                self._bell.wait(SPOOL_INTERVAL)
                stopping = self._stopping
                self._passes += 1
                try:
                    self._collect()  # when stopping: what arrived meanwhile goes to the spool
                except Exception:  # pragma: no cover - keep spooling whatever happens
                    logger.exception("syvain_metrics: the log() spooler hit an unexpected error")
                self._passes += 1
                if stopping:
                    return
        finally:
            self._spooling = False
            # The delivery threads are told here, not by close() on the user's thread: a
            # Condition taken there could be left held by an interrupt.
            with self._changed:
                self._changed.notify_all()

    def spool_now(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` seconds) until every event queued before this call is
        in the spool on disk — not sent, only safe from a SIGKILL of the process: what a
        checkpoint needs, since a job resumed from it will not log those steps again.
        Returns whether that happened in time.

        Example:
            >>> sender.spool_now(timeout=5.0)  # doctest: +SKIP
            True
        """
        if not self._spooling or self.spool_dir is None:
            return False
        begun = self._passes
        # A pass that began before this call may have taken the queue before the last put.
        goal = begun + (3 if begun % 2 else 2)
        self._bell.ring()
        deadline = time.monotonic() + timeout
        while self._passes < goal:
            if not self._spooling or time.monotonic() >= deadline:
                return False
            time.sleep(0.001)
        return True

    def _collect(self) -> None:
        if self.spool is None:
            self._health.create()  # first: this pass's events go to it
        queue = self._queue
        taken: list[Any] = []
        with self._lock:  # so pending() never misses the events in hand
            while queue:
                item = queue.popleft()
                taken.append(item)
                if type(item) is tuple:
                    self._in_hand[item[0]] = self._in_hand.get(item[0], 0) + 1
                else:
                    self._take(item)
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
        if self._memory_only or (self.spool is not None and not self._health.writing):
            self._respool(now)

    def _take(self, item: Any) -> None:
        """Told (lock held) of an item other than an event taken off the queue."""

    def _fill(self, fresh: dict[str, list[QueuedEvent]]) -> None:
        """Encode each experiment's new events (one chunk per pass and batch), spool them,
        and add them to the open batch, sealing full ones."""
        now = time.monotonic()
        for experiment_id, items in fresh.items():
            with self._lock:
                box = self._outboxes.setdefault(experiment_id, Outbox())
            start = 0
            while start < len(items):
                if not box.open_count:
                    box.open_first = box.collected
                    box.open_since = now
                    box.open_path = None
                    box.open_on_disk = self._health.writing
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
        tags = self.tags
        try:
            return encode_chunk(items, tags)
        except (TypeError, ValueError):  # pragma: no cover - events are validated before
            good = []
            for item in items:
                try:
                    encode_chunk([item], tags)
                except (TypeError, ValueError) as error:
                    self._refuse_unencodable(item, error)
                else:
                    good.append(item)
            return encode_chunk(good, tags)

    def _refuse_unencodable(self, item: QueuedEvent, error: Exception) -> None:
        logger.error("syvain_metrics: a log() event could not be encoded: %s", error)
        with self._changed:
            box = self._outboxes.setdefault(item[0], Outbox())
            refusal = RejectedEvent({"name": item[2], "step": item[4]}, f"not encodable: {error}")
            box.unreported.append((box.collected - 1, refusal))
            self._count_refused(item[0], box, box.collected - 1, 1)
            self._check_marks()

    def _spool_chunk(self, experiment_id: str, box: Outbox, chunk: Chunk) -> None:
        if self.spool is None or not self._health.writing or not box.open_on_disk:
            box.open_on_disk = False
            return
        try:
            if box.open_path is None:
                box.open_path = self.spool.directory / f"b-{next(self._numbers):09d}.jsonl"
            self.spool.append(experiment_id, int(box.open_path.stem[2:]), [chunk])
            self._health.written()
        except OSError as error:
            # A full or read-only disk must not stop logging: carry on in memory, and try
            # the disk again later. What the file holds already is removed once answered.
            self._health.failed(error)
            box.open_on_disk = False

    def _respool(self, now: float) -> None:
        """Once the spool may be tried again: write the batches held in memory only, oldest
        first, each to a file of its own; stop at the first failure."""
        spool = self.spool
        if spool is None or (not self._health.writing and now < self._health.retry_at):
            return
        self._health.writing = True  # new batches try the disk again too: a probe if none waits
        while True:
            with self._lock:
                batch = next(iter(self._memory_only.values()), None)
            if batch is None:
                break
            chunks = batch.chunks or []
            try:
                path = spool.append(batch.experiment_id, next(self._numbers), chunks)
            except OSError as error:
                self._health.failed(error)
                return
            spool.seal(path)
            stale: Path | None = path
            with self._changed:
                if self._memory_only.pop(id(batch), None) is batch:  # not answered meanwhile
                    stale, batch.path = batch.path, path  # a partial file of the batch, if any
                    in_memory = self._held_in_memory()
                    if in_memory > BATCHES_IN_MEMORY and id(batch) not in self._sending:
                        batch.chunks = None  # on disk only until its turn comes
            if stale is not None:
                with contextlib.suppress(OSError):
                    stale.unlink()
            self._health.written()

    def _seal_old(self, now: float) -> None:
        for experiment_id, box in list(self._outboxes.items()):
            if box.open_count and now - box.open_since >= self.interval:
                self._seal(experiment_id, box)

    def _place(self, mark: Mark) -> None:
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
            mark.placed = True  # listed in _marks since its wait began
            self._check_marks()

    def _adopt_children(self, targets: tuple[str, ...] | None) -> int:
        """Take over the spools of forked children that ended without sending everything
        (read and checked once; beyond :data:`BATCHES_IN_MEMORY` they wait on disk only,
        like evicted ones); return how many events of ``targets`` (all when ``None``) were
        taken over, a damaged line counting as one."""
        adopted = 0
        if self.spool_dir is None or self._health.refused is not None:
            return adopted  # a refused directory is not looked into
        for leftover in claim_leftovers(self.spool_dir / CHILDREN):
            self._adopted.append(leftover)
            for path in leftover.batch_files:
                try:
                    read = load_batch(path)
                except (OSError, ValueError):
                    if drop_if_empty(path):
                        continue  # created, never written: it held no event
                    # Left where it is, for `syvain-metrics sync` to report and set aside.
                    logger.warning("syvain_metrics: skipping unreadable spool file %s", path)
                    continue
                experiment_id = read.experiment_id
                with self._lock:
                    box = self._outboxes.setdefault(experiment_id, Outbox())
                if box.open_count:
                    self._seal(experiment_id, box)  # keep this session's order: earlier first
                # How many events a damaged line held is unknown: each counts as one, so that
                # it is reported as refused and its file set aside, never silently deleted.
                count = sum(chunk.size for chunk in read.chunks) + len(read.damage)
                with self._changed:
                    in_memory = self._held_in_memory()
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
