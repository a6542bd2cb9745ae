"""The LightGBM callback against the real local server: tiny boosters on CPU."""

from __future__ import annotations

import copy
import math
import pickle
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import syvain_metrics as sm
from syvain_metrics.client.session import Session
from syvain_metrics.testing import LocalServer
from tests.integrations.conftest import framework
from tests.integrations.jobs import RANK_ONE, assert_nothing_sent, run_job

lgb = framework("lightgbm")
np = framework("numpy")

from syvain_metrics.integrations.lightgbm import SyvainLightGBMCallback  # noqa: E402

PARAMS = {"objective": "regression", "verbose": -1, "num_leaves": 4, "learning_rate": 0.3}
FAST = sm.RetryPolicy(backoff_base=0.02, jitter=0)


def data(seed: int = 0, rows: int = 120) -> tuple[Any, Any]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 4))
    return x, x @ np.array([1.0, -2.0, 0.5, 0.0]) + rng.normal(scale=0.1, size=rows)


def datasets() -> tuple[Any, Any]:
    x, y = data(0)
    xv, yv = data(1, 60)
    train = lgb.Dataset(x, y, free_raw_data=False)
    return train, lgb.Dataset(xv, yv, reference=train, free_raw_data=False)


def only(slug: str, session: Session) -> sm.Experiment:
    found = sm.Experiment.list(slug=slug, session=session)
    assert len(found) == 1, f"{len(found)} experiments named {slug}"
    return found[0]


def series(exp: sm.Experiment, name: str, eval_set: str, **options: Any) -> list[tuple[Any, ...]]:
    rows = exp.metrics(name, metadata={"eval_set": eval_set}, **options)
    return list(zip(rows.steps, rows.values, strict=True))


def test_a_fit_logs_every_eval_set_and_metric_once_at_its_iteration(
    metrics_session: Session,
) -> None:
    train, valid = datasets()
    recorded: dict[str, Any] = {}
    params = {**PARAMS, "metric": ["l2", "l1"]}
    with SyvainLightGBMCallback("gbm-fit", metadata={"data": "toy"}) as cb:
        lgb.train(
            params,
            train,
            5,
            valid_sets=[train, valid],
            valid_names=["train", "valid"],
            callbacks=[lgb.record_evaluation(recorded), cb],
        )
    metrics_session.flush()
    exp = only("gbm-fit", metrics_session)
    assert exp.status == "done"
    assert (exp.metadata["learning_rate"], exp.metadata["data"]) == (0.3, "toy")
    for eval_set in ("train", "valid"):
        for metric in ("l2", "l1"):
            got = series(exp, metric, eval_set)
            assert [step for step, _ in got] == [0, 1, 2, 3, 4]
            assert [value for _, value in got] == pytest.approx(recorded[eval_set][metric])
    assert sorted(e.metric_name for e in exp.catalog()) == ["l1", "l2"]


def test_cv_logs_the_mean_as_the_metric_and_the_deviation_beside_it(
    metrics_session: Session,
) -> None:
    train, _ = datasets()
    cb = SyvainLightGBMCallback("gbm-cv")
    results = lgb.cv(PARAMS, train, 4, nfold=3, stratified=False, callbacks=[cb])
    metrics_session.flush()
    exp = only("gbm-cv", metrics_session)
    assert exp.status == "done"  # the last iteration ended it: no block needed
    assert [v for _, v in series(exp, "l2", "valid")] == pytest.approx(results["valid l2-mean"])
    stdv = series(exp, "l2/std", "valid")
    assert [s for s, _ in stdv] == [0, 1, 2, 3]
    assert [v for _, v in stdv] == pytest.approx(results["valid l2-stdv"])


def test_training_continued_from_init_model_continues_the_same_run_as_one_curve(
    metrics_session: Session,
) -> None:
    train, valid = datasets()
    cb = SyvainLightGBMCallback("gbm-more")
    booster = lgb.train(PARAMS, train, 3, valid_sets=[valid], callbacks=[cb])
    lgb.train(PARAMS, train, 2, valid_sets=[valid], init_model=booster, callbacks=[cb])
    # a new process would make a new callback with the same slug: a training from scratch
    # goes to the next free run (the finished one is never logged twice), then continues it
    again = SyvainLightGBMCallback("gbm-more")
    longer = lgb.train(PARAMS, train, 5, valid_sets=[valid], callbacks=[again])
    lgb.train(PARAMS, train, 2, valid_sets=[valid], init_model=longer, callbacks=[again])
    metrics_session.flush()
    assert again.run.slug == "gbm-more-2"
    first = only("gbm-more", metrics_session)
    assert [step for step, _ in series(first, "l2", "valid_0")] == list(range(5))
    notes = [a.annotation for a in first.annotations()]
    assert [n for n in notes if n.startswith("resumed")] == ["resumed from step 3"]
    exp = only("gbm-more-2", metrics_session)
    assert exp.status == "done"
    curve = series(exp, "l2", "valid_0")
    assert [step for step, _ in curve] == list(range(7))
    notes = [a.annotation for a in exp.annotations()]
    assert [n for n in notes if n.startswith("resumed")] == ["resumed from step 5"]


@pytest.mark.filterwarnings("ignore:syvain_metrics.:UserWarning")
def test_a_nan_metric_is_annotated_and_training_goes_on(metrics_session: Session) -> None:
    train, valid = datasets()

    def odd(preds: Any, dataset: Any) -> tuple[str, float, bool]:
        odd.calls += 1  # type: ignore[attr-defined]
        return "odd", math.nan if odd.calls == 2 else float(odd.calls), False  # type: ignore[attr-defined]

    odd.calls = 0  # type: ignore[attr-defined]
    with SyvainLightGBMCallback("gbm-nan") as cb:
        booster = lgb.train(PARAMS, train, 4, valid_sets=[valid], feval=odd, callbacks=[cb])
    assert booster.current_iteration() == 4
    metrics_session.flush()
    exp = only("gbm-nan", metrics_session)
    assert exp.status == "done"
    assert series(exp, "odd", "valid_0") == [(0, 1.0), (2, 3.0), (3, 4.0)]
    notes = [(a.annotation, a.metadata.get("step")) for a in exp.annotations()]
    assert [n for n in notes if n[0].startswith("odd became NaN")] == [
        ("odd became NaN at step 1", 1)
    ]


def test_an_exception_in_training_ends_the_run_in_error_with_the_values_before_it(
    metrics_session: Session,
) -> None:
    train, valid = datasets()

    def failing(preds: Any, dataset: Any) -> tuple[str, float, bool]:
        failing.calls += 1  # type: ignore[attr-defined]
        if failing.calls == 4:  # type: ignore[attr-defined]
            raise ValueError("feval broke at iteration 3")
        return "score", float(failing.calls), False  # type: ignore[attr-defined]

    failing.calls = 0  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="feval broke"), SyvainLightGBMCallback("gbm-error") as cb:
        lgb.train(PARAMS, train, 10, valid_sets=[valid], feval=failing, callbacks=[cb])
    metrics_session.flush()
    exp = only("gbm-error", metrics_session)
    assert (exp.status, exp.error_name, exp.error_detail) == (
        "error",
        "ValueError",
        "feval broke at iteration 3",
    )
    assert [s for s, _ in series(exp, "score", "valid_0")] == [0, 1, 2]


def test_early_stopping_inside_the_block_ends_the_run_done_with_the_stopping_iteration(
    metrics_session: Session,
) -> None:
    train, _ = datasets()
    recorded: dict[str, Any] = {}
    xv, _ = data(1, 60)
    noise = lgb.Dataset(xv, np.zeros(60), reference=train)  # nothing to learn: stops early
    with SyvainLightGBMCallback("gbm-early") as cb:
        booster = lgb.train(
            PARAMS,
            train,
            50,
            valid_sets=[noise],
            callbacks=[cb, lgb.early_stopping(2, verbose=False), lgb.record_evaluation(recorded)],
        )
    assert booster.best_iteration < 50
    metrics_session.flush()
    exp = only("gbm-early", metrics_session)
    assert exp.status == "done"
    logged = series(exp, "l2", "valid_0")
    # the iteration that stopped training is logged too: 2 rounds past the best one
    assert [s for s, _ in logged] == list(range(booster.best_iteration + 2))
    assert [v for _, v in logged] == pytest.approx(recorded["valid_0"]["l2"])


def run_script(server: LocalServer, tmp_path: Path, body: str, **env: str) -> int:
    script = textwrap.dedent(
        f"""
        import lightgbm as lgb, numpy as np
        import syvain_metrics as sm
        from syvain_metrics.integrations.lightgbm import SyvainLightGBMCallback
        session = sm.Session({server.api_key!r}, host={server.url!r}, spool_dir=None)
        sm.set_default_session(session)
        rng = np.random.default_rng(0)
        x = rng.normal(size=(100, 4)); y = x[:, 0] + rng.normal(scale=0.1, size=100)
        train = lgb.Dataset(x, y); valid = lgb.Dataset(x[:40], np.zeros(40), reference=train)
        params = {PARAMS!r}
        """
    ) + textwrap.dedent(body)
    return run_job(script, **env).returncode


def test_without_a_block_a_run_left_open_ends_at_exit_done_or_error_as_the_program(
    metrics_server: LocalServer, tmp_path: Path
) -> None:
    early = """
        def score():  # the model and the callback are dropped when it returns
            booster = lgb.train(params, train, 50, valid_sets=[valid], callbacks=[
                SyvainLightGBMCallback("exit-early"), lgb.early_stopping(2, verbose=False)])
            assert booster.best_iteration < 50
            return booster.best_score
        score()
    """
    failed = """
        def feval(preds, data):
            if feval.calls == 2:
                raise RuntimeError("custom metric failed")
            feval.calls += 1
            return "m", 1.0, False
        feval.calls = 0
        lgb.train(params, train, 10, valid_sets=[valid], feval=feval,
                  callbacks=[SyvainLightGBMCallback("exit-error")])
    """
    assert run_script(metrics_server, tmp_path, early) == 0
    assert run_script(metrics_server, tmp_path, failed) == 1
    with metrics_server.session(spool_dir=None) as reader:
        assert only("exit-early", reader).status == "done"
        crashed = only("exit-error", reader)
        assert (crashed.status, crashed.error_detail) == ("error", "custom metric failed")
        assert [s for s, _ in series(crashed, "m", "valid_0")] == [0, 1]


def test_a_rank_other_than_zero_sends_nothing(metrics_server: LocalServer, tmp_path: Path) -> None:
    body = """
        with SyvainLightGBMCallback("rank-one") as cb:
            lgb.train(params, train, 5, valid_sets=[valid], callbacks=[cb])
        session.close()
    """
    assert run_script(metrics_server, tmp_path, body, **RANK_ONE) == 0
    assert_nothing_sent(metrics_server)


def test_bad_arguments_raise_before_training_and_create_nothing(
    metrics_session: Session,
) -> None:
    with pytest.raises(sm.MetricsValidationError):
        SyvainLightGBMCallback("x" * 500)
    with pytest.raises(sm.MetricsValidationError):
        SyvainLightGBMCallback("gbm-bad", metadata={"lr": math.inf})
    with pytest.raises(sm.MetricsValidationError):
        SyvainLightGBMCallback("gbm-bad", experiment=sm.Experiment.create("other"))
    assert [e.slug for e in sm.Experiment.list()] == ["other"]


def test_with_the_service_down_training_completes_and_nothing_raises(
    metrics_server: LocalServer, tmp_path: Path
) -> None:
    session = metrics_server.session(spool_dir=tmp_path, retry=FAST, flush_timeout=0.2)
    metrics_server.faults.fail_next(times=10**6, status=503)
    train, valid = datasets()
    with SyvainLightGBMCallback("gbm-down", session=session, flush_timeout=0.2) as cb:
        booster = lgb.train(PARAMS, train, 5, valid_sets=[valid], callbacks=[cb])
    assert booster.current_iteration() == 5
    session.close()
    metrics_server.faults.clear()
    with metrics_server.session(spool_dir=None) as reader:
        assert list(sm.Experiment.list(session=reader)) == []  # all of it waits in the spool


def test_an_iteration_of_an_unknown_shape_is_skipped_with_a_warning_not_raised(
    metrics_session: Session, caplog: pytest.LogCaptureFixture
) -> None:
    env = SimpleNamespace(
        model=object(),
        params={},
        iteration=0,
        begin_iteration=0,
        end_iteration=3,
        evaluation_result_list=[("valid_0",)],  # no metric, no value
    )
    cb = SyvainLightGBMCallback("gbm-odd")
    cb(env)
    assert "an iteration not logged" in caplog.text
    cb.close()
    metrics_session.flush()
    assert only("gbm-odd", metrics_session).status == "done"


def test_a_second_training_from_scratch_is_the_next_run(metrics_session: Session) -> None:
    train, valid = datasets()
    cb = SyvainLightGBMCallback("gbm-again")
    booster = lgb.train(PARAMS, train, 3, valid_sets=[valid], callbacks=[cb])
    lgb.train(PARAMS, train, 2, valid_sets=[valid], init_model=booster, callbacks=[cb])
    lgb.train(PARAMS, train, 2, valid_sets=[valid], callbacks=[cb])  # from scratch
    metrics_session.flush()
    assert cb.run.slug == "gbm-again-2"
    first = only("gbm-again", metrics_session)
    assert [step for step, _ in series(first, "l2", "valid_0")] == list(range(5))
    second = only("gbm-again-2", metrics_session)
    assert second.status == "done"
    assert [step for step, _ in series(second, "l2", "valid_0")] == [0, 1]


def test_the_callback_pickles_and_deep_copies_with_its_options(metrics_session: Session) -> None:
    train, valid = datasets()
    cb = SyvainLightGBMCallback("gbm-copied", metadata={"team": "a"})
    with cb:
        lgb.train(PARAMS, train, 2, valid_sets=[valid], callbacks=[cb])
    # GridSearchCV(n_jobs=...) pickles the callbacks it is given; clone() deep-copies them.
    loaded = pickle.loads(pickle.dumps(cb))
    twin = copy.deepcopy(cb)
    assert loaded.run.slug == twin.run.slug == "gbm-copied"
    assert not twin.run.started
    assert not loaded.run.started
    lgb.train(PARAMS, train, 3, valid_sets=[valid], callbacks=[twin])  # its own new run
    metrics_session.flush()
    assert twin.run.slug == "gbm-copied-2"  # "gbm-copied" has finished: the next free run
    assert [step for step, _ in series(only("gbm-copied", metrics_session), "l2", "valid_0")] == [
        0,
        1,
    ]
    exp = only("gbm-copied-2", metrics_session)
    assert exp.metadata["team"] == "a"
    assert [step for step, _ in series(exp, "l2", "valid_0")] == [0, 1, 2]
