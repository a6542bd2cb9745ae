"""The local server at scale. Every query the SDK's paging sends is an index range scan in
the order asked for: no temporary B-tree sorts an experiment's rows, whatever its size, so a
page costs the same at the start and at the end of a long history. And with a database file,
a long read never holds up a write.

The SDK reads through the real local server with small pages, so every paging shape comes
up (by step both ways, inside one step, by client time, the block of null steps, a compare
of several series, experiments and annotations by creation time); each SELECT the store ran
is then explained.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import syvain_metrics as sm
from syvain_metrics.server import sql, wire
from syvain_metrics.testing import LocalServer

Read = Callable[[sm.Experiment, sm.Experiment], object]

READS: dict[str, Read] = {
    "by step": lambda a, b: a.metrics("loss", metadata={"split": "train"}),
    "by step, all metrics": lambda a, b: a.metrics(),
    "by step, descending": lambda a, b: a.metrics("loss", sort_direction="desc"),
    "inside a crowded step": lambda a, b: a.metrics("acc"),
    "by client time": lambda a, b: a.metrics("loss", sort_by="client_timestamp"),
    "by client time, descending": lambda a, b: a.metrics(
        sort_by="client_timestamp", sort_direction="desc"
    ),
    "compare": lambda a, b: sm.compare(
        [a.series("loss", metadata={"split": "train"}), b.series("loss"), a.series("acc")]
    ),
    "experiments": lambda a, b: sm.Experiment.list(session=a._bind()),
    "annotations": lambda a, b: a.annotations(),
}


@pytest.fixture(scope="module")
def world() -> Iterator[tuple[LocalServer, sm.Experiment, sm.Experiment]]:
    with LocalServer() as server:
        session = server.session(spool_dir=None, page_size=40)
        first = sm.Experiment.create("plans-a", session=session)
        second = sm.Experiment.create("plans-b", session=session)
        events = []
        for i in range(400):
            for split in ("train", "valid"):
                step = None if i % 23 == 0 else i // 4  # null steps among the others
                events.append(
                    {
                        "client_event_id": f"{i}-{split}",
                        "name": "loss",
                        "value": i / 10,
                        "step": step,
                        "metadata": {"split": split},
                        "timestamp_ms": 1_000 + i,
                    }
                )
        crowded = [  # more rows at one step than a page
            {"client_event_id": f"acc-{i}", "name": "acc", "value": 1.0, "step": 7}
            for i in range(100)
        ]
        first.ingest(events + crowded)
        second.ingest(events[:200])
        for i in range(150):  # more than one page of experiments and of annotations
            sm.Experiment.create(f"plans-more-{i}", session=session)
            first.annotate(f"note {i}")
        yield server, first, second
        session.close()


@pytest.mark.parametrize("shape", sorted(READS))
def test_paging_queries_are_ordered_index_range_scans(
    world: tuple[LocalServer, sm.Experiment, sm.Experiment], shape: str
) -> None:
    server, first, second = world
    with server.store.recording() as statements:
        READS[shape](first, second)
    pages = [s for s in statements if s.lstrip().upper().startswith("SELECT") and "LIMIT" in s]
    assert len(pages) >= 2, "the read should have paged"
    for statement in pages:
        plan = server.store.query_plan(statement)
        assert not [step for step in plan if "TEMP B-TREE" in step], (statement, plan)
        # A series names its experiment by a constant subquery (one search, run once).
        steps = ("SEARCH", "MERGE", "LEFT", "RIGHT", "SCALAR SUBQUERY", "REUSE SUBQUERY")
        assert all(step.startswith(steps) for step in plan), (
            statement,
            plan,
        )


def test_an_ingest_completes_while_a_long_compare_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with LocalServer(db=str(tmp_path / "metrics.sqlite")) as server:
        session = server.session(spool_dir=None)
        exp = sm.Experiment.create("busy", session=session)
        exp.ingest(
            [{"name": "loss", "value": 1.0, "step": i, "metadata": {"k": 1}} for i in range(50)]
        )
        inside, release = threading.Event(), threading.Event()
        equal = sql.json_equal

        def held_equal(left: object, right: object) -> bool:
            inside.set()  # the compare is in the middle of its query
            release.wait(60)
            return equal(left, right)

        monkeypatch.setattr(sql, "json_equal", held_equal)
        rows: list[sm.MetricRows] = []
        reader = threading.Thread(
            target=lambda: rows.append(sm.compare([exp.series("loss", metadata={"k": 1})]))
        )
        reader.start()
        written = threading.Event()

        def write() -> None:
            exp.ingest([{"name": "acc", "value": 0.5, "step": 1}])
            written.set()

        try:
            assert inside.wait(30)
            threading.Thread(target=write, daemon=True).start()
            # Bounded only to fail instead of hanging: the write must not wait for the read.
            assert written.wait(30)
            assert reader.is_alive()  # the read is still inside its query
        finally:
            release.set()
            reader.join(30)
        assert len(rows[0]) == 50
        assert [r.name for r in exp.metrics("acc")] == ["acc"]
        session.close()


def test_a_rows_answer_is_cut_by_size_and_the_sdk_reads_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import requests

    from syvain_metrics.server.store import reads

    monkeypatch.setattr(reads, "MAX_ROWS_ANSWER_BYTES", 20_000)
    with LocalServer() as server:
        session = server.session(spool_dir=None)
        exp = sm.Experiment.create("large-metadata", session=session)
        big = "x" * 2_000
        exp.ingest(
            [
                {"name": "loss", "value": i / 7, "step": i, "metadata": {"note": big}}
                for i in range(60)
            ]
        )
        answer = requests.get(
            f"{server.url}/api/v1/experiments/{exp.id}/metrics",
            params={"metric_name": "loss", "limit": "1000"},
            headers={"Authorization": f"Bearer {server.api_key}"},
            timeout=10,
        )
        page = answer.json()["data"]["rows"]
        assert answer.status_code == 200
        assert 1 <= len(page) < 60  # cut short, not refused
        assert len(answer.content) < 20_000 + 4_000  # the row that passed the line, no more
        rows = exp.metrics("loss")  # the SDK reads on past the short pages
        assert [r.step for r in rows] == list(range(60))
        assert [r.value for r in rows] == [i / 7 for i in range(60)]
        session.close()


def test_rows_written_by_sqlite_are_the_rows_as_json_writes_them() -> None:
    # The hot read path writes each row's JSON mostly in SQL; it must read back exactly as
    # a dict per row through json.dumps would, whatever the strings and numbers hold.
    import json
    import random

    from syvain_metrics.server.sql import RowQuery, SeriesFilter
    from syvain_metrics.server.store import Store

    store = Store()
    [key] = store.use_api_keys(["ak_rows"])
    org = store.authenticate(key).org_id
    slug = 'run "quoted" \\ é ✓ \u2028 tab\t'
    exp = store.create_experiment(
        org,
        {"slug": slug, "description": 'd\n"x"', "metadata": {"k": "v\u0001", "n": 1.5}},
    )
    rng = random.Random(7)
    values = [rng.random() * 10 ** rng.randint(-300, 300) for _ in range(300)]
    values += [0.1, 1 / 3, -0.0, 5e-324, 1.7976931348623157e308, 2.0**53, 7.0]
    metrics = [
        {
            "client_event_id": f"c{i}",
            "name": ["loss", 'ñame "q"', "a\\b"][i % 3],
            "value": value,
            "step": None if i % 11 == 0 else i * 1_000_003,
            "metadata": {"split": ["train", 'va"l', "\u00e9\n"][i % 3], "i": i},
            "timestamp_ms": 1_700_000_000_000 + i,
        }
        for i, value in enumerate(values)
    ]
    store.ingest(org, exp.id, metrics)
    for include_meta in (False, True):
        query = RowQuery(
            org_id=org, series=[SeriesFilter(exp.id)], limit=1_000, include_meta=include_meta
        )
        written = json.loads(wire.rows_json(store.metric_row_texts(query)))
        assert written == [wire.metric_row(r) for r in store.metric_rows(query)]
        assert len(written) == len(metrics)
        assert sorted(r["metric_value"] for r in written) == sorted(values)
        assert all(type(r["step"]) is float for r in written if r["step"] is not None)
    assert (
        wire.rows_json(
            store.metric_row_texts(
                RowQuery(org_id=org, series=[SeriesFilter(exp.id, "none")], limit=10)
            )
        )
        == "[]"
    )


def test_a_batch_is_stored_exactly_as_validated() -> None:
    # SQLite reads a batch out of its JSON text: every double must come back bit for bit,
    # whole-number steps as integers, metadata as its canonical text, defaults filled in, and
    # the first of two events with one client_event_id must win.
    import random
    import struct

    from syvain_metrics.server.sql import RowQuery, SeriesFilter, canonical
    from syvain_metrics.server.store import Store

    store = Store(clock=lambda: 1_800_000_000.0)
    [key] = store.use_api_keys(["ak_exact"])
    org = store.authenticate(key).org_id
    exp = store.create_experiment(org, {"slug": "exact", "metadata": {}})
    rng = random.Random(11)
    values: list[float | int] = []
    while len(values) < 20_000:
        (value,) = struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))
        if value == value and abs(value) != float("inf"):
            values.append(value)
    values += [0.1, -0.0, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, 3, 2**60]
    metrics = [
        {
            "client_event_id": f"c{i}",
            "name": "v",
            "value": value,
            "step": float(i) if i % 2 else i,
            "metadata": {"i": i, "s": 'é\n"\u0000', "nested": {"b": [1.5, True, None]}},
        }
        for i, value in enumerate(values)
    ]
    metrics.append({"client_event_id": "c0", "name": "v", "value": 99.0, "step": 0})
    store.ingest(org, exp.id, metrics)
    query = RowQuery(org_id=org, series=[SeriesFilter(exp.id)], limit=100_000)
    rows = [wire.metric_row(r) for r in store.metric_rows(query)]
    assert len(rows) == len(values)
    # SQLite keeps a whole-number REAL as an integer, so -0.0 comes back as 0.0 (as it did
    # when rows were bound one by one).
    assert [struct.pack("<d", r["metric_value"]) for r in rows] == [
        struct.pack("<d", 0.0 if v == 0 else float(v)) for v in values
    ]
    stored = store._db.execute(
        "SELECT step, typeof(step), metadata_json, client_timestamp_ms FROM events ORDER BY seq"
    ).fetchall()
    assert [(r[0], r[1]) for r in stored] == [(i, "integer") for i in range(len(values))]
    assert [r[2] for r in stored] == [canonical(m["metadata"]) for m in metrics[:-1]]
    assert {r[3] for r in stored} == {1_800_000_000_000}


@pytest.mark.parametrize("keyed", [True, False])
def test_an_ingest_request_is_stored_as_its_validated_batch_would_be(keyed: bool) -> None:
    # The server reads a request's rows out of its canonical body text rather than encode
    # the validated batch again: the rows must be those the validated batch gives, for every
    # shape the validation lets through (integers a 64-bit integer cannot hold, whole-number
    # float steps, null metadata and timestamps, a NUL, a repeated id), metadata keys sorted.
    import json
    import struct

    from werkzeug.test import Client

    from syvain_metrics.contract.schemas.ingest import IngestRequest
    from syvain_metrics.server import MetricsApp, Store
    from syvain_metrics.server.sql import RowQuery, SeriesFilter, canonical

    raw: list[dict[str, object]] = [
        {"client_event_id": "big", "name": "v", "value": 2**70 + 1, "step": 0},
        {"client_event_id": "huge", "name": "v", "value": 12345678901234567891 * 10**280},
        {"client_event_id": "edge", "name": "v", "value": 2**62 - 1, "step": 3.0},
        {"client_event_id": "null", "name": "v", "value": 0.1, "metadata": None},
        {"client_event_id": "late", "name": "v", "value": 1, "timestamp_ms": None},
        {"client_event_id": "meta", "name": "v", "value": -2.5, "metadata": {"z": 1, "a": [1]}},
        {"client_event_id": "big", "name": "v", "value": 7.0, "step": 9},
    ]
    plain: list[dict[str, object]] = [
        {"client_event_id": "p1", "name": "v", "value": 3},
        {"client_event_id": "p2", "name": "v", "value": -(2**62), "step": 5, "timestamp_ms": 9},
        {"client_event_id": "p3", "name": "v", "value": 0.1, "metadata": {"z": 1, "a": "x"}},
        {"client_event_id": "p1", "name": "v", "value": 4},
    ]
    # Read from the request's text (plainly valid, or normalized by the schema); from a new
    # text (integers past 2**62, in a plain batch or not); row by row (a NUL).
    bodies = [
        ("$.data", plain),
        ("$.data", raw[2:]),
        ("$", [*plain, {"client_event_id": "p4", "name": "v", "value": 2**70 + 1}]),
        ("$", raw),
        (None, [*raw[2:], {"client_event_id": "n\u0000l", "name": "v", "value": 1e300}]),
    ]
    for index, (path, items) in enumerate(bodies):
        store = Store(clock=lambda: 1_800_000_000.0)
        [key] = store.use_api_keys(["ak_source"])
        org = store.authenticate(key).org_id
        exp = store.create_experiment(org, {"slug": "s", "metadata": {}})
        client = Client(MetricsApp(store))
        headers = {"Authorization": f"Bearer {key}"}
        token = client.post(
            f"/api/v1/experiments/{exp.id}/ingestion-keys", json={"name": "k"}, headers=headers
        ).get_json()["data"]["token"]
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        if keyed:
            headers["Idempotency-Key"] = f"key-{index}"
        body = json.dumps({"data": items})
        with store.recording() as statements:
            answer = client.post(f"/api/v1/experiments/{exp.id}/ingest", data=body, headers=headers)
        assert answer.status_code == 200, answer.data
        # Read out of the text into a staging table (or straight into events), then stored.
        inserts = [q for q in statements if "INTO events" in q or "INTO rows" in q]
        assert ("json_each" in inserts[0]) is (path is not None)
        if path is not None:
            assert f"'{path}'" in inserts[0].split("json_each")[1]
            assert "INTO rows" in inserts[0]
            assert "FROM staging_0.rows" in inserts[1]
        loaded = IngestRequest().load(json.loads(body))["data"]
        expected = {}
        for m in loaded:
            expected.setdefault(m["client_event_id"], m)  # the first of an id wins
        query = RowQuery(org_id=org, series=[SeriesFilter(exp.id)], limit=100)
        rows = store.metric_rows(query)
        assert len(rows) == len(expected)
        stored = store._db.execute(
            "SELECT client_event_id, metric_value, step, typeof(step), metadata_json, "
            "client_timestamp_ms FROM events ORDER BY seq"
        ).fetchall()
        assert [r[0] for r in stored] == list(expected)
        for row in stored:
            m = expected[row[0]]
            assert struct.pack("<d", row[1]) == struct.pack("<d", m["value"]), row[0]
            assert (row[2], row[3]) == (
                (m["step"], "integer") if m["step"] is not None else (None, "null")
            )
            assert row[4] == canonical(m.get("metadata", {}))
            assert row[5] == m.get("timestamp_ms", 1_800_000_000_000)


def test_a_write_and_its_idempotency_record_commit_together(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An annotation has no id of its own to dedupe by: if it committed before its
    # idempotency record failed, the retry would store it a second time.
    with LocalServer() as server:
        session = server.session(spool_dir=None, retry=sm.RetryPolicy(sleep=lambda s: None))
        exp = sm.Experiment.create("atomic", session=session)
        real = server.store.save_idempotency
        failures: list[str] = []

        def fails_once(*args: object) -> None:
            if not failures:
                failures.append("record")
                raise RuntimeError("disk full")
            real(*args)  # type: ignore[arg-type]

        monkeypatch.setattr(server.store, "save_idempotency", fails_once)
        exp.annotate("checkpoint")
        assert failures == ["record"]
        assert [a.text for a in exp.annotations()] == ["checkpoint"]
        session.close()


# -- staging: an ingest's rows are read out of its text before the write lock ---------------


def _ingest_app(store: object) -> tuple[object, dict[str, str], str]:
    """A client of an app on ``store``, its headers, and an experiment id (the organization is
    kept for :func:`_stored_steps`)."""
    from werkzeug.test import Client

    from syvain_metrics.server import MetricsApp, Store

    assert isinstance(store, Store)
    [key] = store.use_api_keys(["ak_staging"])
    org = store.authenticate(key).org_id
    exp = store.create_experiment(org, {"slug": "s", "metadata": {}})
    client = Client(MetricsApp(store))
    token = client.post(
        f"/api/v1/experiments/{exp.id}/ingestion-keys",
        json={"name": "k"},
        headers={"Authorization": f"Bearer {key}"},
    ).get_json()["data"]["token"]
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    _ORGS[id(store)] = org
    return client, headers, exp.id


_ORGS: dict[int, str] = {}


def _post_batch(client: object, headers: dict[str, str], experiment_id: str, start: int) -> int:
    import json

    body = {
        "data": [
            {"client_event_id": f"e{i}", "name": "loss", "value": i / 7, "step": i}
            for i in range(start, start + 50)
        ]
    }
    answer = client.post(  # type: ignore[attr-defined]
        f"/api/v1/experiments/{experiment_id}/ingest", data=json.dumps(body), headers=headers
    )
    return int(answer.status_code)


def _stored_steps(store: object, experiment_id: str) -> list[int]:
    from syvain_metrics.server import Store

    assert isinstance(store, Store)
    query = sql.RowQuery(_ORGS[id(store)], [sql.SeriesFilter(experiment_id, "loss")], 100_000)
    return [wire.metric_row(r)["step"] for r in store.metric_rows(query)]


def test_concurrent_ingests_are_staged_and_each_event_is_stored_once(tmp_path: Path) -> None:
    from syvain_metrics.server import Store

    store = Store(str(tmp_path / "metrics.sqlite"))
    client, headers, experiment_id = _ingest_app(store)
    statuses: list[int] = []

    def send(first: int) -> None:
        for start in range(first, first + 500, 50):
            statuses.append(_post_batch(client, headers, experiment_id, start))
            # The same events again, from another thread: stored once.
            statuses.append(_post_batch(client, headers, experiment_id, start))

    with store.recording() as statements:
        threads = [threading.Thread(target=send, args=(n * 500,)) for n in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert statuses == [200] * 120
    assert sorted(_stored_steps(store, experiment_id)) == list(range(3000))
    staged = [q for q in statements if "INTO events" in q and "FROM staging_" in q]
    assert len(staged) > 60  # most batches were copied from a staging slot
    store.close()


def test_a_batch_is_read_in_its_transaction_when_no_staging_slot_is_free() -> None:
    from syvain_metrics.server import Store
    from syvain_metrics.server.staging import StagingPool

    store = Store()
    store._staging = StagingPool(0)
    client, headers, experiment_id = _ingest_app(store)
    with store.recording() as statements:
        assert _post_batch(client, headers, experiment_id, 0) == 200
    inserts = [q for q in statements if "INTO events" in q]
    assert len(inserts) == 1
    assert "json_each" in inserts[0]
    assert _stored_steps(store, experiment_id) == list(range(50))


def test_without_memdb_batches_are_read_in_the_transaction(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from syvain_metrics.server import Store, staging

    def no_memdb(*args: object) -> None:
        raise sqlite3.OperationalError("no such vfs: memdb")

    monkeypatch.setattr(staging, "StagingSlot", no_memdb)
    store = Store()
    client, headers, experiment_id = _ingest_app(store)
    assert _post_batch(client, headers, experiment_id, 0) == 200
    assert _post_batch(client, headers, experiment_id, 50) == 200
    assert _stored_steps(store, experiment_id) == list(range(100))


def test_a_failed_staged_ingest_stores_nothing_and_frees_its_slot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from syvain_metrics.server import Store

    store = Store(str(tmp_path / "metrics.sqlite"))
    client, headers, experiment_id = _ingest_app(store)

    def disk_full(*args: object) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    # The batch is staged and copied, then the transaction fails at its idempotency record.
    with monkeypatch.context() as patch:
        patch.setattr(store, "save_idempotency", disk_full)
        keyed = {**headers, "Idempotency-Key": "k-1"}
        assert _post_batch(client, keyed, experiment_id, 0) == 500
    assert _stored_steps(store, experiment_id) == []
    with store.recording() as statements:
        assert _post_batch(client, keyed, experiment_id, 0) == 200
    # The same slot, detached after the failure, serves the retry.
    assert any("FROM staging_0.rows" in q for q in statements)
    assert _stored_steps(store, experiment_id) == list(range(50))
    store.close()
