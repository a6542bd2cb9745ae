"""FrameworkRun, the run every framework integration drives: created lazily with the
hyperparameters, repeats at one step stored once, ended done or error, never raising into
training, and ended at interpreter exit when the framework never ended it. Against the real
local server; no framework needed."""

from __future__ import annotations

import copy
import logging
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

import syvain_metrics as sm
from syvain_metrics.client.sync import sync_spool
from syvain_metrics.integrations import unfinished
from syvain_metrics.integrations.framework_run import HYPERPARAMETERS_NOTE, FrameworkRun
from syvain_metrics.testing import LocalServer


def stored(slug: str) -> sm.Experiment:
    return next(e for e in sm.Experiment.list() if e.slug == slug)


def test_repeats_at_one_step_are_stored_once_and_changes_are_kept(
    metrics_session: sm.Session,
) -> None:
    run = FrameworkRun("repeats", framework="test")
    run.log({"loss": 1.0, "epoch": 0}, step=0)
    run.log({"val_loss": 2.0, "epoch": 0}, step=0)  # a second call at the step: epoch again
    run.log({"epoch": 0}, step=1)
    run.log({"loss": 0.5}, step=1)
    run.log({"loss": 0.4}, step=1)  # a different value at one step is a new event
    run.log({"loss": 0.3}, step=2, metadata={"split": "valid"})
    run.log({"loss": 0.3}, step=2)  # same value, other metadata: another series
    run.end()
    exp = stored("repeats")
    assert exp.status == "done"
    assert exp.metrics("epoch").steps == [0, 1]
    assert sorted(exp.metrics("loss").values) == [0.3, 0.3, 0.4, 0.5, 1.0]
    assert exp.metrics("val_loss").steps == [0]


def test_a_missing_step_follows_the_largest_so_far(metrics_session: sm.Session) -> None:
    run = FrameworkRun("auto-step", framework="test")
    run.log({"a": 1.0}, step=7)
    run.log({"a": 2.0})
    run.log({"b": 3.0})
    assert run.max_step == 9
    run.end()
    exp = stored("auto-step")
    assert exp.metrics("a").steps == [7, 8]
    assert exp.metrics("b").steps == [9]


def test_hyperparameters_before_creation_are_metadata_and_after_it_an_annotation(
    metrics_session: sm.Session,
) -> None:
    run = FrameworkRun("hparams", framework="test", metadata={"team": "vision"})
    run.configure({"lr": 0.1, "model": {"width": 64}, "label": "x" * 20_000})
    with pytest.warns(UserWarning, match="left out.*label"):
        run.log({"loss": 1.0}, step=0)  # creates the run, with what fits
    run.configure({"swa": True})
    run.end()
    exp = stored("hparams")
    assert exp.metadata["lr"] == 0.1
    assert exp.metadata["model.width"] == 64
    assert exp.metadata["team"] == "vision"
    assert "label" not in exp.metadata  # past the metadata's size: left out, not fatal
    notes = [a for a in exp.annotations() if a.annotation == HYPERPARAMETERS_NOTE]
    assert [n.metadata for n in notes] == [{"swa": True}]


def test_end_with_an_exception_records_error_and_a_second_end_changes_nothing(
    metrics_session: sm.Session,
) -> None:
    run = FrameworkRun("fails", framework="test")
    run.log({"loss": 1.0}, step=0)
    run.end(ValueError("loss diverged"))
    run.end()  # a framework calling its end hook again
    exp = stored("fails")
    assert (exp.status, exp.error_name, exp.error_detail) == (
        "error",
        "ValueError",
        "loss diverged",
    )
    assert exp.metrics("loss").values == [1.0]
    run.log({"loss": 2.0}, step=1)  # after the end: nothing more is sent
    assert exp.refresh().metrics("loss").values == [1.0]


def test_end_without_a_run_creates_nothing(metrics_session: sm.Session) -> None:
    FrameworkRun("never-used", framework="test").end(RuntimeError("failed at set-up"))
    assert [e.slug for e in sm.Experiment.list()] == []


def test_suspend_sends_everything_and_leaves_the_run_running(
    metrics_session: sm.Session,
) -> None:
    run = FrameworkRun("requeued", framework="test")
    run.log({"loss": 1.0}, step=0)
    run.suspend(timeout=10)
    exp = stored("requeued")
    assert (exp.status, exp.metrics("loss").values) == ("running", [1.0])
    unfinished.end_open_runs()  # what the exit runs: a requeued job's run stays running
    assert exp.refresh().status == "running"


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        pytest.param({"slug": "x" * 201}, "slug", id="slug"),
        pytest.param({"slug": "x", "metadata": {"a": float("nan")}}, "metadata", id="metadata"),
        pytest.param({"slug": "x", "experiment": object()}, "slug", id="both"),
        pytest.param({"slug": "x", "system_metrics": -1}, "system_metrics", id="sampling"),
        pytest.param({"slug": "x", "flush_timeout": "soon"}, "flush_timeout", id="timeout"),
        pytest.param({"slug": "x", "folder": 3}, "folder", id="folder"),
    ],
)
def test_bad_arguments_raise_before_training_and_create_nothing(
    metrics_session: sm.Session, arguments: dict[str, object], field: str
) -> None:
    with pytest.raises(sm.MetricsValidationError) as raised:
        FrameworkRun(**arguments)  # type: ignore[arg-type]
    assert field in str(raised.value)
    assert sm.Experiment.list() == []


def test_hyperparameters_of_no_known_kind_are_refused(metrics_session: sm.Session) -> None:
    run = FrameworkRun("kinds", framework="test")
    with pytest.raises(sm.MetricsValidationError, match="config"):
        run.configure(42)
    assert sm.Experiment.list() == []


def test_a_bad_metric_name_costs_only_its_own_value(
    metrics_session: sm.Session, caplog: pytest.LogCaptureFixture
) -> None:
    run = FrameworkRun("names", framework="test")
    with caplog.at_level(logging.WARNING, logger="syvain_metrics"):
        run.log({"loss": 1.0, "x" * 600: 2.0, "": 3.0, "acc": 0.5}, step=0)
    run.end()
    exp = stored("names")
    assert sorted(c.metric_name for c in exp.catalog()) == ["acc", "loss"]
    assert "left out" in caplog.text


def test_a_service_down_at_the_start_costs_training_nothing(
    metrics_server: LocalServer, metrics_session: sm.Session
) -> None:
    metrics_server.faults.fail_next("create_experiment", times=10**6, status=503)
    run = FrameworkRun("late", framework="test")
    for step in range(50):
        run.log({"loss": float(step)}, step=step)  # none of this may raise
    metrics_server.faults.clear()
    run.end()
    exp = stored("late")
    assert exp.status == "done"
    assert exp.metrics("loss").steps == list(range(50))


def test_a_start_the_service_refuses_is_logged_once_and_training_goes_on(
    metrics_server: LocalServer, metrics_session: sm.Session, caplog: pytest.LogCaptureFixture
) -> None:
    metrics_server.faults.fail_next("create_experiment", times=10**6, status=403)
    run = FrameworkRun("refused", framework="test")
    with caplog.at_level(logging.WARNING, logger="syvain_metrics"):
        for step in range(5):
            run.log({"loss": 1.0}, step=step)
        run.end()
    failures = [r for r in caplog.records if "start of run refused failed" in r.getMessage()]
    assert len(failures) == 1
    assert "training goes on without this run" in failures[0].getMessage()
    metrics_server.faults.clear()
    assert sm.Experiment.list() == []


EXIT_JOB = """
import sys
import syvain_metrics as sm
from syvain_metrics.integrations.framework_run import FrameworkRun
session = sm.Session({api_key!r}, host={url!r}, spool_dir={spool!r})
run = FrameworkRun("exit-{how}", session=session, framework="test")
run.log({{"loss": 1.0}}, step=0)
if {how!r} == "raise":
    raise ValueError("diverged at step 1")
"""


@pytest.mark.parametrize(
    ("how", "name", "detail"),
    [
        pytest.param("raise", "ValueError", "diverged at step 1", id="uncaught-exception"),
        pytest.param(
            "quiet",
            "UnfinishedRunError",
            "the process exited before the framework ended the run",
            id="no-end-hook",
        ),
    ],
)
def test_a_run_the_framework_never_ended_is_ended_at_exit(
    metrics_server: LocalServer, tmp_path: Path, how: str, name: str, detail: str
) -> None:
    job = EXIT_JOB.format(
        api_key=metrics_server.api_key, url=metrics_server.url, spool=str(tmp_path), how=how
    )
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(job)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == (1 if how == "raise" else 0), done.stderr
    with metrics_server.session() as session:
        exp = next(e for e in sm.Experiment.list(session=session) if e.slug == f"exit-{how}")
        assert (exp.status, exp.error_name, exp.error_detail) == ("error", name, detail)
        assert exp.metrics("loss").values == [1.0]


def test_a_listing_right_after_the_end_shows_the_status_that_waited_behind_a_note(
    metrics_session: sm.Session,
) -> None:
    for attempt in range(5):  # the status waits behind the NaN's annotation: a race, tried 5x
        run = FrameworkRun(f"listed-{attempt}", framework="test")
        run.log({"loss": 1.0}, step=0)
        with pytest.warns(UserWarning, match="NaN"):
            run.log({"loss": float("nan")}, step=1)
        run.end()
        assert stored(f"listed-{attempt}").status == "done"


def test_a_slow_creation_waits_in_the_spool_instead_of_losing_the_run(
    metrics_server: LocalServer, tmp_path: Path
) -> None:
    # The first try times out while the service is still creating; the next one finds the
    # same key in progress: the creation is left to the sender, the run goes on.
    metrics_server.faults.delay("create_experiment", seconds=8, times=1)
    with metrics_server.session(spool_dir=tmp_path, timeout=0.5) as session:
        run = FrameworkRun("slow", session=session, framework="test")
        for step in range(100):
            run.log({"loss": float(step)}, step=step)
        run.end()
        session.flush(timeout=30)
        exp = next(e for e in sm.Experiment.list(session=session) if e.slug == "slow")
        assert exp.status == "done"
        assert exp.metrics("loss").steps == list(range(100))
        assert [e.slug for e in sm.Experiment.list(session=session)] == ["slow"]


def test_a_step_left_out_after_a_resume_continues_after_the_checkpoint(
    metrics_session: sm.Session,
) -> None:
    first = FrameworkRun("resumed", framework="test")
    for step in range(8):
        first.log({"loss": 1.0}, step=step)
    first.end()
    again = FrameworkRun("resumed", framework="test")
    again.start(resume_from=5)
    again.log({"loss": 2.0})
    again.log({"loss": 2.0})
    again.end()
    curve = stored("resumed").metrics("loss", last_per_step=True)
    assert list(zip(curve.steps, curve.values, strict=True)) == [
        *((step, 1.0) for step in range(5)),
        (5, 2.0),
        (6, 2.0),
        (7, 1.0),
    ]


def test_threads_logging_without_steps_never_share_one(metrics_session: sm.Session) -> None:
    run = FrameworkRun("threads", framework="test")
    run.start()

    def work() -> None:
        for _ in range(2_000):
            run.log({"loss": 1.0})

    workers = [threading.Thread(target=work) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    run.end()
    assert run.max_step == 3_999
    assert sorted(stored("threads").metrics("loss").steps) == list(range(4_000))


def test_copies_keep_the_options_and_never_the_live_run(metrics_session: sm.Session) -> None:
    named = FrameworkRun("copied", framework="test", description="d", flush_timeout=5)
    named.configure({"lr": 0.1})
    named.log({"loss": 1.0}, step=0)
    folder = sm.Folder.create("copies")
    in_folder = FrameworkRun("in-folder", folder=folder, framework="test")
    assert pickle.loads(pickle.dumps(in_folder))._folder == folder.id
    for twin in (pickle.loads(pickle.dumps(named)), copy.deepcopy(named)):
        assert (twin.slug, twin.started, twin.max_step) == ("copied", False, -1)
        assert twin._config == {"lr": 0.1}
    unnamed = FrameworkRun(framework="test")
    assert (
        copy.deepcopy(unnamed).slug != unnamed.slug
    )  # copies of an unnamed run: runs of their own
    named.end()


def test_a_forked_child_that_exits_leaves_the_parents_run_running(
    metrics_session: sm.Session,
) -> None:
    run = FrameworkRun("forked", framework="test")
    run.log({"loss": 1.0}, step=0)
    pid = os.fork()
    if pid == 0:  # the child (a Pool or DataLoader worker) exits: what atexit would run
        signal.alarm(20)  # bounded, whatever happens
        try:
            unfinished.end_open_runs()
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert stored("forked").refresh().status == "running"
    run.end()
    assert stored("forked").status == "done"


OFF_MAIN_JOB = """
import os, signal, threading, time
import syvain_metrics as sm
from syvain_metrics.integrations.framework_run import FrameworkRun
session = sm.Session({api_key!r}, host={url!r}, spool_dir={spool!r})
run = FrameworkRun("off-main", session=session, framework="test")
run.log({{"loss": 1.0}}, step=0)  # the run starts on the main thread
ender = threading.Thread(target=run.end)
ender.start()
ender.join()
print("ended", flush=True)
os.kill(os.getpid(), signal.SIGTERM)
time.sleep(10)
print("still alive", flush=True)
"""


def test_sigterm_after_a_run_ended_off_the_main_thread_ends_the_process(
    metrics_server: LocalServer, tmp_path: Path
) -> None:
    job = OFF_MAIN_JOB.format(
        api_key=metrics_server.api_key, url=metrics_server.url, spool=str(tmp_path)
    )
    done = subprocess.run(
        [sys.executable, "-c", job], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.stdout.split() == ["ended"], done.stderr
    assert done.returncode == -signal.SIGTERM
    with metrics_server.session() as session:
        exp = next(e for e in sm.Experiment.list(session=session) if e.slug == "off-main")
        assert exp.status == "done"


DROPPED_JOB = """
import gc
import syvain_metrics as sm
from syvain_metrics.integrations.framework_run import FrameworkRun
session = sm.Session({api_key!r}, host={url!r}, spool_dir={spool!r})

def fit():
    run = FrameworkRun("dropped", session=session, framework="test")
    run.log({{"loss": 1.0}}, step=0)
    raise ValueError("diverged")

try:
    fit()
except ValueError:
    pass  # caught: the run is referenced by nobody now
gc.collect()
"""


def test_a_run_nobody_references_is_ended_at_exit_not_by_the_collector(
    metrics_server: LocalServer, tmp_path: Path
) -> None:
    job = DROPPED_JOB.format(
        api_key=metrics_server.api_key, url=metrics_server.url, spool=str(tmp_path)
    )
    done = subprocess.run(
        [sys.executable, "-c", job], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    with metrics_server.session() as session:
        exp = next(e for e in sm.Experiment.list(session=session) if e.slug == "dropped")
        assert (exp.status, exp.error_name) == ("error", "UnfinishedRunError")


KILLED_JOB = """
import os, signal
import syvain_metrics as sm
from syvain_metrics.integrations.framework_run import FrameworkRun
session = sm.Session({api_key!r}, host={url!r}, spool_dir={spool!r})
run = FrameworkRun("killed", session=session, framework="test")
run.start()
for step in range(2_000):
    run.log({{"loss": float(step)}}, step=step)
run.checkpoint()  # the framework saved a checkpoint at step 2,000
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_values_logged_before_a_checkpoint_survive_a_sigkill(
    metrics_server: LocalServer, tmp_path: Path
) -> None:
    # The service takes nothing before the kill: every value must come from the spool.
    metrics_server.faults.fail_next("ingest_metrics", times=10**6, status=503)
    job = KILLED_JOB.format(
        api_key=metrics_server.api_key, url=metrics_server.url, spool=str(tmp_path)
    )
    done = subprocess.run(
        [sys.executable, "-c", job], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    metrics_server.faults.clear()
    sync_spool(tmp_path, api_key=metrics_server.api_key, host=metrics_server.url)
    with metrics_server.session() as session:
        exp = next(e for e in sm.Experiment.list(session=session) if e.slug == "killed")
        assert exp.metrics("loss").steps == list(range(2_000))


def test_nested_mappings_are_flattened_and_repeats_found_through_them(
    metrics_session: sm.Session,
) -> None:
    run = FrameworkRun("nested", framework="test")
    run.log({"train": {"loss": 1.0}, "epoch": 0}, step=0)
    run.log({"train/loss": 1.0, "valid": {"loss": 2.0}}, step=0)  # train/loss again: dropped
    run.end()
    exp = stored("nested")
    assert exp.metrics("train/loss").values == [1.0]
    assert exp.metrics("valid/loss").values == [2.0]
