"""Secrets at rest on the local server: API keys kept only as SHA-256 hashes, database
files readable by their owner only, and a database of the earlier layout (keys in plain
text) rewritten on open."""

from __future__ import annotations

import hashlib
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from syvain_metrics.server.store import SCHEMA_VERSION, Store
from syvain_metrics.testing import LocalServer

KEY = "ak_local_0123456789abcdef0123456789abcdef"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _all_bytes(db: Path) -> bytes:
    files = [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")]
    return b"".join(f.read_bytes() for f in files if f.exists())


def test_a_new_database_and_its_companions_are_private(tmp_path: Path) -> None:
    db = tmp_path / "metrics.sqlite"
    with LocalServer(db=str(db), api_key=KEY) as server, server.session(spool_dir=None) as session:
        import syvain_metrics as sm

        sm.Experiment.create("private", session=session)
        made = [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")]
        assert [p.exists() for p in made] == [True, True, True]
        assert [_mode(p) for p in made] == [0o600, 0o600, 0o600]


def test_an_existing_database_keeps_its_mode(tmp_path: Path) -> None:
    db = tmp_path / "shared.sqlite"
    sqlite3.connect(db).close()
    db.chmod(0o640)
    Store(str(db)).close()
    assert _mode(db) == 0o640


def test_api_keys_are_stored_only_as_hashes(tmp_path: Path) -> None:
    db = tmp_path / "metrics.sqlite"
    store = Store(str(db))
    assert store.use_api_keys([KEY]) == [KEY]
    other = store.add_api_key()
    org = store.authenticate(KEY).org_id
    stored = store._db.execute("SELECT key_hash, org_id FROM api_keys ORDER BY rowid").fetchall()
    assert [tuple(r) for r in stored] == [
        (hashlib.sha256(KEY.encode()).hexdigest(), org),
        (hashlib.sha256(other.encode()).hexdigest(), store.authenticate(other).org_id),
    ]
    store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    raw = _all_bytes(db)
    assert KEY.encode() not in raw
    assert other.encode() not in raw


def test_a_reopened_database_accepts_its_stored_keys(tmp_path: Path) -> None:
    db = str(tmp_path / "metrics.sqlite")
    first = Store(db)
    [made] = first.use_api_keys([])
    org = first.authenticate(made).org_id
    first.close()
    again = Store(db)
    assert again.use_api_keys([]) == []  # accepted, but it cannot show them
    assert again.api_key_count == 1
    assert again.authenticate(made).org_id == org
    with pytest.raises(Exception, match="Invalid API key"):
        again.authenticate(made + "x")
    again.close()


def test_a_database_with_plain_text_keys_is_rewritten_on_open(tmp_path: Path) -> None:
    db = tmp_path / "layout-2.sqlite"
    old = sqlite3.connect(db)
    # The last layout that kept API keys as they are.
    old.executescript((Path(__file__).parent / "server_layout_2.sql").read_text())
    old.execute("INSERT INTO organizations VALUES ('org-1', 'Local', 1)")
    old.execute("INSERT INTO api_keys VALUES (?, 'org-1', 1)", (KEY,))
    old.commit()
    old.close()
    assert KEY.encode() in db.read_bytes()

    store = Store(str(db))
    columns = [row[1] for row in store._db.execute("PRAGMA table_info(api_keys)")]
    assert columns == ["key_hash", "org_id", "created_at_ms"]
    assert store._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert store.use_api_keys([]) == []
    assert store.authenticate(KEY).org_id == "org-1"
    store.close()
    assert KEY.encode() not in _all_bytes(db)
    reopened = Store(str(db))  # opening again changes nothing
    reopened.use_api_keys([])
    assert reopened.authenticate(KEY).org_id == "org-1"
    reopened.close()


def test_serve_on_a_database_with_keys_says_they_are_hashed(tmp_path: Path) -> None:
    db = tmp_path / "metrics.sqlite"
    made = Store(str(db))
    made.use_api_keys([KEY])
    made.close()
    process = subprocess.Popen(
        [sys.executable, "-m", "syvain_metrics.server", "--port", "0", "--db", str(db)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert "the 1 API key(s) stored in" in line
        assert "kept as hashes" in line
        url = next(word for word in line.split() if word.startswith("http://"))
        status = requests.get(
            f"{url}/api/v1/auth/status", headers={"Authorization": f"Bearer {KEY}"}, timeout=5
        )
        assert status.status_code == 200
    finally:
        process.terminate()
        _, errors = process.communicate(timeout=10)
    assert process.returncode == 143, errors  # 128 + SIGTERM, as a shell reports it
