"""Staging an ingest's rows before the write lock: the expensive half of an insert, in parallel.

Reading a batch's rows out of its JSON text is most of what storing it costs SQLite (about
three fifths of the insert, measured on 1,000-event batches). Done inside the write
transaction, it makes every other writer wait for it; done before, by several request
threads at once, it leaves the write only the index work. So each batch is first read into
a small in-memory database of its own (SQLite's ``memdb``: one per slot, a connection of its
own, no lock shared with the store), and the write transaction attaches that database and
copies its rows in one statement.

A slot serves one batch at a time; when every slot is busy, or this SQLite has no
``memdb``, a batch is read inside the transaction as before: the same rows either way.

Example:
    >>> pool = StagingPool()
    >>> with pool.staged('{"data":[{"client_event_id":"a","name":"loss","value":1}]}', "$.data", 5) as slot:
    ...     slot is None or slot.db.execute("SELECT * FROM rows").fetchall()
    [('a', 'loss', 1, None, '{}', 5)]
    >>> pool.close()
"""

from __future__ import annotations

import logging
import queue
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from syvain_metrics.server.sql import CREATE_STAGED_ROWS, STAGE_EVENTS

STAGING_SLOTS = 8
"""Batches staged at once (SQLite attaches at most ten databases to a connection; the write
transaction attaches one slot at a time, but each needs a schema name of its own)."""

log = logging.getLogger(__name__)


class StagingSlot:
    """One staging database: its URI, the schema name it is attached under, its connection."""

    def __init__(self, uri: str, schema: str) -> None:
        self.uri = uri
        self.schema = schema
        self.db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        self.db.execute(CREATE_STAGED_ROWS)
        self.attached = False
        """Whether the store's writer has it attached (set by the store, under its lock)."""

    def fill(self, batch: str, path: str, now: int) -> None:
        """Read the batch's rows (the JSON array at ``path`` in ``batch``) into ``rows``."""
        self.db.execute("DELETE FROM rows")
        self.db.execute(STAGE_EVENTS, {"batch": batch, "path": path, "now": now})

    def clear(self) -> None:
        self.db.execute("DELETE FROM rows")  # a large batch's rows are not kept until the next

    def close(self) -> None:
        self.db.close()


class StagingPool:
    """Up to :data:`STAGING_SLOTS` staging databases of one store, made as they are needed."""

    def __init__(self, slots: int = STAGING_SLOTS) -> None:
        self._token = secrets.token_hex(8)  # names stay unique across stores in one process
        self._limit = slots
        self._free: queue.SimpleQueue[StagingSlot] = queue.SimpleQueue()
        self._made: list[StagingSlot] = []
        self._lock = threading.Lock()
        self._available = True
        self._trace: Callable[[str], object] | None = None

    def _take(self) -> StagingSlot | None:
        try:
            return self._free.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            if not self._available or len(self._made) >= self._limit:
                return None
            number = len(self._made)
            try:
                slot = StagingSlot(
                    f"file:/syvain-staging-{self._token}-{number}?vfs=memdb", f"staging_{number}"
                )
            except sqlite3.Error as error:  # an SQLite without memdb (before 3.36)
                log.info("batches are read inside the write transaction: %s", error)
                self._available = False
                return None
            slot.db.set_trace_callback(self._trace)
            self._made.append(slot)
            return slot

    @contextmanager
    def staged(self, batch: str, path: str, now: int) -> Iterator[StagingSlot | None]:
        """A slot holding the batch's rows for the duration of the block, or ``None`` (no slot
        free: the caller reads the batch inside its transaction)."""
        slot = self._take()
        if slot is not None:
            try:
                slot.fill(batch, path, now)
            except sqlite3.Error:
                log.warning("could not stage a batch; it is read in the transaction", exc_info=True)
                self._give_back(slot)
                slot = None
        try:
            yield slot
        finally:
            if slot is not None:
                self._give_back(slot)

    def _give_back(self, slot: StagingSlot) -> None:
        with self._lock:
            if not self._available:
                return  # closed meanwhile (the store is closing)
            slot.clear()
            self._free.put(slot)

    def set_trace(self, callback: Callable[[str], object] | None) -> None:
        """Pass every statement the staging databases run to ``callback`` (``None``: stop)."""
        with self._lock:
            self._trace = callback
            for slot in self._made:
                slot.db.set_trace_callback(callback)

    def close(self) -> None:
        """Close every staging database."""
        with self._lock:
            self._available = False
            while True:
                try:
                    self._free.get_nowait()
                except queue.Empty:
                    break
            for slot in self._made:
                slot.close()
            self._made.clear()


@dataclass(frozen=True)
class StagedBatch:
    """A batch of metrics made ready for :meth:`Store.ingest` before the write lock is taken
    (:meth:`Store.staging`): its time, its JSON text and, when a staging slot was free, its
    rows already read out of that text."""

    now: int
    text: str | None
    """What SQLite reads the rows from; ``None``: they are bound one by one (a NUL in a name or
    an id, which SQLite's JSON functions cannot read back)."""
    path: str
    slot: StagingSlot | None = None
