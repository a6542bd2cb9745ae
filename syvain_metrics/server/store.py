"""The local server's SQLite store: organizations, API keys, folders, experiments,
metric events, annotations, ingestion keys and idempotency records.

One ``sqlite3`` connection serves every thread (waitress answers on several); an
``RLock`` makes each public method one transaction, so a batch of metrics is
stored whole or not at all and a check-then-insert cannot race. Methods take the
caller's organization id and answer 404 for another organization's ids.

Example:
    >>> store = Store(":memory:", clock=lambda: 1_795_716_952.0)
    >>> [key] = store.use_api_keys(["ak_local_demo"])
    >>> org = store.authenticate(key).org_id
    >>> store.create_folder(org, "baselines", None)["path_name"]
    'baselines'
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import sqlite3
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from operator import itemgetter
from typing import Any, Literal

from syvain_metrics.contract.limits import DEFAULT_ERROR_NAME
from syvain_metrics.contract.routes import dashboard_experiment_path
from syvain_metrics.server.errors import ApiError, invalid, not_found
from syvain_metrics.server.limits import MAX_ROWS_ANSWER_BYTES
from syvain_metrics.server.sql import (
    DATA_TABLES,
    EVENT_COLUMNS,
    INSERT_EVENT_ROW,
    INSERT_EVENTS,
    SCHEMA,
    SCHEMA_VERSION,
    RowQuery,
    SeriesFilter,
    batch_json,
    canonical,
    compact,
    insert_staged,
    register_functions,
    row_wire,
    rows_json,
)

if sys.platform != "win32":
    import fcntl

from syvain_metrics.server.staging import STAGING_SLOTS, StagingPool, StagingSlot

DEFAULT_INGESTION_KEY_TTL_MS = 60 * 60 * 1000
IDEMPOTENCY_TTL_MS = 24 * 60 * 60 * 1000
ORGANIZATION_NAME = "Local"

log = logging.getLogger(__name__)


def new_id() -> str:
    """A random UUID4 string, the form of every id the server makes."""
    return str(uuid.uuid4())


def token_hash(token: str) -> str:
    """The stored identity of a secret: API keys and ingestion tokens are kept only as their
    SHA-256 hashes. A fast hash is enough for the keys and tokens the server makes (128 bits
    or more from ``secrets``: nothing to guess); a key you choose yourself is only as hard
    to guess as you make it.

    Example:
        >>> token_hash("ak_local_demo")[:16]
        '8c70c4fafd39bd38'
    """
    return hashlib.sha256(token.encode()).hexdigest()


def create_private(path: str) -> None:
    """Create a file of the server's (a database, its lock file) readable and writable by
    its owner only (0600) unless it exists; SQLite gives a database's ``-wal`` and ``-shm``
    files the same mode. ``":memory:"`` and URIs are left alone.

    Example:
        >>> import os, stat, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "metrics.sqlite")
        >>> create_private(path)
        >>> oct(stat.S_IMODE(os.stat(path).st_mode))
        '0o600'
    """
    if path in ("", ":memory:") or path.startswith("file:"):
        return
    with suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


@dataclass(frozen=True)
class Principal:
    """Who sent a request: an API key (a whole organization) or one experiment's ingestion key.

    ``credential`` is a hash of the bearer token; idempotency keys are scoped to it.
    """

    kind: Literal["api_key", "ingestion_key"]
    org_id: str
    credential: str
    experiment_id: str | None = None
    key_id: str | None = None


def _folder_wire(
    org_id: str, folder_id: str, index: Mapping[str, tuple[str | None, str]]
) -> dict[str, Any]:
    parents: list[str] = []
    names = [index[folder_id][1]]
    parent = index[folder_id][0]
    while parent is not None:
        parents.append(parent)
        names.append(index[parent][1])
        parent = index[parent][0]
    return {
        "folder_id": folder_id,
        "org_id": org_id,
        "name": names[0],
        "parent_id_path": parents[::-1],
        "path_name": "/".join(reversed(names)),
    }


_EXPERIMENT_COLUMNS = (
    "seq, id, org_id, folder_id, slug, description, metadata_json, status, error_name, "
    "error_detail, created_at_ms, updated_at_ms, started_at_ms, done_at_ms, "
    "last_heartbeat_at_ms, last_event_at_ms"
)
_KEY_COLUMNS = (
    "id, experiment_id, name, created_at_ms, expires_at_ms, revoked_at_ms, last_used_at_ms"
)


_EXACT_INTEGERS = float(2**62)
"""Up to this magnitude an integer ``value`` reaches SQLite as a 64-bit integer and becomes
the same double as Python's ``float()`` of it; beyond 2**63, SQLite parses its digits as a
double itself, which need not round as Python does. (A float's text is its shortest
repr, which SQLite reads back exactly.)"""


def _float_value(metric: Mapping[str, Any]) -> Mapping[str, Any]:
    # Python's rounding of an integer value, not SQLite's reading of its digits.
    value = metric["value"]
    return metric if type(value) is float else {**metric, "value": float(value)}


def _values_exact_in_sqlite(metrics: Sequence[Mapping[str, Any]]) -> bool:
    # One whole-column pass in C.
    return bool(max(map(abs, map(itemgetter("value"), metrics))) <= _EXACT_INTEGERS)


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


class Store:
    """Every piece of server state, in one SQLite database (a file, or ``":memory:"``).

    Args:
        path: a database file (opened in WAL mode) or ``":memory:"``.
        clock: seconds since the epoch (tests inject a fake one to move time).
        shared: other processes serve the same database file (``serve --processes``): write
            transactions take turns through a lock file (``<path>.lock``) instead of SQLite's
            retries, and dashboard logins are kept in the database, where every process
            sees them.

    Example:
        >>> store = Store()
        >>> store.use_api_keys([])[0].startswith("ak_local_")
        True
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
        self._turns: int | None = None
        if shared:
            # A file of its own: closing a descriptor of the database file would drop the
            # locks SQLite holds on it.
            lock_path = f"{path}.lock"
            create_private(lock_path)
            self._turns = os.open(lock_path, os.O_RDWR)
        self._db = self._connect()
        # A staged batch is attached by its URI, which needs a connection that reads URIs; a
        # path that is itself a URI is left as it is, and batches are then read in the write.
        self._staging = StagingPool(0 if path.startswith("file:") else STAGING_SLOTS)
        # A database file has readers of its own, one per thread (WAL): a long read never
        # holds up a write. In memory, everything shares the one connection.
        self._readers: list[sqlite3.Connection] | None = None
        if path != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._readers = []
        # Writes touch index pages all over a large table: keep them in memory (64 MB).
        self._db.execute("PRAGMA cache_size = -65536")
        self._reader = threading.local()
        self._trace: Callable[[str], object] | None = None
        self._depth = 0  # transactions open on the writer (the lock's owner), for savepoints
        self._purged_at_ms = 0
        self._open_layout()
        self._accepted: dict[str, str] = {}  # API key hash -> organization id
        self._known: list[str] = []

    def _open_layout(self) -> None:
        """Create the tables, or bring a database of an earlier layout up to this one."""
        db = self._db
        columns = {row[1] for row in db.execute("PRAGMA table_info(events)")}
        # Layout 1 had a random event id under a unique index, layouts 1 and 2 the
        # experiment's id and organization in every event: copied into this layout once.
        if "experiment_id" in columns:
            db.execute("BEGIN IMMEDIATE")
            db.execute("ALTER TABLE events RENAME TO events_earlier_layout")
            for (name,) in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = "
                "'events_earlier_layout' AND sql IS NOT NULL"
            ).fetchall():
                db.execute(f'DROP INDEX "{name}"')
            for statement in SCHEMA.split(";"):  # executescript would commit
                if statement.strip():
                    db.execute(statement)
            kept = [c for c in EVENT_COLUMNS if c != "experiment_seq"]
            db.execute(
                f"INSERT INTO events (seq, experiment_seq, {', '.join(kept)}) "
                f"SELECT e.seq, x.seq, {', '.join('e.' + c for c in kept)} "
                "FROM events_earlier_layout e JOIN experiments x ON x.id = e.experiment_id "
                "ORDER BY e.seq"
            )
            db.execute("DROP TABLE events_earlier_layout")
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute("COMMIT")
        else:
            db.executescript(SCHEMA)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        self._hash_stored_api_keys()
        found = db.execute("SELECT value FROM settings WHERE name = 'event_id_prefix'").fetchone()
        if found is None:
            # 20 random hex digits in the first four groups of a UUID; the sequence fills
            # the fifth.
            digits = secrets.token_hex(10)
            prefix = f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:]}-"
            db.execute("INSERT INTO settings VALUES ('event_id_prefix', ?)", (prefix,))
            found = (prefix,)
        self._id_prefix: str = found[0]

    def _hash_stored_api_keys(self) -> None:
        """Layout 2 kept API keys as they are: keep only their hashes from now on."""
        db = self._db
        columns = {row[1] for row in db.execute("PRAGMA table_info(api_keys)")}
        if "key" not in columns:
            return
        db.execute("BEGIN IMMEDIATE")
        rows = db.execute("SELECT key, org_id, created_at_ms FROM api_keys").fetchall()
        db.execute("ALTER TABLE api_keys RENAME TO api_keys_layout_2")
        for statement in SCHEMA.split(";"):
            if "api_keys" in statement:
                db.execute(statement)
        db.executemany(
            "INSERT OR IGNORE INTO api_keys VALUES (?, ?, ?)",
            [(token_hash(r["key"]), r["org_id"], r["created_at_ms"]) for r in rows],
        )
        db.execute("DROP TABLE api_keys_layout_2")
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("COMMIT")
        db.execute("VACUUM")  # the old pages held the keys in plain text
        if self.path != ":memory:":
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

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
            >>> Store().query_plan("SELECT id FROM folders WHERE id = 'f'")
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

    # -- credentials --------------------------------------------------------------------

    def use_api_keys(self, keys: Sequence[str]) -> list[str]:
        """Accept exactly ``keys``, each its own organization (kept across restarts).

        With no keys, the keys already stored in the database are accepted again, or a
        random one is made when there are none. Keys are stored only as hashes, so the
        stored ones cannot be shown: returns the accepted keys this store knows as text
        (``[]`` for a database that already had keys).

        Example:
            >>> Store().use_api_keys(["ak_a", "ak_b"])
            ['ak_a', 'ak_b']
        """
        for key in keys:
            if not key or key != key.strip():
                raise ValueError("An API key must be non-empty, without surrounding whitespace.")
        with self._tx() as db:
            if not keys:
                stored = {
                    r["key_hash"]: r["org_id"]
                    for r in db.execute("SELECT key_hash, org_id FROM api_keys ORDER BY rowid")
                }
                if stored:
                    self._accepted, self._known = stored, []
                    return []
                keys = [f"ak_local_{secrets.token_hex(16)}"]
            self._accepted = {token_hash(key): self._org_for(db, key) for key in keys}
            self._known = list(dict.fromkeys(keys))
        return list(self._known)

    def add_api_key(self, key: str | None = None) -> str:
        """Accept one more API key (a random one when ``None``): another organization.

        Example:
            >>> Store().add_api_key("ak_other")
            'ak_other'
        """
        key = key or f"ak_local_{secrets.token_hex(16)}"
        with self._tx() as db:
            self._accepted[token_hash(key)] = self._org_for(db, key)
            if key not in self._known:
                self._known.append(key)
        return key

    @property
    def api_keys(self) -> list[str]:
        """The accepted API keys this store was given or made (stored keys are only hashes)."""
        return list(self._known)

    @property
    def api_key_count(self) -> int:
        """How many API keys this store accepts, the stored ones included."""
        return len(self._accepted)

    def _org_for(self, db: sqlite3.Connection, key: str) -> str:
        digest = token_hash(key)
        found = db.execute("SELECT org_id FROM api_keys WHERE key_hash = ?", (digest,)).fetchone()
        if found is not None:
            return str(found["org_id"])
        org_id = new_id()
        now = self.now_ms()
        db.execute("INSERT INTO organizations VALUES (?, ?, ?)", (org_id, ORGANIZATION_NAME, now))
        db.execute("INSERT INTO api_keys VALUES (?, ?, ?)", (digest, org_id, now))
        return org_id

    def authenticate(self, token: str) -> Principal:
        """The principal of a bearer token; 401 ``unauthorized`` if unknown, revoked or expired.

        Example:
            >>> store.authenticate("nope")  # doctest: +SKIP
            Traceback (most recent call last):
            ApiError: Invalid API key or ingestion token
        """
        digest = token_hash(token)
        org_id = self._accepted.get(digest)
        if org_id is not None:
            return Principal("api_key", org_id, digest)
        with self._reading() as db:  # not the writer's lock: a write may be under way
            key = db.execute(
                "SELECT id, org_id, experiment_id, expires_at_ms, revoked_at_ms "
                "FROM ingestion_keys WHERE token_hash = ?",
                (digest,),
            ).fetchone()
        if key is None:
            raise ApiError(401, "unauthorized", "Invalid API key or ingestion token")
        if key["revoked_at_ms"] is not None:
            raise ApiError(401, "unauthorized", "Ingestion token revoked")
        if self.now_ms() >= key["expires_at_ms"]:
            raise ApiError(401, "unauthorized", "Ingestion token expired")
        return Principal("ingestion_key", key["org_id"], digest, key["experiment_id"], key["id"])

    def touch_ingestion_key(self, key_id: str) -> None:
        """Record that an ingestion key was just used."""
        with self._tx() as db:
            db.execute(
                "UPDATE ingestion_keys SET last_used_at_ms = ? WHERE id = ?",
                (self.now_ms(), key_id),
            )

    def organization(self, org_id: str) -> dict[str, Any]:
        """``{id, name}`` of an organization."""
        with self._lock:
            row = self._db.execute(
                "SELECT id, name FROM organizations WHERE id = ?", (org_id,)
            ).fetchone()
        return {"id": row["id"], "name": row["name"]}

    # -- idempotency records -----------------------------------------------------------

    # -- dashboard logins (kept here only when processes share the database) -------------

    def save_login(
        self, kind: str, digest: str, org_id: str, ttl_s: float, *, keep: int | None = None
    ) -> None:
        """Keep a dashboard login secret's hash (``kind``: ``"token"`` or ``"session"``);
        with ``keep``, the organization's oldest of that kind past ``keep`` are dropped."""
        with self._tx() as db:
            db.execute("DELETE FROM dashboard_logins WHERE expires_at_ms <= ?", (self.now_ms(),))
            db.execute(
                "INSERT OR REPLACE INTO dashboard_logins VALUES (?, ?, ?, ?)",
                (kind, digest, org_id, self.now_ms() + int(ttl_s * 1000)),
            )
            if keep is not None:
                db.execute(
                    "DELETE FROM dashboard_logins WHERE kind = ? AND org_id = ? AND rowid NOT IN "
                    "(SELECT rowid FROM dashboard_logins WHERE kind = ? AND org_id = ? "
                    "ORDER BY expires_at_ms DESC, rowid DESC LIMIT ?)",
                    (kind, org_id, kind, org_id, keep),
                )

    def find_login(self, kind: str, digest: str, *, spend: bool = False) -> str | None:
        """The organization a login secret opens (``None``: unknown or expired); ``spend``
        removes it, so a one-time token opens one session only, in whichever process."""
        with self._tx() as db:
            row = db.execute(
                "SELECT org_id, expires_at_ms FROM dashboard_logins WHERE kind = ? AND digest = ?",
                (kind, digest),
            ).fetchone()
            if row is not None and (spend or row["expires_at_ms"] <= self.now_ms()):
                db.execute(
                    "DELETE FROM dashboard_logins WHERE kind = ? AND digest = ?", (kind, digest)
                )
        if row is None or row["expires_at_ms"] <= self.now_ms():
            return None
        return str(row["org_id"])

    def forget_logins(self, kind: str | None = None, digest: str | None = None) -> None:
        """Remove one login secret, or all of them (a server starting forgets every login)."""
        with self._tx() as db:
            if digest is None:
                db.execute("DELETE FROM dashboard_logins")
            else:
                db.execute(
                    "DELETE FROM dashboard_logins WHERE kind = ? AND digest = ?", (kind, digest)
                )

    def find_idempotency(self, credential: str, key: str) -> tuple[str, int, bytes] | None:
        """``(fingerprint, status, body)`` stored for a key in the last 24 hours, if any."""
        with self._reading() as db:
            row = db.execute(
                "SELECT fingerprint, status, body FROM idempotency "
                "WHERE credential = ? AND key = ? AND created_at_ms > ?",
                (credential, key, self.now_ms() - IDEMPOTENCY_TTL_MS),
            ).fetchone()
        return None if row is None else (row["fingerprint"], row["status"], bytes(row["body"]))

    def save_idempotency(
        self, credential: str, key: str, fingerprint: str, status: int, body: bytes
    ) -> None:
        """Remember an answer for 24 hours (and forget the ones that are older)."""
        now = self.now_ms()
        with self._tx() as db:
            if now - self._purged_at_ms >= 60_000:  # expired records go once a minute
                db.execute(
                    "DELETE FROM idempotency WHERE created_at_ms <= ?",
                    (now - IDEMPOTENCY_TTL_MS,),
                )
                self._purged_at_ms = now
            db.execute(
                "INSERT OR REPLACE INTO idempotency VALUES (?, ?, ?, ?, ?, ?)",
                (credential, key, fingerprint, status, body, now),
            )

    # -- folders ------------------------------------------------------------------------

    def _folder_index(
        self, db: sqlite3.Connection, org_id: str
    ) -> dict[str, tuple[str | None, str]]:
        rows = db.execute("SELECT id, parent_id, name FROM folders WHERE org_id = ?", (org_id,))
        return {r["id"]: (r["parent_id"], r["name"]) for r in rows}

    def list_folders(self, org_id: str, path: str | None = None) -> list[dict[str, Any]]:
        """Every folder of the organization by path, or the one whose ``path_name`` is ``path``."""
        with self._lock:
            index = self._folder_index(self._db, org_id)
        folders = [_folder_wire(org_id, fid, index) for fid in index]
        if path is not None:
            folders = [f for f in folders if f["path_name"] == path]
        return sorted(folders, key=lambda f: (f["path_name"], f["folder_id"]))

    def _check_sibling_name(
        self, db: sqlite3.Connection, org_id: str, parent_id: str | None, name: str
    ) -> None:
        clash = db.execute(
            "SELECT 1 FROM folders WHERE org_id = ? AND ifnull(parent_id, '') = ? AND name = ?",
            (org_id, parent_id or "", name),
        ).fetchone()
        if clash is not None:
            raise ApiError(
                409, "folder_exists", f"A folder named {name!r} already exists here", field="name"
            )

    def create_folder(self, org_id: str, name: str, parent_id: str | None) -> dict[str, Any]:
        """A new folder under ``parent_id`` (``None``: the root)."""
        with self._tx() as db:
            index = self._folder_index(db, org_id)
            if parent_id is not None and parent_id not in index:
                raise not_found("Folder", field="parent_id")
            self._check_sibling_name(db, org_id, parent_id, name)
            folder_id = new_id()
            db.execute(
                "INSERT INTO folders (id, org_id, parent_id, name, created_at_ms) "
                "VALUES (?, ?, ?, ?, ?)",
                (folder_id, org_id, parent_id, name, self.now_ms()),
            )
            index[folder_id] = (parent_id, name)
        return _folder_wire(org_id, folder_id, index)

    def get_folder(self, org_id: str, folder_id: str, origin: str) -> dict[str, Any]:
        """``{folder, folders, experiments}``: children by name, experiments newest first."""
        with self._lock:
            index = self._folder_index(self._db, org_id)
            if folder_id not in index:
                raise not_found("Folder")
            rows = self._db.execute(
                f"SELECT {_EXPERIMENT_COLUMNS} FROM experiments WHERE org_id = ? AND folder_id = ? "
                "ORDER BY created_at_ms DESC, seq DESC",
                (org_id, folder_id),
            ).fetchall()
        children = sorted(
            (fid for fid, (parent, _) in index.items() if parent == folder_id),
            key=lambda fid: (index[fid][1], fid),
        )
        return {
            "folder": _folder_wire(org_id, folder_id, index),
            "folders": [_folder_wire(org_id, fid, index) for fid in children],
            "experiments": [self._experiment_wire(r, index, origin) for r in rows],
        }

    def patch_folder(self, org_id: str, folder_id: str, changes: Mapping[str, Any]) -> Any:
        """Rename (``name``) and/or move (``parent_id`` present, ``None`` = root) a folder."""
        with self._tx() as db:
            index = self._folder_index(db, org_id)
            if folder_id not in index:
                raise not_found("Folder")
            parent_id, name = index[folder_id]
            if "parent_id" in changes:
                parent_id = changes["parent_id"]
                if parent_id is not None and parent_id not in index:
                    raise not_found("Folder", field="parent_id")
                ancestor = parent_id
                while ancestor is not None:
                    if ancestor == folder_id:
                        raise invalid(
                            "parent_id",
                            "A folder cannot move under itself or one of its descendants.",
                            what="request body",
                        )
                    ancestor = index[ancestor][0]
            name = changes.get("name", name)
            if (parent_id, name) != index[folder_id]:
                self._check_sibling_name(db, org_id, parent_id, name)
                db.execute(
                    "UPDATE folders SET parent_id = ?, name = ? WHERE id = ?",
                    (parent_id, name, folder_id),
                )
                index[folder_id] = (parent_id, name)
        return _folder_wire(org_id, folder_id, index)

    # -- experiments --------------------------------------------------------------------

    def _experiment_wire(
        self, row: sqlite3.Row, index: Mapping[str, tuple[str | None, str]], origin: str
    ) -> dict[str, Any]:
        folder_id = row["folder_id"]
        return {
            "id": row["id"],
            "org_id": row["org_id"],
            "folder": None if folder_id is None else _folder_wire(row["org_id"], folder_id, index),
            "url": origin + dashboard_experiment_path(row["id"]),
            "slug": row["slug"],
            "description": row["description"],
            "metadata": json.loads(row["metadata_json"]),
            "status": row["status"],
            "error_name": row["error_name"],
            "error_detail": row["error_detail"],
            "created_at_ms": row["created_at_ms"],
            "updated_at_ms": row["updated_at_ms"],
            "started_at_ms": row["started_at_ms"],
            "done_at_ms": row["done_at_ms"],
            "last_heartbeat_at_ms": row["last_heartbeat_at_ms"],
            "last_event_at_ms": row["last_event_at_ms"],
        }

    def _experiment_row(self, db: sqlite3.Connection, org_id: str, experiment_id: str) -> Any:
        row = db.execute(
            f"SELECT {_EXPERIMENT_COLUMNS} FROM experiments WHERE org_id = ? AND id = ?",
            (org_id, experiment_id),
        ).fetchone()
        if row is None:
            raise not_found("Experiment")
        return row

    def _experiment_out(
        self, db: sqlite3.Connection, org_id: str, experiment_id: str, origin: str
    ) -> dict[str, Any]:
        row = self._experiment_row(db, org_id, experiment_id)
        return self._experiment_wire(row, self._folder_index(db, org_id), origin)

    def get_experiment(self, org_id: str, experiment_id: str, origin: str) -> dict[str, Any]:
        """One experiment; ``url`` points at ``origin``'s dashboard."""
        with self._lock:
            return self._experiment_out(self._db, org_id, experiment_id, origin)

    def list_experiments(
        self,
        org_id: str,
        origin: str,
        *,
        limit: int,
        status: str | None = None,
        slug: str | None = None,
        search: str | None = None,
        from_ms: int | None = None,
        to_ms: int | None = None,
    ) -> list[dict[str, Any]]:
        """Experiments newest first, filtered as ``GET /experiments`` says."""
        where = ["org_id = ?"]
        params: list[Any] = [org_id]
        for clause, value in (
            ("status = ?", status),
            ("slug = ?", slug),
            ("created_at_ms >= ?", from_ms),
            ("created_at_ms <= ?", to_ms),
        ):
            if value is not None:
                where.append(clause)
                params.append(value)
        if search is not None:
            where.append("(sm_contains(slug, ?) OR sm_contains(description, ?))")
            params += [search, search]
        with self._reading() as db:
            rows = db.execute(
                f"SELECT {_EXPERIMENT_COLUMNS} FROM experiments WHERE {' AND '.join(where)} "
                "ORDER BY created_at_ms DESC, seq DESC LIMIT ?",
                (*params, limit),
            ).fetchall()
            index = self._folder_index(self._db, org_id)
        return [self._experiment_wire(r, index, origin) for r in rows]

    def create_experiment(
        self, org_id: str, origin: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        """A new experiment in status ``created`` (at the root unless ``folder_id`` names one)."""
        folder_id = body.get("folder_id")
        now = self.now_ms()
        with self._tx() as db:
            if folder_id is not None and folder_id not in self._folder_index(db, org_id):
                raise not_found("Folder", field="folder_id")
            taken = db.execute(
                "SELECT 1 FROM experiments WHERE org_id = ? AND slug = ?", (org_id, body["slug"])
            ).fetchone()
            if taken is not None:
                raise ApiError(
                    409, "slug_exists", f"Slug {body['slug']!r} already exists", field="slug"
                )
            experiment_id = new_id()
            db.execute(
                "INSERT INTO experiments (id, org_id, folder_id, slug, description, metadata_json, "
                "status, created_at_ms, updated_at_ms) VALUES (?, ?, ?, ?, ?, ?, 'created', ?, ?)",
                (
                    experiment_id,
                    org_id,
                    folder_id,
                    body["slug"],
                    body.get("description", ""),
                    compact(body.get("metadata", {})),
                    now,
                    now,
                ),
            )
            return self._experiment_out(db, org_id, experiment_id, origin)

    def update_status(
        self, org_id: str, experiment_id: str, origin: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Apply a status transition (any status may follow any other)."""
        now = self.now_ms()
        when = body.get("timestamp_ms", now)
        status = body["status"]
        with self._tx() as db:
            row = self._experiment_row(db, org_id, experiment_id)
            started = row["started_at_ms"]
            if status == "running" and started is None:
                started = when
            done = when if status in ("done", "error") else row["done_at_ms"]
            error_name = error_detail = None
            if status == "error":
                error = body.get("error") or {}
                error_name = error.get("name", DEFAULT_ERROR_NAME)
                error_detail = error.get("detail", "")
            db.execute(
                "UPDATE experiments SET status = ?, started_at_ms = ?, done_at_ms = ?, "
                "error_name = ?, error_detail = ?, updated_at_ms = ? WHERE id = ?",
                (status, started, done, error_name, error_detail, now, experiment_id),
            )
            return self._experiment_out(db, org_id, experiment_id, origin)

    def move_experiment(
        self, org_id: str, experiment_id: str, origin: str, folder_id: str | None
    ) -> dict[str, Any]:
        """Put an experiment in ``folder_id`` (``None``: the root)."""
        with self._tx() as db:
            self._experiment_row(db, org_id, experiment_id)
            if folder_id is not None and folder_id not in self._folder_index(db, org_id):
                raise not_found("Folder", field="folder_id")
            db.execute(
                "UPDATE experiments SET folder_id = ?, updated_at_ms = ? WHERE id = ?",
                (folder_id, self.now_ms(), experiment_id),
            )
            return self._experiment_out(db, org_id, experiment_id, origin)

    # -- metrics --------------------------------------------------------------------------

    def _batch_text(
        self, metrics: Sequence[Mapping[str, Any]], source: str | None
    ) -> tuple[str | None, str]:
        batch, path = (source, "$.data") if source is not None else (None, "$")
        if batch is None or not _values_exact_in_sqlite(metrics):
            batch, path = batch_json([_float_value(m) for m in metrics]), "$"
        # SQLite's JSON functions end a string at a NUL: such a batch is bound row by row
        # (metadata texts keep the escape, so only names and ids need it).
        return (None, path) if "\\u0000" in batch else (batch, path)

    @contextmanager
    def staging(
        self, metrics: Sequence[Mapping[str, Any]], *, source: str | None = None
    ) -> Iterator[StagedBatch]:
        """Make a batch ready for :meth:`ingest` without the write lock: its rows are read out
        of its JSON text now, while other batches are written, and the write transaction only
        copies them (:mod:`~syvain_metrics.server.staging`). ``metrics`` and ``source`` are as
        :meth:`ingest` takes them; pass the result to :meth:`transaction` and :meth:`ingest`.

        Example:
            >>> with store.staging(metrics, source=text) as staged:  # doctest: +SKIP
            ...     with store.transaction(staged):
            ...         store.ingest(org_id, experiment_id, metrics, staged=staged)
        """
        now = self.now_ms()
        text, path = self._batch_text(metrics, source) if metrics else (None, "$")
        if text is None:
            yield StagedBatch(now, None, path)
            return
        with self._staging.staged(text, path, now) as slot:
            yield StagedBatch(now, text, path, slot)

    def ingest(
        self,
        org_id: str,
        experiment_id: str,
        metrics: Sequence[Mapping[str, Any]],
        *,
        source: str | None = None,
        staged: StagedBatch | None = None,
    ) -> None:
        """Store a validated batch in one transaction; a repeated ``client_event_id`` is ignored
        (the first write wins, within the batch or across batches). ``metrics`` are as
        :class:`~syvain_metrics.contract.schemas.ingest.MetricBatch` loads them, or kept as given
        (``as_given``: a value may be an ``int``, ``step`` may be missing).

        ``source`` is the canonical JSON text (:func:`canonical`) of ``{"data": raw}``, where
        ``raw`` is what ``metrics`` were validated and loaded from: SQLite then reads the rows
        out of it rather than out of a new text (one encoding less per batch). ``staged`` is the
        batch's :meth:`staging`, when the caller made it before the transaction. Either way an
        event's metadata is stored as its canonical text: keys in sorted order."""
        if not metrics:
            return
        if staged is None:
            staged = StagedBatch(self.now_ms(), *self._batch_text(metrics, source))
        now, slot = staged.now, staged.slot
        with self._tx() as db:
            experiment_seq = self._experiment_row(db, org_id, experiment_id)["seq"]
            if staged.text is None:
                db.executemany(
                    INSERT_EVENT_ROW,
                    [
                        (
                            experiment_seq,
                            m["client_event_id"],
                            m["name"],
                            float(m["value"]),
                            m.get("step"),
                            canonical(m.get("metadata", {})),
                            m.get("timestamp_ms", now),
                            now,
                        )
                        for m in metrics
                    ],
                )
            elif slot is not None and slot.attached:
                db.execute(
                    insert_staged(slot.schema), {"experiment_seq": experiment_seq, "now": now}
                )
            else:
                db.execute(
                    INSERT_EVENTS,
                    {
                        "experiment_seq": experiment_seq,
                        "now": now,
                        "batch": staged.text,
                        "path": staged.path,
                    },
                )
            db.execute(
                "UPDATE experiments SET updated_at_ms = ?, last_event_at_ms = ? WHERE id = ?",
                (now, now, experiment_id),
            )

    def metric_rows(
        self, query: RowQuery, *, missing_field: str | None = None
    ) -> list[dict[str, Any]]:
        """Metric rows of one or more series; every experiment must be the organization's
        (else 404, naming ``missing_field``)."""
        return [row_wire(r) for r in self._metric_rows(query, missing_field, as_json=False)]

    def metric_rows_json(self, query: RowQuery, *, missing_field: str | None = None) -> str:
        """:meth:`metric_rows` as the JSON array text of the rows, written mostly by SQLite:
        a large read's answer costs a fraction of what a dict per row and ``json.dumps``
        cost."""
        return rows_json(self._metric_rows(query, missing_field, as_json=True))

    def _metric_rows(
        self, query: RowQuery, missing_field: str | None, *, as_json: bool
    ) -> list[tuple[Any, ...]]:
        text, params = replace(query, id_prefix=self._id_prefix).sql(as_json=as_json)
        with self._reading() as db:
            for series in query.series:
                known = db.execute(
                    "SELECT 1 FROM experiments WHERE org_id = ? AND id = ?",
                    (query.org_id, series.experiment_id),
                ).fetchone()
                if known is None:
                    raise not_found("Experiment", field=missing_field)
            cursor = db.cursor()
            cursor.row_factory = None  # plain tuples: a Row object per row costs more
            cursor.execute(text, params)
            if not as_json:
                rows: list[tuple[Any, ...]] = cursor.fetchall()
                return rows
            rows, size = [], 0
            while size <= MAX_ROWS_ANSWER_BYTES and (chunk := cursor.fetchmany(1_000)):
                for row in chunk:
                    rows.append(row)
                    size += len(row[0]) + len(row[2]) + 24  # the value's text at most
                    if size > MAX_ROWS_ANSWER_BYTES:
                        break
        return rows

    def catalog(self, org_id: str, experiment_id: str, limit: int) -> list[dict[str, Any]]:
        """Metric names and the metadata keys seen with each, alphabetically."""
        with self._reading() as db:
            experiment = self._experiment_row(db, org_id, experiment_id)
            rows = db.execute(
                "SELECT metric_name, metadata_json FROM events WHERE experiment_seq = ? "
                "GROUP BY metric_name, metadata_json",
                (experiment["seq"],),
            ).fetchall()
        keys: dict[str, set[str]] = {}
        for row in rows:
            keys.setdefault(row["metric_name"], set()).update(json.loads(row["metadata_json"]))
        return [
            {"metric_name": name, "metadata_keys": sorted(keys[name])}
            for name in sorted(keys)[:limit]
        ]

    def catalog_values(
        self,
        org_id: str,
        experiment_id: str,
        metric_name: str,
        keys: Sequence[str] | None,
        limit: int,
    ) -> dict[str, Any]:
        """The values of a metric's metadata keys, ordered by JSON text, at most ``limit`` each."""
        with self._reading() as db:
            experiment = self._experiment_row(db, org_id, experiment_id)
            rows = db.execute(
                "SELECT metadata_json, COUNT(*) AS n FROM events "
                "WHERE experiment_seq = ? AND metric_name = ? GROUP BY metadata_json",
                (experiment["seq"], metric_name),
            ).fetchall()
        values: dict[str, dict[str, Any]] = {}
        scanned = 0
        for row in rows:
            scanned += row["n"]
            for key, value in json.loads(row["metadata_json"]).items():
                values.setdefault(key, {})[canonical(value)] = value
        wanted = sorted(set(keys)) if keys else sorted(values)
        out = []
        for key in wanted:
            seen = values.get(key)
            if seen:
                texts = sorted(seen)
                out.append(
                    {
                        "key": key,
                        "values": [seen[t] for t in texts[:limit]],
                        "value_count": len(texts),
                    }
                )
        return {"metric_name": metric_name, "scanned_event_count": scanned, "keys": out}

    # -- annotations ----------------------------------------------------------------------

    def create_annotation(
        self, org_id: str, experiment_id: str, origin: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        """``{experiment, annotation}`` for a new annotation."""
        annotation = {
            "id": new_id(),
            "experiment_id": experiment_id,
            "annotation": body["annotation"],
            "metadata": dict(body.get("metadata", {})),
            "created_at_ms": self.now_ms(),
        }
        with self._tx() as db:
            experiment = self._experiment_out(db, org_id, experiment_id, origin)
            db.execute(
                "INSERT INTO annotations (id, org_id, experiment_id, annotation, metadata_json, "
                "created_at_ms) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    annotation["id"],
                    org_id,
                    experiment_id,
                    annotation["annotation"],
                    compact(annotation["metadata"]),
                    annotation["created_at_ms"],
                ),
            )
        return {"experiment": experiment, "annotation": annotation}

    def list_annotations(
        self,
        org_id: str,
        experiment_id: str,
        *,
        limit: int,
        from_ms: int | None = None,
        to_ms: int | None = None,
    ) -> list[dict[str, Any]]:
        """Annotations oldest first, ``created_at_ms`` within the inclusive bounds."""
        where = ["experiment_id = ?"]
        params: list[Any] = [experiment_id]
        if from_ms is not None:
            where.append("created_at_ms >= ?")
            params.append(from_ms)
        if to_ms is not None:
            where.append("created_at_ms <= ?")
            params.append(to_ms)
        with self._reading() as db:
            self._experiment_row(db, org_id, experiment_id)
            rows = db.execute(
                "SELECT id, experiment_id, annotation, metadata_json, created_at_ms "
                f"FROM annotations WHERE {' AND '.join(where)} ORDER BY created_at_ms, seq LIMIT ?",
                (*params, limit),
            ).fetchall()
        return [
            {
                "id": r["id"],
                "experiment_id": r["experiment_id"],
                "annotation": r["annotation"],
                "metadata": json.loads(r["metadata_json"]),
                "created_at_ms": r["created_at_ms"],
            }
            for r in rows
        ]

    # -- ingestion keys -------------------------------------------------------------------

    def create_ingestion_key(
        self, org_id: str, experiment_id: str, name: str, ttl_ms: int | None
    ) -> tuple[dict[str, Any], str]:
        """A new key and its token (the token is stored only as a hash)."""
        token = f"ik_local_{secrets.token_urlsafe(24)}"
        key_id = new_id()
        now = self.now_ms()
        with self._tx() as db:
            self._experiment_row(db, org_id, experiment_id)
            db.execute(
                "INSERT INTO ingestion_keys (id, org_id, experiment_id, name, token_hash, "
                "created_at_ms, expires_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    key_id,
                    org_id,
                    experiment_id,
                    name,
                    token_hash(token),
                    now,
                    now + (ttl_ms or DEFAULT_INGESTION_KEY_TTL_MS),
                ),
            )
            key = db.execute(
                f"SELECT {_KEY_COLUMNS} FROM ingestion_keys WHERE id = ?", (key_id,)
            ).fetchone()
        return dict(key), token

    def list_ingestion_keys(self, org_id: str, experiment_id: str) -> list[dict[str, Any]]:
        """Every key of the experiment, revoked and expired ones too, oldest first."""
        with self._lock:
            self._experiment_row(self._db, org_id, experiment_id)
            rows = self._db.execute(
                f"SELECT {_KEY_COLUMNS} FROM ingestion_keys WHERE experiment_id = ? "
                "ORDER BY created_at_ms, seq",
                (experiment_id,),
            ).fetchall()
        return [dict(r) for r in rows]

    def revoke_ingestion_key(self, org_id: str, experiment_id: str, key_id: str) -> dict[str, Any]:
        """Revoke a key; revoking again keeps the first ``revoked_at_ms``."""
        with self._tx() as db:
            self._experiment_row(db, org_id, experiment_id)
            db.execute(
                "UPDATE ingestion_keys SET revoked_at_ms = ? "
                "WHERE id = ? AND experiment_id = ? AND revoked_at_ms IS NULL",
                (self.now_ms(), key_id, experiment_id),
            )
            key = db.execute(
                f"SELECT {_KEY_COLUMNS} FROM ingestion_keys WHERE id = ? AND experiment_id = ?",
                (key_id, experiment_id),
            ).fetchone()
            if key is None:
                raise not_found("Ingestion key")
        return dict(key)

    # -- dashboard reads ------------------------------------------------------------------

    def metric_names(self, org_id: str, experiment_id: str) -> list[str]:
        """The experiment's metric names, alphabetically: one index seek per name, however
        many events each has.

        Example:
            >>> store.metric_names(org, experiment_id)  # doctest: +SKIP
            ['accuracy', 'loss']
        """
        with self._reading() as db:
            experiment = self._experiment_row(db, org_id, experiment_id)
            rows = db.execute(
                "WITH RECURSIVE names(name) AS ("
                " SELECT min(metric_name) FROM events WHERE experiment_seq = ?1"
                " UNION ALL SELECT (SELECT min(metric_name) FROM events"
                "  WHERE experiment_seq = ?1 AND metric_name > names.name)"
                " FROM names WHERE names.name IS NOT NULL"
                ") SELECT name FROM names WHERE name IS NOT NULL",
                (experiment["seq"],),
            ).fetchall()
        return [str(row[0]) for row in rows]

    def metric_buckets(
        self,
        org_id: str,
        series: Sequence[SeriesFilter],
        x: Literal["step", "client_timestamp"],
        buckets: int,
        *,
        missing_field: str | None = None,
    ) -> tuple[int | None, int | None, list[tuple[Any, ...]]]:
        """Each series (the API's filters) summarized in ``buckets`` equal slices of ``x``
        (the step, or the client timestamp) over the range all of them span, one index range
        per slice: ``(lo, hi, rows)``, a row being ``(series index, metadata_json, bucket,
        count, min value, max value, min x, max x)`` for each metadata text seen in a slice;
        rows whose ``x`` is null have bucket ``None``. Every experiment must be the
        organization's (else 404, naming ``missing_field``).

        Example:
            >>> lo, hi, rows = store.metric_buckets(org, [SeriesFilter(e, "loss")], "step", 800)  # doctest: +SKIP
        """
        column = "e.step" if x == "step" else "e.client_timestamp_ms"
        # Each series' experiment is checked to be the organization's below, and a series
        # condition names exactly that experiment.
        conditions = [one.sql() for one in series]
        with self._reading() as db:
            for one in series:
                known = db.execute(
                    "SELECT 1 FROM experiments WHERE org_id = ? AND id = ?",
                    (org_id, one.experiment_id),
                ).fetchone()
                if known is None:
                    raise not_found("Experiment", field=missing_field)
            lows: list[int] = []
            highs: list[int] = []
            for condition, params in conditions:
                low, high = db.execute(
                    f"SELECT (SELECT min({column}) FROM events e WHERE {condition}), "
                    f"(SELECT max({column}) FROM events e WHERE {condition})",
                    (*params, *params),
                ).fetchone()
                if low is not None:
                    lows.append(int(low))
                    highs.append(int(high))
            lo = min(lows) if lows else None
            hi = max(highs) if highs else None
            rows: list[tuple[Any, ...]] = []
            single: dict[int, int] = {}  # rowid of a slice's only point -> index in rows
            for index, (condition, params) in enumerate(conditions):
                for metadata_json, count, low, high in db.execute(
                    f"SELECT e.metadata_json, count(*), min(e.metric_value), max(e.metric_value) "
                    f"FROM events e WHERE {condition} AND {column} IS NULL "
                    "GROUP BY e.metadata_json",
                    params,
                ):
                    rows.append((index, metadata_json, None, count, low, high, None, None))
                if lo is None or hi is None:
                    continue
                # One index range per slice, each grouped on its own: no sort of the whole
                # series. SQLite writes the values with quote(), exact but for extreme
                # exponents, so a slice of one point is read again by its rowid.
                slices = db.execute(
                    "WITH RECURSIVE k(b) AS (SELECT 0 UNION ALL SELECT b + 1 FROM k WHERE b + 1 < ?)"
                    " SELECT k.b, (SELECT json_group_array(json_array(m, c, l, h, x0, x1, r)) FROM"
                    f" (SELECT e.metadata_json AS m, count(*) AS c, quote(min(e.metric_value)) AS l,"
                    f" quote(max(e.metric_value)) AS h, min({column}) AS x0, max({column}) AS x1,"
                    f" min(e.rowid) AS r FROM events e WHERE {condition}"
                    f" AND {column} >= ? + (k.b * ? + ? - 1) / ?"
                    f" AND {column} < ? + ((k.b + 1) * ? + ? - 1) / ?"
                    " GROUP BY e.metadata_json)) FROM k",
                    (buckets, *params, *[lo, hi - lo + 1, buckets, buckets] * 2),
                ).fetchall()
                for bucket, text in slices:
                    for metadata_json, count, low, high, first, last, rowid in json.loads(text):
                        if count == 1:
                            single[rowid] = len(rows)
                        rows.append(
                            (
                                index,
                                metadata_json,
                                bucket,
                                count,
                                float(low),
                                float(high),
                                first,
                                last,
                            )
                        )
            ids = list(single)
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ", ".join("?" * len(chunk))
                for rowid, value in db.execute(
                    f"SELECT rowid, metric_value FROM events WHERE rowid IN ({marks})", chunk
                ):
                    at = single[rowid]
                    rows[at] = (*rows[at][:4], float(value), float(value), *rows[at][6:])
        return lo, hi, rows
