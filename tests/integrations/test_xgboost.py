"""SyvainXGBoostCallback on real XGBoost training (CPU, tiny data) against the real local
server: each evaluation set x metric a series at the round's index, ``xgb.cv``'s mean and
std, continued training as one curve, the scikit-learn estimators and their copies,
failures ending ``error``, ranks other than 0 sending nothing, NaN metrics, bad arguments
and a service that is down."""

from __future__ import annotations

import copy
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import syvain_metrics as sm
from syvain_metrics.testing import LocalServer
from tests.integrations.conftest import framework
from tests.integrations.jobs import RANK_ONE, assert_nothing_sent, run_job

xgb = framework("xgboost")

from syvain_metrics.integrations.xgboost import SyvainXGBoostCallback  # noqa: E402

PARAMS = {"objective": "reg:squarederror", "max_depth": 2, "eta": 0.5, "nthread": 1}
TRAIN = {"eval_set": "train"}
VALID = {"eval_set": "valid"}


def data() -> tuple[Any, Any, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.random((120, 4))
    y = x.sum(axis=1)
    return xgb.DMatrix(x[:90], label=y[:90]), xgb.DMatrix(x[90:], label=y[90:]), x, y


def train(callback: Any, rounds: int = 5, **options: Any) -> Any:
    dtrain, dvalid, _, _ = data()
    options.setdefault("evals", [(dtrain, "train"), (dvalid, "valid")])
    more = [options.pop("more")] if "more" in options else []
    return xgb.train(
        PARAMS, dtrain, rounds, callbacks=[callback, *more], verbose_eval=False, **options
    )


def stored(slug: str) -> sm.Experiment:
    runs = [e for e in sm.Experiment.list() if e.slug == slug]
    assert len(runs) == 1, [e.slug for e in sm.Experiment.list()]
    # After the annotations and the status change still on their way (a NaN's note, say).
    return runs[0].refresh()


def test_each_eval_set_and_metric_is_a_series_at_the_round(metrics_session: sm.Session) -> None:
    history: dict[str, Any] = {}
    params = {**PARAMS, "eval_metric": ["rmse", "mae"]}
    dtrain, dvalid, _, _ = data()
    xgb.train(
        params,
        dtrain,
        5,
        evals=[(dtrain, "train"), (dvalid, "valid")],
        evals_result=history,
        verbose_eval=False,
        callbacks=[SyvainXGBoostCallback("xgb-train", metadata={"data": "v1"})],
    )
    exp = stored("xgb-train")
    assert exp.status == "done"
    assert exp.metadata["data"] == "v1"
    assert (exp.metadata["objective"], exp.metadata["max_depth"]) == ("reg:squarederror", 2)
    assert exp.metadata["eta"] == 0.5
    for metric in ("rmse", "mae"):
        for where in (TRAIN, VALID):
            rows = exp.metrics(metric, metadata=where)
            assert rows.steps == [0, 1, 2, 3, 4]
            assert rows.values == pytest.approx(history[where["eval_set"]][metric])
        assert len(exp.metrics(metric)) == 10  # each value once: 5 rounds x 2 sets
    assert sorted(c.metric_name for c in exp.catalog()) == ["mae", "rmse"]


class StopAtRound(xgb.callback.TrainingCallback):
    def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
        return bool(epoch == 2)


def test_training_stopped_early_by_another_callback_ends_done(
    metrics_session: sm.Session,
) -> None:
    booster = train(SyvainXGBoostCallback("xgb-stopped"), rounds=10, more=StopAtRound())
    assert booster.num_boosted_rounds() == 3
    exp = stored("xgb-stopped")
    assert exp.status == "done"
    assert exp.metrics("rmse", metadata=VALID).steps == [0, 1, 2]


def test_cv_logs_the_mean_and_the_std_of_each_metric(metrics_session: sm.Session) -> None:
    dtrain, _, _, _ = data()
    result = xgb.cv(PARAMS, dtrain, 4, nfold=3, seed=0, callbacks=[SyvainXGBoostCallback("xgb-cv")])
    exp = stored("xgb-cv")
    assert exp.status == "done"
    for split in ("train", "test"):
        where = {"eval_set": split}
        mean, std = exp.metrics("rmse", metadata=where), exp.metrics("rmse/std", metadata=where)
        assert mean.steps == std.steps == [0, 1, 2, 3]
        assert mean.values == pytest.approx(list(result[f"{split}-rmse-mean"]))
        assert std.values == pytest.approx(list(result[f"{split}-rmse-std"]))


def test_continued_training_continues_the_run_as_one_curve(metrics_session: sm.Session) -> None:
    first = train(SyvainXGBoostCallback("xgb-continued"), rounds=3)
    booster = train(SyvainXGBoostCallback("xgb-continued"), rounds=2, xgb_model=first)
    assert booster.num_boosted_rounds() == 5
    exp = stored("xgb-continued")
    assert exp.status == "done"
    assert exp.metrics("rmse", metadata=VALID, last_per_step=True).steps == [0, 1, 2, 3, 4]
    assert [a.annotation for a in exp.annotations()] == ["resumed from step 3"]


def test_one_callback_serves_a_training_and_its_continuation(
    metrics_session: sm.Session,
) -> None:
    callback = SyvainXGBoostCallback()
    first = train(callback, rounds=2)
    train(callback, rounds=2, xgb_model=first)
    assert callback.slug.startswith("xgboost-")
    exp = stored(callback.slug)
    assert exp.status == "done"
    assert exp.metrics("rmse", metadata=TRAIN).steps == [0, 1, 2, 3]


def test_the_scikit_learn_estimator_and_its_clones(metrics_session: sm.Session) -> None:
    sklearn_base = framework("sklearn.base")
    _, _, x, y = data()
    callback = SyvainXGBoostCallback()
    model = xgb.XGBRegressor(n_estimators=3, max_depth=2, n_jobs=1, callbacks=[callback])
    model.fit(x[:90], y[:90], eval_set=[(x[90:], y[90:])], verbose=False)
    clone = sklearn_base.clone(model)  # deep-copies the callback: a run of its own
    clone.fit(x[:90], y[:90], eval_set=[(x[90:], y[90:])], verbose=False)
    runs = sorted(e.slug for e in sm.Experiment.list())
    assert len(runs) == 2
    assert callback.slug in runs
    for slug in runs:
        exp = stored(slug)
        assert exp.status == "done"
        assert exp.metrics("rmse", metadata={"eval_set": "validation_0"}).steps == [0, 1, 2]
        assert exp.metadata["max_depth"] == 2


def test_copies_and_pickles_carry_the_options_not_the_run(metrics_session: sm.Session) -> None:
    named = SyvainXGBoostCallback("xgb-named", metadata={"team": "a"}, flush_timeout=5)
    train(named, rounds=1)
    twin = copy.deepcopy(named)
    assert twin.slug == "xgb-named"  # a slug the user gave is kept: the same run
    loaded = pickle.loads(pickle.dumps(named))
    assert loaded.slug == "xgb-named"
    train(loaded, rounds=2)  # from scratch: "xgb-named" has finished, the next free run
    assert loaded.slug == "xgb-named-2"
    assert stored("xgb-named").metrics("rmse", metadata=TRAIN).steps == [0]  # untouched
    exp = stored("xgb-named-2")
    assert exp.metadata["team"] == "a"
    assert exp.status == "done"
    assert exp.metrics("rmse", metadata=TRAIN).steps == [0, 1]


class ObjectiveError(RuntimeError):
    pass


def failing_objective(at_round: int) -> Any:
    calls = {"n": 0}

    def objective(predt: np.ndarray, dtrain: Any) -> tuple[np.ndarray, np.ndarray]:
        calls["n"] += 1
        if calls["n"] == at_round + 1:
            raise ObjectiveError(f"objective failed at round {at_round}")
        return predt - dtrain.get_label(), np.ones_like(predt)

    return objective


def test_training_that_raises_inside_the_block_ends_error(metrics_session: sm.Session) -> None:
    with pytest.raises(ObjectiveError), SyvainXGBoostCallback("xgb-fails") as callback:
        train(callback, obj=failing_objective(3))
    exp = stored("xgb-fails")
    assert (exp.status, exp.error_name, exp.error_detail) == (
        "error",
        "ObjectiveError",
        "objective failed at round 3",
    )
    assert exp.metrics("rmse", metadata=VALID).steps == [0, 1, 2]  # up to the failure


def test_training_left_open_ends_error_when_the_callback_trains_again(
    metrics_session: sm.Session,
) -> None:
    callback = SyvainXGBoostCallback("xgb-retried")
    with pytest.raises(ObjectiveError):
        train(callback, obj=failing_objective(2))  # caught: no block, no hook
    assert stored("xgb-retried").status == "running"
    train(callback, rounds=3)
    failed = stored("xgb-retried")
    assert failed.status == "error"
    assert failed.metrics("rmse", metadata=TRAIN).steps == [0, 1]
    # A fresh model: a training from scratch, the next run.
    exp = stored("xgb-retried-2")
    assert exp.status == "done"
    assert exp.metrics("rmse", metadata=TRAIN).steps == [0, 1, 2]


def test_a_nan_metric_at_one_round_training_goes_on_and_is_annotated(
    metrics_session: sm.Session,
) -> None:
    calls = {"n": 0}

    def metric(predt: np.ndarray, dmatrix: Any) -> tuple[str, float]:
        calls["n"] += 1  # called once per eval set and round: train, valid, train, ...
        return "bad", float("nan") if calls["n"] == 5 else 1.0  # round 2's train value

    booster = train(SyvainXGBoostCallback("xgb-nan"), custom_metric=metric)
    assert booster.num_boosted_rounds() == 5  # training went on
    exp = stored("xgb-nan")
    assert exp.status == "done"
    assert exp.metrics("bad", metadata=TRAIN).steps == [0, 1, 3, 4]
    assert exp.metrics("bad", metadata=VALID).steps == [0, 1, 2, 3, 4]
    notes = [a for a in exp.annotations() if a.metadata.get("metric") == "bad"]
    assert [(n.metadata["step"], n.metadata["value"]) for n in notes] == [(2, "NaN")]


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        pytest.param({"slug": ""}, "slug", id="slug"),
        pytest.param({"slug": "x" * 10_000}, "slug", id="long-slug"),
        pytest.param({"metadata": {"a": float("nan")}}, "metadata", id="metadata"),
        pytest.param({"flush_timeout": "soon"}, "flush_timeout", id="flush-timeout"),
        pytest.param({"system_metrics": -5}, "system_metrics", id="system-metrics"),
    ],
)
def test_bad_arguments_raise_and_create_nothing(
    metrics_session: sm.Session, arguments: dict[str, Any], field: str
) -> None:
    with pytest.raises(sm.MetricsValidationError) as raised:
        SyvainXGBoostCallback(**arguments)
    assert field in str(raised.value)
    assert sm.Experiment.list() == []


def test_a_service_down_at_the_start_costs_training_nothing(
    metrics_server: LocalServer, metrics_session: sm.Session
) -> None:
    metrics_server.faults.fail_next(None, times=10**6, status=503)
    booster = train(SyvainXGBoostCallback("xgb-late", flush_timeout=0.5))
    assert booster.num_boosted_rounds() == 5
    metrics_server.faults.clear()
    metrics_session.flush(timeout=60)  # the events waited in the spool: now they are stored
    exp = stored("xgb-late")
    assert exp.status == "done"
    assert exp.metrics("rmse", metadata=VALID).steps == [0, 1, 2, 3, 4]


RANK_JOB = """
import numpy as np, xgboost as xgb
import syvain_metrics as sm
from syvain_metrics.integrations.xgboost import SyvainXGBoostCallback
session = sm.Session({api_key!r}, host={url!r}, spool_dir={spool!r})
x = np.random.default_rng(0).random((50, 4))
dtrain = xgb.DMatrix(x, label=x.sum(1))
with SyvainXGBoostCallback("xgb-rank", session=session) as callback:
    xgb.train({{"nthread": 1}}, dtrain, 3, evals=[(dtrain, "train")], verbose_eval=False,
              callbacks=[callback])
session.close()
print("training done")
"""


def test_a_rank_other_than_zero_sends_nothing(metrics_server: LocalServer, tmp_path: Path) -> None:
    job = RANK_JOB.format(
        api_key=metrics_server.api_key, url=metrics_server.url, spool=str(tmp_path)
    )
    done = run_job(job, **RANK_ONE)
    assert done.returncode == 0, done.stderr
    assert "training done" in done.stdout
    assert_nothing_sent(metrics_server, tmp_path)


def test_a_worker_of_a_distributed_training_logs_nothing(
    metrics_session: sm.Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    from syvain_metrics.integrations import xgboost as integration

    monkeypatch.setattr(integration.collective, "is_distributed", lambda: True)
    monkeypatch.setattr(integration.collective, "get_rank", lambda: 1)
    with SyvainXGBoostCallback("xgb-worker") as callback:
        train(callback)
    assert sm.Experiment.list() == []


EXIT_JOB = """
import numpy as np, xgboost as xgb
import syvain_metrics as sm
from syvain_metrics.integrations.xgboost import SyvainXGBoostCallback
session = sm.Session({api_key!r}, host={url!r}, spool_dir={spool!r})
x = np.random.default_rng(0).random((50, 4))
dtrain = xgb.DMatrix(x, label=x.sum(1))
calls = []

def objective(predt, dtrain):
    calls.append(1)
    if len(calls) == 3:
        raise ValueError("gradient overflow at round 2")
    return predt - dtrain.get_label(), np.ones_like(predt)

xgb.train({{"nthread": 1}}, dtrain, 5, evals=[(dtrain, "train")], obj=objective,
          verbose_eval=False, callbacks=[SyvainXGBoostCallback("xgb-exit", session=session)])
"""


def test_training_that_ends_the_program_ends_the_run_error(
    metrics_server: LocalServer, tmp_path: Path
) -> None:
    job = EXIT_JOB.format(
        api_key=metrics_server.api_key, url=metrics_server.url, spool=str(tmp_path)
    )
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(job)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    with metrics_server.session() as session:
        exp = sm.Experiment.list(session=session)[0].refresh()
        assert (exp.slug, exp.status, exp.error_name, exp.error_detail) == (
            "xgb-exit",
            "error",
            "ValueError",
            "gradient overflow at round 2",
        )
        assert exp.metrics("rmse", metadata={"eval_set": "train"}).steps == [0, 1]


def test_early_stopping_listed_before_the_callback_still_logs_the_last_round(
    metrics_session: sm.Session,
) -> None:
    dtrain, dvalid, _, _ = data()
    stopping = xgb.callback.EarlyStopping(rounds=1, data_name="valid")
    history: dict[str, Any] = {}
    params = {**PARAMS, "eta": 1.0, "max_depth": 6}  # overfits: valid stops improving soon
    booster = xgb.train(
        params,
        dtrain,
        50,
        evals=[(dvalid, "valid")],
        evals_result=history,
        callbacks=[stopping, SyvainXGBoostCallback("xgb-stop-first")],
        verbose_eval=False,
    )
    rounds = len(history["valid"]["rmse"])
    assert rounds < 50  # early stopping did stop
    exp = stored("xgb-stop-first")
    assert exp.status == "done"
    curve = exp.metrics("rmse", metadata=VALID)
    assert curve.steps == list(range(rounds))
    assert curve.values == pytest.approx(history["valid"]["rmse"])
    assert booster is not None


def test_a_second_training_from_scratch_is_the_next_run(metrics_session: sm.Session) -> None:
    callback = SyvainXGBoostCallback("xgb-again")
    first = train(callback, rounds=3)
    train(callback, rounds=2, xgb_model=first)  # a continuation: the same run
    train(callback, rounds=2)  # from scratch: the next run
    assert callback.slug == "xgb-again-2"
    assert stored("xgb-again").metrics("rmse", metadata=VALID).steps == [0, 1, 2, 3, 4]
    again = stored("xgb-again-2")
    assert again.status == "done"
    assert again.metrics("rmse", metadata=VALID).steps == [0, 1]
