"""SyvainTracker with a real ``accelerate`` Accelerator (a plain torch loop on CPU) against the
real local server."""

from __future__ import annotations

import copy
import math
import pickle
import textwrap
from pathlib import Path
from typing import Any

import pytest

import syvain_metrics as sm
from syvain_metrics.testing import LocalServer
from tests.integrations.conftest import framework
from tests.integrations.jobs import (
    by_slug,
    run_file,
    subprocess_env,
    torchrun_two,
    wait_until,
)

torch = framework("torch")
accelerate = framework("accelerate")

from syvain_metrics.integrations.accelerate import SyvainTracker  # noqa: E402

ROOT = Path(__file__).parents[2]
FAST = sm.RetryPolicy(backoff_base=0.02, delivery_backoff_cap=0.2)


def train(
    accelerator: Any, steps: range, *, nan_at: int | None = None, fail_at: int | None = None
) -> list[float]:
    """A linear regression on random data; logs `loss` every step and `val_loss` (with
    `epoch` again) every third step, as a training script does."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model, optimizer = accelerator.prepare(model, optimizer)
    x, y = torch.randn(32, 4), torch.randn(32, 1)
    losses = []
    for step in steps:
        if step == fail_at:
            raise RuntimeError(f"diverged at step {step}")
        loss = torch.nn.functional.mse_loss(model(x), y)
        optimizer.zero_grad()
        accelerator.backward(loss)
        optimizer.step()
        value = math.nan if step == nan_at else loss.item()
        losses.append(value)
        accelerator.log({"loss": value, "epoch": 0}, step=step)
        if step % 3 == 2:
            accelerator.log({"val_loss": value * 1.1, "epoch": 0}, step=step)
    return losses


def run_script(body: str, tmp_path: Path, env: dict[str, str], *launcher: str) -> Any:
    script = tmp_path / "loop.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys
            sys.path.insert(0, {str(ROOT)!r})
            import syvain_metrics as sm
            from accelerate import Accelerator
            from syvain_metrics.integrations.accelerate import SyvainTracker
            from tests.integrations.test_accelerate import train
            sm.connect()  # from SYVAIN_METRICS_API_KEY and SYVAIN_METRICS_HOST
            """
        )
        + textwrap.dedent(body)
    )
    return run_file(script, env, *launcher)


def test_a_loop_logs_every_value_once_at_its_step(metrics_session: sm.Session) -> None:
    tracker = SyvainTracker("acc-loop", description="a linear model")
    accelerator = accelerate.Accelerator(cpu=True, log_with=[tracker])
    accelerator.init_trackers("acc", config={"lr": 0.1, "model": {"width": 4}})
    losses = train(accelerator, range(6))
    accelerator.log({"test_loss": 0.25})  # no step: the one after the largest so far
    accelerator.log({"grad": 1.0}, step=5, log_kwargs={"syvain": {"metadata": {"layer": "fc"}}})
    # Text (which accelerate lets trackers take) costs only itself; nested values are flattened.
    with pytest.warns(UserWarning, match="skipped '(note|eval/name)'") as told:
        accelerator.log({"note": "warm", "eval": {"acc": 0.75, "name": "dev"}}, step=5)
    assert len(told) == 2  # one per name
    # Text (which accelerate lets trackers take) costs only itself; nested values are flattened.
    accelerator.log({"note": "warm", "eval": {"acc": 0.75, "name": "dev"}}, step=5)
    assert accelerator.get_tracker("syvain").tracker.slug == "acc-loop"
    accelerator.end_training()

    exp = by_slug("acc-loop")
    assert exp.status == "done"
    assert exp.metadata == {"lr": 0.1, "model.width": 4}
    assert [(row.step, row.value) for row in exp.metrics("loss")] == list(enumerate(losses))
    assert [row.step for row in exp.metrics("val_loss")] == [2, 5]
    assert [row.step for row in exp.metrics("epoch")] == [0, 1, 2, 3, 4, 5]  # once per step
    assert [(row.step, row.value) for row in exp.metrics("test_loss")] == [(6, 0.25)]
    assert [(row.step, row.metadata) for row in exp.metrics("grad")] == [(5, {"layer": "fc"})]
    assert [(row.step, row.value) for row in exp.metrics("eval/acc")] == [(5, 0.75)]
    assert len(exp.metrics()) == 6 + 2 + 6 + 1 + 1 + 1


def test_constructing_the_tracker_creates_nothing(metrics_session: sm.Session) -> None:
    # accelerate builds the tracker on every process: only init_trackers' start() and the
    # first values create the run.
    tracker = SyvainTracker("acc-idle")
    accelerate.Accelerator(cpu=True, log_with=[tracker])
    assert sm.Experiment.list() == []
    tracker.finish()  # end_training() without init_trackers: nothing to end
    assert sm.Experiment.list() == []


def test_an_uncaught_exception_ends_the_run_error_at_exit(
    metrics_server: LocalServer, tmp_path: Path
) -> None:
    done = run_script(
        """
        accelerator = Accelerator(cpu=True, log_with=[SyvainTracker("acc-fails")])
        accelerator.init_trackers("acc", config={"lr": 0.1})
        train(accelerator, range(10), fail_at=4)
        accelerator.end_training()
        """,
        tmp_path,
        subprocess_env(metrics_server, tmp_path),
    )
    assert done.returncode == 1
    assert "RuntimeError: diverged at step 4" in done.stderr

    exp = by_slug("acc-fails", metrics_server.session())
    assert exp.status == "error"
    assert (exp.error_name, exp.error_detail) == ("RuntimeError", "diverged at step 4")
    assert [row.step for row in exp.metrics("loss")] == [0, 1, 2, 3]
    assert [row.step for row in exp.metrics("val_loss")] == [2]


def test_a_script_that_forgets_end_training_ends_error_at_exit(
    metrics_server: LocalServer, tmp_path: Path
) -> None:
    done = run_script(
        """
        accelerator = Accelerator(cpu=True, log_with=[SyvainTracker("acc-no-end")])
        accelerator.init_trackers("acc")
        train(accelerator, range(3))
        """,
        tmp_path,
        subprocess_env(metrics_server, tmp_path),
    )
    assert done.returncode == 0, done.stderr
    exp = by_slug("acc-no-end", metrics_server.session())
    # Without end_training() nothing says the loop finished: the run cannot be called done.
    assert exp.status == "error"
    assert exp.error_detail == "the process exited before the framework ended the run"
    assert [row.step for row in exp.metrics("loss")] == [0, 1, 2]


def test_sigterm_mid_loop_ends_the_run_terminated(
    metrics_server: LocalServer, tmp_path: Path
) -> None:
    done = run_script(
        """
        import os, signal
        accelerator = Accelerator(cpu=True, log_with=[SyvainTracker("acc-sigterm")])
        accelerator.init_trackers("acc")
        train(accelerator, range(3))
        os.kill(os.getpid(), signal.SIGTERM)  # what a scheduler does
        train(accelerator, range(3, 10))
        accelerator.end_training()
        """,
        tmp_path,
        subprocess_env(metrics_server, tmp_path),
    )
    assert done.returncode == 143, done.stderr[-3000:]
    exp = by_slug("acc-sigterm", metrics_server.session())
    assert exp.status == "error"
    assert (exp.error_name, exp.error_detail) == ("Terminated", "terminated by SIGTERM")
    assert [row.step for row in exp.metrics("loss")] == [0, 1, 2]


def test_a_nan_loss_is_annotated_and_the_loop_goes_on(metrics_session: sm.Session) -> None:
    accelerator = accelerate.Accelerator(cpu=True, log_with=[SyvainTracker("acc-nan")])
    accelerator.init_trackers("acc")
    with pytest.warns(UserWarning, match="loss became NaN at step 3"):
        losses = train(accelerator, range(6), nan_at=3)
    assert len(losses) == 6
    with pytest.warns(UserWarning, match="1 non-finite value of loss was not sent"):
        accelerator.end_training()

    exp = by_slug("acc-nan")
    wait_until(lambda: exp.refresh().status == "done")  # behind the NaN annotations
    assert [row.step for row in exp.metrics("loss")] == [0, 1, 2, 4, 5]
    notes = {note.text: note.metadata for note in exp.annotations()}
    assert notes["loss became NaN at step 3"] == {"metric": "loss", "step": 3, "value": "NaN"}


def test_a_resumed_loop_continues_the_same_run_as_one_curve(
    metrics_server: LocalServer, metrics_session: sm.Session, tmp_path: Path
) -> None:
    crashed = run_script(
        """
        accelerator = Accelerator(cpu=True, log_with=[SyvainTracker("acc-resumed")])
        accelerator.init_trackers("acc", config={"lr": 0.1})
        train(accelerator, range(10), fail_at=5)
        """,
        tmp_path,
        subprocess_env(metrics_server, tmp_path),
    )
    assert crashed.returncode == 1
    assert by_slug("acc-resumed").status == "error"

    # Restarted from the checkpoint of step 3: steps 3 and 4 are logged again.
    tracker = SyvainTracker("acc-resumed", resume_from=3)
    accelerator = accelerate.Accelerator(cpu=True, log_with=[tracker])
    accelerator.init_trackers("acc", config={"lr": 0.1})
    train(accelerator, range(3, 8))
    accelerator.end_training()

    assert len(sm.Experiment.list(slug="acc-resumed")) == 1
    exp = by_slug("acc-resumed")
    assert exp.status == "done"
    assert [row.step for row in exp.metrics("loss", last_per_step=True)] == list(range(8))
    assert [row.step for row in exp.metrics("loss")] == [0, 1, 2, 3, 3, 4, 4, 5, 6, 7]


def test_torchrun_rank_1_sends_nothing(metrics_server: LocalServer, tmp_path: Path) -> None:
    # Every rank writes as far as the SDK is concerned (SYVAIN_METRICS_RANKS=all); only the
    # tracker's main-process gate keeps rank 1 quiet, end_training() included.
    done = run_script(
        """
        import os
        rank = os.environ["RANK"]
        accelerator = Accelerator(cpu=True, log_with=[SyvainTracker(f"acc-ddp-rank-{rank}")])
        accelerator.init_trackers("acc", config={"lr": 0.1})
        train(accelerator, range(4))
        accelerator.end_training()
        print("rank", rank, "index", accelerator.process_index, "done")
        """,
        tmp_path,
        subprocess_env(metrics_server, tmp_path, SYVAIN_METRICS_RANKS="all"),
        *torchrun_two(),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rank 1 index 1 done" in done.stdout
    session = metrics_server.session()
    assert [exp.slug for exp in sm.Experiment.list(session=session)] == ["acc-ddp-rank-0"]
    exp = by_slug("acc-ddp-rank-0", session)
    assert exp.status == "done"
    assert [row.step for row in exp.metrics("loss")] == [0, 1, 2, 3]


def test_the_service_down_at_start_does_not_stop_the_loop(
    metrics_server: LocalServer, tmp_path: Path
) -> None:
    session = metrics_server.session(spool_dir=tmp_path / "spool", retry=FAST)
    metrics_server.faults.fail_next(None, times=10**6, status=503)
    tracker = SyvainTracker("acc-offline", session=session, flush_timeout=1)
    accelerator = accelerate.Accelerator(cpu=True, log_with=[tracker])
    accelerator.init_trackers("acc", config={"lr": 0.1})
    assert len(train(accelerator, range(6))) == 6
    accelerator.end_training()

    metrics_server.faults.clear()
    session.flush(timeout=30)
    exp = by_slug("acc-offline", session)
    wait_until(lambda: exp.refresh().status == "done")
    assert [row.step for row in exp.metrics("loss")] == [0, 1, 2, 3, 4, 5]
    assert exp.metadata == {"lr": 0.1}
    session.close()


def test_bad_arguments_fail_at_once_and_create_nothing(metrics_session: sm.Session) -> None:
    with pytest.raises(sm.MetricsValidationError):
        SyvainTracker("x" * 1_000)
    with pytest.raises(sm.MetricsValidationError):
        SyvainTracker("a", experiment=sm.Experiment.create("b"))
    with pytest.raises(sm.MetricsValidationError):
        SyvainTracker("c", metadata={"bad": math.nan})
    assert [exp.slug for exp in sm.Experiment.list()] == ["b"]


def test_the_tracker_itself_keeps_other_processes_quiet(
    metrics_session: sm.Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Called directly on a process that is not the main one (as end_training() calls
    # finish() on every process), the tracker does nothing.
    tracker = SyvainTracker("acc-not-main")
    monkeypatch.setattr(accelerate.PartialState, "is_main_process", property(lambda _: False))
    monkeypatch.setattr(accelerate.PartialState, "use_distributed", property(lambda _: True))
    tracker.start()
    tracker.store_init_configuration({"lr": 0.1})
    tracker.log({"loss": 0.5}, step=0)
    tracker.finish()
    monkeypatch.undo()
    assert sm.Experiment.list() == []


def test_the_tracker_pickles_and_deep_copies_with_its_options(metrics_session: sm.Session) -> None:
    tracker = SyvainTracker("acc-copied", metadata={"team": "a"})
    loaded = pickle.loads(pickle.dumps(tracker))
    twin = copy.deepcopy(tracker)
    assert loaded.tracker.slug == twin.tracker.slug == "acc-copied"
    accelerator = accelerate.Accelerator(cpu=True, log_with=[twin])
    accelerator.init_trackers("acc", config={"lr": 0.1})
    accelerator.log({"loss": 0.5}, step=0)
    accelerator.end_training()
    exp = by_slug("acc-copied")
    assert exp.status == "done"
    assert exp.metadata["team"] == "a"
    assert [row.step for row in exp.metrics("loss")] == [0]
