"""A job killed (-9) after step 650 and restarted from its checkpoint at step 500 continues
the same experiment: ``run(resume_from=500)`` puts it back to ``running`` and records where
it resumed, both jobs' events are stored (what the killed job left in its spool through
``syvain-metrics sync``), and every read with ``last_per_step=True`` gives one curve of
1,000 steps whose values from step 500 on are the restarted job's.

Everything runs against the real local server, the jobs in child processes.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import syvain_metrics as sm
from syvain_metrics.testing import LocalServer

NAMES = ("loss", "acc", "lr")
CHECKPOINT, FLUSHED, KILLED_AFTER, END = 500, 600, 650, 1000
RESTARTED = 0.5
"""Added to every value the restarted job logs, so a read says which job a value is from."""


def xs(line: Any) -> list[float]:
    return [float(x) for x in line.get_xdata()]


def ys(line: Any) -> list[float]:
    return [float(y) for y in line.get_ydata()]


def logged(name: str, step: int, restarted: bool) -> float:
    return step + NAMES.index(name) / 10 + (RESTARTED if restarted else 0.0)


JOB = """
import sys
import syvain_metrics as sm

url, key, spool, slug, first, last, flush_at = sys.argv[1:8]
first, last, flush_at = int(first), int(last), int(flush_at)
restarted = first > 0
session = sm.Session(key, host=url, spool_dir=spool, flush_interval=0.05,
                     retry=sm.RetryPolicy(backoff_base=0.02, delivery_backoff_cap=0.2))
exp = sm.Experiment.create(slug, exist_ok=True, session=session)
print(exp.id, flush=True)
with exp.run(resume_from=first):
    print("running", flush=True)
    sys.stdin.readline()
    for step in range(first, last + 1):
        for index, name in enumerate(("loss", "acc", "lr")):
            exp.log(name, step + index / 10 + (0.5 if restarted else 0.0), step=step)
        if step == flush_at:
            exp.flush(timeout=30)
            print("flushed", step, flush=True)
            sys.stdin.readline()
    if not restarted:  # the first job is killed here, its last events only spooled
        for _ in range(300):
            try:
                exp.flush(timeout=0.1)
            except sm.FlushError as error:
                if error.unspooled == 0:
                    print("spooled", error.pending, flush=True)
                    break
        else:
            print("spooled never", flush=True)
        sys.stdin.read()
print("done", flush=True)
"""


class Job:
    """One training job in a child process, driven line by line."""

    def __init__(self, server: LocalServer, spool: Path, first: int, last: int) -> None:
        flush_at = FLUSHED if first == 0 else -1
        self.child = subprocess.Popen(
            [
                sys.executable,
                "-c",
                JOB,
                server.url,
                server.api_key,
                str(spool),
                "preempted-run",
                str(first),
                str(last),
                str(flush_at),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.experiment_id = self.expect()

    def expect(self, prefix: str = "") -> str:
        assert self.child.stdout is not None
        line = self.child.stdout.readline()
        if not line.startswith(prefix) or not line:
            self.child.kill()
            stderr = self.child.stderr.read() if self.child.stderr else ""
            pytest.fail(f"expected {prefix!r}, the job said {line!r}: {stderr}")
        return line.strip()

    def go(self) -> None:
        assert self.child.stdin is not None
        self.child.stdin.write("\n")
        self.child.stdin.flush()

    def kill(self) -> None:
        self.child.send_signal(signal.SIGKILL)
        self.child.wait(30)

    def finish(self) -> None:
        assert self.child.stdin is not None
        self.child.stdin.close()
        assert self.child.wait(120) == 0, self.child.stderr.read() if self.child.stderr else ""


def sync(server: LocalServer, root: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "syvain_metrics.cli", "sync", "--spool-dir", str(root)]
    command += ["--api-key", server.api_key, "--host", server.url, "--timeout", "5"]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def status(server: LocalServer, experiment_id: str) -> str:
    with server.session(spool_dir=None) as session:
        return sm.Experiment.get(experiment_id, session=session).status


@pytest.fixture(scope="module")
def resumed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalServer, str]]:
    """The two jobs, run once for the reads below: the server and the experiment id."""
    root = tmp_path_factory.mktemp("spool")
    with LocalServer() as server:
        first = Job(server, root, 0, KILLED_AFTER)
        first.expect("running")
        assert status(server, first.experiment_id) == "running"
        first.go()
        first.expect(f"flushed {FLUSHED}")
        # The service goes down: what the job logs from now on stays in its spool.
        server.faults.fail_next("ingest_metrics", times=10**6, status=503)
        first.go()
        assert first.expect("spooled").split() == ["spooled", str(3 * (KILLED_AFTER - FLUSHED))]
        first.kill()
        server.faults.clear()
        assert status(server, first.experiment_id) == "running"  # killed: no end recorded
        result = sync(server, root)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"synced {3 * (KILLED_AFTER - FLUSHED)} events")

        second = Job(server, root, CHECKPOINT, END - 1)
        assert second.experiment_id == first.experiment_id  # the same run, by its slug
        second.expect("running")
        assert status(server, first.experiment_id) == "running"
        second.go()
        second.expect("done")
        second.finish()
        yield server, first.experiment_id


@pytest.fixture
def session(resumed: tuple[LocalServer, str]) -> Iterator[sm.Session]:
    server, _ = resumed
    with server.session(spool_dir=None) as opened:
        yield opened


@pytest.fixture
def run(resumed: tuple[LocalServer, str], session: sm.Session) -> sm.Experiment:
    return sm.Experiment.get(resumed[1], session=session)


def expected_values(name: str) -> list[float]:
    return [logged(name, step, restarted=step >= CHECKPOINT) for step in range(END)]


def test_the_run_is_done_and_records_where_it_resumed(run: sm.Experiment) -> None:
    assert run.status == "done"
    notes = run.annotations()
    assert [note.text for note in notes] == ["resumed from step 500"]  # not on the first launch
    assert notes[0].metadata == {"resumed_from_step": CHECKPOINT, "step": CHECKPOINT}


def test_a_plain_read_has_both_copies_of_the_steps_logged_again(run: sm.Experiment) -> None:
    rows = run.metrics("loss")
    twice = KILLED_AFTER - CHECKPOINT + 1
    assert len(rows) == END + twice
    assert sorted(s or 0 for s in rows.steps) == sorted(
        [*range(END), *range(CHECKPOINT, KILLED_AFTER + 1)]
    )
    assert run.summary(list(NAMES), how="count") == {f"{n}:count": END + twice for n in NAMES}


@pytest.mark.parametrize("name", NAMES)
def test_the_last_per_step_read_is_one_curve_of_the_restarted_values(
    run: sm.Experiment, name: str
) -> None:
    rows = run.metrics(name, last_per_step=True)
    assert rows.steps == list(range(END))
    assert rows.values == expected_values(name)


def test_every_metric_at_once_and_the_order_and_limit_of_the_read(run: sm.Experiment) -> None:
    rows = run.metrics(last_per_step=True)
    assert len(rows) == 3 * END
    assert sorted(zip(rows.names, rows.steps, strict=True)) == sorted(
        (n, s) for n in NAMES for s in range(END)
    )
    # The limit cuts the one-curve rows: cut before, steps 500-599 would come twice.
    head = run.metrics("loss", last_per_step=True, limit=600)
    assert head.steps == list(range(600))
    assert head.values == expected_values("loss")[:600]
    tail = run.metrics("loss", last_per_step=True, limit=3, sort_direction="desc")
    assert tail.steps == [999, 998, 997]
    window = run.metrics("loss", last_per_step=True, from_step=640, to_step=660)
    assert window.values == expected_values("loss")[640:661]


def test_summaries_count_one_value_per_step(
    run: sm.Experiment, resumed: tuple[LocalServer, str], session: sm.Session
) -> None:
    summary = run.summary(
        list(NAMES), how=("count", "first", "last", "last_step"), last_per_step=True
    )
    for name in NAMES:
        assert summary[f"{name}:count"] == END
        assert summary[f"{name}:first"] == logged(name, 0, restarted=False)
        assert summary[f"{name}:last"] == logged(name, END - 1, restarted=True)
        assert summary[f"{name}:last_step"] == END - 1
    pytest.importorskip("pandas")
    runs = sm.Experiment.list(slug="preempted-run", session=session)
    table = runs.summary(list(NAMES), how=("count", "mean"), last_per_step=True)
    assert table.loc["preempted-run", "loss:count"] == END
    assert table.loc["preempted-run", "loss:mean"] == pytest.approx(
        sum(expected_values("loss")) / END
    )
    assert table.loc["preempted-run", "status"] == "done"


def test_compare_reads_keep_one_value_per_step(run: sm.Experiment, session: sm.Session) -> None:
    rows = sm.compare([run.series("loss"), run.series("acc")], last_per_step=True)
    assert len(rows) == 2 * END
    by_name = {
        name: [v for n, v in zip(rows.names, rows.values, strict=True) if n == name]
        for name in ("loss", "acc")
    }
    assert sorted(by_name["acc"]) == sorted(expected_values("acc"))
    runs = sm.Experiment.list(slug="preempted-run", session=session)
    assert runs.compare("loss", last_per_step=True).values == expected_values("loss")
    assert len(runs.compare("loss")) > END


def test_frames_and_plots_show_one_curve(run: sm.Experiment, session: sm.Session) -> None:
    pytest.importorskip("pandas")
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    rows = run.metrics("loss")
    frame = rows.to_pandas(last_per_step=True)
    assert list(frame["step"]) == list(range(END))
    assert list(frame["value"]) == expected_values("loss")
    wide = rows.to_pandas(wide=True, last_per_step=True)
    assert list(wide.iloc[:, 0]) == expected_values("loss")

    line, mark = rows.plot(last_per_step=True, annotations=run.annotations()).get_lines()
    assert len(xs(line)) == END
    assert ys(line) == expected_values("loss")
    assert xs(mark) == [CHECKPOINT, CHECKPOINT]  # the resume, as a dashed line
    runs = sm.Experiment.list(slug="preempted-run", session=session)
    (line,) = runs.plot("loss", last_per_step=True).get_lines()
    assert ys(line) == expected_values("loss")
    import matplotlib.pyplot as plt

    plt.close("all")


def test_a_paged_read_refuses_last_per_step_before_any_request(
    run: sm.Experiment, resumed: tuple[LocalServer, str]
) -> None:
    server, _ = resumed
    before = server.faults.fired
    server.faults.fail_next("list_metrics", times=10, status=500)
    try:
        with pytest.raises(sm.MetricsValidationError, match="every row of the read at once"):
            run.iter_metrics("loss", last_per_step=True)
        with pytest.raises(sm.MetricsValidationError, match="every row of the read at once"):
            sm.iter_compare([run.series("loss")], last_per_step=True)
        with pytest.raises(sm.MetricsValidationError, match="last_per_step"):
            run.metrics("loss", last_per_step="yes")  # type: ignore[arg-type]
        assert server.faults.fired == before  # no read was sent
    finally:
        server.faults.clear()


# -- resume() on its own ---------------------------------------------------------------------------


def test_a_done_or_failed_run_goes_back_to_running(metrics_session: sm.Session) -> None:
    exp = sm.Experiment.create("finished")
    exp.start()
    exp.finish()
    assert exp.resume(120).status == "running"
    exp.fail("preempted")
    assert exp.resume(240).status == "running"
    assert exp.refresh().status == "running"
    assert [(n.text, n.metadata["step"]) for n in exp.annotations()] == [
        ("resumed from step 120", 120),
        ("resumed from step 240", 240),
    ]


def test_a_run_that_never_started_is_only_started(metrics_session: sm.Session) -> None:
    exp = sm.Experiment.create("first-launch")
    with exp.run(resume_from=0):
        assert exp.status == "running"
    assert exp.status == "done"
    assert list(exp.annotations()) == []


@pytest.mark.parametrize("step", [-1, True, 1.5, "10"])
def test_a_bad_step_is_refused_and_changes_nothing(
    metrics_session: sm.Session, step: object
) -> None:
    exp = sm.Experiment.create("bad-step")
    exp.start()
    exp.finish()
    with pytest.raises(sm.MetricsValidationError, match="checkpoint's step"):
        exp.resume(step)  # type: ignore[arg-type]
    with pytest.raises(sm.MetricsValidationError, match="checkpoint's step"):
        exp.resume(None)  # type: ignore[arg-type]
    with (
        pytest.raises(sm.MetricsValidationError, match="checkpoint's step"),
        exp.run(
            resume_from=step  # type: ignore[arg-type]
        ),
    ):
        pytest.fail("the block must not run")
    assert exp.refresh().status == "done"
    assert list(exp.annotations()) == []


def test_a_failed_annotation_never_stops_the_job(
    metrics_server: LocalServer, metrics_session: sm.Session, caplog: pytest.LogCaptureFixture
) -> None:
    exp = sm.Experiment.create("no-note")
    exp.start()
    metrics_server.faults.fail_next("create_annotation", status=400)
    with caplog.at_level(logging.WARNING, logger="syvain_metrics"):
        assert exp.resume(7).status == "running"
        assert list(exp.annotations()) == []  # the refusal was answered, and nothing stored
    assert "resumed from step 7" in caplog.text
