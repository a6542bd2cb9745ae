"""The store's base: the database connections, transactions and write turns, and the
layout a database is brought to when it opens.

One ``sqlite3`` connection writes for every thread (waitress answers on several); an
``RLock`` makes each public write one transaction, so a batch of metrics is stored whole or
not at all and a check-then-insert cannot race. A database file also has a reader connection
per thread (WAL), so a long read never holds up a write. Each area of the store (credentials,
folders, experiments, ...) is a mixin over :class:`StoreBase`.

Example:
    >>> base = StoreBase(":memory:")
    >>> with base.transaction():
    ...     base.now_ms() > 0
    True
"""

from __future__ import annotations

import logging
import os
import secrets
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from syvain_metrics.server.errors import not_found
from syvain_metrics.server.limits import WAL_WAIT_SECONDS
from syvain_metrics.server.sql import register_functions
from syvain_metrics.server.staging import STAGING_SLOTS, StagedBatch, StagingPool, StagingSlot
from syvain_metrics.server.store.ids import create_private
from syvain_metrics.server.store.records import EXPERIMENT_COLUMNS
from syvain_metrics.server.store.schema import (
    DATA_TABLES,
    SCHEMA_VERSION,
    layout_version,
    next_step,
)

if sys.platform != "win32":
    import fcntl

log = logging.getLogger(__name__)


def _enter_wal(db: sqlite3.Connection) -> None:
    """``PRAGMA journal_mode=WAL``, waiting while another process holds the database: the
    change needs the file to itself, and SQLite answers "database is locked" at once or
    after its busy timeout, whatever the wait the other process needs (its layout step)."""
    deadline = time.monotonic() + WAL_WAIT_SECONDS
    pause = 0.01
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() >= deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.5)


class StoreBase:
    """Connections, transactions and write turns over one SQLite database (a file, or
    ``":memory:"``), opened in the current layout.

    Args:
        path: a database file (opened in WAL mode) or ``":memory:"``.
        clock: seconds since the epoch (tests inject a fake one to move time).
        shared: other processes serve the same database file (``serve --processes``): write
            transactions take turns through a lock file (``<path>.lock``) instead of SQLite's
            retries, and dashboard logins are kept in the database, where every process
            sees them.

    Raises:
        NewerLayoutError: the database was written by a newer server (it is left as it is).
    """

    def __init__(
        self,
        path: str = ":memory:",
        *,
        clock: Callable[[], float] = time.time,
        shared: bool = False,
    ) -> None:
        if shared and (path in ("", ":memory:") or path.startswith("file:")):
            raise ValueError("Only a database file can be shared by several processes.")
        if shared and sys.platform == "win32":
            raise ValueError("Sharing a database between processes needs a POSIX system.")
        self.path = path
        self.clock = clock
        self.shared = shared
        self._lock = threading.RLock()
        create_private(path)
        self._db = self._connect()
        try:
            layout_version(self._db, path)  # before anything writes to it
        except BaseException:
            self._db.close()
            raise
        self._turns: int | None = None
        if shared:
            # A file of its own: closing a descriptor of the database file would drop the
            # locks SQLite holds on it.
            lock_path = f"{path}.lock"
            create_private(lock_path)
            self._turns = os.open(lock_path, os.O_RDWR)
        # A staged batch is attached by its URI, which needs a connection that reads URIs; a
        # path that is itself a URI is left as it is, and batches are then read in the write.
        self._staging = StagingPool(0 if path.startswith("file:") else STAGING_SLOTS)
        # A database file has readers of its own, one per thread (WAL): a long read never
        # holds up a write. In memory, everything shares the one connection.
        self._readers: list[sqlite3.Connection] | None = None
        if path != ":memory:":
            _enter_wal(self._db)
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._readers = []
        # Writes touch index pages all over a large table: keep them in memory (64 MB).
        self._db.execute("PRAGMA cache_size = -65536")
        self._reader = threading.local()
        self._trace: Callable[[str], object] | None = None
        self._depth = 0  # transactions open on the writer (the lock's owner), for savepoints
        self._purged_at_ms = 0  # when expired idempotency records were last deleted
        self._accepted: dict[str, str] = {}  # API key hash -> organization id
        self._known: list[str] = []  # accepted API keys this store knows as text
        self._open_layout()
        self._id_prefix = self._event_id_prefix()

    def _open_layout(self) -> None:
        """Bring the database to the current layout, one step and its version per
        transaction. The version is read again inside each: another process opening the same
        file may have taken the step meanwhile."""
        vacuum = False
        while True:
            with self._tx() as db:
                found = layout_version(db, self.path)
                if found == SCHEMA_VERSION:
                    break
                version, step = next_step(db, found)
                log.info("database %s: layout %d -> %d", self.path, found, version)
                vacuum = step(db) or vacuum
                db.execute(f"PRAGMA user_version = {version}")
        if vacuum:
            self._db.execute("VACUUM")  # the freed pages still hold the old text
            if self._readers is not None:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _event_id_prefix(self) -> str:
        with self._tx() as db:
            # 20 random hex digits in the first four groups of a UUID; the sequence fills the
            # fifth. The first process to open a new database chooses it.
            digits = secrets.token_hex(10)
            prefix = f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:]}-"
            db.execute("INSERT OR IGNORE INTO settings VALUES ('event_id_prefix', ?)", (prefix,))
            found = db.execute(
                "SELECT value FROM settings WHERE name = 'event_id_prefix'"
            ).fetchone()
        return str(found[0])

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(
            self.path,
            check_same_thread=False,
            isolation_level=None,
            uri=not self.path.startswith("file:"),  # a plain path stays a plain path
        )
        db.row_factory = sqlite3.Row
        register_functions(db)
        return db

    # -- plumbing ---------------------------------------------------------------------

    def now_ms(self) -> int:
        """The server's current time in milliseconds."""
        return int(self.clock() * 1000)

    @contextmanager
    def _tx(self, staged: StagedBatch | None = None) -> Iterator[sqlite3.Connection]:
        """One transaction under the store lock; any exception rolls it back. Inside another
        (see :meth:`transaction`) it is a savepoint: its own failure undoes its own writes,
        and the whole commits or rolls back together. A staged batch's slot is attached for
        the transaction (before it begins: SQLite attaches nothing inside one)."""
        with self._lock:
            outer = self._depth == 0
            slot = staged.slot if staged is not None and outer else None
            if slot is not None and not slot.attached:
                self._db.execute(f"ATTACH DATABASE ? AS {slot.schema}", (slot.uri,))
                slot.attached = True
            if outer and self._turns is not None:
                # Blocks until the other processes' write is over; SQLite's own wait
                # polls, with sleeps that grow between tries.
                fcntl.flock(self._turns, fcntl.LOCK_EX)
            try:
                with self._tx_body() as db:
                    yield db
            finally:
                if outer and self._turns is not None:
                    fcntl.flock(self._turns, fcntl.LOCK_UN)
                if slot is not None:
                    self._detach(slot)

    def _detach(self, slot: StagingSlot) -> None:
        try:
            self._db.execute(f"DETACH DATABASE {slot.schema}")
        except sqlite3.Error:
            # Still attached: the next transaction that takes the slot finds it so.
            log.warning("could not detach %s", slot.schema, exc_info=True)
            return
        slot.attached = False

    @contextmanager
    def _tx_body(self) -> Iterator[sqlite3.Connection]:
        """The transaction or savepoint itself (the caller holds the lock)."""
        outer = self._depth == 0
        self._db.execute("BEGIN IMMEDIATE" if outer else "SAVEPOINT inner")
        self._depth += 1
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK" if outer else "ROLLBACK TO inner")
            if not outer:
                self._db.execute("RELEASE inner")
            raise
        finally:
            self._depth -= 1
        if not outer:
            self._db.execute("RELEASE inner")
            return
        try:
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")  # never leave the writer inside a transaction
            raise

    @contextmanager
    def transaction(self, staged: StagedBatch | None = None) -> Iterator[None]:
        """Everything the store writes inside the block commits together, or not at all (a
        request's writes, its ingestion-key use and its idempotency record). Give it the
        :meth:`staging` of the batch the block ingests, if any.

        Example:
            >>> with store.staging(metrics) as staged:  # doctest: +SKIP
            ...     with store.transaction(staged):
            ...         store.ingest(org_id, experiment_id, metrics, staged=staged)
            ...         store.save_idempotency(credential, key, fingerprint, 200, body)
        """
        with self._tx(staged):
            yield

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """A connection for one read, its statements on one snapshot."""
        if self._readers is None:
            with self._lock:
                yield self._db
            return
        db: sqlite3.Connection | None = getattr(self._reader, "db", None)
        if db is None:
            db = self._reader.db = self._connect()
            db.execute("PRAGMA query_only = ON")
            with self._lock:
                self._readers.append(db)
                db.set_trace_callback(self._trace)
        db.execute("BEGIN")
        try:
            yield db
        finally:
            db.execute("COMMIT")

    @contextmanager
    def recording(self) -> Iterator[list[str]]:
        """Collect the SQL the store runs inside the block, parameters filled in (for tests of
        query plans).

        Example:
            >>> with store.recording() as statements:  # doctest: +SKIP
            ...     store.list_experiments(org_id, ...)
        """
        statements: list[str] = []
        self._set_trace(statements.append)
        try:
            yield statements
        finally:
            self._set_trace(None)

    def _set_trace(self, callback: Callable[[str], object] | None) -> None:
        with self._lock:
            self._trace = callback
            for db in [self._db, *(self._readers or [])]:
                db.set_trace_callback(callback)
            self._staging.set_trace(callback)

    def query_plan(self, statement: str) -> list[str]:
        """The steps of ``EXPLAIN QUERY PLAN`` for a statement, e.g. ``SEARCH e USING INDEX ...``.

        Example:
            >>> StoreBase().query_plan("SELECT id FROM folders WHERE id = 'f'")
            ['SEARCH folders USING COVERING INDEX sqlite_autoindex_folders_1 (id=?)']
        """
        with self._lock:
            return [row[3] for row in self._db.execute("EXPLAIN QUERY PLAN " + statement)]

    def close(self) -> None:
        """Close the database connections."""
        with self._lock:
            for reader in self._readers or []:
                reader.close()
            self._db.close()
            self._staging.close()
            if self._turns is not None:
                os.close(self._turns)
                self._turns = None

    def reset(self) -> None:
        """Delete every folder, experiment, event, annotation, ingestion key and idempotency
        record; organizations and API keys stay.

        Example:
            >>> store.reset()  # doctest: +SKIP
        """
        with self._tx() as db:
            for table in DATA_TABLES:
                db.execute(f"DELETE FROM {table}")

    # -- lookups every area makes ---------------------------------------------------------

    def _folder_index(
        self, db: sqlite3.Connection, org_id: str
    ) -> dict[str, tuple[str | None, str]]:
        rows = db.execute("SELECT id, parent_id, name FROM folders WHERE org_id = ?", (org_id,))
        return {r["id"]: (r["parent_id"], r["name"]) for r in rows}

    def _experiment_row(self, db: sqlite3.Connection, org_id: str, experiment_id: str) -> Any:
        """The organization's experiment's row; 404 when there is none."""
        row = db.execute(
            f"SELECT {EXPERIMENT_COLUMNS} FROM experiments WHERE org_id = ? AND id = ?",
            (org_id, experiment_id),
        ).fetchone()
        if row is None:
            raise not_found("Experiment")
        return row
