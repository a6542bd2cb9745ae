"""Start-up outages, offline mode, the truthful final status and a bounded Ctrl-C: the
creation, status changes and annotations of a run wait in the spool as control records,
behind the run's events, and the sender (or ``syvain-metrics sync``) applies them once.

Everything runs against the real local server: "the service is down" is a port where
nothing listens yet (the server is started on it later, on the same database file), "a
slow service" is its delay fault.
"""

from __future__ import annotations

import collections
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import syvain_metrics as sm
from syvain_metrics.client.sync import sync_spool
from syvain_metrics.pipeline.control import (
    ControlRecord,
    is_pending_id,
    read_record,
    write_record,
)
from syvain_metrics.pipeline.spool import Spool, new_spool_name
from syvain_metrics.pipeline.state import MAX_IN_FLIGHT
from syvain_metrics.resources.experiment import deferred
from syvain_metrics.testing import LocalServer

FAST = sm.RetryPolicy(backoff_base=0.02, jitter=0)


# -- helpers ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


class LateService:
    """A service that is down (nothing listens on its port) until :meth:`start`: then the
    local server serves its database file on that very port."""

    def __init__(self, tmp_path: Path) -> None:
        self.db = str(tmp_path / "metrics.sqlite")
        first = LocalServer(self.db)
        self.api_key = first.api_key
        first.close()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server: LocalServer | None = None

    def start(self) -> LocalServer:
        self.server = LocalServer(self.db, api_key=self.api_key, port=self.port)
        return self.server

    def session(self, spool: Path | None, **options: Any) -> sm.Session:
        options.setdefault("retry", FAST)
        return sm.Session(self.api_key, host=self.url, spool_dir=spool, **options)

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


@pytest.fixture
def late(tmp_path: Path) -> Iterator[LateService]:
    service = LateService(tmp_path)
    yield service
    service.close()


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    return tmp_path / "spool"


def read_back(server: LocalServer, slug: str) -> tuple[sm.Experiment, sm.MetricRows]:
    """The one experiment with ``slug`` and its rows, read by a session that logged nothing."""
    with server.session(spool_dir=None) as reader:
        found = sm.Experiment.list(slug=slug, session=reader)
        assert len(found) == 1, f"{len(found)} experiments named {slug}"
        (experiment,) = found
        return experiment, experiment.metrics()


def annotations_of(server: LocalServer, experiment_id: str) -> list[tuple[str, dict[str, Any]]]:
    with server.session(spool_dir=None) as reader:
        found = sm.Experiment.get(experiment_id, session=reader).annotations()
        return [(a.annotation, a.metadata) for a in found]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def wait_until(condition: Any, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "the condition was never met"
        time.sleep(0.02)


# -- a job that starts while the service is down ---------------------------------------------


def test_a_job_started_during_an_outage_runs_at_once_and_everything_is_stored_once_after(
    late: LateService, spool: Path
) -> None:
    session = late.session(spool)
    before = now_ms()
    exp = sm.Experiment.create("outage-run", exist_ok=True, metadata={"lr": 0.1}, session=session)
    assert is_pending_id(exp.id)
    assert exp.slug == "outage-run"
    with exp.run():
        entered = now_ms()
        for step in range(300):
            exp.log("loss", 1.0 / (step + 1), step=step)
        exp._annotate_later("loss became NaN at step 7", {"step": 7})
        assert exp.status == "running"  # shown at once, applied later
        assert session.logs.resolved_id(exp._log_id) is None
        late.start()  # the service comes back while the job runs
    assert exp.status == "done"  # shown at once, even before the creation is applied
    server = late.server
    assert server is not None
    session.close()

    stored, rows = read_back(server, "outage-run")
    assert exp.id == stored.id
    assert not is_pending_id(exp.id)
    assert exp.url.endswith(f"/dashboard/experiments/{stored.id}")
    assert (exp.status, exp.done_at_ms) == ("done", stored.done_at_ms)  # the service's answer
    assert stored.metadata == {"lr": 0.1}
    assert sorted(row.step or 0 for row in rows) == list(range(300))  # each event once
    assert len({row.event_id for row in rows}) == 300
    # Applied in order, each with the time it happened, not the time it was applied.
    assert stored.status == "done"
    assert before <= (stored.started_at_ms or 0) <= entered
    assert entered <= (stored.done_at_ms or 0) <= now_ms()
    assert annotations_of(server, stored.id) == [("loss became NaN at step 7", {"step": 7})]
    assert not list(spool.rglob("*.json*"))  # nothing left behind


def test_what_needs_the_service_says_clearly_that_the_run_is_not_created_yet(
    late: LateService, spool: Path
) -> None:
    session = late.session(spool)
    exp = sm.Experiment.create("not-yet", session=session)  # no exist_ok: deferred all the same
    for read in (
        lambda: exp.url,
        lambda: exp.metrics("loss"),
        lambda: exp.annotations(),
        lambda: exp.refresh(),
        lambda: exp.summary("loss"),
        lambda: sm.compare([sm.Series(exp, "loss")], session=session),
    ):
        with pytest.raises(sm.ExperimentNotCreatedError, match="not created yet"):
            read()
    exp.log("loss", 1.0, step=0)
    assert exp.finish().status == "done"  # a status change waits in the spool instead
    annotation = exp.annotate("checkpoint", metadata={"path": "ckpt/0.pt"})
    assert is_pending_id(annotation.id)
    assert annotation.annotation == "checkpoint"
    assert session.logs.controls_pending(exp._log_id) == 3  # creation, status, annotation
    server = late.start()
    wait_until(lambda: session.logs.controls_pending(exp._log_id) == 0)
    assert exp.flush(timeout=30) == 0  # delivered already: the status waited for it
    stored, rows = read_back(server, "not-yet")
    assert (stored.status, len(rows)) == ("done", 1)
    assert annotations_of(server, stored.id) == [("checkpoint", {"path": "ckpt/0.pt"})]
    assert exp.refresh().status == "done"
    session.close()


def test_a_job_that_ends_before_the_service_returns_is_completed_by_sync(
    late: LateService, spool: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with LocalServer(late.db, api_key=late.api_key) as before, before.session() as earlier:
        existing = sm.Experiment.create("rerun", metadata={"seed": 1}, session=earlier)
    session = late.session(spool, flush_timeout=0.2)
    exp = sm.Experiment.create("rerun", exist_ok=True, session=session)  # a rerun, offline
    with exp.run():
        for step in range(5):
            exp.log("loss", float(step), step=step)
    session.close()  # the service never came back while the job ran
    late.session(spool).close()  # the next session says what waits
    assert "4 file(s) of log() events and run records" in caplog.text  # 1 batch, 3 records
    server = late.start()
    report = sync_spool(spool, api_key=late.api_key, host=late.url)
    assert (report.stored, report.controls, report.complete) == (5, 3, True)
    stored, rows = read_back(server, "rerun")  # found by slug: still one experiment
    assert stored.id == existing.id
    assert (stored.status, stored.metadata, len(rows)) == ("done", {"seed": 1}, 5)
    assert not list(spool.rglob("*.json*"))


def test_without_defer_the_creation_raises_as_before(late: LateService, spool: Path) -> None:
    session = late.session(spool)
    with pytest.raises(sm.MetricsApiConnectionError):
        sm.Experiment.create("strict", defer=False, session=session)
    with pytest.raises(sm.MetricsValidationError, match="defer"):
        sm.Experiment.create("strict", defer="no", session=session)  # type: ignore[arg-type]
    session.close()


def test_a_slug_taken_meanwhile_without_exist_ok_fails_that_run_and_keeps_its_events(
    late: LateService, spool: Path
) -> None:
    session = late.session(spool, flush_timeout=30)
    exp = sm.Experiment.create("taken", session=session)
    exp.log("loss", 1.0, step=0)
    with LocalServer(late.db, api_key=late.api_key) as elsewhere, elsewhere.session() as other:
        winner = sm.Experiment.create("taken", session=other)  # while this job could not
    server = late.start()
    # Created by another job first: these events are not sent into that run.
    with pytest.raises(sm.FlushError) as caught:
        exp.flush(timeout=30)
    (refusal,) = caught.value.rejected
    assert "could not be created" in refusal.message
    assert refusal.status_code == 409
    session.close()
    assert len(read_back(server, "taken")[1]) == 0
    assert read_back(server, "taken")[0].id == winner.id
    assert len(list(spool.rglob("b-*.jsonl"))) == 1  # kept for a later look, not dropped


# -- offline mode ----------------------------------------------------------------------------------


def test_offline_sends_nothing_then_sync_stores_everything_once(
    late: LateService, spool: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SYVAIN_METRICS_OFFLINE", "1")
    listener = socket.create_server(("127.0.0.1", late.port))  # would see any connection
    listener.setblocking(False)
    session = late.session(spool)
    assert session.offline
    exp = sm.Experiment.create("air-gapped", exist_ok=True, session=session)
    with exp.run():
        for step in range(2500):
            exp.log("loss", float(step), step=step)
        exp._annotate_later("loss became NaN at step 1,234", {"step": 1234})
    with pytest.raises(sm.OfflineError, match="offline"):
        sm.Experiment.list(session=session)
    with pytest.raises(sm.ExperimentNotCreatedError, match="offline"):
        exp.metrics("loss")
    assert exp.flush(timeout=5) == 0  # nothing waits for the network: it is all on disk
    session.close()
    with pytest.raises(BlockingIOError):
        listener.accept()  # not one connection, not even for a token
    listener.close()
    monkeypatch.delenv("SYVAIN_METRICS_OFFLINE")

    server = late.start()
    first = sync_spool(spool, api_key=late.api_key, host=late.url)
    assert (first.stored, first.controls, first.complete) == (2500, 4, True)
    stored, rows = read_back(server, "air-gapped")
    assert len({row.event_id for row in rows}) == len(rows) == 2500
    assert stored.status == "done"
    assert stored.started_at_ms is not None
    assert annotations_of(server, stored.id) == [("loss became NaN at step 1,234", {"step": 1234})]
    again = sync_spool(spool, api_key=late.api_key, host=late.url)
    assert (again.stored, again.controls) == (0, 0)
    assert not list(spool.rglob("*.json*"))


def _log_in_a_child(exp: sm.Experiment) -> None:
    for step in range(1, 11):
        exp.log("loss", float(step), step=step)


def test_a_forked_worker_of_a_run_created_offline_is_synced_into_the_same_run(
    late: LateService, spool: Path
) -> None:
    session = late.session(spool, offline=True)
    exp = sm.Experiment.create("forked-offline", session=session)
    exp.log("loss", 0.0, step=0)
    worker = multiprocessing.get_context("fork").Process(target=_log_in_a_child, args=(exp,))
    worker.start()
    worker.join(60)
    assert worker.exitcode == 0
    session.close()
    # The worker's events are in its own spool, under the parent's; the creation is the
    # parent's: sync finds it for them.
    assert len(list(spool.rglob("children/*/b-*.jsonl"))) == 1
    server = late.start()
    report = sync_spool(spool, api_key=late.api_key, host=late.url)
    assert (report.stored, report.complete) == (11, True)
    stored, rows = read_back(server, "forked-offline")
    assert stored.status == "created"  # one experiment (read_back checks), never started
    assert sorted(row.step or 0 for row in rows) == list(range(11))
    assert not list(spool.rglob("*.json*"))


def test_a_forked_worker_of_a_run_waiting_for_its_creation_is_sent_by_its_parent(
    late: LateService, spool: Path
) -> None:
    session = late.session(spool)
    exp = sm.Experiment.create("forked-outage", session=session)
    exp.log("loss", 0.0, step=0)
    worker = multiprocessing.get_context("fork").Process(target=_log_in_a_child, args=(exp,))
    worker.start()
    worker.join(60)
    assert worker.exitcode == 0  # its events wait in its spool: it cannot create the run
    server = late.start()
    assert exp.flush(timeout=30) == 11  # the parent takes them over, once it created the run
    session.close()
    stored, rows = read_back(server, "forked-outage")
    assert stored.id == exp.id
    assert sorted(row.step or 0 for row in rows) == list(range(11))
    assert not list(spool.rglob("*.json*"))


def test_offline_needs_a_spool_and_takes_only_a_flag(late: LateService, spool: Path) -> None:
    closed = late.session(spool, offline=True)
    closed.close()
    with pytest.raises(sm.MetricsApiError, match="closed"):
        sm.Experiment.create("after-close", session=closed)  # never lost silently
    with pytest.raises(sm.MetricsValidationError, match="needs one"):
        late.session(None, offline=True)
    with pytest.raises(sm.MetricsValidationError, match="offline"):
        late.session(None, offline="yes")


def test_the_sync_command_applies_what_an_ended_offline_job_left(
    late: LateService, spool: Path
) -> None:
    job = textwrap.dedent(
        f"""
        import syvain_metrics as sm
        session = sm.Session({late.api_key!r}, host={late.url!r}, spool_dir={str(spool)!r})
        exp = sm.Experiment.create("cli-offline", session=session)
        with exp.run():
            for step in range(10):
                exp.log("loss", float(step), step=step)
        """
    )
    env = {**os.environ, "SYVAIN_METRICS_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", job], capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0, done.stderr
    assert "offline: 10 log() events" in done.stderr
    server = late.start()
    command = [sys.executable, "-m", "syvain_metrics.cli", "sync", "--spool-dir", str(spool)]
    command += ["--api-key", late.api_key, "--host", late.url, "--timeout", "5"]
    # Run with the variable still set: sync sends all the same.
    first = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert first.returncode == 0, first.stderr
    assert "synced 10 events" in first.stdout
    assert "3 creation(s), status change(s) and annotation(s) applied" in first.stdout
    second = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert (second.returncode, second.stdout.split(";")[0]) == (
        0,
        "synced 0 events from 0 batches in 0 spool(s)",
    )
    stored, rows = read_back(server, "cli-offline")
    assert (stored.status, sorted(r.step or 0 for r in rows)) == ("done", list(range(10)))


# -- the truthful final status ------------------------------------------------------------------


def test_a_slow_service_and_a_clean_exit_raise_nothing_and_end_done_after_the_drain(
    metrics_server: LocalServer, spool: Path, caplog: pytest.LogCaptureFixture
) -> None:
    session = metrics_server.session(spool_dir=spool, retry=FAST, flush_timeout=30)
    exp = sm.Experiment.create("slow-service", session=session)
    metrics_server.faults.delay("ingest_metrics", seconds=1.5, times=10**6)
    with exp.run(flush_timeout=0.1):  # ends before the events are acknowledged
        for step in range(2000):
            exp.log("loss", float(step), step=step)
    assert "the status 'done' follows them" in caplog.text
    with metrics_server.session(spool_dir=None) as reader:
        assert sm.Experiment.get(exp.id, session=reader).status == "running"  # not error
    session.close()  # drains within flush_timeout: the events, then the status
    stored, rows = read_back(metrics_server, "slow-service")
    assert (stored.status, stored.error_name, len(rows)) == ("done", None, 2000)


def test_at_interpreter_exit_the_drain_applies_done_after_the_events(
    metrics_server: LocalServer, spool: Path
) -> None:
    metrics_server.faults.delay("ingest_metrics", seconds=0.3, times=10**6)
    job = textwrap.dedent(
        f"""
        import syvain_metrics as sm
        session = sm.Session({metrics_server.api_key!r}, host={metrics_server.url!r},
                             spool_dir={str(spool)!r})
        exp = sm.Experiment.create("exit-drain", session=session)
        with exp.run(flush_timeout=0.05):
            for step in range(3000):
                exp.log("loss", float(step), step=step)
        print(exp.status)  # no close(): the interpreter's exit drains
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", job], capture_output=True, text=True, timeout=120, cwd=spool.parent
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "done"  # shown at once, applied after the events
    assert "Traceback" not in done.stderr
    stored, rows = read_back(metrics_server, "exit-drain")
    assert (stored.status, len(rows)) == ("done", 3000)
    assert not list(spool.rglob("*.json*"))


def test_events_rejected_still_fail_the_run(metrics_server: LocalServer, spool: Path) -> None:
    session = metrics_server.session(spool_dir=spool, retry=FAST)
    exp = sm.Experiment.create("rejected", session=session)
    metrics_server.faults.reject_metric("bad")

    def job() -> None:
        with exp.run(flush_timeout=30):
            exp.log("bad", 1.0, step=0)
            exp.log("loss", 1.0, step=0)

    with pytest.raises(sm.FlushError) as caught:
        job()
    assert len(caught.value.rejected) == 1
    assert read_back(metrics_server, "rejected")[0].status == "error"
    session.close()


def test_events_held_in_memory_only_still_fail_the_run(metrics_server: LocalServer) -> None:
    session = metrics_server.session(spool_dir=None, retry=FAST)
    exp = sm.Experiment.create("memory-only", session=session)
    metrics_server.faults.fail_next("ingest_metrics", times=10**6, status=503)
    with pytest.raises(sm.FlushError), exp.run(flush_timeout=0.2):
        exp.log("loss", 1.0, step=0)
    assert read_back(metrics_server, "memory-only")[0].status == "error"
    metrics_server.faults.clear()
    session.close()


# -- Ctrl-C with the service down ------------------------------------------------------------------


def test_ctrl_c_with_the_service_down_is_bounded_and_its_status_applied_by_sync(
    late: LateService, spool: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(deferred, "INTERRUPT_FLUSH_SECONDS", 0.3)  # 9 s in real life
    server = late.start()
    session = late.session(spool, flush_timeout=30)
    exp = sm.Experiment.create("interrupted", session=session)
    server.close()  # the service goes down during the job
    interrupted_at = now_ms()

    def job() -> None:
        with exp.run():
            for step in range(20):
                exp.log("loss", float(step), step=step)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        job()
    # The interpreter's exit waits only what is left of the bound, not flush_timeout again.
    assert session.logs.exit_wait(session.flush_timeout) <= 0.3
    # Both statuses wait in the spool: "running" (the service was down already) and "error".
    assert session.logs.controls_pending(exp.id) == 2
    assert exp.status == "error"
    assert exp.error_name == "KeyboardInterrupt"
    session.close()

    restarted_at = now_ms()
    server = late.start()
    report = sync_spool(spool, api_key=late.api_key, host=late.url)
    assert (report.stored, report.controls, report.complete) == (20, 2, True)
    stored, rows = read_back(server, "interrupted")
    assert (stored.status, stored.error_name, len(rows)) == ("error", "KeyboardInterrupt", 20)
    # The time of the Ctrl-C, not of the sync.
    assert interrupted_at <= (stored.done_at_ms or 0) <= restarted_at


def test_ctrl_c_ending_a_plain_script_bounds_the_exit_too(late: LateService, spool: Path) -> None:
    script = textwrap.dedent(
        f"""
        import atexit, sys

        def told():  # registered first: runs after the SDK's own exit drain
            logs = session.logs
            print("bound", logs.exit_deadline is not None and logs.exit_wait(30.0) <= 0.3,
                  file=sys.stderr)

        atexit.register(told)
        import syvain_metrics as sm
        import syvain_metrics.client.session as session_module
        session_module.INTERRUPT_FLUSH_SECONDS = 0.3  # 9 s in real life
        session = sm.Session({late.api_key!r}, host={late.url!r}, spool_dir={str(spool)!r},
                             flush_timeout=30)
        exp = sm.Experiment.create("plain-script", session=session)
        for step in range(10):
            exp.log("loss", float(step), step=step)
        raise KeyboardInterrupt
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert "bound True" in done.stderr, done.stderr
    server = late.start()
    report = sync_spool(spool, api_key=late.api_key, host=late.url)
    assert (report.stored, report.controls) == (10, 1)
    assert len(read_back(server, "plain-script")[1]) == 10


def test_a_creation_committed_before_its_answer_was_lost_is_not_made_twice(
    metrics_server: LocalServer, spool: Path
) -> None:
    session = metrics_server.session(spool_dir=spool, retry=FAST)
    # One try is committed and its answer lost, the others fail: the creation is deferred
    # with the same Idempotency-Key, so the sender's try gets the committed run back.
    metrics_server.faults.drop_connection("create_experiment", when="after_commit")
    metrics_server.faults.fail_next("create_experiment", times=2, status=503)
    exp = sm.Experiment.create("lost-answer", session=session)  # no exist_ok: 409 if twice
    assert is_pending_id(exp.id)
    exp.log("loss", 1.0, step=0)
    assert exp.flush(timeout=30) == 1
    session.close()
    stored, rows = read_back(metrics_server, "lost-answer")
    assert (exp.id, len(rows)) == (stored.id, 1)


def test_a_sender_that_created_the_run_leaves_its_real_id_for_sync(
    late: LateService, spool: Path
) -> None:
    server = late.start()
    server.faults.fail_next("ingest_metrics", times=10**6, status=503)
    session = late.session(spool, flush_timeout=0.3)
    server.faults.fail_next("create_experiment", times=3, status=503)
    exp = sm.Experiment.create("resolved-here", exist_ok=False, session=session)
    assert is_pending_id(exp.id)
    exp.log("loss", 1.0, step=0)
    wait_until(lambda: session.logs.resolved_id(exp._log_id) is not None)
    session.close()  # the events wait in the spool, under the placeholder
    server.faults.clear()
    (created,) = spool.rglob("c-*.json")
    assert json.loads(created.read_text().split(" ", 1)[1])["resolved_id"] == exp.id
    report = sync_spool(spool, api_key=late.api_key, host=late.url)
    assert (report.stored, report.controls, report.complete) == (1, 0, True)
    assert read_back(server, "resolved-here")[0].id == exp.id  # created once
    assert not list(spool.rglob("c-*.json"))


def test_status_changes_wait_behind_earlier_ones_and_keep_their_order(
    late: LateService, spool: Path
) -> None:
    session = late.session(spool)
    exp = sm.Experiment.create("ordered", session=session)
    times = []
    for status in ("running", "error", "running", "done"):
        times.append(now_ms())
        exp.set_status(status, error="boom" if status == "error" else None)
    server = late.start()
    wait_until(lambda: session.logs.controls_pending(exp._log_id) == 0)
    session.close()
    stored = read_back(server, "ordered")[0]
    assert stored.status == "done"
    assert stored.error_name is None
    assert times[0] <= (stored.started_at_ms or 0) <= times[1]
    assert times[3] <= (stored.done_at_ms or 0)


def test_a_damaged_control_record_is_set_aside_and_reported_not_applied(
    metrics_server: LocalServer, spool: Path
) -> None:
    exp_id = sm.Experiment.create("damaged-record", session=metrics_server.session()).id
    dead = Spool.create(spool / new_spool_name(), host=metrics_server.url)
    good = write_record(dead.directory, 1, ControlRecord.annotation(exp_id, "kept", {}))
    bad = write_record(
        dead.directory, 2, ControlRecord.status(exp_id, "done", None, timestamp_ms=1)
    )
    bad.write_bytes(bad.read_bytes().replace(b'"done"', b'"dona"'))  # a changed byte
    os.close(dead._lock_fd)  # the process is gone
    report = sync_spool(spool, api_key=metrics_server.api_key, host=metrics_server.url)
    assert report.controls == 1
    assert not report.complete
    (damage,) = report.damaged
    assert "fails its checksum" in damage
    assert str(bad) in damage
    assert not good.exists()
    assert annotations_of(metrics_server, exp_id) == [("kept", {})]
    assert read_back(metrics_server, "damaged-record")[0].status == "created"


def test_an_explicit_status_change_during_an_outage_waits_in_the_spool(
    late: LateService, spool: Path
) -> None:
    server = late.start()
    session = late.session(spool)
    exp = sm.Experiment.create("explicit", session=session)
    server.close()
    asked = now_ms()
    assert exp.finish().status == "done"  # no raise: it waits, with its time
    assert session.logs.controls_pending(exp.id) == 1
    restarted = now_ms()
    server = late.start()
    wait_until(lambda: session.logs.controls_pending(exp.id) == 0)
    stored = read_back(server, "explicit")[0]
    assert stored.status == "done"
    assert asked <= (stored.done_at_ms or 0) <= restarted  # the call's time, not later
    with pytest.raises(sm.MetricsValidationError):
        exp.set_status("finished")  # bad input still raises at once
    session.close()


def test_annotate_later_never_raises_into_the_loop(metrics_server: LocalServer) -> None:
    session = metrics_server.session(spool_dir=None, retry=FAST)
    exp = sm.Experiment.create("annotated", session=session)
    exp._annotate_later("x" * 20_000, {})  # too long for the contract: logged, not raised
    exp._annotate_later("nan", {"value": float("nan")})  # not JSON: logged, not raised
    exp._annotate_later("fine", {"step": 3})
    session.close()
    assert annotations_of(metrics_server, exp.id) == [("fine", {"step": 3})]


# -- records left by forked workers, refused creations, reads of a run created late ---------


def _log_a_nan_in_a_child(exp: sm.Experiment) -> None:
    for step in range(1, 6):
        exp.log("loss", float("nan") if step == 3 else float(step), step=step)


def test_a_forked_worker_s_annotation_of_a_run_waiting_for_its_creation_is_applied(
    late: LateService, spool: Path
) -> None:
    session = late.session(spool)
    exp = sm.Experiment.create("forked-nan", session=session)
    exp.log("loss", 0.0, step=0)
    worker = multiprocessing.get_context("fork").Process(target=_log_a_nan_in_a_child, args=(exp,))
    worker.start()
    worker.join(60)
    assert worker.exitcode == 0
    server = late.start()
    assert exp.flush(timeout=30) == 5
    session.close()
    # The worker's annotation (a control record in its own spool) was taken over with its
    # events, and the creation record was kept until it was applied: nothing is left over.
    assert not list(spool.rglob("*.json*"))
    assert [text for text, _ in annotations_of(server, exp.id)] == ["loss became NaN at step 3"]
    report = sync_spool(spool, api_key=late.api_key, host=late.url)
    assert report.complete


def test_records_of_a_run_whose_creation_was_refused_wait_in_the_spool_not_in_the_close(
    late: LateService, spool: Path, caplog: pytest.LogCaptureFixture
) -> None:
    session = late.session(spool, flush_timeout=30)
    exp = sm.Experiment.create("taken-late", session=session)
    with LocalServer(late.db, api_key=late.api_key) as elsewhere, elsewhere.session() as other:
        sm.Experiment.create("taken-late", session=other)  # while this job could not
    late.start()

    def job() -> None:
        with exp.run():
            for step in range(3000):
                exp.log("loss", float(step), step=step)

    with pytest.raises(sm.FlushError):
        job()
    sender = session.logs.sender
    # The run's error status can never be applied here: nothing waits for it in this process
    # (close() does not wait its flush_timeout), and it stays in the spool for a later sync.
    wait_until(lambda: sender.controls_pending() == 0, timeout=10)
    session.close()
    assert "status" in [read_record(path).kind for path in spool.rglob("c-*.json")]
    # One warning per batch, not one per event.
    refused = [r for r in caplog.records if "rejected" in r.getMessage()]
    assert 1 <= len(refused) <= 3


def test_reads_by_the_real_id_of_a_run_created_late_wait_for_what_was_logged_before(
    late: LateService, spool: Path
) -> None:
    session = late.session(spool)
    exp = sm.Experiment.create("read-late", session=session)
    late.start()
    exp.log("loss", 0.0, step=0)
    wait_until(lambda: not is_pending_id(exp.id))
    # Filed under the run's placeholder (the events' queue does not change its key)...
    for step in range(1, 3001):
        exp.log("loss", float(step), step=step)
    # ...yet a read by the real id, from another handle, sees every one of them.
    rows = sm.compare([exp.series("loss")], session=session)
    assert len(rows) == 3001
    assert len(sm.Experiment.get(exp.id, session=session).metrics("loss")) == 3001
    session.close()


def test_a_resume_while_the_run_s_creation_waits_is_recorded(
    late: LateService, spool: Path
) -> None:
    server = late.start()
    with server.session(spool_dir=None) as first:
        killed = sm.Experiment.create("resumed-late", session=first)
        with killed.run():
            for step in range(10):
                killed.log("loss", float(step), step=step)
    server.close()
    late.server = None
    session = late.session(spool)
    exp = sm.Experiment.create("resumed-late", exist_ok=True, session=session)
    assert is_pending_id(exp.id)  # the restarted job starts during an outage
    with exp.run(resume_from=5):
        server = late.start()
        for step in range(5, 12):
            exp.log("loss", step + 0.5, step=step)
    session.close()
    assert exp.id == killed.id
    assert [text for text, _ in annotations_of(server, exp.id)] == ["resumed from step 5"]


def test_an_interrupt_while_a_record_is_queued_leaves_nothing_counted_as_waiting(
    metrics_server: LocalServer, spool: Path
) -> None:
    session = metrics_server.session(spool_dir=spool)
    exp = sm.Experiment.create("interrupted-put", session=session)
    exp.log("loss", 1.0, step=0)
    sender = session.logs.sender

    class InterruptedOnce(collections.deque):  # type: ignore[type-arg]
        """A Ctrl-C that lands on the queue's append of a control record."""

        fired = False

        def append(self, item: Any) -> None:
            if isinstance(item, ControlRecord) and not self.fired:
                self.fired = True
                raise KeyboardInterrupt
            super().append(item)

    sender._queue = InterruptedOnce(sender._queue)
    with pytest.raises(KeyboardInterrupt):
        sender.put_control(ControlRecord.annotation(exp.id, "lost to Ctrl-C", {}))
    # Never queued, so never waited for: the run's later changes are not held behind it.
    assert sender.controls_pending() == 0
    assert sender.put_control(ControlRecord.annotation(exp.id, "after", {}))
    wait_until(lambda: sender.controls_pending() == 0, timeout=10)
    session.close()
    assert [text for text, _ in annotations_of(metrics_server, exp.id)] == ["after"]


def test_offline_events_are_reported_parked_not_stored(late: LateService, spool: Path) -> None:
    session = late.session(spool, offline=True)
    exp = sm.Experiment.create("parked", session=session)
    for step in range(5):
        exp.log("loss", 1.0, step=step)
    assert exp.flush(timeout=30) == 0  # nothing was sent, nothing stored: no error either
    for step in range(5, 8):
        exp.log("loss", 1.0, step=step)
    settled = session.logs.wait([exp.id], 30)
    assert settled is not None
    assert (settled.stored, settled.parked, settled.pending) == (0, 3, 0)
    session.close()
    assert len(list(spool.rglob("b-*.jsonl"))) >= 1  # all of them wait for sync


def test_a_run_waiting_for_its_creation_does_not_hold_up_the_other_runs(
    metrics_server: LocalServer, spool: Path
) -> None:
    session = metrics_server.session(spool_dir=spool, retry=FAST)
    flowing = sm.Experiment.create("flowing", session=session)
    metrics_server.faults.fail_next("create_experiment", status=503, times=1_000_000)
    stuck = sm.Experiment.create("stuck", session=session)
    assert is_pending_id(stuck.id)  # its creation keeps failing: its batches wait
    for step in range(MAX_IN_FLIGHT * 1000 + 500):  # more full batches than delivery threads
        stuck.log("loss", float(step), step=step)
    for step in range(10):
        flowing.log("loss", float(step), step=step)
    assert flowing.flush(timeout=15) == 10  # not one request blocked behind the other run
    assert stuck.pending_logs == MAX_IN_FLIGHT * 1000 + 500
    metrics_server.faults.clear()
    assert stuck.flush(timeout=60) == MAX_IN_FLIGHT * 1000 + 500
    session.close()
    assert len(read_back(metrics_server, "stuck")[1]) == MAX_IN_FLIGHT * 1000 + 500
