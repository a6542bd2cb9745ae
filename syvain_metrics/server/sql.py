"""The SQL of the local server's writes and metric reads (the tables themselves are
:mod:`syvain_metrics.server.store.schema`).

Metadata filters run as small Python functions registered on the connection, since
metadata keys may hold any character (SQLite's JSON paths would need quoting) and
``metadata_value_json`` compares by JSON equality, which SQL cannot express.

Example:
    >>> json_equal(1, 1.0), json_equal(True, 1), json_equal({"a": [1]}, {"a": [1.0]})
    (True, False, True)
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

EVENT_ID = "(? || printf('%012x', e.seq))"
"""The SQL of an event's id: the database's random UUID-shaped prefix (a parameter) and the
event's sequence number in 12 hex digits, so ids sort as the sequence does."""

EVENT_COLUMNS = (
    "experiment_seq",
    "client_event_id",
    "metric_name",
    "metric_value",
    "step",
    "metadata_json",
    "client_timestamp_ms",
    "server_timestamp_ms",
)
"""The columns an ingest writes (the sequence number comes by itself)."""


def compact(value: Any) -> str:
    """Compact JSON text, as the service writes metadata columns.

    Example:
        >>> compact({"split": "train", "seed": 7})
        '{"split":"train","seed":7}'
    """
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


_BATCH_ROW_FIELDS = """value ->> '$.client_event_id', value ->> '$.name', value ->> '$.value',
    value ->> '$.step',
    CASE WHEN value ->> '$.metadata' IS NULL THEN '{}' ELSE value -> '$.metadata' END,
    coalesce(value ->> '$.timestamp_ms', :now)"""

INSERT_EVENTS = f"""
INSERT OR IGNORE INTO events ({", ".join(EVENT_COLUMNS)})
SELECT :experiment_seq, {_BATCH_ROW_FIELDS}, :now
FROM json_each(:batch, :path) ORDER BY key
"""
"""Store a batch of validated metrics in one statement: the JSON array at ``:path`` in the
text ``:batch`` (the array of :func:`batch_json` at ``'$'``, or a canonical request body at
``'$.data'``). SQLite reads the rows out of the text itself, so a batch costs one call into
it, which runs without Python's global lock, instead of one call per event. A metadata object
is stored as its compact text, cut out of the batch's (``null`` or missing: ``{}``); a
missing or ``null`` timestamp is ``:now``; a repeated ``client_event_id`` is ignored (the
first one wins)."""

STAGED_COLUMNS = EVENT_COLUMNS[1:-1]
"""The columns of a staged row: an event's own values, without its experiment and the
server's time (both known only when it is written)."""

CREATE_STAGED_ROWS = f"CREATE TABLE IF NOT EXISTS rows ({', '.join(STAGED_COLUMNS)})"
"""The one table of a staging database (untyped columns keep each value as SQLite read it,
so a staged row is written exactly as :data:`INSERT_EVENTS` writes it)."""

STAGE_EVENTS = f"""
INSERT INTO rows ({", ".join(STAGED_COLUMNS)})
SELECT {_BATCH_ROW_FIELDS}
FROM json_each(:batch, :path) ORDER BY key
"""
"""The rows of a batch, read out of its text as :data:`INSERT_EVENTS` reads them, into a
staging database: most of an insert's work, done before the write lock is taken."""


def insert_staged(schema: str) -> str:
    """The statement that stores the rows staged in the attached database ``schema``, in the
    order they were staged (a repeated ``client_event_id`` is ignored: the first one wins).

    Example:
        >>> "FROM staging_0.rows ORDER BY rowid" in insert_staged("staging_0")
        True
    """
    return (
        f"INSERT OR IGNORE INTO events ({', '.join(EVENT_COLUMNS)}) "
        f"SELECT :experiment_seq, {', '.join(STAGED_COLUMNS)}, :now "
        f"FROM {schema}.rows ORDER BY rowid"
    )


INSERT_EVENT_ROW = f"""
INSERT OR IGNORE INTO events ({", ".join(EVENT_COLUMNS)})
VALUES ({", ".join("?" * len(EVENT_COLUMNS))})
"""
"""Store one event (parameters in :data:`EVENT_COLUMNS` order): for the rare batch whose
names or ids hold a NUL, which SQLite's JSON functions cannot read back."""

BLOCK_BITS = 4
"""A block is ``step >> BLOCK_BITS``: 16 steps. A 10,000-step series has 625 blocks, so a
chart of a few hundred slices reads 2 or 3 blocks per slice (16 times fewer rows than
points) and a slice can still be as narrow as 16 steps; longer blocks would make charts of
shorter series fall back to reading points, shorter ones read more rows."""

BLOCK_STEPS = 1 << BLOCK_BITS
"""Steps per block."""

SERIES_BLOCKS = """
CREATE TABLE IF NOT EXISTS series_blocks (
    experiment_seq INTEGER NOT NULL,
    metric_name TEXT NOT NULL,
    metadata_json TEXT NOT NULL,
    block INTEGER NOT NULL,
    count INTEGER NOT NULL,
    min_value REAL NOT NULL,
    max_value REAL NOT NULL,
    min_step INTEGER NOT NULL,
    max_step INTEGER NOT NULL,
    PRIMARY KEY (experiment_seq, metric_name, metadata_json, block)
) WITHOUT ROWID;
"""
"""The blocks of every sub-series, in (run, metric, metadata, block) order."""

ADD_TO_BLOCKS = f"""
INSERT INTO series_blocks
SELECT experiment_seq, metric_name, metadata_json, step >> {BLOCK_BITS}, count(*),
    min(metric_value), max(metric_value), min(step), max(step)
FROM events NOT INDEXED WHERE seq > :after AND step IS NOT NULL
GROUP BY experiment_seq, metric_name, metadata_json, step >> {BLOCK_BITS}
ON CONFLICT DO UPDATE SET
    count = count + excluded.count,
    min_value = min(min_value, excluded.min_value),
    max_value = max(max_value, excluded.max_value),
    min_step = min(min_step, excluded.min_step),
    max_step = max(max_step, excluded.max_step)
"""
"""Add the events stored after sequence number ``:after`` to their blocks. Run in the
transaction that stored them, with ``:after`` the highest ``seq`` before it: only rows
actually inserted count (a repeated ``client_event_id`` inserts none), and an event's ``seq``
is larger than any before it. ``NOT INDEXED``: the new rows are a range of the table's own
key; SQLite would otherwise read every event along an index in the GROUP BY's order."""

HIGHEST_SEQ = "SELECT ifnull(max(seq), 0) FROM events"
"""The highest event sequence number stored: one seek at the end of the table."""


_BATCH = json.JSONEncoder(
    separators=(",", ":"), ensure_ascii=False, allow_nan=False, sort_keys=True, default=dict
).encode


def batch_json(metrics: Sequence[Mapping[str, Any]]) -> str:
    """The JSON array text :data:`INSERT_EVENTS` reads: each metric in canonical form (keys
    sorted, as in a request's canonical text, so an event's metadata is stored the same way
    whichever text it was read from), floats written as their shortest exact text.

    Example:
        >>> batch_json([{"name": "loss", "value": 0.1, "metadata": {"split": "é", "k": 1}}])
        '[{"metadata":{"k":1,"split":"é"},"name":"loss","value":0.1}]'
    """
    return _BATCH(metrics if isinstance(metrics, list) else list(metrics))


def canonical(value: Any) -> str:
    """JSON text with sorted keys: the identity of a value in catalogs and request fingerprints.

    Example:
        >>> canonical({"b": 1, "a": [True]})
        '{"a":[true],"b":1}'
    """
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def json_equal(left: Any, right: Any) -> bool:
    """JSON equality: numbers compare as numbers, booleans are not numbers, key order is free."""
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool) and left == right
    if isinstance(left, int | float) or isinstance(right, int | float):
        return isinstance(left, int | float) and isinstance(right, int | float) and left == right
    if isinstance(left, dict):
        return (
            isinstance(right, dict)
            and left.keys() == right.keys()
            and all(json_equal(left[k], right[k]) for k in left)
        )
    if isinstance(left, list):
        return (
            isinstance(right, list)
            and len(left) == len(right)
            and all(json_equal(a, b) for a, b in zip(left, right, strict=True))
        )
    return type(left) is type(right) and bool(left == right)


@lru_cache(maxsize=4096)
def _metadata(text: str) -> dict[str, Any]:
    # Event metadata texts repeat a lot ({"split":"train"} on every row): parse each once.
    loaded = json.loads(text)
    return loaded if isinstance(loaded, dict) else {}


@lru_cache(maxsize=256)
def _wanted(text: str) -> Any:
    return json.loads(text)


def _meta_has(text: str, key: str) -> int:
    return int(key in _metadata(text))


def _meta_str(text: str, key: str, value: str) -> int:
    found = _metadata(text).get(key)
    return int(isinstance(found, str) and found == value)


def _meta_json(text: str, key: str, wanted: str) -> int:
    meta = _metadata(text)
    return int(key in meta and json_equal(meta[key], _wanted(wanted)))


def _contains(haystack: str | None, needle: str) -> int:
    return int(haystack is not None and needle.casefold() in haystack.casefold())


def register_functions(db: sqlite3.Connection) -> None:
    """Add the metadata filter and search functions to a connection."""
    db.create_function("sm_meta_has", 2, _meta_has, deterministic=True)
    db.create_function("sm_meta_str", 3, _meta_str, deterministic=True)
    db.create_function("sm_meta_json", 3, _meta_json, deterministic=True)
    db.create_function("sm_contains", 2, _contains, deterministic=True)


@dataclass(frozen=True)
class SeriesFilter:
    """One series: an experiment, optionally a metric name and one metadata filter."""

    experiment_id: str
    metric_name: str | None = None
    metadata_key: str | None = None
    metadata_value: str | None = None
    metadata_value_json: str | None = None
    """Compact JSON text of the wanted value (``None``: no JSON filter)."""

    def sql(self) -> tuple[str, list[Any]]:
        """The SQL condition on ``e`` (the events table) and its parameters."""
        # The subquery runs once per statement, so the index range is still a constant's.
        parts = ["e.experiment_seq = (SELECT seq FROM experiments WHERE id = ?)"]
        params: list[Any] = [self.experiment_id]
        if self.metric_name is not None:
            parts.append("e.metric_name = ?")
            params.append(self.metric_name)
        if self.metadata_value is not None:
            parts.append("sm_meta_str(e.metadata_json, ?, ?)")
            params += [self.metadata_key, self.metadata_value]
        elif self.metadata_value_json is not None:
            parts.append("sm_meta_json(e.metadata_json, ?, ?)")
            params += [self.metadata_key, self.metadata_value_json]
        elif self.metadata_key is not None:
            parts.append("sm_meta_has(e.metadata_json, ?)")
            params.append(self.metadata_key)
        return "(" + " AND ".join(parts) + ")", params


_SORT_COLUMNS = {
    "step": "step",
    "client_timestamp": "client_timestamp_ms",
    "server_timestamp": "server_timestamp_ms",
    "series": "series_index",
}

ROW_COLUMNS = (
    "event_id",
    "org_id",
    "experiment_id",
    "experiment_slug",
    "experiment_description",
    "experiment_metadata_json",
    "metric_name",
    "metric_value",
    "step",
    "event_metadata_json",
    "client_timestamp_ms",
    "server_timestamp_ms",
)


@dataclass
class RowQuery:
    """A metric read: the series (one for list-metrics), bounds, order and limit."""

    org_id: str
    series: Sequence[SeriesFilter]
    limit: int
    step: int | None = None
    from_step: int | None = None
    to_step: int | None = None
    from_time: int | None = None
    to_time: int | None = None
    sort_by: Sequence[str] = field(default_factory=lambda: ("step", "client_timestamp"))
    descending: bool = False
    include_meta: bool = False
    id_prefix: str = ""
    """The database's event-id prefix (the store fills it in)."""

    def sql(self, *, as_json: bool = False) -> tuple[str, list[Any]]:
        """The SELECT and its parameters; rows come in :data:`ROW_COLUMNS` order, or with
        ``as_json`` as three columns whose texts joined make the row's JSON object (see
        :func:`syvain_metrics.server.wire.rows_json`): SQLite escapes the strings, Python writes the value, whose
        shortest exact form SQLite's own formatting does not give.

        Each series is its own arm, whose conditions (experiment, metric name, bounds) all
        sit in ``WHERE``, so the arm is a range scan of an index already in the requested
        order (``events_by_metric_step`` and friends end with the rowid, the event's sequence
        number, whose order is that of ``event_id``, the last sort key); several arms are
        merged (``UNION ALL`` under one ``ORDER BY`` of the keys they select), never sorted
        as a whole; a single arm orders by its table's columns and selects no keys. A row belongs to the first series it matches: later arms exclude the
        earlier series. SQLite sorts NULL first ascending and last descending, which is the
        contract's rule for null steps, and indexes keep that order too.
        """
        direction = "DESC" if self.descending else "ASC"
        table = "" if len(self.series) > 1 else "e."
        order = [
            f"{table}{_SORT_COLUMNS[key]} {direction}"
            for key in self.sort_by
            if table == "" or key != "series"  # one series: the same for every row
        ]
        # The last key makes every order total; ids sort as their sequence numbers do, and
        # every index ends with that number (the rowid).
        order.append(f"{table}seq {direction}")
        meta = "x.description, x.metadata_json" if self.include_meta else "NULL, NULL"
        meta_description, meta_json = meta.split(", ")
        bounds: list[str] = ["x.org_id = ?"]
        bound_params: list[Any] = [self.org_id]
        for clause, value in (
            ("e.step = ?", self.step),
            ("e.step >= ?", self.from_step),
            ("e.step <= ?", self.to_step),
            ("e.client_timestamp_ms >= ?", self.from_time),
            ("e.client_timestamp_ms <= ?", self.to_time),
        ):
            if value is not None:
                bounds.append(clause)
                bound_params.append(value)
        arms: list[str] = []
        params: list[Any] = []
        earlier: list[tuple[str, list[Any]]] = []
        for index, series in enumerate(self.series):
            condition, condition_params = series.sql()
            where = [condition, *bounds]
            arm_params = [*condition_params, *bound_params]
            for previous, previous_params in earlier:
                where.append(f"NOT {previous}")
                arm_params += previous_params
            earlier.append((condition, condition_params))
            selected = (
                _JSON_COLUMNS.format(
                    event_id=EVENT_ID, meta_description=meta_description, meta_json=meta_json
                )
                if as_json
                else _PLAIN_COLUMNS.format(event_id=EVENT_ID, meta=meta)
            )
            # Several arms are ordered by the keys they select; one arm needs no copy of them.
            keys = (
                f""", e.step AS step, e.client_timestamp_ms AS client_timestamp_ms,
                       e.server_timestamp_ms AS server_timestamp_ms,
                       e.seq AS seq, {index} AS series_index"""
                if len(self.series) > 1
                else ""
            )
            arms.append(
                f"""SELECT {selected}{keys}
                FROM events e JOIN experiments x ON x.seq = e.experiment_seq
                WHERE {" AND ".join(where)}"""
            )
            params += [self.id_prefix, *arm_params]
        text = f"""
            {" UNION ALL ".join(arms)}
            ORDER BY {", ".join(order)}
            LIMIT ?
        """
        params.append(self.limit)
        return text, params


_PLAIN_COLUMNS = """{event_id}, x.org_id, x.id, x.slug, {meta}, e.metric_name,
    e.metric_value, e.step, e.metadata_json, e.client_timestamp_ms, e.server_timestamp_ms"""
_JSON_COLUMNS = """rtrim(json_object('event_id', {event_id}, 'org_id', x.org_id,
        'experiment_id', x.id, 'experiment_slug', x.slug,
        'experiment_description', {meta_description}, 'experiment_metadata_json', {meta_json},
        'metric_name', e.metric_name), '}}') || ',"metric_value":',
    e.metric_value,
    ',"step":' || CASE WHEN e.step IS NULL THEN 'null' ELSE CAST(e.step AS INTEGER) || '.0' END
        || ',' || ltrim(json_object('event_metadata_json', e.metadata_json,
        'client_timestamp_ms', e.client_timestamp_ms,
        'server_timestamp_ms', e.server_timestamp_ms), '{{')"""
