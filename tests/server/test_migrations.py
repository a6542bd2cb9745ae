"""Databases of every earlier layout open: the store reads ``PRAGMA user_version``, runs each
step from there to the current layout, and what they held reads back through the API. A
database of a newer layout is refused and left as it is.

Each past layout is kept as the SQL that made it (``server_layout_N.sql``, with the version
a database of that layout records; layout 1 recorded none). Version 3 named two layouts: the
hashed API keys, and for a short while events by experiment sequence number instead.
"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import requests

from syvain_metrics.server.sql import RowQuery, SeriesFilter
from syvain_metrics.server.store import SCHEMA_VERSION, NewerLayoutError, Store
from syvain_metrics.server.store.schema import SCHEMA
from syvain_metrics.testing import LocalServer

KEY = "ak_local_0123456789abcdef0123456789abcdef"
LAYOUTS: dict[str, tuple[int, str, bool]] = {
    # layout: (its version, how its events name their experiment, API keys kept as hashes)
    "1_released": (0, "event_id", False),
    "1": (0, "event_id", False),
    "2": (2, "experiment_id", False),
    "3": (3, "experiment_id", True),
    "3_plain_keys": (3, "experiment_seq", False),
    "4": (4, "experiment_seq", True),
    "5": (5, "experiment_seq", True),
    "6": (6, "experiment_seq", True),
}
HERE = Path(__file__).parent
BLOCK_KEY = "experiment_seq, metric_name, metadata_json, block"
BLOCKS_OF_EVENTS = (
    "SELECT experiment_seq, metric_name, metadata_json, step >> 4 AS block, count(*), "
    "min(metric_value), max(metric_value), min(step), max(step) FROM events "
    f"WHERE step IS NOT NULL GROUP BY {BLOCK_KEY} ORDER BY {BLOCK_KEY}"
)
"""Each sub-series' blocks of 16 steps, as a GROUP BY over the events gives them."""


def _layout_database(path: Path, layout: str) -> None:
    """A database of ``layout`` holding an organization and its key, a folder, two
    experiments with events, an annotation and an ingestion key."""
    db = sqlite3.connect(path)
    db.executescript((HERE / f"server_layout_{layout}.sql").read_text())
    _, events, hashed = LAYOUTS[layout]
    key = hashlib.sha256(KEY.encode()).hexdigest() if hashed else KEY
    db.execute("INSERT INTO organizations VALUES ('org-1', 'Local', 1)")
    db.execute("INSERT INTO api_keys VALUES (?, 'org-1', 1)", (key,))
    db.execute(
        "INSERT INTO folders (id, org_id, parent_id, name, created_at_ms) "
        "VALUES ('f-1', 'org-1', NULL, 'vision', 1)"
    )
    experiments = "id, org_id, folder_id, slug, description, metadata_json, status"
    db.execute(  # a second experiment first, so sequence numbers and ids differ
        f"INSERT INTO experiments ({experiments}, created_at_ms, updated_at_ms) "
        "VALUES ('x-0', 'org-1', NULL, 'other', '', '{}', 'done', 1, 1)"
    )
    db.execute(
        f"INSERT INTO experiments ({experiments}, created_at_ms, updated_at_ms) "
        "VALUES ('x-1', 'org-1', 'f-1', 'old-run', 'kept', '{\"lr\":0.1}', 'done', 2, 2)"
    )
    if events == "event_id":
        names, marks = "event_id, org_id, experiment_id", "?, 'org-1', ?"
        owners = [(f"uuid-{i}", f"x-{i % 2}") for i in range(10)]
    elif events == "experiment_id":
        names, marks = "org_id, experiment_id", "'org-1', ?"
        owners = [(f"x-{i % 2}",) for i in range(10)]
    else:
        names, marks = "experiment_seq", "?"
        owners = [(1 + i % 2,) for i in range(10)]
    db.executemany(
        f"INSERT INTO events ({names}, client_event_id, metric_name, metric_value, step, "
        f"metadata_json, client_timestamp_ms, server_timestamp_ms) "
        f"VALUES ({marks}, ?, 'loss', ?, ?, '{{\"split\":\"train\"}}', ?, ?)",
        [(*owner, f"c{i}", i / 4, i, 1_000 + i, 2_000 + i) for i, owner in enumerate(owners)],
    )
    db.execute(
        "INSERT INTO annotations (id, org_id, experiment_id, annotation, metadata_json, "
        "created_at_ms) VALUES ('a-1', 'org-1', 'x-1', 'checkpoint', '{}', 3)"
    )
    db.execute(
        "INSERT INTO ingestion_keys (id, org_id, experiment_id, name, token_hash, "
        "created_at_ms, expires_at_ms) VALUES ('k-1', 'org-1', 'x-1', 'trainer', 'h', 4, 5)"
    )
    db.commit()
    db.close()


def _version(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return int(db.execute("PRAGMA user_version").fetchone()[0])
    finally:
        db.close()


def _shape(path: Path) -> dict[str, Any]:
    """Every table's columns and every index's table and columns (SQLite's own indexes too)."""
    db = sqlite3.connect(path)
    try:
        shape: dict[str, Any] = {}
        for kind, name, table in db.execute(
            "SELECT type, name, tbl_name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
            " OR type = 'index'"
        ).fetchall():
            pragma = "table_info" if kind == "table" else "index_info"
            columns = [tuple(r[1:]) for r in db.execute(f'PRAGMA {pragma}("{name}")')]
            shape[name] = (kind, table, columns)
        return shape
    finally:
        db.close()


def _get(server: LocalServer, path: str, **params: Any) -> Any:
    answer = requests.get(
        f"{server.url}/api/v1{path}",
        params=params,
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    return answer.json()["data"]


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_a_database_of_an_earlier_layout_opens_and_reads_back(tmp_path: Path, layout: str) -> None:
    path = tmp_path / f"layout-{layout}.sqlite"
    _layout_database(path, layout)
    assert _version(path) == LAYOUTS[layout][0]

    with LocalServer(db=str(path), api_key=KEY) as server:
        assert _get(server, "/auth/status")["organization"] == {"id": "org-1", "name": "Local"}
        [folder] = _get(server, "/folders")["folders"]
        assert (folder["folder_id"], folder["path_name"]) == ("f-1", "vision")
        experiment = _get(server, "/experiments/x-1")["experiment"]
        assert experiment["slug"] == "old-run"
        assert experiment["metadata"] == {"lr": 0.1}
        assert experiment["folder"]["folder_id"] == "f-1"
        assert experiment["url"].startswith(server.url)
        rows = _get(server, "/experiments/x-1/metrics", metric_name="loss")["rows"]
        assert [(r["step"], r["metric_value"]) for r in rows] == [
            (float(i), i / 4) for i in range(1, 10, 2)
        ]
        assert {(r["experiment_id"], r["org_id"]) for r in rows} == {("x-1", "org-1")}
        ids = [r["event_id"] for r in rows]
        assert len(set(ids)) == 5
        assert ids == sorted(ids)  # new ids, in the order the events were stored
        assert [e["metric_name"] for e in _get(server, "/experiments/x-1/catalog")["metrics"]] == [
            "loss"
        ]
        [note] = _get(server, "/experiments/x-1/annotations")["annotations"]
        assert note["annotation"] == "checkpoint"
        [key] = _get(server, "/experiments/x-1/ingestion-keys")["keys"]
        assert key["name"] == "trainer"
        # Dedupe by client_event_id still holds for what was stored before.
        server.store.ingest("org-1", "x-1", [{"client_event_id": "c1", "name": "loss", "value": 9}])
        assert len(_get(server, "/experiments/x-1/metrics", metric_name="loss")["rows"]) == 5
    assert _version(path) == SCHEMA_VERSION
    fresh = tmp_path / "fresh.sqlite"
    Store(str(fresh)).close()
    assert _shape(path) == _shape(fresh)  # the current layout, whatever it came from
    stored = sqlite3.connect(path)
    # The events stored before have their blocks of steps (every layout's events have steps).
    assert stored.execute(f"SELECT * FROM series_blocks ORDER BY {BLOCK_KEY}").fetchall() == (
        stored.execute(BLOCKS_OF_EVENTS).fetchall()
    )
    assert stored.execute("SELECT sum(count) FROM series_blocks").fetchone() == (10,)
    assert stored.execute("SELECT key_hash FROM api_keys").fetchall() == [
        (hashlib.sha256(KEY.encode()).hexdigest(),)
    ]
    stored.close()
    assert KEY.encode() not in path.read_bytes()

    again = Store(str(path))  # opening again changes nothing
    query = RowQuery(org_id="org-1", series=[SeriesFilter("x-1", "loss")], limit=100)
    assert [row[0] for row in again.metric_rows(query)] == ids
    again.close()
    assert _version(path) == SCHEMA_VERSION


def test_a_database_of_a_newer_layout_is_refused_and_left_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "newer.sqlite"
    db = sqlite3.connect(path)
    db.executescript(SCHEMA)
    db.execute("INSERT INTO organizations VALUES ('org-1', 'Local', 1)")
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    before = path.read_bytes()

    with pytest.raises(NewerLayoutError, match=f"layout version {SCHEMA_VERSION + 1}, newer"):
        Store(str(path))
    with pytest.raises(NewerLayoutError):
        LocalServer(db=str(path), api_key=KEY)
    assert path.read_bytes() == before
    assert not path.with_name(path.name + "-wal").exists()
    assert _version(path) == SCHEMA_VERSION + 1


def test_a_new_database_starts_at_the_current_version(tmp_path: Path) -> None:
    path = tmp_path / "new.sqlite"
    Store(str(path)).close()
    assert _version(path) == SCHEMA_VERSION


def test_processes_opening_an_old_database_at_once_take_each_step_once(tmp_path: Path) -> None:
    # Each step reads the version again inside its transaction: whichever process comes
    # second finds the step taken, and neither copies the events twice.
    import subprocess
    import sys

    path = tmp_path / "layout-2.sqlite"
    _layout_database(path, "2")
    db = sqlite3.connect(path)
    db.executemany(
        "INSERT INTO events (org_id, experiment_id, client_event_id, metric_name, metric_value, "
        "step, metadata_json, client_timestamp_ms, server_timestamp_ms) "
        "VALUES ('org-1', 'x-0', ?, 'acc', 0.5, ?, '{}', 1, 2)",
        [(f"many-{i}", i) for i in range(50_000)],
    )
    db.commit()
    db.close()
    code = (
        "import logging, sys\n"
        "logging.basicConfig(level=logging.INFO, format='%(message)s')\n"
        "from syvain_metrics.server.store import Store\n"
        "sys.stdin.readline()\n"
        f"store = Store({str(path)!r}, shared=True)\n"
        "print(store._db.execute('SELECT count(*) FROM events').fetchone()[0])\n"
        "store.close()\n"
    )
    openers = [
        subprocess.Popen(
            [sys.executable, "-c", code],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for opener in openers:  # both started before either opens the database
        assert opener.stdin is not None
        opener.stdin.write("go\n")
        opener.stdin.flush()
    answers = [opener.communicate(timeout=120) for opener in openers]
    assert [opener.returncode for opener in openers] == [0, 0], answers
    assert [out.strip() for out, _ in answers] == ["50010", "50010"]
    steps = [line for _, logged in answers for line in logged.splitlines() if "layout" in line]
    assert sorted(line.split(": ")[-1] for line in steps) == [
        "layout 2 -> 3",
        "layout 3 -> 4",
        "layout 4 -> 5",
        "layout 5 -> 6",
        "layout 6 -> 7",
    ]
    assert _version(path) == SCHEMA_VERSION
    stored = sqlite3.connect(path)
    assert stored.execute("SELECT sum(count) FROM series_blocks").fetchone() == (50_010,)
    stored.close()
