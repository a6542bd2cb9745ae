"""SyvainCallback with a real Hugging Face Trainer (a two-layer BERT from a config, on CPU)
against the real local server."""

from __future__ import annotations

import copy
import math
import pickle
import textwrap
import threading
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
from tests.package.test_examples import run_example

torch = framework("torch")
transformers = framework("transformers")

from syvain_metrics.integrations.transformers import SyvainCallback  # noqa: E402

ROOT = Path(__file__).parents[2]
FAST = sm.RetryPolicy(backoff_base=0.02, delivery_backoff_cap=0.2)


def tiny_model() -> Any:
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        id2label={i: f"label-{i}-" + "x" * 200 for i in range(2)},  # longer than MLflow allows
    )
    return transformers.BertForSequenceClassification(config)


def examples(count: int = 32) -> list[dict[str, Any]]:
    generator = torch.Generator().manual_seed(1)
    return [
        {"input_ids": torch.randint(0, 50, (8,), generator=generator), "labels": i % 2}
        for i in range(count)
    ]


def arguments(tmp_path: Path, **overrides: Any) -> Any:
    options: dict[str, Any] = {
        "output_dir": str(tmp_path / "out"),
        "max_steps": 6,
        "logging_steps": 1,
        "eval_strategy": "steps",
        "eval_steps": 3,
        "report_to": "none",
        "use_cpu": True,
        "save_strategy": "no",
        "per_device_train_batch_size": 4,
        "disable_tqdm": True,
    }
    options.update(overrides)
    return transformers.TrainingArguments(**options)


class FailingTrainer(transformers.Trainer):
    """A Trainer whose loss misbehaves at one step: raises, or becomes NaN."""

    fail_at: int | None = None
    nan_at: int | None = None

    def compute_loss(self, model: Any, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        step = self.state.global_step + 1  # the step being computed
        if step == self.fail_at:
            raise RuntimeError(f"loss exploded at step {step}")
        loss = super().compute_loss(model, inputs, *args, **kwargs)
        if step == self.nan_at:
            return loss * float("nan")
        return loss


def trainer(
    tmp_path: Path, callback: SyvainCallback | None, kind: type = FailingTrainer, **overrides: Any
) -> Any:
    data = examples()
    return kind(
        model=tiny_model(),
        args=arguments(tmp_path, **overrides),
        train_dataset=data,
        eval_dataset=data[:8],
        callbacks=[callback] if callback is not None else None,
    )


def expected_points(log_history: list[dict[str, Any]]) -> set[tuple[str, int, float]]:
    """Every (name, step, value) the Trainer logged, each once (``epoch`` repeats)."""
    points: set[tuple[str, int, float]] = set()
    for entry in log_history:
        for name, value in entry.items():
            if name != "step":
                points.add((name, entry["step"], float(value)))
    return points


def stored_points(exp: sm.Experiment) -> list[tuple[str, int, float]]:
    return [(row.name, row.step, row.value) for row in exp.metrics()]


SCRIPT_HEAD = """
import sys, torch, transformers
sys.path.insert(0, {root!r})
from tests.integrations.test_transformers import FailingTrainer, arguments, examples, tiny_model
from syvain_metrics.integrations.transformers import SyvainCallback
from pathlib import Path
import syvain_metrics as sm
sm.connect()  # from SYVAIN_METRICS_API_KEY and SYVAIN_METRICS_HOST
tmp = Path({tmp!r})
"""


def run_script(body: str, tmp_path: Path, env: dict[str, str], *launcher: str) -> Any:
    script = tmp_path / "train.py"
    head = SCRIPT_HEAD.format(root=str(ROOT), tmp=str(tmp_path))
    script.write_text(head + textwrap.dedent(body))
    return run_file(script, env, *launcher)


def test_a_fit_logs_every_value_once_at_its_step(
    metrics_session: sm.Session, tmp_path: Path
) -> None:
    callback = SyvainCallback("bert-fit", description="tiny bert")
    job = trainer(tmp_path, callback)
    job.train()

    exp = by_slug("bert-fit")
    assert exp.status == "done"
    stored = stored_points(exp)
    assert len(stored) == len(set(stored))  # nothing twice, `epoch` included
    assert set(stored) == expected_points(job.state.log_history)
    names = {name for name, _, _ in stored}
    assert {"loss", "grad_norm", "learning_rate", "epoch", "eval_loss"} <= names
    # The end-of-training summary is logged at the last step.
    summary = {(n, s) for n, s, _ in stored if n in ("train_loss", "train_runtime", "total_flos")}
    assert summary == {("train_loss", 6), ("train_runtime", 6), ("total_flos", 6)}
    assert [row.step for row in exp.metrics("eval_loss")] == [3, 6]
    assert [row.step for row in exp.metrics("epoch")] == [1, 2, 3, 4, 5, 6]
    # Hyperparameters: the arguments at the top, the model's config under `model.`; the
    # long id2label labels do not stop anything.
    assert exp.metadata["max_steps"] == 6
    assert exp.metadata["learning_rate"] == pytest.approx(5e-05)
    assert exp.metadata["model.hidden_size"] == 16
    assert exp.metadata["model.id2label.0"].startswith("label-0-xxx")
    assert exp.metadata["hub_token"] == "***"  # a secret-named key: its text is never stored
    assert callback.experiment.slug == "bert-fit"


def test_evaluate_after_train_adds_to_the_finished_run(
    metrics_session: sm.Session, tmp_path: Path
) -> None:
    job = trainer(tmp_path, SyvainCallback("bert-eval-after"))
    job.train()
    job.evaluate(eval_dataset=examples(16))
    metrics_session.flush()

    exp = by_slug("bert-eval-after")
    assert exp.status == "done"
    assert [row.step for row in exp.metrics("eval_loss")] == [3, 6, 6]
    assert [row.step for row in exp.metrics("eval_runtime")] == [3, 6, 6]
    assert [row.step for row in exp.metrics("epoch")] == [1, 2, 3, 4, 5, 6]  # no repeat


def test_a_second_train_from_step_0_is_a_new_run(
    metrics_session: sm.Session, tmp_path: Path
) -> None:
    job = trainer(tmp_path, SyvainCallback("bert-twice"))
    job.train()
    job.train()  # from scratch again: its own curve

    for slug in ("bert-twice", "bert-twice-2"):
        exp = by_slug(slug)
        assert exp.status == "done"
        assert [row.step for row in exp.metrics("loss")] == [1, 2, 3, 4, 5, 6]


def test_a_fit_that_raises_ends_error_with_the_values_before_it(
    metrics_session: sm.Session, tmp_path: Path
) -> None:
    job = trainer(tmp_path, SyvainCallback("bert-fails"))
    job.fail_at = 5
    with pytest.raises(RuntimeError, match="loss exploded at step 5"):
        job.train()

    exp = by_slug("bert-fails")
    assert exp.status == "error"
    assert exp.error_name == "RuntimeError"
    assert exp.error_detail == "loss exploded at step 5"
    assert [row.step for row in exp.metrics("loss")] == [1, 2, 3, 4]
    assert [row.step for row in exp.metrics("eval_loss")] == [3]


def test_a_callback_added_late_records_the_failure_at_exit(
    metrics_server: LocalServer, tmp_path: Path
) -> None:
    # trainer.add_callback(): the first train() is not watched; the uncaught exception
    # is recorded when the interpreter exits.
    done = run_script(
        """
        data = examples()
        job = FailingTrainer(model=tiny_model(), args=arguments(tmp), train_dataset=data,
                             eval_dataset=data[:8])
        job.add_callback(SyvainCallback("bert-added-late"))
        job.fail_at = 4
        job.train()
        """,
        tmp_path,
        subprocess_env(metrics_server, tmp_path),
    )
    assert done.returncode == 1
    assert "loss exploded at step 4" in done.stderr

    exp = by_slug("bert-added-late", metrics_server.session())
    assert exp.status == "error"
    assert (exp.error_name, exp.error_detail) == ("RuntimeError", "loss exploded at step 4")
    assert [row.step for row in exp.metrics("loss")] == [1, 2, 3]


def test_a_nan_loss_is_annotated_and_training_goes_on(
    metrics_session: sm.Session, tmp_path: Path
) -> None:
    job = trainer(tmp_path, SyvainCallback("bert-nan"), logging_nan_inf_filter=False)
    job.nan_at = 3
    with pytest.warns(UserWarning, match="NaN|non-finite") as caught:
        job.train()
    told = [str(warning.message) for warning in caught]
    assert any("loss became NaN at step 3" in message for message in told)
    assert any("4 non-finite values of loss were not sent" in message for message in told)

    assert job.state.global_step == 6
    exp = by_slug("bert-nan")
    # The status travels behind the NaN annotations (applied off the training thread).
    wait_until(lambda: exp.refresh().status == "done")
    assert [row.step for row in exp.metrics("loss")] == [1, 2]  # NaN from step 3 on
    notes = {note.text: note.metadata for note in exp.annotations()}
    assert notes["loss became NaN at step 3"] == {"metric": "loss", "step": 3, "value": "NaN"}
    assert "eval_loss became NaN at step 3" in notes  # the weights are NaN from then on


def test_a_resumed_fit_continues_the_same_run_as_one_curve(
    metrics_session: sm.Session, tmp_path: Path
) -> None:
    saving = {"save_strategy": "steps", "save_steps": 3, "max_steps": 8}
    first = trainer(tmp_path, SyvainCallback("bert-resumed"), **saving)
    first.fail_at = 6
    with pytest.raises(RuntimeError):
        first.train()
    assert by_slug("bert-resumed").status == "error"

    # A new job (a new callback, the same slug) resumes from checkpoint-3.
    second = trainer(tmp_path, SyvainCallback("bert-resumed"), **saving)
    second.train(resume_from_checkpoint=True)

    runs = sm.Experiment.list(slug="bert-resumed")
    assert len(runs) == 1
    exp = by_slug("bert-resumed")
    assert exp.status == "done"
    curve = exp.metrics("loss", last_per_step=True)
    assert [row.step for row in curve] == list(range(1, 9))
    assert [row.step for row in exp.metrics("loss")] == [1, 2, 3, 4, 4, 5, 5, 6, 7, 8]
    assert [row.step for row in exp.metrics("train_loss")] == [8]


def test_hyperparameter_search_gives_one_run_per_trial(
    metrics_session: sm.Session, tmp_path: Path
) -> None:
    framework("optuna")
    data = examples()
    job = transformers.Trainer(
        model_init=tiny_model,
        args=arguments(tmp_path),
        train_dataset=data,
        eval_dataset=data[:8],
        callbacks=[SyvainCallback("bert-search", metadata={"team": "nlp"})],
    )
    best = job.hyperparameter_search(
        hp_space=lambda trial: {"learning_rate": trial.suggest_float("learning_rate", 1e-4, 1e-2)},
        backend="optuna",
        n_trials=2,
        direction="minimize",
    )
    assert best is not None

    runs = {exp.slug: exp for exp in sm.Experiment.list()}
    assert sorted(runs) == ["bert-search-trial-0", "bert-search-trial-1"]
    rates = set()
    for exp in runs.values():
        assert exp.status == "done"
        assert exp.metadata["team"] == "nlp"
        assert exp.metadata["trial"] == exp.slug.removeprefix("bert-search-")
        rate = exp.metadata["trial_params.learning_rate"]  # a column of the runs table
        assert exp.metadata["learning_rate"] == pytest.approx(rate)  # the trial's own
        rates.add(rate)
        assert [row.step for row in exp.metrics("loss")] == [1, 2, 3, 4, 5, 6]
    assert len(rates) == 2


def test_search_trials_do_not_wait_for_a_service_that_is_down(
    metrics_server: LocalServer, tmp_path: Path
) -> None:
    framework("optuna")
    # The session would wait a minute for each run's events: a trial waits for none.
    session = metrics_server.session(
        spool_dir=tmp_path / "spool", retry=sm.RetryPolicy(backoff_base=0.02), flush_timeout=60
    )
    metrics_server.faults.fail_next("ingest_metrics", times=10**6, status=503)
    data = examples()
    job = transformers.Trainer(
        model_init=tiny_model,
        args=arguments(tmp_path),
        train_dataset=data,
        eval_dataset=data[:8],
        callbacks=[SyvainCallback("bert-down", session=session)],
    )
    finished = threading.Event()

    def search() -> None:
        job.hyperparameter_search(
            hp_space=lambda trial: {"learning_rate": trial.suggest_float("lr", 1e-4, 1e-2)},
            backend="optuna",
            n_trials=3,
            direction="minimize",
        )
        finished.set()

    threading.Thread(target=search, daemon=True).start()
    # A guard against a hang, not a measure: waiting for each trial would take 3 minutes.
    assert finished.wait(timeout=100)
    slugs = [f"bert-down-trial-{n}" for n in range(3)]
    with metrics_server.session(spool_dir=None) as reader:
        # Their events are still refused: ``done`` waits behind them in the spool.
        assert [by_slug(slug, reader).status for slug in slugs] == ["running"] * 3

    metrics_server.faults.clear()
    session.flush(timeout=30)
    wait_until(lambda: session.logs.sender.controls_pending() == 0)
    session.close()
    with metrics_server.session(spool_dir=None) as reader:
        for slug in slugs:
            exp = by_slug(slug, reader)
            assert exp.status == "done"
            assert [row.step for row in exp.metrics("loss")] == [1, 2, 3, 4, 5, 6]


def test_only_the_main_process_writes(metrics_session: sm.Session, tmp_path: Path) -> None:
    # A process that is not the world's rank 0 calls nothing, whatever the launcher says.
    callback = SyvainCallback("bert-rank-1")
    state = transformers.TrainerState(is_world_process_zero=False, global_step=0)
    args, control = arguments(tmp_path), transformers.TrainerControl()
    callback.on_train_begin(args, state, control, model=tiny_model())
    state.global_step = 1
    callback.on_log(args, state, control, logs={"loss": 0.5})
    callback.on_train_end(args, state, control)

    assert sm.Experiment.list() == []


def test_torchrun_rank_1_sends_nothing(metrics_server: LocalServer, tmp_path: Path) -> None:
    # Every rank writes as far as the SDK is concerned (SYVAIN_METRICS_RANKS=all); only the
    # callback's own gate keeps rank 1 quiet.
    done = run_script(
        """
        import os
        rank = os.environ["RANK"]
        data = examples()
        job = FailingTrainer(model=tiny_model(), args=arguments(tmp, max_steps=4),
                             train_dataset=data, eval_dataset=data[:8],
                             callbacks=[SyvainCallback(f"bert-ddp-rank-{rank}")])
        job.train()
        print("rank", rank, "trained", job.state.global_step)
        """,
        tmp_path,
        subprocess_env(metrics_server, tmp_path, SYVAIN_METRICS_RANKS="all"),
        *torchrun_two(),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rank 1 trained 4" in done.stdout
    session = metrics_server.session()
    assert [exp.slug for exp in sm.Experiment.list(session=session)] == ["bert-ddp-rank-0"]
    exp = by_slug("bert-ddp-rank-0", session)
    assert exp.status == "done"
    assert [row.step for row in exp.metrics("loss")] == [1, 2, 3, 4]


def test_the_service_down_at_start_does_not_stop_training(
    metrics_server: LocalServer, metrics_session: sm.Session, tmp_path: Path
) -> None:
    session = metrics_server.session(spool_dir=tmp_path / "spool", retry=FAST)
    metrics_server.faults.fail_next(None, times=10**6, status=503)
    # flush_timeout: how long the end of training waits for the run's events; they stay in
    # the spool, sent once the service is back.
    job = trainer(tmp_path, SyvainCallback("bert-offline", session=session, flush_timeout=1))
    job.train()
    assert job.state.global_step == 6

    metrics_server.faults.clear()
    session.flush(timeout=30)
    session.close()
    exp = by_slug("bert-offline")
    assert exp.status == "done"
    assert [row.step for row in exp.metrics("loss")] == [1, 2, 3, 4, 5, 6]


def test_bad_arguments_fail_at_once_and_create_nothing(metrics_session: sm.Session) -> None:
    with pytest.raises(sm.MetricsValidationError):
        SyvainCallback("x" * 1_000)
    with pytest.raises(sm.MetricsValidationError):
        SyvainCallback("a", experiment=sm.Experiment.create("b"))
    with pytest.raises(sm.MetricsValidationError):
        SyvainCallback("c", metadata={"bad": math.nan})
    assert [exp.slug for exp in sm.Experiment.list()] == ["b"]


def test_the_example_trains_with_the_callback() -> None:
    lines = run_example("hf_trainer.py").splitlines()
    assert any(
        line.startswith("hf-trainer-") and ": done, 6 loss and 3 eval_loss points" in line
        for line in lines
    )


def test_sigterm_mid_fit_ends_the_run_terminated(
    metrics_server: LocalServer, tmp_path: Path
) -> None:
    done = run_script(
        """
        import os, signal

        class Scheduler(transformers.TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if state.global_step == 3:
                    os.kill(os.getpid(), signal.SIGTERM)  # what a scheduler does

        data = examples()
        job = FailingTrainer(model=tiny_model(), args=arguments(tmp), train_dataset=data,
                             eval_dataset=data[:8],
                             callbacks=[SyvainCallback("bert-sigterm"), Scheduler()])
        job.train()
        """,
        tmp_path,
        subprocess_env(metrics_server, tmp_path),
    )
    assert done.returncode == 143, done.stderr[-3000:]
    exp = by_slug("bert-sigterm", metrics_server.session())
    assert exp.status == "error"
    assert (exp.error_name, exp.error_detail) == ("Terminated", "terminated by SIGTERM")
    assert [row.step for row in exp.metrics("loss")] == [1, 2]  # step 3 is never logged


def test_a_pruned_trial_ends_error(metrics_session: sm.Session, tmp_path: Path) -> None:
    optuna = framework("optuna")
    data = examples()
    job = transformers.Trainer(
        model_init=tiny_model,
        args=arguments(tmp_path),
        train_dataset=data,
        eval_dataset=data[:8],
        callbacks=[SyvainCallback("bert-pruned")],
    )

    class PruneTheFirst(optuna.pruners.BasePruner):  # type: ignore[misc]
        def prune(self, study: Any, trial: Any) -> bool:
            return bool(trial.number == 0)

    job.hyperparameter_search(
        hp_space=lambda trial: {"learning_rate": trial.suggest_float("learning_rate", 1e-4, 1e-2)},
        backend="optuna",
        n_trials=2,
        pruner=PruneTheFirst(),  # asked at the first evaluation, step 3
    )

    pruned, kept = by_slug("bert-pruned-trial-0"), by_slug("bert-pruned-trial-1")
    # transformers calls on_train_end before raising TrialPruned: the run still ends error.
    assert (pruned.status, pruned.error_name) == ("error", "TrialPruned")
    assert [row.step for row in pruned.metrics("eval_loss")] == [3]
    assert kept.status == "done"
    assert [row.step for row in kept.metrics("eval_loss")] == [3, 6]


def test_a_second_train_into_a_given_experiment_is_the_next_run(
    metrics_session: sm.Session, tmp_path: Path
) -> None:
    given = sm.Experiment.create("bert-given")
    job = trainer(tmp_path, SyvainCallback(experiment=given))
    job.train()
    job.train()  # from scratch again: never the same steps twice in one run

    for slug in ("bert-given", "bert-given-2"):
        exp = by_slug(slug)
        assert exp.status == "done"
        assert [row.step for row in exp.metrics("loss")] == [1, 2, 3, 4, 5, 6]


def test_the_callback_pickles_and_deep_copies_with_its_options(
    metrics_session: sm.Session, tmp_path: Path
) -> None:
    callback = SyvainCallback("bert-copied", metadata={"team": "a"})
    loaded = pickle.loads(pickle.dumps(callback))  # ray pickles the Trainer and its callbacks
    twin = copy.deepcopy(callback)
    assert loaded.slug == twin.slug == "bert-copied"
    trainer(tmp_path, twin).train()
    exp = by_slug("bert-copied")
    assert exp.status == "done"
    assert exp.metadata["team"] == "a"
    assert [row.step for row in exp.metrics("loss")] == [1, 2, 3, 4, 5, 6]
    assert not callback._run.started  # the original is untouched


def test_a_trainer_carrying_the_callback_pickles_and_its_copy_trains(
    metrics_server: LocalServer, tmp_path: Path
) -> None:
    # In a fresh process: a Trainer that already trained holds accelerate state that no
    # pickle takes, with or without the callback.
    done = run_script(
        """
        import pickle
        data = examples()
        job = transformers.Trainer(model=tiny_model(), args=arguments(tmp), train_dataset=data,
                                   eval_dataset=data[:8], callbacks=[SyvainCallback("bert-shipped")])
        shipped = pickle.loads(pickle.dumps(job))  # what ray does to send it to a worker
        shipped.train()
        sm.get_session().close()
        """,
        tmp_path,
        subprocess_env(metrics_server, tmp_path),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    with metrics_server.session(spool_dir=None) as reader:
        exp = by_slug("bert-shipped", reader)
        assert exp.status == "done"  # the copy's train() is watched: it ended the run
        assert [row.step for row in exp.metrics("loss")] == [1, 2, 3, 4, 5, 6]
