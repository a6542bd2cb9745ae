"""End-to-end tests: the SDK against the in-process local server, over real HTTP.

Every operation of the contract is driven through the SDK's public API against the
plugin's ``metrics_server`` (no ``responses`` mocks): each test writes something, reads
it back, and compares what came back with what was sent.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import pytest

import syvain_metrics as sm
from syvain_metrics.client import transport
from syvain_metrics.testing import LocalServer

UTC = dt.timezone.utc
BASE_TS = 1_700_000_000_000  # a fixed client timestamp (ms) for metrics sent with one


def now_ms() -> int:
    return int(time.time() * 1000)


def assert_recent(value: int | None, before: int, after: int) -> None:
    """A server time taken between ``before`` and ``after`` (same machine, 1 s of slack)."""
    assert value is not None
    assert before - 1000 <= value <= after + 1000, (before, value, after)


def to_dt(ms: int, tz: dt.tzinfo = UTC) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, tz=UTC).astimezone(tz)


def api_error(call: Callable[[], Any]) -> sm.MetricsApiRequestError:
    with pytest.raises(sm.MetricsApiRequestError) as caught:
        call()
    return caught.value


def ids(items: Sequence[Any]) -> list[str]:
    return [item.id for item in items]


def counting(session: sm.Session, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the operation name of every logical call the session makes."""
    calls: list[str] = []
    original = session.call

    def call(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[0].operation)
        return original(*args, **kwargs)

    monkeypatch.setattr(session, "call", call)
    return calls


@pytest.fixture
def server(metrics_server: LocalServer, metrics_session: sm.Session) -> LocalServer:
    """The shared local server, wiped, with ``metrics_session`` as the default session."""
    return metrics_server


# -- auth status ----------------------------------------------------------------------------


def test_whoami_names_the_api_key_and_its_organization(
    server: LocalServer, metrics_session: sm.Session
) -> None:
    status = sm.whoami()
    assert status.kind == "api_key"
    assert status.organization_id
    assert status.organization_name == "Local"
    assert sm.whoami(session=metrics_session) == status
    other = sm.Session(server.add_organization(), host=server.url)
    try:
        assert sm.whoami(session=other).organization_id != status.organization_id
    finally:
        other.close()


# -- folders --------------------------------------------------------------------------------


def test_folders_create_list_get(server: LocalServer) -> None:
    root = sm.Folder.create("baselines")
    assert (root.name, root.path_name, root.parent_id, root.parent_id_path) == (
        "baselines",
        "baselines",
        None,
        [],
    )
    sub = root.create_subfolder("mamba")
    assert (sub.name, sub.path_name, sub.parent_id, sub.parent_id_path) == (
        "mamba",
        "baselines/mamba",
        root.id,
        [root.id],
    )
    by_id = sm.Folder.create("zeta", parent=root.id)  # a parent given as an id
    deep = sm.Folder.create("deep", parent=sub)
    assert deep.path_name == "baselines/mamba/deep"
    assert deep.parent_id_path == [root.id, sub.id]
    other_root = sm.Folder.create("archive", parent=None)
    assert other_root.parent_id is None
    assert len({root.org_id, sub.org_id, deep.org_id, sm.whoami().organization_id}) == 1

    listed = sm.Folder.list()
    assert {f.path_name: f.id for f in listed} == {
        "baselines": root.id,
        "baselines/mamba": sub.id,
        "baselines/zeta": by_id.id,
        "baselines/mamba/deep": deep.id,
        "archive": other_root.id,
    }
    assert ids(sm.Folder.list(path="baselines/mamba")) == [sub.id]
    assert ids(sm.Folder.list(path="baselines/mamba/deep")) == [deep.id]
    assert sm.Folder.list(path="mamba") == []  # a path is the full path from the root
    assert sm.Folder.list(path="nowhere") == []

    older = sm.Experiment.create("older", folder=root)
    newer = root.create_experiment("newer", description="second")
    got = sm.Folder.get(root.id)
    assert (got.id, got.name, got.path_name, got.parent_id) == (
        root.id,
        "baselines",
        "baselines",
        None,
    )
    assert [f.name for f in got.subfolders] == ["mamba", "zeta"]  # by name
    assert [f.path_name for f in got.subfolders] == ["baselines/mamba", "baselines/zeta"]
    assert ids(got.experiments) == [newer.id, older.id]  # newest first
    assert got.experiments[0].description == "second"
    assert sm.Folder.get(deep.id).subfolders == []
    assert sm.Folder.get(deep.id).experiments == []

    missing = api_error(lambda: sm.Folder.get("no-such-folder"))
    assert (missing.status_code, missing.error_code) == (404, "not_found")


def test_folders_rename_save_and_move(server: LocalServer) -> None:
    root = sm.Folder.create("baselines")
    archive = sm.Folder.create("archive")
    sub = root.create_subfolder("mamba")
    deep = sub.create_subfolder("deep")

    renamed = sub.rename("mamba-v2")
    assert renamed is sub
    assert (sub.name, sub.path_name, sub.parent_id) == ("mamba-v2", "baselines/mamba-v2", root.id)
    assert sm.Folder.get(sub.id).path_name == "baselines/mamba-v2"
    assert sm.Folder.get(deep.id).path_name == "baselines/mamba-v2/deep"  # children follow

    # save(): a pending name is sent; nothing pending sends nothing.
    sub.name = "mamba-v3"
    assert sub.name == "mamba-v3"
    assert sm.Folder.get(sub.id).name == "mamba-v2"  # not sent yet
    sub.save()
    assert sm.Folder.get(sub.id).path_name == "baselines/mamba-v3"
    server.faults.fail_next("patch_folder", status=400)  # would fail any PATCH
    sub.save()
    assert server.faults.pending == 1  # no request was made
    server.faults.clear()

    sub.move(archive)
    assert (sub.parent_id, sub.parent_id_path, sub.path_name) == (
        archive.id,
        [archive.id],
        "archive/mamba-v3",
    )
    assert sm.Folder.get(deep.id).parent_id_path == [archive.id, sub.id]
    assert [f.id for f in sm.Folder.get(archive.id).subfolders] == [sub.id]
    assert sm.Folder.get(root.id).subfolders == []

    sub.move(None)
    assert (sub.parent_id, sub.parent_id_path, sub.path_name) == (None, [], "mamba-v3")
    assert sm.Folder.get(sub.id).path_name == "mamba-v3"
    assert sm.Folder.get(deep.id).path_name == "mamba-v3/deep"
    assert ids(sm.Folder.list(path="mamba-v3")) == [sub.id]

    by_id = sm.Folder.get(deep.id).move(root.id)  # a parent given as an id
    assert by_id.path_name == "baselines/deep"


def test_moving_a_folder_under_itself_or_a_descendant_is_refused(server: LocalServer) -> None:
    root = sm.Folder.create("a")
    child = root.create_subfolder("b")
    grandchild = child.create_subfolder("c")
    for target in (grandchild, child, root):
        error = api_error(lambda target=target: root.move(target))  # type: ignore[misc]
        assert (error.status_code, error.error_code) == (400, "validation_error")
        assert "parent_id" in str(error)
    error = api_error(lambda: child.move(grandchild))
    assert (error.status_code, error.error_code) == (400, "validation_error")
    # Nothing moved.
    assert {f.path_name for f in sm.Folder.list()} == {"a", "a/b", "a/b/c"}


def test_sibling_names_are_unique(server: LocalServer) -> None:
    root = sm.Folder.create("runs")
    root.create_subfolder("x")
    error = api_error(lambda: root.create_subfolder("x"))
    assert (error.status_code, error.error_code) == (409, "folder_exists")
    assert [f.path_name for f in sm.Folder.list(path="runs/x")] == ["runs/x"]


# -- experiments ----------------------------------------------------------------------------


def test_create_and_get_experiment(server: LocalServer) -> None:
    folder = sm.Folder.create("baselines")
    metadata = {"model": "mamba", "layers": 12, "lr": 3e-4, "tags": ["a", "b"], "flag": True}
    before = now_ms()
    exp = sm.Experiment.create(
        "mamba-run-001", description="Baseline run", metadata=metadata, folder=folder
    )
    after = now_ms()
    assert (exp.slug, exp.description, exp.metadata, exp.status) == (
        "mamba-run-001",
        "Baseline run",
        metadata,
        "created",
    )
    assert exp.folder is not None
    assert (exp.folder.id, exp.folder.path_name) == (folder.id, "baselines")
    assert exp.org_id == sm.whoami().organization_id
    assert exp.url == f"{server.url}/dashboard/experiments/{exp.id}"
    assert_recent(exp.created_at_ms, before, after)
    assert exp.updated_at_ms >= exp.created_at_ms
    assert exp.created_at == to_dt(exp.created_at_ms)
    assert (exp.started_at_ms, exp.done_at_ms, exp.error_name, exp.error_detail) == (
        None,
        None,
        None,
        None,
    )
    assert (exp.last_heartbeat_at_ms, exp.last_event_at_ms) == (None, None)

    got = sm.Experiment.get(exp.id)
    assert got.to_dict() == exp.to_dict()

    plain = sm.Experiment.create("plain")  # folder left out: the server's default (root)
    assert (plain.folder, plain.description, plain.metadata) == (None, "", {})
    at_root = sm.Experiment.create("at-root", folder=None)
    assert at_root.folder is None
    by_id = sm.Experiment.create("by-id", folder=folder.id)
    assert by_id.folder is not None
    assert by_id.folder.id == folder.id
    assert sm.Experiment.get(by_id.id).folder.id == folder.id  # type: ignore[union-attr]

    missing = api_error(lambda: sm.Experiment.get("no-such-experiment"))
    assert (missing.status_code, missing.error_code) == (404, "not_found")


def test_slug_exists(server: LocalServer) -> None:
    first = sm.Experiment.create("dup", description="first")
    error = api_error(lambda: sm.Experiment.create("dup", description="second"))
    assert (error.status_code, error.error_code) == (409, "slug_exists")
    found = sm.Experiment.list(slug="dup")
    assert ids(found) == [first.id]
    assert found[0].description == "first"


def test_list_experiments_filters(server: LocalServer) -> None:
    alpha = sm.Experiment.create("alpha-run", description="Baseline Mamba")
    beta = sm.Experiment.create("beta-run")
    gamma = sm.Experiment.create("gamma", description="MAMBA large")
    delta = sm.Experiment.create("delta", description="tiny")
    alpha.start()
    gamma.finish()
    delta.fail("boom")
    created = [alpha, beta, gamma, delta]
    newest_first = created[::-1]

    assert ids(sm.Experiment.list()) == ids(newest_first)
    assert ids(sm.Experiment.list(status="running")) == [alpha.id]
    assert ids(sm.Experiment.list(status="done")) == [gamma.id]
    assert ids(sm.Experiment.list(status="error")) == [delta.id]
    assert ids(sm.Experiment.list(status="created")) == [beta.id]
    assert ids(sm.Experiment.list(slug="beta-run")) == [beta.id]
    assert sm.Experiment.list(slug="beta") == []  # exact match only
    assert ids(sm.Experiment.list(search="mamba")) == [gamma.id, alpha.id]  # description
    assert ids(sm.Experiment.list(search="RUN")) == [beta.id, alpha.id]  # slug, any case
    assert ids(sm.Experiment.list(limit=2)) == ids(newest_first[:2])
    assert ids(sm.Experiment.list(status="created", search="beta", limit=5)) == [beta.id]

    times = [e.created_at_ms for e in created]
    middle = gamma.created_at_ms
    expect_from = [e.id for e in newest_first if e.created_at_ms >= middle]
    expect_to = [e.id for e in newest_first if e.created_at_ms <= middle]
    assert ids(sm.Experiment.list(from_ms=middle)) == expect_from
    assert ids(sm.Experiment.list(to_ms=middle)) == expect_to
    assert ids(sm.Experiment.list(from_ms=to_dt(middle))) == expect_from
    assert ids(sm.Experiment.list(to_ms=to_dt(middle, dt.timezone(dt.timedelta(hours=-5))))) == (
        expect_to
    )
    assert ids(sm.Experiment.list(from_ms=min(times), to_ms=max(times))) == ids(newest_first)
    assert sm.Experiment.list(from_ms=max(times) + 1) == []
    assert sm.Experiment.list(to_ms=min(times) - 1) == []


def test_status_updates(server: LocalServer) -> None:
    exp = sm.Experiment.create("run")
    started = 1_750_000_000_123
    assert exp.set_status("running", timestamp_ms=started) is exp
    assert (exp.status, exp.started_at_ms, exp.done_at_ms) == ("running", started, None)
    exp.set_status("running", timestamp_ms=started + 5000)
    assert exp.started_at_ms == started  # set the first time only

    failed_at = dt.datetime(
        2025, 6, 1, 12, 30, 45, 678_000, tzinfo=dt.timezone(dt.timedelta(hours=2))
    )
    exp.set_status(
        "error",
        error={"name": "ValueError", "detail": "loss is NaN"},
        timestamp_ms=failed_at,
    )
    got = sm.Experiment.get(exp.id)
    assert (got.status, got.error_name, got.error_detail) == ("error", "ValueError", "loss is NaN")
    assert got.done_at_ms == int(failed_at.timestamp() * 1000) == 1_748_773_845_678
    assert got.started_at_ms == started

    done_at = started + 60_000
    exp.set_status("done", timestamp_ms=done_at)
    assert (sm.Experiment.get(exp.id).status, sm.Experiment.get(exp.id).done_at_ms) == (
        "done",
        done_at,
    )

    # start / finish / fail at the server's time.
    other = sm.Experiment.create("other")
    before = now_ms()
    other.start()
    assert other.status == "running"
    assert_recent(other.started_at_ms, before, now_ms())
    other.finish()
    assert other.status == "done"
    assert_recent(other.done_at_ms, before, now_ms())
    other.fail(KeyError("missing shard"))
    got = sm.Experiment.get(other.id)
    assert (got.status, got.error_name, got.error_detail) == (
        "error",
        "KeyError",
        "'missing shard'",
    )
    other.fail("plain message")
    got = sm.Experiment.get(other.id)
    assert (got.error_name, got.error_detail) == ("Error", "plain message")
    assert got.updated_at_ms >= got.created_at_ms


def test_run_context_manager(server: LocalServer) -> None:
    ok = sm.Experiment.create("ok-run")
    with ok.run() as running:
        assert running is ok
        assert sm.Experiment.get(ok.id).status == "running"
        for step in range(5):
            ok.log("loss", 1.0 / (step + 1), step=step)
        assert ok.pending_logs == 5
    got = sm.Experiment.get(ok.id)
    assert got.status == "done"
    assert got.started_at_ms is not None
    assert got.done_at_ms is not None
    assert got.done_at_ms >= got.started_at_ms
    assert ok.pending_logs == 0
    rows = ok.metrics("loss")
    assert rows.steps == [0, 1, 2, 3, 4]
    assert rows.values == [1.0, 0.5, 1 / 3, 0.25, 0.2]

    bad = sm.Experiment.create("bad-run")

    def crash() -> None:
        with bad.run():
            bad.log("loss", 9.0, step=0)
            raise RuntimeError("diverged")

    with pytest.raises(RuntimeError, match="diverged"):
        crash()
    got = sm.Experiment.get(bad.id)
    assert (got.status, got.error_name, got.error_detail) == ("error", "RuntimeError", "diverged")
    assert bad.metrics("loss").values == [9.0]  # flushed before failing


def test_move_experiment(server: LocalServer) -> None:
    a = sm.Folder.create("a")
    b = a.create_subfolder("b")
    exp = sm.Experiment.create("run")
    assert exp.move(b) is exp
    assert exp.folder is not None
    assert (exp.folder.id, exp.folder.path_name) == (b.id, "a/b")
    assert ids(sm.Folder.get(b.id).experiments) == [exp.id]
    exp.move(a.id)
    assert sm.Experiment.get(exp.id).folder.id == a.id  # type: ignore[union-attr]
    assert sm.Folder.get(b.id).experiments == []
    at_root = exp.move(None)
    assert at_root.folder is None
    assert sm.Experiment.get(exp.id).folder is None
    assert sm.Folder.get(a.id).experiments == []
    missing = api_error(lambda: exp.move("no-such-folder"))
    assert missing.status_code == 404
    assert sm.Experiment.get(exp.id).folder is None


# -- ingest and log --------------------------------------------------------------------------


def sent_tuple(metric: dict[str, Any]) -> tuple[Any, ...]:
    return (
        metric["name"],
        float(metric["value"]),
        metric["step"],
        metric.get("metadata", {}),
        metric.get("timestamp_ms"),
    )


def read_tuple(row: sm.Metric) -> tuple[Any, ...]:
    return (row.name, row.value, row.step, row.metadata, row.client_timestamp_ms)


def bag(items: Iterable[tuple[Any, ...]]) -> list[str]:
    """Tuples as an order-free multiset (canonical JSON texts, sorted)."""
    return sorted(json.dumps(item, sort_keys=True) for item in items)


def test_ingest_sync_and_queued_read_back(server: LocalServer) -> None:
    exp = sm.Experiment.create("ingest")
    first = [
        {
            "client_event_id": f"loss-{step}",
            "name": "loss",
            "value": 1.0 / (step + 1),
            "step": step,
            "metadata": {"split": "train", "seed": 7},
            "timestamp_ms": BASE_TS + step,
        }
        for step in range(10)
    ]
    result = exp.ingest(first, sync=True)
    assert result == sm.IngestResult(count=10, requests=1, mode="sync")

    second = [
        sm.MetricPoint("acc", 0.5 + step / 100, step=step, timestamp_ms=BASE_TS + 100 + step)
        for step in range(5)
    ]
    queued = exp.ingest(second, sync=False)
    assert (queued.count, queued.requests, queued.mode) == (5, 1, "queued")

    before = now_ms()
    exp.ingest([{"client_event_id": "no-ts", "name": "lr", "value": 3e-4, "step": None}])
    after = now_ms()

    rows = exp.metrics(limit=100)
    by_name: dict[str, list[sm.Metric]] = {}
    for row in rows:
        by_name.setdefault(row.name, []).append(row)
    assert [read_tuple(r) for r in by_name["loss"]] == [sent_tuple(m) for m in first]
    assert [read_tuple(r) for r in by_name["acc"]] == [sent_tuple(p.to_dict()) for p in second]
    (lr,) = by_name["lr"]
    assert (lr.value, lr.step, lr.metadata) == (3e-4, None, {})
    assert_recent(lr.client_timestamp_ms, before, after)  # no timestamp: the receive time
    for row in rows:
        assert (row.experiment_id, row.experiment_slug) == (exp.id, "ingest")
        assert row.event_id
    assert len({row.event_id for row in rows}) == 16
    got = sm.Experiment.get(exp.id)
    assert_recent(got.last_event_at_ms, before, after)


def test_ingest_of_2500_metrics_is_three_requests(
    server: LocalServer, metrics_session: sm.Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    exp = sm.Experiment.create("big")
    metrics = [
        {
            "client_event_id": f"m-{i}",
            "name": "loss" if i % 2 else "acc",
            "value": i * 0.5,
            "step": i,
            "timestamp_ms": BASE_TS + i,
        }
        for i in range(2500)
    ]
    calls = counting(metrics_session, monkeypatch)
    result = exp.ingest(metrics)
    assert (result.count, result.requests) == (2500, 3)
    assert calls.count("ingest_metrics") == 3
    rows = exp.metrics(limit=100_000)
    assert bag(map(read_tuple, rows)) == bag(map(sent_tuple, metrics))

    # The same client_event_ids again (other values): nothing new is stored.
    again = [{**m, "value": -1.0} for m in metrics[:1500]]
    assert exp.ingest(again).count == 1500
    after = exp.metrics(limit=100_000)
    assert len(after) == 2500
    assert bag(map(read_tuple, after)) == bag(map(sent_tuple, metrics))
    assert -1.0 not in after.values


def test_duplicate_ids_within_one_batch_keep_the_first(server: LocalServer) -> None:
    exp = sm.Experiment.create("dups")
    exp.ingest(
        [
            {"client_event_id": "same", "name": "loss", "value": 1.0, "step": 1},
            {"client_event_id": "same", "name": "loss", "value": 2.0, "step": 1},
            {"client_event_id": "other", "name": "loss", "value": 3.0, "step": 2},
        ]
    )
    assert exp.metrics("loss").values == [1.0, 3.0]


def test_log_keeps_every_call_and_reads_see_what_was_logged(server: LocalServer) -> None:
    exp = sm.Experiment.create("logged")
    for step in range(3):
        exp.log("loss", 1.0 + step, step=step, metadata={"split": "train"})
    exp.log("loss", 99.0, step=1, metadata={"split": "train"})  # a second value, same step
    exp.log("loss", 5.0, step=1, metadata={"split": "valid"})
    exp.log("lr", 0.1)  # the same call twice is two events
    exp.log("lr", 0.1)
    exp.log("lr", 0.2, timestamp_ms=BASE_TS, client_event_id="explicit-id")
    # No flush: a read waits for this session's pending events of the experiment first.
    train = exp.metrics("loss", metadata={"split": "train"})
    assert sorted((r.step, r.value) for r in train) == [(0, 1.0), (1, 2.0), (1, 99.0), (2, 3.0)]
    assert exp.pending_logs == 0
    assert exp.flush() == 0

    exp.log("loss", 42.0, step=2, metadata={"split": "train"})
    exp.log("lr", 0.3, client_event_id="explicit-id")  # an explicit id again: stored once
    assert exp.flush() == 2
    assert [(r.step, r.value) for r in exp.metrics("loss", metadata={"split": "valid"})] == [
        (1, 5.0)
    ]
    assert len(exp.metrics("loss", metadata={"split": "train"})) == 5
    lr = exp.metrics("lr")
    assert lr.steps == [None, None, None]
    assert sorted(lr.values) == [0.1, 0.1, 0.2]
    assert [r.client_timestamp_ms for r in lr if r.value == 0.2] == [BASE_TS]


# -- reads ----------------------------------------------------------------------------------


def reads_dataset() -> list[dict[str, Any]]:
    """Metrics whose (step, client timestamp) pairs are all distinct, so the order of any
    read is known from what was sent."""
    sent: list[dict[str, Any]] = []
    for step in range(10):
        for offset, split in ((0, "train"), (500, "valid")):
            sent.append(
                {
                    "client_event_id": f"loss-{split}-{step}",
                    "name": "loss",
                    "value": 1.0 / (step + 1) + (0.25 if split == "valid" else 0.0),
                    "step": step,
                    "metadata": {"split": split},
                    "timestamp_ms": BASE_TS + step * 1000 + offset,
                }
            )
        sent.append(
            {
                "client_event_id": f"acc-{step}",
                "name": "acc",
                "value": step / 10,
                "step": step,
                # 1.0 on even steps, the integer 2 on odd ones
                "metadata": {"layer": 1.0 if step % 2 == 0 else 2, "split": "train"},
                "timestamp_ms": BASE_TS + step * 1000 + 250,
            }
        )
    flags: list[Any] = [True, True, True, 1, "1"]
    for step, flag in enumerate(flags):
        sent.append(
            {
                "client_event_id": f"flag-{step}",
                "name": "flag",
                "value": float(step),
                "step": step,
                "metadata": {"on": flag},
                "timestamp_ms": BASE_TS + step * 1000 + 750,
            }
        )
    for i in range(3):
        sent.append(
            {
                "client_event_id": f"lr-{i}",
                "name": "lr",
                "value": 0.1 * (i + 1),
                "step": None,
                "timestamp_ms": BASE_TS - 3000 + i * 1000,
            }
        )
    return sent


def default_order(metrics: list[dict[str, Any]], reverse: bool = False) -> list[tuple[Any, ...]]:
    """Step ascending (null first), then client timestamp; reversed for ``desc``."""
    ordered = sorted(
        metrics, key=lambda m: (m["step"] is not None, m["step"] or 0, m["timestamp_ms"])
    )
    return [sent_tuple(m) for m in (ordered[::-1] if reverse else ordered)]


@pytest.fixture
def reads(server: LocalServer) -> tuple[sm.Experiment, list[dict[str, Any]]]:
    exp = sm.Experiment.create(
        "reads", description="read test", metadata={"model": "mamba", "depth": 4}
    )
    sent = reads_dataset()
    exp.ingest(sent, sync=True)
    return exp, sent


def test_read_filters(reads: tuple[sm.Experiment, list[dict[str, Any]]]) -> None:
    exp, sent = reads

    def check(rows: sm.MetricRows, pick: Callable[[dict[str, Any]], bool]) -> None:
        expected = default_order([m for m in sent if pick(m)])
        assert expected, "a filter that selects nothing proves little"
        assert [read_tuple(r) for r in rows] == expected

    def meta(m: dict[str, Any]) -> dict[str, Any]:
        return dict(m.get("metadata", {}))

    check(exp.metrics(), lambda m: True)
    check(exp.metrics("loss"), lambda m: m["name"] == "loss")
    check(
        exp.metrics("loss", metadata={"split": "train"}),
        lambda m: m["name"] == "loss" and meta(m).get("split") == "train",
    )
    check(exp.metrics(metadata={"split": "train"}), lambda m: meta(m).get("split") == "train")
    # Non-string values match by JSON equality: 1 finds 1.0, 2.0 finds 2.
    check(
        exp.metrics("acc", metadata={"layer": 1}),
        lambda m: m["name"] == "acc" and m["step"] % 2 == 0,
    )
    check(
        exp.metrics("acc", metadata={"layer": 2.0}),
        lambda m: m["name"] == "acc" and m["step"] % 2 == 1,
    )
    # true is not 1, and neither is the string "1".
    check(
        exp.metrics("flag", metadata={"on": True}), lambda m: m["name"] == "flag" and m["step"] < 3
    )
    check(exp.metrics("flag", metadata={"on": 1}), lambda m: m["name"] == "flag" and m["step"] == 3)
    check(
        exp.metrics("flag", metadata={"on": "1"}), lambda m: m["name"] == "flag" and m["step"] == 4
    )
    assert exp.metrics("acc", metadata={"layer": 3}) == sm.MetricRows([])
    # A key alone selects the events that have it.
    check(exp.metrics(metadata="layer"), lambda m: "layer" in meta(m))
    check(exp.metrics(metadata="on"), lambda m: "on" in meta(m))
    # Steps.
    check(exp.metrics(step=3), lambda m: m["step"] == 3)
    check(exp.metrics("loss", step=0), lambda m: m["name"] == "loss" and m["step"] == 0)
    check(exp.metrics(from_step=7), lambda m: m["step"] is not None and m["step"] >= 7)
    check(exp.metrics(to_step=1), lambda m: m["step"] is not None and m["step"] <= 1)
    check(
        exp.metrics("loss", from_step=2, to_step=4),
        lambda m: m["name"] == "loss" and m["step"] is not None and 2 <= m["step"] <= 4,
    )
    # Client time, inclusive bounds, as ints and as aware datetimes in any zone.
    low, high = BASE_TS + 3000, BASE_TS + 5500

    def in_time(m: dict[str, Any]) -> bool:
        return bool(low <= m["timestamp_ms"] <= high)

    check(exp.metrics(from_time=low, to_time=high), in_time)
    tokyo = dt.timezone(dt.timedelta(hours=9))
    check(exp.metrics(from_time=to_dt(low), to_time=to_dt(high, tokyo)), in_time)
    check(exp.metrics(to_time=BASE_TS - 2000), lambda m: m["timestamp_ms"] <= BASE_TS - 2000)
    check(
        exp.metrics(from_time=to_dt(BASE_TS + 9500)), lambda m: m["timestamp_ms"] >= BASE_TS + 9500
    )
    # Everything at once.
    check(
        exp.metrics("loss", metadata={"split": "valid"}, from_step=1, to_step=8, from_time=low),
        lambda m: (
            m["name"] == "loss"
            and meta(m).get("split") == "valid"
            and 1 <= (m["step"] if m["step"] is not None else -1) <= 8
            and m["timestamp_ms"] >= low
        ),
    )


def test_read_order_and_limit(reads: tuple[sm.Experiment, list[dict[str, Any]]]) -> None:
    exp, sent = reads
    assert [read_tuple(r) for r in exp.metrics(sort_direction="asc")] == default_order(sent)
    desc = exp.metrics(sort_direction="desc")
    assert [read_tuple(r) for r in desc] == default_order(sent, reverse=True)
    assert desc.steps[-3:] == [None, None, None]  # null steps last when descending

    by_time = sorted(sent, key=lambda m: m["timestamp_ms"])
    assert [read_tuple(r) for r in exp.metrics(sort_by="client_timestamp")] == [
        sent_tuple(m) for m in by_time
    ]
    assert [
        read_tuple(r) for r in exp.metrics(sort_by="client_timestamp", sort_direction="desc")
    ] == [sent_tuple(m) for m in by_time[::-1]]
    assert [
        read_tuple(r) for r in exp.metrics(sort_by=["step", "client_timestamp"])
    ] == default_order(sent)
    server_sorted = exp.metrics(sort_by="server_timestamp")
    assert bag(map(read_tuple, server_sorted)) == bag(map(sent_tuple, sent))
    stamps = server_sorted.column("server_timestamp_ms")
    assert stamps == sorted(stamps)

    assert [read_tuple(r) for r in exp.metrics(limit=5)] == default_order(sent)[:5]
    assert [read_tuple(r) for r in exp.metrics("loss", sort_direction="desc", limit=3)] == (
        default_order([m for m in sent if m["name"] == "loss"], reverse=True)[:3]
    )
    assert len(exp.metrics(limit=1)) == 1


def test_include_experiment_meta(reads: tuple[sm.Experiment, list[dict[str, Any]]]) -> None:
    exp, _ = reads
    plain = exp.metrics("loss", limit=3)
    assert [r.experiment_metadata for r in plain] == [None, None, None]
    assert [r.experiment_description for r in plain] == [None, None, None]
    rich = exp.metrics("loss", limit=3, include_experiment_meta_as_of=True)
    assert [r.experiment_metadata for r in rich] == [{"model": "mamba", "depth": 4}] * 3
    assert [r.experiment_description for r in rich] == ["read test"] * 3
    assert json.loads(rich[0].experiment_metadata_json) == exp.metadata
    plain_again = exp.metrics("loss", limit=3, include_experiment_meta_as_of=False)
    assert [r.experiment_metadata for r in plain_again] == [None, None, None]


# -- paging ---------------------------------------------------------------------------------


def paging_dataset() -> list[dict[str, Any]]:
    """1,000 metrics: 300 steps of three rows (at one client time every 7th step, so the
    order falls to event ids), and 100 rows without a step whose times collide too."""
    sent: list[dict[str, Any]] = []
    for step in range(300):
        for k, (name, split) in enumerate((("loss", "train"), ("loss", "valid"), ("acc", "train"))):
            ts = BASE_TS + step * 10 + (0 if step % 7 == 0 else k)
            sent.append(
                {
                    "client_event_id": f"p-{step}-{k}",
                    "name": name,
                    "value": step + k / 10,
                    "step": step,
                    "metadata": {"split": split},
                    "timestamp_ms": ts,
                }
            )
    for i in range(100):
        sent.append(
            {
                "client_event_id": f"null-{i}",
                "name": "lr" if i % 2 else "loss",
                "value": -float(i) - 0.5,
                "step": None,
                "metadata": {"split": "train"},
                "timestamp_ms": BASE_TS + (i * 37) % 1500,
            }
        )
    return sent


@pytest.fixture
def paging(
    server: LocalServer,
) -> Iterator[tuple[sm.Experiment, sm.Experiment, list[dict[str, Any]]]]:
    """The same experiment bound to a paging session (50 rows a page) and to a session
    whose one request can hold every row."""
    sent = paging_dataset()
    paged_session = sm.Session(server.api_key, host=server.url, page_size=50)
    single_session = sm.Session(server.api_key, host=server.url, page_size=100_000)
    exp = sm.Experiment.create("paging", session=single_session)
    assert exp.ingest(sent).requests == 1
    try:
        yield sm.Experiment.get(exp.id, session=paged_session), exp, sent
    finally:
        paged_session.close()
        single_session.close()


ORDERS = [
    {},
    {"sort_direction": "asc"},
    {"sort_direction": "desc"},
    {"sort_by": "step", "sort_direction": "desc"},
    {"sort_by": "client_timestamp"},
    {"sort_by": "client_timestamp", "sort_direction": "desc"},
]


def order_key(order: dict[str, Any]) -> Callable[[sm.Metric], tuple[Any, ...]]:
    if order.get("sort_by") == "client_timestamp":
        return lambda r: (r.client_timestamp_ms, r.event_id)
    if order.get("sort_by") == "step":  # an explicit sort: step, then event_id
        return lambda r: (r.step is not None, r.step or 0, r.event_id)
    return lambda r: (r.step is not None, r.step or 0, r.client_timestamp_ms, r.event_id)


@pytest.mark.parametrize("order", ORDERS, ids=lambda o: "-".join(o.values()) or "default")
def test_paged_reads_equal_one_big_read(
    paging: tuple[sm.Experiment, sm.Experiment, list[dict[str, Any]]],
    order: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    paged, single, sent = paging
    whole = single.metrics(limit=100_000, **order)
    # The single read is complete and in the documented order (event_id breaks ties).
    assert bag(map(read_tuple, whole)) == bag(map(sent_tuple, sent))
    expected_order = sorted(whole, key=order_key(order))
    if order.get("sort_direction") == "desc":
        expected_order = expected_order[::-1]
    assert [r.event_id for r in whole] == [r.event_id for r in expected_order]

    calls = counting(paged._session, monkeypatch)  # type: ignore[arg-type]
    rows = paged.metrics(**order)
    assert calls.count("list_metrics") >= len(sent) // 50  # it really paged
    assert [r.event_id for r in rows] == [r.event_id for r in whole]
    assert rows.to_dicts() == whole.to_dicts()


def test_paged_reads_with_filters_and_limits(
    paging: tuple[sm.Experiment, sm.Experiment, list[dict[str, Any]]],
) -> None:
    paged, single, _ = paging
    for kwargs in (
        {"name": "loss"},
        {"metadata": {"split": "train"}},
        {"name": "loss", "metadata": {"split": "valid"}, "sort_direction": "desc"},
        {"from_step": 100, "to_step": 180},
        {"from_time": BASE_TS + 700, "to_time": BASE_TS + 2300, "sort_by": "client_timestamp"},
    ):
        whole = single.metrics(limit=100_000, **kwargs)
        assert len(whole) > 100, kwargs
        assert [r.event_id for r in paged.metrics(**kwargs)] == [r.event_id for r in whole]
    whole = single.metrics(limit=100_000)
    assert [r.event_id for r in paged.metrics(limit=120)] == [r.event_id for r in whole[:120]]
    assert [r.event_id for r in paged.metrics(limit=30)] == [r.event_id for r in whole[:30]]
    assert [r.event_id for r in paged.metrics(sort_direction="desc", limit=175)] == [
        r.event_id for r in single.metrics(sort_direction="desc", limit=100_000)[:175]
    ]


# -- compare --------------------------------------------------------------------------------


@pytest.fixture
def two_runs(server: LocalServer) -> tuple[sm.Experiment, sm.Experiment]:
    runs = []
    for slug, scale in (("run-a", 1.0), ("run-b", 2.0)):
        exp = sm.Experiment.create(slug, metadata={"scale": scale})
        exp.ingest(
            [
                {
                    "client_event_id": f"{split}-{step}",
                    "name": "loss",
                    "value": scale * (step + 1) + (0.5 if split == "valid" else 0),
                    "step": step,
                    "metadata": {"split": split},
                    "timestamp_ms": BASE_TS + step * 100 + (50 if split == "valid" else 0),
                }
                for step in range(5)
                for split in ("train", "valid")
            ]
            + [{"client_event_id": "acc", "name": "acc", "value": scale, "step": 0}]
        )
        runs.append(exp)
    return runs[0], runs[1]


def triple(row: sm.Metric) -> tuple[str, int | None, float]:
    return (row.experiment_id, row.step, row.value)


def test_compare_across_experiments(two_runs: tuple[sm.Experiment, sm.Experiment]) -> None:
    a, b = two_runs
    train = [
        a.series("loss", metadata={"split": "train"}),
        b.series("loss", metadata={"split": "train"}),
    ]
    rows = sm.compare(train)
    expected = {
        (exp.id, step, scale * (step + 1))
        for exp, scale in ((a, 1.0), (b, 2.0))
        for step in range(5)
    }
    assert len(rows) == 10
    assert {triple(r) for r in rows} == expected
    assert {r.experiment_slug for r in rows} == {"run-a", "run-b"}
    assert all(r.metadata == {"split": "train"} for r in rows)
    steps = [step for step in rows.steps if step is not None]
    assert steps == sorted(steps)  # default order: step ascending

    by_series = sm.compare(train, sort_by="series")
    assert [r.experiment_id for r in by_series] == [a.id] * 5 + [b.id] * 5
    reversed_series = sm.compare(train[::-1], sort_by="series")
    assert [r.experiment_id for r in reversed_series] == [b.id] * 5 + [a.id] * 5
    desc = sm.compare(train, sort_by="series", sort_direction="desc")
    assert [r.experiment_id for r in desc] == [b.id] * 5 + [a.id] * 5

    limited = sm.compare(train, sort_by=["series", "step"], limit=3)
    assert [triple(r) for r in limited] == [(a.id, 0, 1.0), (a.id, 1, 2.0), (a.id, 2, 3.0)]
    windowed = sm.compare(train, from_step=1, to_step=2)
    assert {triple(r) for r in windowed} == {t for t in expected if t[1] in (1, 2)}

    # A key-only filter, a series by id, and a row matched by two series is returned once.
    keyed = sm.compare(
        [a.series("loss", metadata="split"), sm.Series(a.id, "loss"), b.series("acc")]
    )
    assert len(keyed) == 11
    assert {r.name for r in keyed if r.experiment_id == b.id} == {"acc"}
    rich = sm.compare([b.series("acc")], include_experiment_meta_as_of=True)
    assert [r.experiment_metadata for r in rich] == [{"scale": 2.0}]

    missing = api_error(lambda: sm.compare([sm.Series("no-such-exp", "loss")]))
    assert (missing.status_code, missing.error_code) == (404, "not_found")


def test_compare_pages_like_a_single_read(
    server: LocalServer, two_runs: tuple[sm.Experiment, sm.Experiment]
) -> None:
    a, b = two_runs
    series = [a.series("loss"), b.series("loss")]
    paged = sm.Session(server.api_key, host=server.url, page_size=3)
    single = sm.Session(server.api_key, host=server.url, page_size=100_000)
    try:
        orders: list[dict[str, Any]] = [
            {},
            {"sort_direction": "desc"},
            {"sort_by": "client_timestamp"},
        ]
        for order in orders:
            whole = sm.compare(series, limit=100_000, session=single, **order)
            assert len(whole) == 20
            got = sm.compare(series, session=paged, **order)
            assert [r.event_id for r in got] == [r.event_id for r in whole]
    finally:
        paged.close()
        single.close()


# -- catalog --------------------------------------------------------------------------------


def test_catalog_and_values(server: LocalServer) -> None:
    exp = sm.Experiment.create("catalog")
    exp.ingest(
        [
            {
                "client_event_id": f"loss-{step}",
                "name": "loss",
                "value": float(step),
                "step": step,
                "metadata": {"split": "train" if step % 2 else "valid", "seed": step % 3},
            }
            for step in range(6)
        ]
        + [{"client_event_id": "acc", "name": "acc", "value": 1.0, "step": 0}]
        + [
            {
                "client_event_id": "eval",
                "name": "eval/loss rate",
                "value": 0.3,
                "step": 0,
                "metadata": {"split": "test"},
            }
        ]
    )
    catalog = exp.catalog()
    assert [(c.metric_name, c.metadata_keys) for c in catalog] == [
        ("acc", []),
        ("eval/loss rate", ["split"]),
        ("loss", ["seed", "split"]),
    ]
    assert [c.metric_name for c in exp.catalog(limit=2)] == ["acc", "eval/loss rate"]

    values = exp.catalog_values("loss")
    assert (values.metric_name, values.scanned_event_count) == ("loss", 6)
    assert values.values("seed") == [0, 1, 2]
    assert values.values("split") == ["train", "valid"]
    assert (values.value_count("seed"), values.value_count("split")) == (3, 2)

    only_split = exp.catalog_values("loss", keys="split")
    assert [k["key"] for k in only_split.keys] == ["split"]
    assert only_split.values("split") == ["train", "valid"]
    listed = exp.catalog_values("loss", keys=["seed", "nope"])
    assert [k["key"] for k in listed.keys] == ["seed"]  # a key without values is left out
    cut = exp.catalog_values("loss", limit=1)
    assert (cut.values("seed"), cut.value_count("seed")) == ([0], 3)
    assert (cut.values("split"), cut.value_count("split")) == (["train"], 2)

    slashed = exp.catalog_values("eval/loss rate")  # a '/' and a space in the path
    assert (slashed.metric_name, slashed.scanned_event_count) == ("eval/loss rate", 1)
    assert slashed.values("split") == ["test"]
    assert [r.value for r in exp.metrics("eval/loss rate")] == [0.3]

    unknown = exp.catalog_values("nope")
    assert (unknown.scanned_event_count, unknown.keys) == (0, [])


# -- annotations ----------------------------------------------------------------------------


def test_annotations(server: LocalServer) -> None:
    exp = sm.Experiment.create("annotated")
    sent: list[tuple[str, dict[str, Any]]] = [
        ("started", {"lr": 0.1}),
        ("checkpoint", {"path": "ckpt/1.pt", "tags": ["a", "b"]}),
        ("finished", {}),
    ]
    made = []
    before = now_ms()
    for text, metadata in sent:
        note = exp.annotate(text, metadata=metadata or None)
        assert (note.text, note.metadata, note.experiment_id) == (text, metadata, exp.id)
        made.append(note)
    after = now_ms()
    for note in made:
        assert_recent(note.created_at_ms, before, after)

    listed = exp.annotations()
    assert [(n.id, n.text, n.metadata) for n in listed] == [
        (n.id, text, metadata) for n, (text, metadata) in zip(made, sent, strict=True)
    ]
    assert [n.created_at_ms for n in listed] == sorted(n.created_at_ms for n in listed)
    assert ids(exp.annotations(limit=2)) == ids(made[:2])

    middle = made[1].created_at_ms
    assert ids(exp.annotations(from_ms=middle)) == [n.id for n in made if n.created_at_ms >= middle]
    assert ids(exp.annotations(to_ms=middle)) == [n.id for n in made if n.created_at_ms <= middle]
    assert ids(exp.annotations(from_ms=to_dt(middle), to_ms=to_dt(middle))) == [
        n.id for n in made if n.created_at_ms == middle
    ]
    assert exp.annotations(from_ms=after + 1000) == []
    assert sm.Experiment.create("empty").annotations() == []


# -- ingestion keys -------------------------------------------------------------------------


def test_ingestion_keys(server: LocalServer) -> None:
    exp = sm.Experiment.create("keys")
    assert exp.ingestion_keys() == []

    before = now_ms()
    ci = exp.create_ingestion_key(name="ci", ttl_ms=600_000)
    assert ci.token
    assert (ci.name, ci.experiment_id, ci.revoked_at_ms, ci.last_used_at_ms) == (
        "ci",
        exp.id,
        None,
        None,
    )
    assert_recent(ci.created_at_ms, before, now_ms())
    assert ci.expires_at_ms - ci.created_at_ms == 600_000
    assert ci.is_active
    assert ci.token not in repr(ci)
    nightly = exp.create_ingestion_key(name="nightly", ttl_ms=dt.timedelta(hours=2))
    assert nightly.expires_at_ms - nightly.created_at_ms == 7_200_000
    default = exp.create_ingestion_key()
    assert default.name == "SDK ingestion key"
    assert default.expires_at_ms - default.created_at_ms == 3_600_000  # local default: 1 hour
    assert len({ci.token, nightly.token, default.token}) == 3

    listed = exp.ingestion_keys()
    assert [(k.id, k.name, k.expires_at_ms) for k in listed] == [
        (k.id, k.name, k.expires_at_ms) for k in (ci, nightly, default)
    ]
    assert [k.token for k in listed] == [None, None, None]  # shown only on creation

    with sm.Session(ci.token, host=server.url) as as_key:
        assert sm.whoami(session=as_key).kind == "ingestion_key"
        assert ci.id in {
            k.id for k in exp.ingestion_keys() if k.last_used_at_ms is not None
        }  # using a token records it
        revoked = ci.revoke()
        assert revoked is ci
        assert not revoked.is_active
        assert_recent(ci.revoked_at_ms, before, now_ms())
        refused = api_error(lambda: sm.whoami(session=as_key))
        assert (refused.status_code, refused.error_code) == (401, "unauthorized")
    first_revocation = ci.revoked_at_ms
    assert ci.revoke().revoked_at_ms == first_revocation  # revoking twice keeps the first
    states = {k.id: (k.is_active, k.revoked_at_ms) for k in exp.ingestion_keys()}
    assert states == {
        ci.id: (False, first_revocation),
        nightly.id: (True, None),
        default.id: (True, None),
    }


def test_sdk_ingest_token_caching_and_forgetting(server: LocalServer) -> None:
    exp = sm.Experiment.create("cached")

    def sdk_keys() -> list[sm.IngestionKey]:
        return [k for k in exp.ingestion_keys() if k.name == "SDK ingestion key"]

    def point(step: int) -> dict[str, Any]:
        return {"client_event_id": f"s{step}", "name": "loss", "value": float(step), "step": step}

    exp.ingest([point(0)])
    (minted,) = sdk_keys()  # the first write minted one key
    assert minted.last_used_at_ms is not None
    exp.annotate("uses the same token")
    manual = exp.create_ingestion_key(name="manual")
    manual.revoke()  # another key's revocation does not touch the SDK's token
    exp.ingest([point(1)])
    assert ids(sdk_keys()) == [minted.id]

    exp.forget_ingestion_credential()
    exp.ingest([point(2)])
    keys = sdk_keys()
    assert len(keys) == 2  # a new key was minted
    assert keys[0].id == minted.id
    assert len(exp.ingestion_keys()) == 3

    # The service refusing the cached token (revoked): the SDK mints a new one, once.
    keys[1].revoke()
    exp.ingest([point(3)])
    assert len(sdk_keys()) == 3
    assert exp.metrics("loss").steps == [0, 1, 2, 3]
    assert [n.text for n in exp.annotations()] == ["uses the same token"]


# -- organizations and connections ----------------------------------------------------------


def test_another_organization_sees_nothing(server: LocalServer) -> None:
    folder = sm.Folder.create("private")
    exp = sm.Experiment.create("secret", folder=folder)
    exp.ingest([{"client_event_id": "x", "name": "loss", "value": 1.0, "step": 0}])
    other = sm.Session(server.add_organization(), host=server.url)
    try:
        assert sm.whoami(session=other).organization_id != exp.org_id
        for call in (
            lambda: sm.Experiment.get(exp.id, session=other),
            lambda: sm.Folder.get(folder.id, session=other),
            lambda: sm.Experiment.get(exp.id, session=other).metrics(),
            lambda: sm.compare([sm.Series(exp.id, "loss")], session=other),
            lambda: sm.Experiment.create("mine", folder=folder.id, session=other),
        ):
            error = api_error(call)
            assert (error.status_code, error.error_code) == (404, "not_found")
        assert sm.Experiment.list(session=other) == []
        assert sm.Folder.list(session=other) == []
        # Slugs and folder names are per organization.
        theirs = sm.Experiment.create("secret", session=other)
        assert theirs.id != exp.id
        assert sm.Folder.create("private", session=other).id != folder.id
        assert ids(sm.Experiment.list(slug="secret")) == [exp.id]
    finally:
        other.close()


def test_many_calls_share_one_kept_alive_connection(
    server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The SDK's own connections, asked how many times they connected (pool internals differ
    # between urllib3 and urllib3-future; this works on both).
    connects: list[object] = []
    connect = transport._WatchedConnection.connect

    def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        connects.append(self)
        return connect(self, *args, **kwargs)

    monkeypatch.setattr(transport._WatchedConnection, "connect", counted)
    session = server.session()
    try:
        exp = sm.Experiment.create("keep-alive", session=session)
        for step in range(10):
            sm.whoami(session=session)
            exp.ingest(
                [{"client_event_id": f"k{step}", "name": "loss", "value": 1.0, "step": step}]
            )
            exp.refresh()
        assert len(exp.metrics("loss")) == 10
        assert len(connects) == 1
    finally:
        session.close()


def test_eight_threads_logging_at_once_store_every_point_once(server: LocalServer) -> None:
    import threading

    session = server.session()
    try:
        exp = sm.Experiment.create("threaded-logging", session=session)
        start = threading.Barrier(8)
        failures: list[BaseException] = []

        def train(worker: int) -> None:
            try:
                start.wait()
                mine = sm.Experiment.get(exp.id, session=session)  # its own object, one buffer
                for step in range(worker * 1_000, worker * 1_000 + 700):
                    mine.log("loss", step / 10, step=step, metadata={"worker": worker})
            except BaseException as error:
                failures.append(error)

        threads = [threading.Thread(target=train, args=(w,)) for w in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert failures == []
        exp.flush()
        rows = exp.metrics("loss")
        assert sorted(m.step for m in rows) == sorted(
            step for w in range(8) for step in range(w * 1_000, w * 1_000 + 700)
        )
        assert all(m.value == m.step / 10 for m in rows)
        assert len(exp.ingestion_keys()) == 1  # one key minted for all eight threads
    finally:
        session.close()
