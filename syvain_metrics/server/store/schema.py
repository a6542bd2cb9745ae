"""The layout of the local server's database, its version, and the steps from each earlier
layout to it.

A database records its layout in ``PRAGMA user_version``. Opening one runs every step from
the version found up to :data:`SCHEMA_VERSION`, in order, each step and the version it makes
written in one transaction; a database of a version newer than this code's is refused,
untouched. Versions:

- 0: a new, empty database; or layout 1, written before versions were (release 0.1.0 among
  them), where each event has a random id under a unique index.
- 2: events keyed by their sequence number alone (``event_id`` is made from it), indexes
  ending with it; a ``settings`` table holds the prefix of event ids.
- 3: API keys kept only as their SHA-256 hashes.
- 4: an event names its experiment by the experiment's sequence number (its organization is
  the experiment's), so every row and index entry is about 70 bytes shorter. For a short
  while version 3 named this change without the hashed keys: the step to 4 makes whichever
  of the two a version-3 database lacks.
- 5: dashboard logins kept in the database, where every process serving it sees them (some
  version-4 databases have them already).
- 6: an index of events by sub-series and value (``events_by_series``): the dashboard's runs
  table reads each sub-series' metadata, smallest and largest value with a few index seeks,
  however many points it has.
- 7: sub-series summarized per block of 16 steps (``series_blocks``, kept with the events):
  a chart of a long series reads its blocks instead of its points.

Example:
    >>> import sqlite3
    >>> db = sqlite3.connect(":memory:", isolation_level=None)
    >>> next_step(db, 0)[0] == SCHEMA_VERSION  # an empty database: the whole layout at once
    True
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from syvain_metrics.server.sql import ADD_TO_BLOCKS, SERIES_BLOCKS
from syvain_metrics.server.store.ids import token_hash

SCHEMA_VERSION = 7
"""``PRAGMA user_version`` of a database in this layout."""

_LAYOUT_2 = """
CREATE TABLE events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id TEXT NOT NULL,
    experiment_id TEXT NOT NULL,
    client_event_id TEXT NOT NULL,
    metric_name TEXT NOT NULL,
    metric_value REAL NOT NULL,
    step INTEGER,
    metadata_json TEXT NOT NULL,
    client_timestamp_ms INTEGER NOT NULL,
    server_timestamp_ms INTEGER NOT NULL,
    UNIQUE (experiment_id, client_event_id)
);
CREATE INDEX events_by_metric_step
    ON events (experiment_id, metric_name, step, client_timestamp_ms);
CREATE INDEX events_by_metric_time ON events (experiment_id, metric_name, client_timestamp_ms);
CREATE INDEX events_by_step ON events (experiment_id, step, client_timestamp_ms);
CREATE INDEX events_by_time ON events (experiment_id, client_timestamp_ms);
CREATE TABLE IF NOT EXISTS settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS experiments_by_creation ON experiments (org_id, created_at_ms);
"""
"""Layout 2's events, and what layout 1 gained without a version: the ``settings`` table of
later layout-1 databases and their index of experiments by creation time (a database of
release 0.1.0 has neither)."""

_EVENTS = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    experiment_seq INTEGER NOT NULL,
    client_event_id TEXT NOT NULL,
    metric_name TEXT NOT NULL,
    metric_value REAL NOT NULL,
    step INTEGER,
    metadata_json TEXT NOT NULL,
    client_timestamp_ms INTEGER NOT NULL,
    server_timestamp_ms INTEGER NOT NULL,
    UNIQUE (experiment_seq, client_event_id)
);
CREATE INDEX IF NOT EXISTS events_by_metric_step
    ON events (experiment_seq, metric_name, step, client_timestamp_ms);
CREATE INDEX IF NOT EXISTS events_by_metric_time
    ON events (experiment_seq, metric_name, client_timestamp_ms);
CREATE INDEX IF NOT EXISTS events_by_step
    ON events (experiment_seq, step, client_timestamp_ms);
CREATE INDEX IF NOT EXISTS events_by_time ON events (experiment_seq, client_timestamp_ms);
"""

_SERIES_INDEX = """
CREATE INDEX IF NOT EXISTS events_by_series
    ON events (experiment_seq, metric_name, metadata_json, metric_value)
    WHERE metric_value IS NOT NULL;
"""
"""Each sub-series (an experiment's metric and event metadata) with its values in order: the
distinct metadata of a metric, and a sub-series' min and max, are each one seek. Every event
has a value, so the index holds them all; its condition is there so that only a query that
repeats it (the summaries') can use it: the charts' reads, which group slices of a step range
by metadata, would otherwise take it for its order and scan whole series."""

_API_KEYS = """
CREATE TABLE IF NOT EXISTS api_keys (
    key_hash TEXT PRIMARY KEY,
    org_id TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
);
"""

_DASHBOARD_LOGINS = """
CREATE TABLE IF NOT EXISTS dashboard_logins (
    kind TEXT NOT NULL,
    digest TEXT NOT NULL,
    org_id TEXT NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    PRIMARY KEY (kind, digest)
);
CREATE INDEX IF NOT EXISTS dashboard_logins_by_org
    ON dashboard_logins (kind, org_id, expires_at_ms);
"""

_OTHER_TABLES = """
CREATE TABLE IF NOT EXISTS organizations (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS folders (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    org_id TEXT NOT NULL,
    parent_id TEXT,
    name TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS folders_sibling_name
    ON folders (org_id, ifnull(parent_id, ''), name);
CREATE TABLE IF NOT EXISTS experiments (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    org_id TEXT NOT NULL,
    folder_id TEXT,
    slug TEXT NOT NULL,
    description TEXT NOT NULL,
    metadata_json TEXT NOT NULL,
    status TEXT NOT NULL,
    error_name TEXT,
    error_detail TEXT,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    started_at_ms INTEGER,
    done_at_ms INTEGER,
    last_heartbeat_at_ms INTEGER,
    last_event_at_ms INTEGER,
    UNIQUE (org_id, slug)
);
CREATE INDEX IF NOT EXISTS experiments_by_creation ON experiments (org_id, created_at_ms);
CREATE TABLE IF NOT EXISTS settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS annotations (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    org_id TEXT NOT NULL,
    experiment_id TEXT NOT NULL,
    annotation TEXT NOT NULL,
    metadata_json TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS annotations_by_experiment ON annotations (experiment_id, created_at_ms);
CREATE TABLE IF NOT EXISTS ingestion_keys (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    org_id TEXT NOT NULL,
    experiment_id TEXT NOT NULL,
    name TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    revoked_at_ms INTEGER,
    last_used_at_ms INTEGER
);
CREATE TABLE IF NOT EXISTS idempotency (
    credential TEXT NOT NULL,
    key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    status INTEGER NOT NULL,
    body BLOB NOT NULL,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (credential, key)
);
"""

SCHEMA = _OTHER_TABLES + _API_KEYS + _EVENTS + _DASHBOARD_LOGINS + _SERIES_INDEX + SERIES_BLOCKS
"""Every table and index of the current layout (each ``IF NOT EXISTS``)."""

DATA_TABLES = (
    "folders",
    "experiments",
    "events",
    "series_blocks",
    "annotations",
    "ingestion_keys",
    "idempotency",
)
"""Tables :meth:`Store.reset` empties; organizations and API keys survive."""

_EVENT_VALUES = (
    "client_event_id, metric_name, metric_value, step, metadata_json, client_timestamp_ms, "
    "server_timestamp_ms"
)
"""The columns every layout's events share."""


class NewerLayoutError(ValueError):
    """A database written by a newer version of the server, which this one cannot read."""


def layout_version(db: sqlite3.Connection, path: str) -> int:
    """The database's layout version; :class:`NewerLayoutError` (nothing written) when it is
    newer than this code's."""
    found = int(db.execute("PRAGMA user_version").fetchone()[0])
    if found > SCHEMA_VERSION:
        raise NewerLayoutError(
            f"The database {path} has layout version {found}, newer than this server's "
            f"({SCHEMA_VERSION}): open it with the newer syvain-metrics that wrote it."
        )
    return found


def _run(db: sqlite3.Connection, script: str) -> None:
    # Statement by statement: executescript would commit the step's transaction.
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


def _set_aside(db: sqlite3.Connection, table: str) -> str:
    """Rename ``table`` out of the way, without its indexes (whose names the new one takes)."""
    old = f"{table}_earlier_layout"
    db.execute(f"ALTER TABLE {table} RENAME TO {old}")
    for (name,) in db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL",
        (old,),
    ).fetchall():
        db.execute(f'DROP INDEX "{name}"')
    return old


def _columns(db: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in db.execute(f"PRAGMA table_info({table})")}


def _create(db: sqlite3.Connection) -> bool:
    _run(db, SCHEMA)
    return False


def _events_without_random_ids(db: sqlite3.Connection) -> bool:
    old = _set_aside(db, "events")
    _run(db, _LAYOUT_2)
    db.execute(
        f"INSERT INTO events (seq, org_id, experiment_id, {_EVENT_VALUES}) "
        f"SELECT seq, org_id, experiment_id, {_EVENT_VALUES} FROM {old} ORDER BY seq"
    )
    db.execute(f"DROP TABLE {old}")
    return False


def _api_keys_as_hashes(db: sqlite3.Connection) -> bool:
    if "key" not in _columns(db, "api_keys"):
        return False  # already hashes: a version-3 database, from the step to 4
    rows = db.execute("SELECT key, org_id, created_at_ms FROM api_keys").fetchall()
    old = _set_aside(db, "api_keys")
    _run(db, _API_KEYS)
    db.executemany(
        "INSERT OR IGNORE INTO api_keys VALUES (?, ?, ?)",
        [(token_hash(key), org_id, created) for key, org_id, created in rows],
    )
    db.execute(f"DROP TABLE {old}")
    return True


def _events_by_experiment_seq(db: sqlite3.Connection) -> bool:
    # Version 3 also named, for a short while, this change without the hashed keys.
    rewritten = _api_keys_as_hashes(db)
    if "experiment_seq" in _columns(db, "events"):
        return rewritten
    old = _set_aside(db, "events")
    _run(db, _EVENTS)
    # An event whose experiment is gone has nothing to name: it is not copied.
    values = ", ".join(f"e.{column}" for column in _EVENT_VALUES.split(", "))
    db.execute(
        f"INSERT INTO events (seq, experiment_seq, {_EVENT_VALUES}) "
        f"SELECT e.seq, x.seq, {values} FROM {old} e JOIN experiments x "
        "ON x.id = e.experiment_id ORDER BY e.seq"
    )
    db.execute(f"DROP TABLE {old}")
    return rewritten


def _dashboard_logins(db: sqlite3.Connection) -> bool:
    _run(db, _DASHBOARD_LOGINS)
    return False


def _events_by_series(db: sqlite3.Connection) -> bool:
    _run(db, _SERIES_INDEX)
    return False


def _series_blocks(db: sqlite3.Connection) -> bool:
    _run(db, SERIES_BLOCKS)
    db.execute(ADD_TO_BLOCKS, {"after": 0})  # every event stored so far, in one pass
    return False


Step = Callable[[sqlite3.Connection], bool]
"""A step changes the layout inside the caller's transaction; ``True``: the pages it freed
held secrets in plain text, and the database is to be vacuumed once it commits."""

STEPS: dict[int, Step] = {
    2: _events_without_random_ids,
    3: _api_keys_as_hashes,
    4: _events_by_experiment_seq,
    5: _dashboard_logins,
    6: _events_by_series,
    7: _series_blocks,
}
"""Each step by the version it makes, run on a database of the version before it (layout
1's version is 0)."""


def next_step(db: sqlite3.Connection, found: int) -> tuple[int, Step]:
    """The version a database of version ``found`` moves to next, and the step that does it."""
    if found == 0:
        made = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'events'").fetchone()
        if made is None:  # nothing there yet: the whole layout in one step
            return SCHEMA_VERSION, _create
    target = min(version for version in STEPS if version > found)
    return target, STEPS[target]
