"""Training-safe ``log()``: it only validates and enqueues; the session's sender delivers
through slow answers, outages, 5xx bursts and rejected events, spools to disk, survives
SIGTERM, ``os._exit`` and ``fork``, and never stores an event twice or loses one.

Everything runs against the real local server and its fault switches; the one exchange
checked byte for byte (a retried batch) uses ``responses``.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import pickle
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import responses

import syvain_metrics as sm
from syvain_metrics.client.sync import sync_spool
from syvain_metrics.errors import FlushError, RejectedEvent
from syvain_metrics.pipeline.spool_files import load_batch
from syvain_metrics.pipeline.state import BATCHES_IN_MEMORY, MAX_IN_FLIGHT
from syvain_metrics.testing import LocalServer
from tests.conftest import API, API_KEY, HOST, envelope, experiment_wire, key_wire

FAST = sm.RetryPolicy(backoff_base=0.02, delivery_backoff_cap=0.2)
"""Short pauses between the sender's tries, so outages end quickly in tests."""


@pytest.fixture
def server() -> Iterator[LocalServer]:
    with LocalServer() as running:
        yield running


@pytest.fixture
def spool_root(tmp_path: Path) -> Path:
    return tmp_path / "spool"


def open_session(server: LocalServer, spool_root: Path | None, **options: Any) -> sm.Session:
    options.setdefault("retry", FAST)
    return sm.Session(server.api_key, host=server.url, spool_dir=spool_root, **options)


def stored(server: LocalServer, experiment_id: str) -> sm.MetricRows:
    """What the server holds for the experiment, read by a session that logged nothing."""
    with sm.Session(server.api_key, host=server.url, spool_dir=None) as reader:
        return sm.Experiment.get(experiment_id, session=reader).metrics()


def assert_each_once(rows: sm.MetricRows, expected: set[tuple[str, int | None, float]]) -> None:
    seen = [(r.name, r.step, r.value) for r in rows]
    assert len(seen) == len(set(seen)), "an event was stored twice"
    assert set(seen) == expected


# -- log() never waits for the network ------------------------------------------------------


def test_log_keeps_returning_while_a_request_hangs(server: LocalServer, spool_root: Path) -> None:
    session = open_session(server, spool_root)
    exp = sm.Experiment.create("slow", session=session)
    server.faults.delay("ingest_metrics", seconds=60, times=1)
    for step in range(1_000):  # a full batch: the sender sends it at once
        exp.log("loss", 1.0, step=step)
    assert server.faults.wait_fired(1, timeout=10)  # that request is held by the server now
    for step in range(1_000, 6_000):
        exp.log("loss", 1.0, step=step)  # no network on this thread: nothing waits
    assert server.faults.fired == 1
    assert exp.pending_logs == 6_000  # the held request has not been answered
    server.faults.clear()  # the server answers
    assert exp.flush(timeout=30) == 6_000
    assert_each_once(stored(server, exp.id), {("loss", s, 1.0) for s in range(6_000)})
    session.close()


def test_an_outage_loses_and_duplicates_nothing(tmp_path: Path, spool_root: Path) -> None:
    db = str(tmp_path / "metrics.sqlite")
    first = LocalServer(db=db)
    key, port = first.api_key, int(first.url.rsplit(":", 1)[1])
    session = open_session(first, spool_root)
    exp = sm.Experiment.create("outage", session=session)
    raised: list[BaseException] = []
    expected = set()
    step = 0

    def train(steps: int) -> None:
        nonlocal step
        for _ in range(steps):
            try:
                exp.log("loss", step / 10, step=step)
                exp.log("acc", 1.0, step=step, metadata={"split": "valid"})
            except BaseException as error:
                raised.append(error)
            expected.update({("loss", step, step / 10), ("acc", step, 1.0)})
            step += 1

    train(1_500)
    first.close()  # connections are refused from now on
    train(3_000)
    with pytest.raises(FlushError) as caught:
        exp.flush(timeout=0.5)
    assert caught.value.timed_out
    assert caught.value.pending > 0
    assert caught.value.rejected == []
    with LocalServer(db=db, api_key=key, port=port) as second:
        train(500)
        exp.flush(timeout=60)
        assert raised == []
        assert_each_once(stored(second, exp.id), expected)
        session.close()


def test_threads_logging_through_a_503_burst_see_no_exception(
    server: LocalServer, spool_root: Path
) -> None:
    session = open_session(server, spool_root, flush_interval=0.05)
    exp = sm.Experiment.create("burst", session=session)
    server.faults.fail_next("ingest_metrics", times=6, status=503, retry_after=0.05)
    raised: list[BaseException] = []

    def worker(rank: int) -> None:
        for step in range(2_000):
            try:
                exp.log("loss", float(rank), step=step, metadata={"rank": rank})
            except BaseException as error:
                raised.append(error)

    threads = [threading.Thread(target=worker, args=(rank,)) for rank in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert exp.flush(timeout=60) == 4_000
    assert raised == []
    assert server.faults.fired == 6
    rows = stored(server, exp.id)
    assert len(rows) == 4_000
    assert {(json.dumps(r.metadata), r.step) for r in rows} == {
        (json.dumps({"rank": rank}), step) for rank in range(2) for step in range(2_000)
    }


# -- ids: every call is its own event ---------------------------------------------------------


def test_same_step_values_from_four_ranks_and_micro_batches_are_all_stored(
    server: LocalServer, spool_root: Path
) -> None:
    session = open_session(server, spool_root)
    exp = sm.Experiment.create("ranks", session=session)

    def rank(index: int) -> None:
        for step in range(100):
            exp.log("loss", index + step / 1_000, step=step)  # no rank key in metadata

    threads = [threading.Thread(target=rank, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for micro_batch in range(4):  # gradient accumulation: one step, several values
        exp.log("micro_loss", 0.5, step=7)
        exp.log("micro_loss", 0.25 * micro_batch, step=7)
    assert exp.flush(timeout=30) == 408
    rows = stored(server, exp.id)
    assert len([r for r in rows if r.name == "loss"]) == 400
    assert len([r for r in rows if r.name == "micro_loss"]) == 8
    assert len({(r.name, r.step, r.value) for r in rows}) == 400 + 4  # 0.5 comes 5 times


def test_an_explicit_event_id_makes_a_rerun_idempotent(
    server: LocalServer, spool_root: Path
) -> None:
    session = open_session(server, spool_root)
    exp = sm.Experiment.create("rerun", session=session)
    for _ in range(2):  # the same cell run twice
        for step in range(5):
            exp.log("loss", 1.0, step=step, client_event_id=f"rerun/loss/{step}")
        exp.flush(timeout=30)
    assert [r.step for r in stored(server, exp.id)] == [0, 1, 2, 3, 4]


# -- refusals ----------------------------------------------------------------------------------


def test_a_rejected_event_is_isolated_and_reported_and_the_rest_stored(
    server: LocalServer, spool_root: Path
) -> None:
    session = open_session(server, spool_root)
    exp = sm.Experiment.create("poison", session=session)
    server.faults.reject_metric("poison")
    for step in range(5_000):
        if step == 2_345:
            exp.log("poison", 1.0, step=step)
        else:
            exp.log("loss", 1.0, step=step)
    with pytest.raises(FlushError) as caught:
        exp.flush(timeout=60)
    error = caught.value
    assert error.stored == 4_999
    assert error.pending == 0
    assert not error.timed_out
    (refusal,) = error.rejected
    assert refusal.event["name"] == "poison"
    assert refusal.event["step"] == 2_345
    assert refusal.status_code == 400
    assert "data[0].name" in refusal.message
    assert "1 rejected" in str(error)
    assert "'poison' at step 2345" in str(error)
    rows = stored(server, exp.id)
    assert_each_once(rows, {("loss", s, 1.0) for s in range(5_000) if s != 2_345})
    # Reported once; later events are not held up by it.
    exp.log("loss", 2.0, step=5_000)
    assert exp.flush(timeout=30) == 1
    session.close()


def test_an_experiment_that_is_gone_rejects_its_events_without_blocking_others(
    server: LocalServer, spool_root: Path
) -> None:
    session = open_session(server, spool_root)
    ghost = sm.Experiment(experiment_wire("no-such-experiment"), session=session)
    real = sm.Experiment.create("real", session=session)
    for step in range(3):
        ghost.log("loss", 1.0, step=step)
        real.log("loss", 1.0, step=step)
    with pytest.raises(FlushError) as caught:
        ghost.flush(timeout=30)
    assert len(caught.value.rejected) == 3
    assert {r.status_code for r in caught.value.rejected} == {404}
    assert real.flush(timeout=30) == 3
    assert len(stored(server, real.id)) == 3
    # A refusal about the run (not the events) keeps them in the spool, for a later sync.
    (kept,) = Path(session.spool_dir or "").glob("b-*.jsonl")
    assert load_batch(kept).experiment_id == "no-such-experiment"


def test_close_says_what_waits_safely_in_the_spool_without_raising(
    server: LocalServer, spool_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    session = open_session(server, spool_root, flush_timeout=0.3)
    exp = sm.Experiment.create("closing", session=session)
    server.faults.fail_next("ingest_metrics", times=10_000, status=503)
    exp.log("loss", 1.0, step=0)
    session.close()  # safe on disk, only not acknowledged yet: nothing is lost, nothing raised
    (told,) = [r.getMessage() for r in caplog.records if "wait in the spool" in r.getMessage()]
    assert f"1 log() events wait in the spool {session.spool_dir}" in told
    assert session.closed
    with pytest.raises(sm.MetricsApiError, match="closed"):
        exp.log("loss", 1.0, step=1)
    with pytest.raises(FlushError) as again:
        exp.flush()  # no wait without end: the sender has stopped; it says what is left
    assert again.value.pending == 1
    # The event stays on disk for `syvain-metrics sync`.
    assert len(list(Path(session.spool_dir or "").glob("b-*.jsonl"))) == 1


def test_flush_error_survives_pickling() -> None:
    error = FlushError(
        stored=3,
        pending=1,
        rejected=[RejectedEvent({"name": "x", "step": 1}, "HTTP 400: bad", 400)],
        timed_out=True,
        spool_dir="/tmp/spool",
    )
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.stored, copy.pending, copy.timed_out, copy.spool_dir) == (3, 1, True, "/tmp/spool")
    assert copy.rejected == error.rejected
    assert str(copy) == str(error)


# -- the spool ---------------------------------------------------------------------------------


def test_memory_stays_bounded_during_an_outage(tmp_path: Path, spool_root: Path) -> None:
    db = str(tmp_path / "metrics.sqlite")
    first = LocalServer(db=db)
    key, port = first.api_key, int(first.url.rsplit(":", 1)[1])
    session = open_session(first, spool_root)
    exp = sm.Experiment.create("long-outage", session=session)
    first.close()
    for step in range(60_000):
        exp.log("loss", 1.0, step=step)
    sender = session.logs.sender
    with pytest.raises(FlushError):
        exp.flush(timeout=0.5)  # everything has been spooled and sealed by now
    backlog = sender.backlog()
    assert backlog.batches_in_memory <= BATCHES_IN_MEMORY
    # The others are in flight, one per delivery thread.
    assert backlog.batches_in_memory + backlog.batches_on_disk_only >= 60 - MAX_IN_FLIGHT
    assert len(list(Path(session.spool_dir or "").glob("b-*.jsonl"))) == 60
    with LocalServer(db=db, api_key=key, port=port) as second:
        assert exp.flush(timeout=120) == 60_000
        assert len(stored(second, exp.id)) == 60_000
        session.close()
    assert not Path(session.spool_dir or "").exists()  # acknowledged: nothing left behind


def test_spool_is_private_and_emptied_as_the_service_acknowledges(
    server: LocalServer, spool_root: Path
) -> None:
    session = open_session(server, spool_root, flush_interval=60)
    exp = sm.Experiment.create("private", session=session)
    exp.log("loss", 1.0, step=0)
    directory = Path(session.spool_dir or "")
    sender = session.logs.sender
    sender.wait([], timeout=10)  # a mark: everything before it has been spooled
    (batch,) = directory.glob("b-*.jsonl")
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE(batch.stat().st_mode) == 0o600
    header, line = batch.read_text().splitlines()
    # Each line: the CRC-32 of the rest, then the JSON (format 2).
    assert json.loads(header.split(" ", 1)[1]) == {"experiment_id": exp.id, "format": 2}
    checksum, array = line.split(" ", 1)
    assert int(checksum, 16) == zlib.crc32(array.encode())
    assert [event["name"] for event in json.loads(array)] == ["loss"]
    assert server.api_key not in (directory / "meta.json").read_text()
    assert exp.flush(timeout=30) == 1
    assert list(directory.glob("b-*.jsonl")) == []
    session.close()
    assert not directory.exists()


def test_without_a_spool_events_are_kept_in_memory(server: LocalServer) -> None:
    session = open_session(server, None)
    exp = sm.Experiment.create("memory-only", session=session)
    for step in range(2_500):
        exp.log("loss", 1.0, step=step)
    assert session.spool_dir is None
    assert exp.flush(timeout=30) == 2_500
    session.close()


def test_a_new_session_tells_about_leftovers(
    server: LocalServer, spool_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dead = spool_root / "12345-deadbeef"
    dead.mkdir(parents=True)
    (dead / "lock").write_text("")
    (dead / "meta.json").write_text(json.dumps({"host": server.url}))
    (dead / "b-000000001.jsonl").write_text('{"experiment_id": "e"}\n')
    with caplog.at_level("WARNING", logger="syvain_metrics"):
        open_session(server, spool_root).close()
    assert "syvain-metrics sync" in caplog.text
    assert str(spool_root) in caplog.text


# -- run() and signals -------------------------------------------------------------------------

CHILD_PRELUDE = """
import os, sys, time
import syvain_metrics as sm
url, key, spool = sys.argv[1], sys.argv[2], sys.argv[3]
session = sm.connect(key, host=url, spool_dir=spool,
                     flush_interval=float(os.environ.get("FLUSH_INTERVAL", "1")),
                     flush_timeout=float(os.environ.get("FLUSH_TIMEOUT", "30")),
                     retry=sm.RetryPolicy(backoff_base=0.02, delivery_backoff_cap=0.2))
exp = sm.Experiment.create(sys.argv[4])
print(exp.id, flush=True)
"""


def start_child(
    body: str,
    server: LocalServer,
    spool_root: Path,
    slug: str,
    flush_interval: float = 1.0,
    flush_timeout: float = 30.0,
) -> subprocess.Popen[str]:
    script = CHILD_PRELUDE + textwrap.dedent(body)
    return subprocess.Popen(
        [sys.executable, "-c", script, server.url, server.api_key, str(spool_root), slug],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={
            **os.environ,
            "FLUSH_INTERVAL": str(flush_interval),
            "FLUSH_TIMEOUT": str(flush_timeout),
        },
    )


def run_child(body: str, server: LocalServer, spool_root: Path, **options: Any) -> sm.Experiment:
    """Run a child script to its end (exit status 0) and return its experiment, reloaded."""
    child = start_child(body, server, spool_root, "child", **options)
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    return sm.Experiment.get(out.split()[0], session=open_session(server, None))


def terminate_when_ready(
    child: subprocess.Popen[str], *, expect: int, before: Any = None, after: Any = None
) -> tuple[sm.Experiment, str]:
    """Wait for the child's "ready" line (after its experiment id), send SIGTERM (between
    ``before()`` and ``after()``, when given), check the exit status, and return the run and
    the output."""
    assert child.stdout is not None
    experiment_id = child.stdout.readline().strip()
    assert child.stdout.readline().strip() == "ready"
    if before is not None:
        before()
    child.send_signal(signal.SIGTERM)
    if after is not None:
        after()
    out, err = child.communicate(timeout=60)
    assert child.returncode == expect, err
    return sm.Experiment({"id": experiment_id}, session=None), out


def test_sigterm_inside_run_flushes_and_marks_the_run_terminated(
    server: LocalServer, spool_root: Path
) -> None:
    child = start_child(
        """
        logged = 0
        try:
            with exp.run():
                while True:
                    exp.log("loss", 1.0, step=logged)
                    logged += 1
                    if logged == 3_000:
                        print("ready", flush=True)
                    time.sleep(0.0002)
        finally:
            print("logged", logged, flush=True)
        """,
        server,
        spool_root,
        "terminated",
    )
    run, out = terminate_when_ready(child, expect=143)
    logged = int(out.split()[-1])
    experiment_id = run.id
    exp = sm.Experiment.get(experiment_id, session=open_session(server, None))
    assert exp.status == "error"
    assert exp.error_detail == "terminated by SIGTERM"
    steps = sorted(r.step or 0 for r in stored(server, experiment_id))
    # Nothing lost (the signal may land between log() and the count) and nothing twice.
    assert steps == list(range(len(steps)))
    assert len(steps) in (logged, logged + 1)


def test_sigterm_while_the_run_ends_is_passed_on_after_the_status(
    server: LocalServer, spool_root: Path
) -> None:
    server.faults.delay("ingest_metrics", seconds=60, times=1)
    child = start_child(
        """
        with exp.run():
            for step in range(10):
                exp.log("loss", 1.0, step=step)
            print("ready", flush=True)
        print("after the run", flush=True)
        """,
        server,
        spool_root,
        "ending",
        flush_interval=60,  # the batch goes out only with the run's final flush
    )

    def when_the_final_flush_waits() -> None:
        assert server.faults.wait_fired(1, timeout=30)

    # After the signal, the held answer comes; the run ends, then the signal passes on.
    run, out = terminate_when_ready(
        child, expect=143, before=when_the_final_flush_waits, after=server.faults.clear
    )
    experiment_id = run.id
    assert "after the run" not in out
    exp = sm.Experiment.get(experiment_id, session=open_session(server, None))
    assert exp.status == "done"  # the block had ended: the signal comes after the status
    assert len(stored(server, experiment_id)) == 10


def test_sigterm_inside_a_session_block_during_an_outage_exits_143_and_keeps_the_events(
    server: LocalServer, spool_root: Path
) -> None:
    server.faults.fail_next("ingest_metrics", times=10**6, status=503)
    child = start_child(
        """
        with session:
            with exp.run():
                for step in range(100):
                    exp.log("loss", 1.0, step=step)
                print("ready", flush=True)
                while True:
                    time.sleep(0.01)
        """,
        server,
        spool_root,
        "outage-term",
        flush_timeout=1,
    )
    # 143: not replaced by the FlushError of the closing.
    experiment_id = terminate_when_ready(child, expect=143)[0].id
    exp = sm.Experiment.get(experiment_id, session=open_session(server, None))
    assert exp.error_detail == "terminated by SIGTERM"
    assert len(stored(server, experiment_id)) == 0
    server.faults.clear()
    report = sync_spool(spool_root, api_key=server.api_key, host=server.url)
    assert report.stored == 100
    assert len(stored(server, experiment_id)) == 100


def test_a_handler_of_ones_own_may_stop_the_run_cleanly(
    server: LocalServer, spool_root: Path
) -> None:
    child = start_child(
        """
        import signal
        stop = []
        signal.signal(signal.SIGTERM, lambda signum, frame: stop.append(signum))
        with exp.run():
            step = 0
            while not stop:
                exp.log("loss", 1.0, step=step)
                step += 1
                if step == 500:
                    print("ready", flush=True)
                time.sleep(0.0005)
            exp.log("final", 1.0)  # after the signal: still delivered
        print("stopped at", step, flush=True)
        """,
        server,
        spool_root,
        "own-handler",
    )
    run, out = terminate_when_ready(child, expect=0)
    experiment_id = run.id
    steps = int(out.split()[-1])
    exp = sm.Experiment.get(experiment_id, session=open_session(server, None))
    assert exp.status == "done"
    assert len(stored(server, experiment_id)) == steps + 1


@pytest.mark.parametrize(
    ("body", "status", "count"),
    [
        pytest.param(
            """
            with exp.run():
                for step in range(10):
                    exp.log("loss", 1.0, step=step)
                sys.exit(0)
            """,
            "done",
            10,
            id="sys-exit-0-in-run",
        ),
        pytest.param(
            """
            exp.start()
            for step in range(2_500):
                exp.log("loss", 1.0, step=step)
            """,
            "running",  # a plain script keeps its status; its events still arrive
            2_500,
            id="plain-script",
        ),
    ],
)
def test_a_program_that_ends_delivers_everything(
    server: LocalServer, spool_root: Path, body: str, status: str, count: int
) -> None:
    exp = run_child(body, server, spool_root)
    assert exp.status == status
    assert len(stored(server, exp.id)) == count


def test_os_exit_leaves_a_spool_that_sync_uploads_once(
    server: LocalServer, spool_root: Path
) -> None:
    body = """
        for step in range(2_500):
            exp.log("loss", step / 7, step=step)
        time.sleep(0.6)  # longer than the spooler's pass
        os._exit(0)  # no atexit, no flush
        """
    # flush_interval=60: the last, partial batch is never sent by the child itself.
    experiment_id = run_child(body, server, spool_root, flush_interval=60).id
    # The two full batches may have gone out already; the last 500 events are only on disk.
    assert len(stored(server, experiment_id)) <= 2_000

    command = [
        sys.executable, "-m", "syvain_metrics.cli", "sync",
        "--spool-dir", str(spool_root), "--api-key", server.api_key, "--host", server.url,
    ]  # fmt: skip
    first = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("synced ")
    rows = stored(server, experiment_id)
    assert_each_once(rows, {("loss", s, s / 7) for s in range(2_500)})

    second = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert second.returncode == 0, second.stderr
    assert second.stdout.startswith("synced 0 events from 0 batches")
    assert len(stored(server, experiment_id)) == 2_500
    assert list(spool_root.iterdir()) == []


# -- fork --------------------------------------------------------------------------------------


def _rank_main(experiment_id: str, rank: int) -> None:
    session = sm.get_session()
    exp = sm.Experiment.get(experiment_id)  # a read over the child's own connection
    for step in range(500):
        exp.log("loss", float(rank), step=step, metadata={"rank": rank})
    assert session.logs.pending(experiment_id) >= 0
    exp.refresh()


def test_forked_ranks_share_a_session_made_before_the_fork(
    server: LocalServer, spool_root: Path
) -> None:
    session = open_session(server, spool_root, flush_interval=60)
    sm.set_default_session(session)
    try:
        exp = sm.Experiment.create("ranks", session=session)
        for step in range(300):  # pending in the parent when it forks
            exp.log("loss", -1.0, step=step, metadata={"rank": -1})
        context = multiprocessing.get_context("fork")
        ranks = [context.Process(target=_rank_main, args=(exp.id, r)) for r in range(4)]
        for process in ranks:
            process.start()
        for process in ranks:
            process.join(60)
        assert [p.exitcode for p in ranks] == [0, 0, 0, 0]
        assert exp.flush(timeout=30) == 300  # the parent's own events, sent by the parent
        rows = stored(server, exp.id)
        assert len(rows) == 300 + 4 * 500  # with the set below: each event exactly once
        assert {(r.metadata["rank"], r.step) for r in rows} == {
            (rank, step) for rank in range(4) for step in range(500)
        } | {(-1, step) for step in range(300)}
    finally:
        sm.set_default_session(None)
        session.close()


def test_children_that_os_exit_are_recovered_by_the_parents_session(
    server: LocalServer, spool_root: Path
) -> None:
    session = open_session(server, spool_root, flush_interval=60)
    exp = sm.Experiment.create("raw-fork", session=session)
    children = []
    for rank in range(2):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            code = 1
            try:
                for step in range(700):
                    exp.log("loss", float(rank), step=step, metadata={"rank": rank})
                session.logs.sender.wait([], timeout=10)  # spooled
                code = 0
            finally:
                os._exit(code)
        children.append(pid)
    for pid in children:
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    session.close()  # adopts what the children left
    rows = stored(server, exp.id)
    assert len(rows) == 1_400
    assert {(r.metadata["rank"], r.step) for r in rows} == {
        (rank, step) for rank in range(2) for step in range(700)
    }


# -- the wire ----------------------------------------------------------------------------------


def test_a_retried_batch_is_the_same_bytes_under_the_same_key(
    mocked: responses.RequestsMock,
) -> None:
    session = sm.Session(API_KEY, host=HOST, retry=FAST, spool_dir=None)
    base = f"{API}/experiments/exp-1"
    mocked.post(f"{base}/ingestion-keys", json=envelope({"key": key_wire(), "token": "tok"}))
    ingest = f"{base}/ingest"
    mocked.post(ingest, status=503, json={"data": None, "error": "busy"})
    mocked.post(ingest, status=500, json={"data": None, "error": "busy"})
    mocked.post(ingest, json=envelope({"ok": True, "mode": "queued"}))
    exp = sm.Experiment(experiment_wire(), session=session)
    before_ms = time.time_ns() // 1_000_000
    exp.log("loss", 0.5, step=1, metadata={"split": "train"})
    exp.log("loss", 0.25, step=2)
    after_ms = time.time_ns() // 1_000_000
    assert exp.flush(timeout=30) == 2
    sent = [c.request for c in mocked.calls if c.request.url.split("?")[0] == ingest]
    assert len(sent) == 3
    assert len({r.body for r in sent}) == 1
    assert len({r.headers["Idempotency-Key"] for r in sent}) == 1
    assert {r.headers["Authorization"] for r in sent} == {"Bearer tok"}
    data = json.loads(sent[0].body)["data"]
    assert [list(m) for m in data] == [
        ["client_event_id", "name", "value", "step", "metadata", "timestamp_ms"],
        ["client_event_id", "name", "value", "step", "timestamp_ms"],
    ]
    # Stamped when logged, not when delivered (after two failed tries here).
    assert all(before_ms <= m["timestamp_ms"] <= after_ms for m in data)
    assert data[0]["client_event_id"] != data[1]["client_event_id"]
    session.close()


def test_without_a_named_field_the_batch_is_split_to_find_the_refused_event(
    mocked: responses.RequestsMock,
) -> None:
    session = sm.Session(API_KEY, host=HOST, retry=FAST, spool_dir=None)
    base = f"{API}/experiments/exp-1"
    mocked.post(f"{base}/ingestion-keys", json=envelope({"key": key_wire(), "token": "tok"}))
    bodies: list[list[dict[str, Any]]] = []

    def ingest(request: Any) -> tuple[int, dict[str, str], str]:
        data = json.loads(request.body)["data"]
        bodies.append(data)
        if any(m["name"] == "poison" for m in data):  # refused without saying which one
            return 400, {}, json.dumps({"data": None, "error": "Invalid metrics"})
        return 200, {}, json.dumps(envelope({"ok": True, "mode": "sync"}))

    mocked.add_callback(responses.POST, f"{base}/ingest", callback=ingest)
    exp = sm.Experiment(experiment_wire(), session=session)
    for step in range(8):
        exp.log("poison" if step == 5 else "loss", 1.0, step=step)
    with pytest.raises(FlushError) as caught:
        exp.flush(timeout=30)
    (refusal,) = caught.value.rejected
    assert (refusal.event["name"], refusal.event["step"]) == ("poison", 5)
    assert caught.value.stored == 7
    assert [len(b) for b in bodies] == [8, 4, 4, 2, 1, 1, 2]  # halves until it is alone
    accepted = [m["step"] for b in bodies if all(m["name"] == "loss" for m in b) for m in b]
    assert sorted(accepted) == [0, 1, 2, 3, 4, 6, 7]
    session.close()


def test_sigterm_calls_the_users_own_handler_then_restores_it(
    server: LocalServer, spool_root: Path
) -> None:
    session = open_session(server, spool_root)
    exp = sm.Experiment.create("own-handler", session=session)
    calls: list[int] = []

    class StopError(Exception):
        pass

    def own(signum: int, frame: Any) -> None:
        calls.append(signum)
        raise StopError

    def training() -> None:
        with exp.run():
            exp.log("loss", 1.0, step=0)
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(10_000):  # the handler runs between bytecodes
                pass

    previous = signal.signal(signal.SIGTERM, own)
    try:
        with pytest.raises(StopError):
            training()
        assert calls == [signal.SIGTERM]
        assert signal.getsignal(signal.SIGTERM) is own
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert exp.status == "error"
    assert exp.error_detail == "terminated by SIGTERM"
    assert len(stored(server, exp.id)) == 1
    session.close()


def test_an_ignored_sigterm_stays_ignored(server: LocalServer, spool_root: Path) -> None:
    session = open_session(server, spool_root)
    exp = sm.Experiment.create("ignored", session=session)
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        with exp.run():
            os.kill(os.getpid(), signal.SIGTERM)
            exp.log("loss", 1.0, step=0)
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert exp.status == "done"
    session.close()


def test_ingest_of_something_that_is_not_a_list_is_refused_before_sending(
    server: LocalServer,
) -> None:
    session = open_session(server, None)
    exp = sm.Experiment.create("not-a-list", session=session)
    for bad in (5, "loss", {"name": "loss", "value": 1.0}):
        with pytest.raises(sm.MetricsValidationError, match="list of metrics"):
            exp.ingest(bad)  # type: ignore[arg-type]
    assert len(stored(server, exp.id)) == 0
    session.close()
