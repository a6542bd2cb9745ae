"""The Optuna callback against the real local server: small studies of pure-Python objectives."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import syvain_metrics as sm
from syvain_metrics.client.session import Session
from syvain_metrics.testing import LocalServer
from tests.integrations.conftest import framework

optuna = framework("optuna")

from syvain_metrics.integrations.optuna import SyvainOptunaCallback  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.ERROR)
FAST = sm.RetryPolicy(backoff_base=0.02, jitter=0)
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def objective(trial: Any) -> float:
    """Trial 1 is pruned at step 2, trial 2 fails with a ValueError, the others complete."""
    x = trial.suggest_float("x", -4.0, 4.0)
    kind = trial.suggest_categorical("kind", ["a", "b"])
    for step in range(4):
        trial.report((x - 1) ** 2 + 1.0 / (step + 1), step)
        if trial.number == 1 and step == 2:
            raise optuna.TrialPruned()
    if trial.number == 2:
        raise ValueError(f"bad kind {kind}")
    return (x - 1) ** 2


def runs_of(folder_name: str) -> dict[str, sm.Experiment]:
    (folder,) = [f for f in sm.Folder.list() if f.name == folder_name]
    return {run.slug: run for run in sm.Experiment.list(folder=folder)}


def values(run: sm.Experiment, name: str = "value") -> list[tuple[int | None, float]]:
    rows = run.metrics(name)
    return list(zip(rows.steps, rows.values, strict=True))


def check_trials(study: Any, runs: dict[str, sm.Experiment], name: str) -> None:
    assert sorted(runs) == [f"{name}-trial-{n}" for n in range(4)]
    for trial in study.trials:
        run = runs[f"{name}-trial-{trial.number}"]
        assert run.metadata["x"] == trial.params["x"]
        assert run.metadata["kind"] == trial.params["kind"]
        assert run.metadata["optuna"] == {
            "study": name,
            "trial": trial.number,
            "started": trial.datetime_start.isoformat(),
            "direction": "minimize",
        }
        reported = sorted(trial.intermediate_values.items())
        logged = values(run)
        if trial.state == optuna.trial.TrialState.COMPLETE:
            assert run.status == "done"
            assert logged == [*reported, (4, trial.value)]  # the value after the last report
        else:
            assert logged == reported
    pruned = runs[f"{name}-trial-1"]
    assert (pruned.status, pruned.error_name, pruned.error_detail) == (
        "error",
        "TrialPruned",
        "pruned at step 2",
    )


def test_each_trial_is_a_run_in_the_studys_folder_with_its_status(
    metrics_session: Session,
) -> None:
    study = optuna.create_study(study_name="sweep-a")
    cb = SyvainOptunaCallback()
    study.optimize(objective, n_trials=4, catch=(ValueError,), callbacks=[cb])
    metrics_session.flush()
    runs = runs_of("sweep-a")
    check_trials(study, runs, "sweep-a")
    failed = runs["sweep-a-trial-2"]
    assert (failed.status, failed.error_name) == ("error", "TrialFailedError")
    assert "trial 2 failed" in str(failed.error_detail)


def test_a_tracked_objective_records_exceptions_even_those_that_end_optimize(
    metrics_session: Session,
) -> None:
    study = optuna.create_study(study_name="sweep-b")
    cb = SyvainOptunaCallback(metric_name="value")
    study.optimize(cb.track(objective), n_trials=4, catch=(ValueError,), callbacks=[cb])
    runs = runs_of("sweep-b")
    check_trials(study, runs, "sweep-b")
    failed = runs["sweep-b-trial-2"]
    assert (failed.status, failed.error_name, failed.error_detail) == (
        "error",
        "ValueError",
        "bad kind " + study.trials[2].params["kind"],
    )

    @cb.track
    def crashing(trial: Any) -> float:
        trial.suggest_float("x", 0, 1)
        trial.report(0.5, 0)
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        study.optimize(crashing, n_trials=1, callbacks=[cb])
    metrics_session.flush()
    crashed = runs_of("sweep-b")["sweep-b-trial-4"]
    assert (crashed.status, crashed.error_name, crashed.error_detail) == (
        "error",
        "RuntimeError",
        "out of memory",
    )
    assert values(crashed) == [(0, 0.5)]


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_a_multi_objective_study_logs_one_series_per_objective(
    metrics_session: Session,
) -> None:
    study = optuna.create_study(study_name="sweep-c", directions=["minimize", "maximize"])
    study.set_metric_names(["loss", "accuracy"])
    cb = SyvainOptunaCallback("multi")
    study.optimize(lambda t: (t.suggest_float("x", 0, 1), 0.5), n_trials=2, callbacks=[cb])
    runs = runs_of("multi")
    assert sorted(runs) == ["sweep-c-trial-0", "sweep-c-trial-1"]
    run = runs["sweep-c-trial-0"]
    assert run.metadata["optuna"]["directions"] == ["minimize", "maximize"]
    assert values(run, "loss") == [(0, study.trials[0].values[0])]
    assert values(run, "accuracy") == [(0, 0.5)]


def test_a_study_made_again_under_its_name_finds_its_folder_and_never_reuses_a_run(
    metrics_session: Session,
) -> None:
    studies = []
    for _ in range(3):  # a notebook cell run three times: trial numbers start over
        study = optuna.create_study(study_name="again")
        cb = SyvainOptunaCallback()
        study.optimize(cb.track(lambda t: t.suggest_float("x", 0, 1)), n_trials=2, callbacks=[cb])
        studies.append(study)
    assert [f.name for f in sm.Folder.list()] == ["again"]
    runs = runs_of("again")
    slugs = {0: "again-trial-{}", 1: "again-trial-{}-2", 2: "again-trial-{}-3"}
    assert sorted(runs) == sorted(slugs[i].format(n) for i in range(3) for n in range(2))
    for i, study in enumerate(studies):
        for trial in study.trials:
            run = runs[slugs[i].format(trial.number)]
            assert (run.status, run.metadata["x"]) == ("done", trial.params["x"])
            assert values(run) == [(0, trial.value)]


def test_a_tracked_objective_without_the_callback_ends_each_run_when_the_next_trial_starts(
    metrics_session: Session, caplog: pytest.LogCaptureFixture
) -> None:
    study = optuna.create_study(study_name="no-callback")
    cb = SyvainOptunaCallback()
    study.optimize(cb.track(objective), n_trials=2)
    runs = runs_of("no-callback")
    assert runs["no-callback-trial-0"].status == "done"
    assert runs["no-callback-trial-1"].status == "error"  # pruned, ended by the objective
    assert "pass the callback to optimize" in caplog.text


def test_parameters_suggested_after_the_first_report_are_annotated(
    metrics_session: Session,
) -> None:
    def late(trial: Any) -> float:
        trial.report(1.0, 0)
        return trial.suggest_float("y", 0, 1)

    study = optuna.create_study(study_name="late")
    cb = SyvainOptunaCallback()
    study.optimize(cb.track(late), n_trials=1, callbacks=[cb])
    (run,) = runs_of("late").values()
    assert "y" not in run.metadata  # the run was created at the first report
    notes = [(a.annotation, a.metadata) for a in run.annotations()]
    assert notes == [("hyperparameters", {"y": study.trials[0].params["y"]})]
    assert values(run) == [(0, 1.0), (1, study.trials[0].value)]  # never two at one step


def test_a_rank_other_than_zero_sends_nothing(
    metrics_server: LocalServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with metrics_server.session(spool_dir=tmp_path) as session:
        cb = SyvainOptunaCallback(session=session)
        study = optuna.create_study(study_name="rank-one")
        study.optimize(cb.track(objective), n_trials=4, catch=(ValueError,), callbacks=[cb])
    monkeypatch.delenv("RANK")
    with metrics_server.session(spool_dir=None) as reader:
        assert list(sm.Experiment.list(session=reader)) == []
        assert list(sm.Folder.list(session=reader)) == []


def test_bad_arguments_raise_at_once_and_create_nothing(metrics_session: Session) -> None:
    for bad in ({"metric_name": ""}, {"metric_name": []}, {"folder": ""}, {"folder": 3}):
        with pytest.raises(sm.MetricsValidationError):
            SyvainOptunaCallback(**bad)
    assert list(sm.Folder.list()) == []


def test_with_the_service_down_optimize_completes_and_nothing_raises(
    metrics_server: LocalServer, tmp_path: Path
) -> None:
    session = metrics_server.session(spool_dir=tmp_path, retry=FAST, flush_timeout=0.2)
    metrics_server.faults.fail_next(times=10**6, status=503)
    cb = SyvainOptunaCallback(session=session, flush_timeout=0.2)
    study = optuna.create_study(study_name="down")
    study.optimize(cb.track(objective), n_trials=4, catch=(ValueError,), callbacks=[cb])
    assert len(study.trials) == 4
    session.close()
    metrics_server.faults.clear()
    with metrics_server.session(spool_dir=None) as reader:
        assert list(sm.Experiment.list(session=reader)) == []


# -- the example notebook ---------------------------------------------------------------------


def test_the_optuna_sweep_notebook_runs_and_draws_its_figures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nbformat = framework("nbformat")
    nbclient = framework("nbclient")
    for name in list(os.environ):
        if name.startswith("SYVAIN_METRICS_") and name != "SYVAIN_METRICS_HOME":
            monkeypatch.delenv(name)  # the data file stays the test's own (tests/conftest.py)
    monkeypatch.setenv("SYVAIN_METRICS_SPOOL_DIR", str(tmp_path / "spool"))
    monkeypatch.delenv("MPLBACKEND", raising=False)
    book = nbformat.read(EXAMPLES / "optuna_sweep.ipynb", as_version=4)
    client = nbclient.NotebookClient(
        book, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    outputs = [o for cell in book.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    errors = [o.text for o in outputs if o.output_type == "stream" and o.name == "stderr"]
    # Optuna imports tqdm.auto, which warns in a kernel without ipywidgets (not an extra here)
    assert [text for text in errors if "IProgress not found" not in text] == []
    assert len([o for o in outputs if "image/png" in o.get("data", {})]) == 2
    tables = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert any("trial-0" in table for table in tables)  # the runs table
    assert any("value:min" in table for table in tables)  # the summary


def test_trial_runs_do_not_wait_for_a_service_that_is_down(
    metrics_server: LocalServer, tmp_path: Path
) -> None:
    # The session would wait a minute for each run's events: a trial waits for none.
    session = metrics_server.session(spool_dir=tmp_path, retry=FAST, flush_timeout=60)
    metrics_server.faults.fail_next("ingest_metrics", times=10**6, status=503)
    cb = SyvainOptunaCallback("down-sweep", session=session)
    study = optuna.create_study(study_name="down-sweep")
    done = threading.Event()

    def optimize() -> None:
        study.optimize(cb.track(objective), n_trials=4, catch=(ValueError,), callbacks=[cb])
        done.set()

    threading.Thread(target=optimize, daemon=True).start()
    # A guard against a hang, not a measure: waiting for each trial would take 4 minutes.
    assert done.wait(timeout=50)
    with metrics_server.session(spool_dir=None) as reader:
        (folder,) = sm.Folder.list(session=reader)
        runs = {run.slug: run for run in sm.Experiment.list(folder=folder, session=reader)}
        # Their events are still refused: ``done`` waits behind them (an error is recorded
        # at once), and no value is stored yet.
        statuses = [runs[f"down-sweep-trial-{n}"].status for n in range(4)]
        assert statuses == ["running", "error", "error", "running"]
        assert all(len(run.metrics("value")) == 0 for run in runs.values())

    metrics_server.faults.clear()
    session.flush(timeout=30)
    for _ in range(600):  # bounded: the statuses follow the events
        if session.logs.sender.controls_pending() == 0:
            break
        time.sleep(0.05)
    session.close()
    with metrics_server.session(spool_dir=None) as reader:
        (folder,) = sm.Folder.list(session=reader)
        runs = {run.slug: run for run in sm.Experiment.list(folder=folder, session=reader)}
        check_trials(study, runs, "down-sweep")
