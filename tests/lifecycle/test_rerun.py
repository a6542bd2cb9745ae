"""A notebook cell run again never silently doubles a run: a run that has finished (``done``
or ``error``) is refused as a target of new logging before anything is written, with a
message naming the choices (a new slug, ``resume_from=<step>``, or ``resume_from=0`` read
with ``last_per_step=True``). Logging into a run this process ended itself stays allowed;
``ingest()`` stores a list sent again once. Framework integrations go to the next free run.
Against the real local server.
"""

from __future__ import annotations

import logging
import pickle

import pytest

import syvain_metrics as sm
from syvain_metrics.integrations.framework_run import FrameworkRun
from syvain_metrics.testing import LocalServer

STEPS = 20
SWEEP = [("sgd", 0.1), ("sgd", 0.01), ("adam", 0.01)]


def notebook_cell(folder_name: str = "lr-sweep") -> None:
    """The README's notebook snippet, made small."""
    sweep = sm.Folder.create(folder_name, exist_ok=True)
    for optimizer, lr in SWEEP:
        run = sm.Experiment.create(
            f"{optimizer}-{lr}",
            metadata={"optimizer": optimizer, "lr": lr},
            folder=sweep,
            exist_ok=True,
        )
        with run.run():
            for step in range(STEPS):
                run.log("loss", 2 / (1 + lr * step), step=step, metadata={"split": "train"})


def by_slug(slug: str) -> sm.Experiment:
    (found,) = sm.Experiment.list(slug=slug)
    return found


def test_the_readme_cell_run_twice_is_refused_before_anything_is_written(
    metrics_server: LocalServer, metrics_session: sm.Session
) -> None:
    notebook_cell()
    before = {slug: by_slug(slug) for slug in (f"{o}-{lr}" for o, lr in SWEEP)}
    assert {run.status for run in before.values()} == {"done"}

    with pytest.raises(sm.RunFinishedError) as refused:
        notebook_cell()  # the second run of the cell

    error = refused.value
    assert isinstance(error, sm.MetricsApiError)
    assert isinstance(error, ValueError)
    assert (error.slug, error.status) == ("sgd-0.1", "done")
    text = str(error)
    assert text.startswith("Run 'sgd-0.1' has already finished (done).")
    assert "store every value twice" in text
    assert "sm.Experiment.create('sgd-0.1-2', ...)" in text
    assert "run.run(resume_from=<step>)" in text
    assert "run.run(resume_from=0)" in text
    assert "last_per_step=True" in text
    assert metrics_server.api_key not in text
    assert metrics_server.api_key not in repr(error)
    for slug, earlier in before.items():
        now = by_slug(slug)
        assert now.status == "done"
        assert now.updated_at_ms == earlier.updated_at_ms  # no status change, not even back
        assert now.done_at_ms == earlier.done_at_ms
        assert now.summary("loss", how=("count",)) == {"loss[split=train]:count": STEPS}
        assert now.annotations() == []


def test_a_run_this_process_ended_is_refused_by_run_and_start_but_takes_late_values(
    metrics_session: sm.Session,
) -> None:
    exp = sm.Experiment.create("eval-after")
    with exp.run():
        exp.log("loss", 1.0, step=0)
    exp.log("test_acc", 0.9, step=0)  # an evaluation after the training, same object
    exp.flush()
    with pytest.raises(sm.RunFinishedError, match=r"'eval-after' has already finished \(done\)"):
        exp.run()
    with pytest.raises(sm.RunFinishedError):
        exp.start()
    stored = sm.Experiment.get(exp.id)
    assert stored.status == "done"
    assert stored.summary(["loss", "test_acc"], how=("count",)) == {
        "loss:count": 1,
        "test_acc:count": 1,
    }


def test_a_run_that_ended_in_error_is_refused_with_its_status(
    metrics_session: sm.Session,
) -> None:
    exp = sm.Experiment.create("crashed")

    def crash() -> None:
        with exp.run():
            exp.log("loss", 1.0, step=0)
            raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        crash()
    again = sm.Experiment.create("crashed", exist_ok=True)
    assert again.status == "error"
    with pytest.raises(sm.RunFinishedError, match=r"has already finished \(error\)"):
        again.run()


@pytest.mark.parametrize("arrival", ["create", "get", "list"])
def test_log_into_a_run_that_arrived_finished_raises_before_queueing(
    metrics_session: sm.Session, arrival: str
) -> None:
    first = sm.Experiment.create("arrived")
    with first.run():
        first.log("loss", 1.0, step=0)
    if arrival == "create":
        exp = sm.Experiment.create("arrived", exist_ok=True)
    elif arrival == "get":
        exp = sm.Experiment.get(first.id)
    else:
        exp = by_slug("arrived")
    with pytest.raises(sm.RunFinishedError):
        exp.log("loss", 2.0, step=0)
    with pytest.raises(sm.RunFinishedError):
        exp.log({"loss": 2.0, "acc": 0.5}, step=0)
    assert exp.pending_logs == 0
    assert exp.summary("loss", how=("count",)) == {"loss:count": 1}
    assert exp.annotations() == []
    assert sm.Experiment.get(first.id).status == "done"


def test_resume_from_zero_then_last_per_step_reads_show_the_newest_values(
    metrics_session: sm.Session,
) -> None:
    exp = sm.Experiment.create("again", exist_ok=True)
    with exp.run():
        for step in range(STEPS):
            exp.log("loss", float(step), step=step)
    exp = sm.Experiment.create("again", exist_ok=True)  # the cell run again
    with exp.run(resume_from=0):
        for step in range(STEPS // 2):  # this time the loop stops half way
            exp.log("loss", 100.0 + step, step=step)

    newest = [100.0 + s for s in range(STEPS // 2)] + [float(s) for s in range(STEPS // 2, STEPS)]
    rows = exp.metrics("loss", last_per_step=True)
    assert rows.steps == list(range(STEPS))  # one value per step
    assert rows.values == newest  # the re-run's where it logged, the old ones after
    assert exp.metrics("loss").values.count(0.0) == 1  # both copies are stored
    assert len(exp.metrics("loss")) == STEPS + STEPS // 2
    assert exp.summary("loss", how=("count", "first", "max"), last_per_step=True) == {
        "loss:count": STEPS,
        "loss:first": 100.0,
        "loss:max": 109.0,
    }
    compared = sm.compare([exp.series("loss")], last_per_step=True)
    assert compared.values == newest
    assert sm.Experiment.list(slug="again").summary(["loss"], how=("count",), last_per_step=True)[
        "loss:count"
    ].tolist() == [STEPS]
    assert exp.refresh().status == "done"
    assert [a.text for a in exp.annotations()] == ["resumed from step 0"]


def test_resume_from_a_step_continues_a_finished_run_and_a_new_slug_starts_afresh(
    metrics_session: sm.Session,
) -> None:
    exp = sm.Experiment.create("sgd-0.1")
    with exp.run():
        exp.log("loss", 1.0, step=0)
    exp = sm.Experiment.get(exp.id)
    with exp.run(resume_from=1):
        exp.log("loss", 0.5, step=1)
    assert exp.metrics("loss").steps == [0, 1]

    fresh = sm.Experiment.create("sgd-0.1-2", exist_ok=True)  # what the message proposes
    with fresh.run():
        fresh.log("loss", 0.9, step=0)
    assert fresh.refresh().status == "done"
    assert fresh.metrics("loss").values == [0.9]


def test_ingest_into_a_finished_run_sent_twice_stores_it_once(
    metrics_session: sm.Session,
) -> None:
    exp = sm.Experiment.create("ingested")
    with exp.run():
        pass
    records = [{"name": "loss", "value": 1 / (s + 1), "step": s} for s in range(5)]
    exp = sm.Experiment.create("ingested", exist_ok=True)
    assert exp.ingest(records, sync=True).count == 5
    assert exp.ingest(records, sync=True).count == 5  # the cell run again
    assert exp.summary("loss", how=("count",)) == {"loss:count": 5}


def test_the_error_pickles_with_its_fields() -> None:
    error = sm.RunFinishedError("Run 'a' has already finished (done).", slug="a", status="done")
    copy = pickle.loads(pickle.dumps(error))
    assert (str(copy), copy.slug, copy.status) == (str(error), "a", "done")


# -- framework integrations ----------------------------------------------------------------


def train(run: FrameworkRun, value: float, *, resume_from: int | None = None) -> None:
    run.start(resume_from=resume_from)
    first = resume_from or 0
    for step in range(first, first + 3):
        run.log({"loss": value + step}, step=step)
    run.end()


def test_a_framework_training_into_a_finished_slug_goes_to_the_next_free_run(
    metrics_session: sm.Session, caplog: pytest.LogCaptureFixture
) -> None:
    train(FrameworkRun("fit-1", framework="test"), 0.0)
    with caplog.at_level(logging.WARNING, logger="syvain_metrics"):
        second = FrameworkRun("fit-1", framework="test")
        train(second, 10.0)
    assert second.slug == "fit-1-2"
    told = [r.getMessage() for r in caplog.records if "has already finished" in r.getMessage()]
    assert len(told) == 1
    assert "'fit-1'" in told[0]
    assert "'fit-1-2'" in told[0]
    third = FrameworkRun("fit-1", framework="test")
    third.configure({"lr": 0.1})
    train(third, 20.0)
    assert third.slug == "fit-1-3"

    assert by_slug("fit-1").metrics("loss").values == [0.0, 1.0, 2.0]  # untouched
    assert by_slug("fit-1-2").metrics("loss").values == [10.0, 11.0, 12.0]
    assert by_slug("fit-1-3").metrics("loss").values == [20.0, 21.0, 22.0]
    assert by_slug("fit-1-3").metadata.get("lr") == 0.1
    assert {by_slug(s).status for s in ("fit-1", "fit-1-2", "fit-1-3")} == {"done"}


def test_a_framework_resuming_a_finished_run_continues_it(metrics_session: sm.Session) -> None:
    train(FrameworkRun("fit-2", framework="test"), 0.0)
    resumed = FrameworkRun("fit-2", framework="test")
    train(resumed, 0.0, resume_from=3)
    assert resumed.slug == "fit-2"
    assert by_slug("fit-2").metrics("loss").steps == [0, 1, 2, 3, 4, 5]
    assert [s.slug for s in sm.Experiment.list(search="fit-2")] == ["fit-2"]


def test_notes_given_before_the_start_go_to_the_run_the_start_chooses(
    metrics_session: sm.Session,
) -> None:
    train(FrameworkRun("fit-3", framework="test"), 0.0)
    run = FrameworkRun("fit-3", framework="test")
    run.annotate("warm start", {"step": 0})  # the finished run is found, nothing written
    train(run, 1.0)
    assert run.slug == "fit-3-2"
    assert by_slug("fit-3").annotations() == []
    assert [a.text for a in by_slug("fit-3-2").annotations()] == ["warm start"]


def test_reopening_enters_a_run_this_process_ended(metrics_session: sm.Session) -> None:
    fit = FrameworkRun("fit-4", framework="test")
    train(fit, 0.0)
    stage = FrameworkRun(experiment=fit.experiment, framework="test").reopening()
    stage.log({"test_loss": 0.5}, step=2)
    stage.end()
    assert stage.slug == "fit-4"
    exp = by_slug("fit-4")
    assert exp.status == "done"
    assert exp.metrics("test_loss").values == [0.5]


def test_other_ranks_of_a_job_log_into_the_run_rank_zero_already_ended(
    metrics_server: LocalServer, metrics_session: sm.Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    exp = sm.Experiment.create("ddp-run")
    with exp.run():
        exp.log("loss", 1.0, step=0)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with metrics_server.session(spool_dir=None, ranks="all") as rank_one:
        late = sm.Experiment.get(exp.id, session=rank_one)
        assert late.status == "done"
        late.log("loss", 2.0, step=1)  # arrived finished, yet not refused: not rank 0
        with late.run():  # nor is run(): rank 0 owns the status
            late.log("loss", 3.0, step=2)
    stored = sm.Experiment.get(exp.id)
    assert stored.status == "done"  # unchanged by rank 1
    assert [row.step for row in stored.metrics("loss")] == [0, 1, 2]
