"""Forked workers and helpers: the workers of a fork ``Pool`` used with ``with`` (whose
``__exit__`` terminates them with SIGTERM) keep every event they logged, whether or not
the pool runs inside ``run()``; a batch file left empty or torn by a killed process is
cleaned up once, never kept forever; a forked helper that outlives a killed trainer does
not keep the trainer's spool locked.

The jobs run in child processes of their own against the real local server.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

import syvain_metrics as sm
from syvain_metrics.pipeline.batch import encode_events
from syvain_metrics.pipeline.spool import CHILDREN, Spool, new_spool_name
from syvain_metrics.pipeline.spool_files import checked_line
from syvain_metrics.testing import LocalServer

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

REPETITIONS = 10
WORKERS = 4
TASKS = 8
EVENTS = 100

POOL_JOB = textwrap.dedent(
    """
    import multiprocessing, sys
    import syvain_metrics as sm

    url, api_key, spool, in_run, repetitions = sys.argv[1:6]
    session = sm.Session(api_key, host=url, spool_dir=spool)

    def work(args):
        experiment_id, task = args
        exp = sm.Experiment({{"id": experiment_id}}, session=session)
        for i in range({events}):
            exp.log("loss", float(i), step=task * 1000 + i)
        return task

    def pool(exp):
        with multiprocessing.get_context("fork").Pool({workers}) as workers:
            workers.map(work, [(exp.id, task) for task in range({tasks})])

    for repetition in range(int(repetitions)):
        exp = sm.Experiment.create(f"pool-{{repetition}}", session=session)
        if in_run == "run":
            with exp.run():
                pool(exp)
        else:
            pool(exp)
            exp.flush(timeout=60)
        print(exp.id, flush=True)
    session.close()
    """
).format(events=EVENTS, workers=WORKERS, tasks=TASKS)


def python(script: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def sync(server: LocalServer, root: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "syvain_metrics.cli", "sync", "--spool-dir", str(root)]
    command += ["--api-key", server.api_key, "--host", server.url, "--timeout", "10"]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def batch_files(root: Path) -> list[Path]:
    return sorted(path for path in root.rglob("b-*.jsonl") if path.parent.name != "damaged")


# -- a fork Pool used with `with` ---------------------------------------------------------------------


@pytest.mark.parametrize("in_run", ["flush", "run"])
def test_every_event_of_fork_pool_workers_is_stored_once(
    metrics_server: LocalServer, tmp_path: Path, in_run: str
) -> None:
    root = tmp_path / "spool"
    job = python(
        POOL_JOB, metrics_server.url, metrics_server.api_key, str(root), in_run, str(REPETITIONS)
    )

    assert job.returncode == 0, job.stderr
    experiment_ids = job.stdout.split()
    assert len(experiment_ids) == REPETITIONS
    with metrics_server.session(spool_dir=None) as session:
        for experiment_id in experiment_ids:
            exp = sm.Experiment.get(experiment_id, session=session)
            rows = exp.metrics("loss")
            steps = Counter(row.step for row in rows)
            expected = {task * 1000 + i for task in range(TASKS) for i in range(EVENTS)}
            assert set(steps) == expected, f"{len(expected - set(steps))} events lost"
            assert max(steps.values()) == 1  # none stored twice
            if in_run == "run":
                assert exp.status == "done"
    assert batch_files(root) == []  # what the workers spooled was taken over and sent


# -- empty and torn batch files ---------------------------------------------------------------------


def dead_spool(root: Path, host: str) -> Spool:
    spool = Spool.create(root / new_spool_name(), host=host)
    os.close(spool._lock_fd)  # the process is gone: its lock is free, its files stay
    return spool


def events(start: int, count: int) -> list[dict[str, object]]:
    return [
        {"client_event_id": f"e-{i}", "name": "loss", "value": float(i), "step": i}
        for i in range(start, start + count)
    ]


def test_empty_and_torn_batch_files_are_cleaned_up_once(
    metrics_server: LocalServer, tmp_path: Path
) -> None:
    root = tmp_path / "spool"
    with metrics_server.session(spool_dir=None) as session:
        experiment_id = sm.Experiment.create("torn", session=session).id
    spool = dead_spool(root, metrics_server.url)
    # Created, then killed before the first write: no byte, no event.
    (spool.directory / "b-000000001.jsonl").write_bytes(b"")
    # Killed in the middle of its second line of events.
    torn = spool.append(experiment_id, 2, [encode_events(events(0, 300))])
    spool.append(experiment_id, 2, [encode_events(events(300, 300))])
    spool.seal(torn)
    torn.write_bytes(torn.read_bytes()[:-500])
    # A header alone: the process was killed before any event of it was written.
    header = b'{"experiment_id": "%s", "format": 2}' % experiment_id.encode()
    (spool.directory / "b-000000003.jsonl").write_bytes(checked_line(header) + b"\n")
    child = dead_spool(spool.directory / CHILDREN, metrics_server.url)
    (child.directory / "b-000000001.jsonl").write_bytes(b"")

    first = sync(metrics_server, root)
    second = sync(metrics_server, root)

    assert "synced 300 events from 2 batches" in first.stdout, first.stdout + first.stderr
    assert "2 empty batch file(s) removed" in first.stdout
    assert f"damaged: {torn}: line 3 is cut short" in first.stderr  # told once, set aside
    assert first.returncode == 1  # the torn line's events are lost, and the user is told
    assert second.returncode == 0, second.stdout + second.stderr
    assert second.stdout.startswith("synced 0 events from 0 batches")
    assert batch_files(root) == []
    with metrics_server.session(spool_dir=None) as session:
        rows = sm.Experiment.get(experiment_id, session=session).metrics()
        assert sorted(row.step or 0 for row in rows) == list(range(300))


def test_an_empty_batch_file_in_a_childs_spool_is_removed_by_the_parent(
    metrics_server: LocalServer, tmp_path: Path
) -> None:
    session = metrics_server.session(spool_dir=tmp_path / "spool")
    exp = sm.Experiment.create("empty-child", session=session)
    exp.log("loss", 1.0, step=0)
    exp.flush(timeout=60)
    child = dead_spool(Path(session.spool_dir or "") / CHILDREN, metrics_server.url)
    (child.directory / "b-000000001.jsonl").write_bytes(b"")

    session.close()  # takes over the child's spool: nothing to send, nothing to report

    assert not (tmp_path / "spool").exists() or batch_files(tmp_path / "spool") == []
    assert not child.directory.exists()


# -- a forked helper outliving its trainer ---------------------------------------------------------

HELPER_JOB = textwrap.dedent(
    """
    import os, sys, time
    import syvain_metrics as sm

    url, api_key, spool = sys.argv[1:4]
    session = sm.Session(api_key, host=url, spool_dir=spool)
    exp = sm.Experiment.create("orphan-helper", session=session)
    print(exp.id, flush=True)
    for step in range(500):
        exp.log("loss", float(step), step=step)
    while True:  # the service refuses ingestion: wait until every event is on disk
        try:
            exp.flush(timeout=0.2)
        except sm.FlushError as error:
            if error.unspooled == 0 and error.pending == 500:
                break
    helper = os.fork()
    if helper == 0:  # a helper (a data loader, a watchdog) that outlives the trainer
        time.sleep(120)
        os._exit(0)
    print(helper, flush=True)
    sys.stdin.read()  # until killed
    """
)


def test_a_forked_helper_that_outlives_a_killed_trainer_does_not_hold_its_spool(
    metrics_server: LocalServer, tmp_path: Path
) -> None:
    root = tmp_path / "spool"
    metrics_server.faults.fail_next("ingest_metrics", times=10**6, status=503)
    trainer = subprocess.Popen(
        [sys.executable, "-c", HELPER_JOB, metrics_server.url, metrics_server.api_key, str(root)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    helper = 0
    try:
        assert trainer.stdout is not None
        experiment_id = trainer.stdout.readline().strip()
        helper = int(trainer.stdout.readline().strip() or 0)
        assert helper, trainer.stderr.read() if trainer.stderr else ""
        trainer.send_signal(signal.SIGKILL)
        trainer.wait(30)
        metrics_server.faults.clear()

        result = sync(metrics_server, root)

        os.kill(helper, 0)  # the helper still lives, sleeping
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.startswith("synced 500 events from 1 batches in 1 spool(s)")
        with metrics_server.session(spool_dir=None) as session:
            rows = sm.Experiment.get(experiment_id, session=session).metrics()
            assert sorted(row.step or 0 for row in rows) == list(range(500))
    finally:
        if trainer.poll() is None:
            trainer.kill()
            trainer.wait(30)
        if helper:
            os.kill(helper, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:  # reaped by init: wait until it is gone
                try:
                    os.kill(helper, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)
