"""``SyvainLogger`` in real Lightning fits (CPU, ``nn.Linear(4, 1)``), against the local server:
each value once at Lightning's step, hyperparameters as metadata, the run's end (done, error,
Ctrl-C, SIGTERM), rank zero only, NaN, a resumed fit, an outage, both distributions."""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import sys
import time
from argparse import Namespace
from pathlib import Path
from typing import Any

import pytest

import syvain_metrics as sm
from syvain_metrics.client.sync import sync_spool
from syvain_metrics.errors import MetricsValidationError
from syvain_metrics.testing import LocalServer
from tests.conftest import service_setting as _service_setting
from tests.integrations.conftest import framework
from tests.integrations.jobs import assert_nothing_sent, by_slug, subprocess_env
from tests.package.test_examples import run_example

torch = framework("torch")
L = framework("lightning.pytorch")
framework("pytorch_lightning")

from syvain_metrics.integrations.lightning import SyvainLogger  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


class Tiny(L.LightningModule):  # type: ignore[misc,name-defined]
    """A linear model whose training step can raise, log a NaN or interrupt at a step."""

    def __init__(
        self,
        lr: float = 0.05,
        fail_at: int | None = None,
        nan_at: int | None = None,
        **extra: Any,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch: Any, index: int) -> Any:
        if self.global_step == self.hparams.fail_at:
            raise RuntimeError(f"diverged at step {self.global_step}")
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        shown = torch.tensor(math.nan) if self.global_step == self.hparams.nan_at else loss
        self.log("train_loss", shown)
        return loss

    def validation_step(self, batch: Any, index: int) -> None:
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.layer(x), y))

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


class Recording(SyvainLogger):
    """The logger, noting every ``log_metrics`` call Lightning makes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[tuple[int | None, dict[str, float]]] = []

    def log_metrics(self, metrics: Any, step: int | None = None) -> None:
        self.calls.append((step, dict(metrics)))
        super().log_metrics(metrics, step)


def loader() -> Any:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=generator)
    y = x.sum(dim=1, keepdim=True)
    dataset = torch.utils.data.TensorDataset(x, y)
    return torch.utils.data.DataLoader(dataset, batch_size=8)


def trainer(logger: Any, **options: Any) -> Any:
    settings: dict[str, Any] = {
        "max_steps": 20,
        "log_every_n_steps": 1,
        "accelerator": "cpu",
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "logger": logger,
    }
    settings.update(options)
    return L.Trainer(**settings)


def stored(exp: sm.Experiment) -> list[tuple[str, int | None, float]]:
    return sorted((row.name, row.step, row.value) for row in exp.metrics())


def expected(
    calls: list[tuple[int | None, dict[str, float]]],
) -> list[tuple[str, int | None, float]]:
    """Each (name, step, value) Lightning passed, once (``epoch`` comes with every call)."""
    return sorted(
        {(name, step, float(value)) for step, metrics in calls for name, value in metrics.items()}
    )


def get(slug: str) -> sm.Experiment:
    """The run, once what the fit left on its way (a status behind an annotation) is applied."""
    from syvain_metrics.client.registry import get_session

    session = get_session()
    session.flush(timeout=30)
    for _ in range(600):  # bounded: the sender applies what waited behind the events
        if session.logs.sender.controls_pending() == 0:
            break
        time.sleep(0.05)
    (exp,) = sm.Experiment.list(slug=slug)
    return exp


def test_a_fit_stores_each_value_once_at_lightnings_step(metrics_session: sm.Session) -> None:
    logger = Recording("fit-1")
    trainer(logger, limit_val_batches=2).fit(Tiny(), loader(), loader())

    exp = get("fit-1")
    assert exp.status == "done"
    assert stored(exp) == expected(logger.calls)
    assert exp.metrics("train_loss").steps == list(range(20))
    # Validation comes in a second call at the step of the epoch's last training values,
    # each call with ``epoch``: stored once per step.
    assert exp.metrics("val_loss").steps == [7, 15]
    assert [step for step, _ in logger.calls].count(7) == 2
    assert exp.metrics("epoch").steps == list(range(20))
    assert exp.metadata["lr"] == 0.05
    assert logger.version == "fit-1"
    assert logger.name == "syvain"
    assert logger.experiment.id == exp.id


def test_hyperparameters_are_the_runs_metadata_flattened_and_bounded(
    metrics_session: sm.Session,
) -> None:
    model = Tiny(
        model={"width": 8, "act": "relu"},
        loss_fn=torch.nn.functional.mse_loss,
        notes="x" * 10_000,
        huge="y" * 20_000,  # past what a run's metadata holds: left out, with a warning
    )
    trainer(SyvainLogger("hp-1"), max_steps=3).fit(model, loader())

    exp = get("hp-1")
    assert exp.status == "done"
    assert exp.metadata["model.width"] == 8
    assert exp.metadata["model.act"] == "relu"
    assert exp.metadata["loss_fn"] == "mse_loss"  # a callable, by its name
    assert exp.metadata["notes"] == "x" * 10_000
    assert "huge" not in exp.metadata
    assert exp.metrics("train_loss").steps == [0, 1, 2]


def test_a_namespace_given_after_the_run_started_is_an_annotation(
    metrics_session: sm.Session,
) -> None:
    logger = SyvainLogger("hp-2")
    logger.log_metrics({"loss": 1.0}, step=0)
    logger.log_hyperparams(Namespace(lr=0.1, model={"depth": 2}))
    logger.finalize("success")

    exp = get("hp-2")
    (note,) = exp.annotations()
    assert note.text == "hyperparameters"
    assert note.metadata == {"lr": 0.1, "model.depth": 2}


def test_an_exception_in_training_ends_the_run_error_with_what_came_before(
    metrics_session: sm.Session,
) -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(RuntimeError, match="diverged at step 10"):
        trainer(SyvainLogger("fail-1")).fit(Tiny(fail_at=10), loader())

    exp = get("fail-1")
    assert exp.status == "error"
    assert exp.error_name == "RuntimeError"
    assert exp.error_detail == "diverged at step 10"
    assert exp.metrics("train_loss").steps == list(range(10))
    # The run's SIGTERM guard and Lightning's own handler are both gone.
    assert signal.getsignal(signal.SIGTERM) == before


def test_the_signal_handlers_are_back_after_a_fit(metrics_session: sm.Session) -> None:
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    trainer(SyvainLogger("handlers-1"), max_steps=3).fit(Tiny(), loader())
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
    assert get("handlers-1").status == "done"


def test_ctrl_c_from_a_callback_ends_the_run_error(metrics_session: sm.Session) -> None:
    class Interrupt(L.Callback):  # type: ignore[misc,name-defined]
        def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
            if trainer.global_step == 4:
                raise KeyboardInterrupt

    before = signal.getsignal(signal.SIGINT)
    try:
        # Lightning's answer to Ctrl-C: shut down, then sys.exit(1).
        with pytest.raises(SystemExit):
            trainer(SyvainLogger("ctrl-c-1"), callbacks=[Interrupt()]).fit(Tiny(), loader())
    finally:
        signal.signal(signal.SIGINT, before)  # Lightning ignores Ctrl-C while it shuts down

    exp = get("ctrl-c-1")
    assert exp.status == "error"
    assert exp.error_name == "KeyboardInterrupt"
    # The interrupted step's values were not logged yet: Lightning logs after the callbacks.
    assert exp.metrics("train_loss").steps == [0, 1, 2]


def test_a_nan_loss_is_annotated_and_the_fit_goes_on(metrics_session: sm.Session) -> None:
    with pytest.warns(UserWarning, match="NaN"):
        trainer(SyvainLogger("nan-1")).fit(Tiny(nan_at=5), loader())

    exp = get("nan-1")
    assert exp.status == "done"
    assert exp.metrics("train_loss").steps == [s for s in range(20) if s != 5]
    notes = [note for note in exp.annotations() if note.metadata.get("metric") == "train_loss"]
    assert [note.metadata["step"] for note in notes] == [5]


def test_a_fit_from_a_checkpoint_continues_the_run_as_one_curve(
    metrics_session: sm.Session, tmp_path: Path
) -> None:
    saving = L.callbacks.ModelCheckpoint(
        dirpath=tmp_path, every_n_train_steps=5, save_top_k=-1, filename="{step}"
    )
    with pytest.raises(RuntimeError):  # the job dies at step 12, after its checkpoint at 10
        trainer(SyvainLogger("resume-1"), enable_checkpointing=True, callbacks=[saving]).fit(
            Tiny(fail_at=12), loader()
        )
    assert get("resume-1").status == "error"

    restarted = trainer(SyvainLogger("resume-1"))
    restarted.fit(Tiny(), loader(), ckpt_path=tmp_path / "step=10.ckpt")

    exp = get("resume-1")
    assert exp.status == "done"
    raw = exp.metrics("train_loss").steps
    assert raw == sorted([*range(12), *range(10, 20)])  # 10 and 11 logged by both jobs
    assert exp.metrics("train_loss", last_per_step=True).steps == list(range(20))
    assert [note.text for note in exp.annotations()] == ["resumed from step 10"]
    assert len(sm.Experiment.list()) == 1


def test_a_second_stage_after_fit_logs_to_the_same_run(metrics_session: sm.Session) -> None:
    logger = SyvainLogger("test-after-fit")
    fitting = trainer(logger, max_steps=3)
    model = Tiny()
    fitting.fit(model, loader())
    fitting.validate(model, loader())

    exp = get("test-after-fit")
    assert exp.status == "done"
    assert exp.metrics("train_loss").steps == [0, 1, 2]
    assert exp.metrics("val_loss").steps == [3]
    assert len(sm.Experiment.list()) == 1


def test_a_cell_fitting_again_into_a_finished_run_goes_to_the_next_free_run(
    metrics_session: sm.Session, caplog: pytest.LogCaptureFixture
) -> None:
    for _ in range(2):  # the notebook cell run twice: a new logger, the same slug
        logger = SyvainLogger("cell-fit")
        trainer(logger, max_steps=3).fit(Tiny(), loader())
    assert logger.version == "cell-fit-2"
    first, second = get("cell-fit"), get("cell-fit-2")
    assert first.metrics("train_loss").steps == [0, 1, 2]  # untouched
    assert second.metrics("train_loss").steps == [0, 1, 2]
    assert (first.status, second.status) == ("done", "done")
    told = [r for r in caplog.records if "has already finished" in r.getMessage()]
    assert len(told) == 1


def test_the_service_down_at_the_start_costs_nothing_and_loses_nothing(
    metrics_server: LocalServer, tmp_path: Path
) -> None:
    session = metrics_server.session(spool_dir=tmp_path, retry=sm.RetryPolicy(backoff_base=0.02))
    metrics_server.faults.fail_next(times=10**6, status=503)
    logger = Recording("outage-1", session=session, flush_timeout=0.5)
    trainer(logger).fit(Tiny(), loader())  # nothing raised
    assert logger.calls

    metrics_server.faults.clear()
    session.flush(timeout=30)
    with metrics_server.session(spool_dir=None) as reader:
        (exp,) = sm.Experiment.list(slug="outage-1", session=reader)
        assert stored(exp) == expected(logger.calls)
        assert exp.metadata["lr"] == 0.05
    session.close()


def test_bad_arguments_fail_before_training_and_create_nothing(
    metrics_session: sm.Session,
) -> None:
    experiment = sm.Experiment.create("existing")
    bad: list[dict[str, Any]] = [
        {"slug": ""},
        {"slug": "x" * 201},
        {"slug": "ok", "metadata": {"bad": object()}},
        {"slug": "ok", "experiment": experiment},
        {"slug": "ok", "system_metrics": "often"},
        {"slug": "ok", "system_metrics": -1},
    ]
    for arguments in bad:
        with pytest.raises(MetricsValidationError):
            SyvainLogger(**arguments)
    assert [exp.slug for exp in sm.Experiment.list()] == ["existing"]


def test_the_pytorch_lightning_distribution_has_its_own_logger(
    metrics_session: sm.Session,
) -> None:
    pl = framework("pytorch_lightning")
    from syvain_metrics.integrations.pytorch_lightning import SyvainLogger as PLLogger

    class PLTiny(pl.LightningModule):  # type: ignore[misc,name-defined]
        def __init__(self, lr: float = 0.05) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.layer = torch.nn.Linear(4, 1)

        def training_step(self, batch: Any, index: int) -> Any:
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.layer(x), y)
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

    logger = PLLogger("pl-1")
    assert isinstance(logger, pl.loggers.Logger)
    assert not isinstance(logger, L.loggers.Logger)
    pl.Trainer(
        max_steps=5,
        log_every_n_steps=1,
        accelerator="cpu",
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=logger,
    ).fit(PLTiny(), loader())

    exp = get("pl-1")
    assert exp.status == "done"
    assert exp.metrics("train_loss").steps == [0, 1, 2, 3, 4]
    assert exp.metadata["lr"] == 0.05


# -- in a process of its own: ranks, SIGTERM, the example ------------------------------------------

SCRIPT = """
import os, signal, sys
sys.path.insert(0, {root!r})
import lightning.pytorch as L
from tests.integrations.test_lightning import Tiny, loader, trainer
import syvain_metrics as sm
from syvain_metrics.integrations.lightning import SyvainLogger

sm.connect()  # SYVAIN_METRICS_API_KEY and SYVAIN_METRICS_HOST


class Sigterm(L.Callback):
    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == {sigterm_at}:
            os.kill(os.getpid(), signal.SIGTERM)

logger = SyvainLogger("child-1")
fit = trainer(logger, callbacks=[Sigterm()])
before = signal.getsignal(signal.SIGTERM)
try:
    fit.fit(Tiny(), loader())
except BaseException as error:
    print("raised", type(error).__name__, "received_sigterm", fit.received_sigterm, flush=True)
    print("handler restored", signal.getsignal(signal.SIGTERM) == before, flush=True)
    raise
print("finished at", fit.global_step, flush=True)
"""


def run_child(
    server: LocalServer, *, sigterm_at: int = -1, **env: str
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not _service_setting(k)}
    environ.update(
        SYVAIN_METRICS_API_KEY=server.api_key,
        SYVAIN_METRICS_HOST=server.url,
        PYTHONPATH=str(ROOT),
        **env,
    )
    script = SCRIPT.format(root=str(ROOT), sigterm_at=sigterm_at)
    return subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=environ,
        cwd=ROOT,
        timeout=120,
        check=False,
    )


def test_a_non_zero_rank_sends_nothing(metrics_server: LocalServer, tmp_path: Path) -> None:
    done = run_child(
        metrics_server, RANK="1", WORLD_SIZE="2", SYVAIN_METRICS_SPOOL_DIR=str(tmp_path)
    )
    assert done.returncode == 0, done.stderr
    assert "finished at 20" in done.stdout
    assert_nothing_sent(metrics_server, tmp_path)


def test_sigterm_mid_fit_ends_the_run_terminated_and_lightning_still_stops(
    metrics_server: LocalServer, tmp_path: Path
) -> None:
    done = run_child(metrics_server, sigterm_at=6, SYVAIN_METRICS_SPOOL_DIR=str(tmp_path))
    # Lightning's own handling: the flag is set and the loop stops with SIGTERMException.
    assert "raised SIGTERMException received_sigterm True" in done.stdout, done.stderr
    assert "finished at" not in done.stdout
    # The run's guard chained to Lightning's handler, and both are gone after the fit.
    assert "handler restored True" in done.stdout
    with metrics_server.session(spool_dir=None) as reader:
        (exp,) = sm.Experiment.list(slug="child-1", session=reader)
        assert exp.status == "error"
        assert exp.error_name == "Terminated"
        assert exp.error_detail == "terminated by SIGTERM"
        assert exp.metrics("train_loss").steps == list(range(6))


def test_the_example_fits_and_logs_against_a_local_server() -> None:
    printed = run_example("lightning_fit.py")
    assert re.search(
        r"lightning-fit-[\w-]+: done, 200 train_loss points, val_loss at steps", printed
    )


def test_a_slurm_requeue_sends_what_was_logged_and_leaves_the_run_running(
    metrics_session: sm.Session,
) -> None:
    logger = SyvainLogger("requeue-1")
    logger.log_hyperparams({"lr": 0.1})
    logger.log_metrics({"loss": 0.5, "epoch": 0}, step=40)
    logger.finalize("finished")

    exp = get("requeue-1")
    assert exp.status == "running"
    assert exp.metrics("loss").steps == [40]
    assert exp.metadata["lr"] == 0.1


def test_a_rank_lightning_sets_to_non_zero_makes_no_call(
    metrics_session: sm.Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    # DDP strategies set the rank themselves, whatever the launcher's environment says.
    from lightning.pytorch.utilities import rank_zero_only

    monkeypatch.setattr(rank_zero_only, "rank", 1)
    logger = SyvainLogger("rank-1")
    trainer(logger, max_steps=3).fit(Tiny(), loader())
    assert not isinstance(logger.experiment, sm.Experiment)
    assert logger.run.max_step == -1
    assert sm.Experiment.list() == []


def test_the_experiment_read_in_a_setup_hook_is_the_run(metrics_session: sm.Session) -> None:
    seen: list[Any] = []

    class Reads(L.Callback):  # type: ignore[misc,name-defined]
        def setup(self, trainer: Any, module: Any, stage: str) -> None:
            seen.append(trainer.logger.experiment)

    trainer(SyvainLogger("setup-1"), max_steps=2, callbacks=[Reads()]).fit(Tiny(), loader())
    (exp,) = seen
    assert isinstance(exp, sm.Experiment)
    assert exp.slug == "setup-1"
    assert get("setup-1").status == "done"


def test_hyperparameters_holding_an_array_logged_twice_do_not_raise(
    metrics_session: sm.Session,
) -> None:
    logger = SyvainLogger("array-hparams")
    model = Tiny(weights=torch.ones(3))  # a tensor among the hyperparameters
    fitting = trainer(logger, max_steps=3)
    fitting.fit(model, loader())
    # What a later stage (load_from_checkpoint + trainer.test) does: the same ones again.
    logger.log_hyperparams({"lr": 0.05, "weights": torch.ones(3)})
    logger.log_hyperparams({"lr": 0.05, "weights": torch.ones(3)})
    fitting.fit(Tiny(weights=torch.ones(3)), loader())  # a second fit logs them again

    exp = get("array-hparams")
    assert exp.status == "done"
    assert exp.metrics("train_loss").steps == [0, 1, 2]


def test_a_refused_run_never_raises_in_a_stage_after_fit(metrics_server: LocalServer) -> None:
    metrics_server.faults.fail_next("create_experiment", status=403, times=10**6)
    with metrics_server.session(spool_dir=None) as session:
        logger = SyvainLogger("refused-1", session=session)
        logger.log_hyperparams({"lr": 0.1})
        logger.log_metrics({"loss": 0.5}, step=0)
        logger.finalize("success")
        logger.log_metrics({"test_loss": 0.4}, step=1)  # trainer.test() after fit()
        logger.log_hyperparams({"lr": 0.2})
        logger.finalize("success")
        metrics_server.faults.clear()
        assert sm.Experiment.list(session=session) == []


def test_a_fit_from_a_checkpoint_resumes_at_the_checkpoints_step(
    metrics_session: sm.Session, tmp_path: Path
) -> None:
    saving = L.callbacks.ModelCheckpoint(
        dirpath=tmp_path, every_n_train_steps=10, save_top_k=-1, filename="{step}"
    )
    first = trainer(
        SyvainLogger("resume-sparse"),
        enable_checkpointing=True,
        callbacks=[saving],
        log_every_n_steps=4,
    )
    first.fit(Tiny(), loader())
    restarted = trainer(SyvainLogger("resume-sparse"), max_steps=30, log_every_n_steps=4)
    restarted.fit(Tiny(), loader(), ckpt_path=tmp_path / "step=10.ckpt")

    exp = get("resume-sparse")
    assert exp.status == "done"
    # The first step logged after the restart is 11, the checkpoint's step 10.
    assert [note.text for note in exp.annotations()] == ["resumed from step 10"]


KILLED_AFTER_A_CHECKPOINT = """
import os, signal
import torch
import lightning as L
import syvain_metrics as sm
from syvain_metrics.integrations.lightning import SyvainLogger
from tests.integrations.test_lightning import Tiny, loader


class KillAfterCheckpoint(L.Callback):
    def on_save_checkpoint(self, trainer, module, checkpoint):
        self.saving = trainer.global_step

    def on_train_batch_start(self, trainer, module, batch, index):
        if getattr(self, "saving", None) == 10:  # the step-10 checkpoint is written: killed
            os.kill(os.getpid(), signal.SIGKILL)


sm.connect()
checkpoints = L.pytorch.callbacks.ModelCheckpoint(
    dirpath={ckpt!r}, every_n_train_steps=10, save_top_k=-1
)
trainer = L.Trainer(
    max_steps=40, log_every_n_steps=1, accelerator="cpu", enable_progress_bar=False,
    enable_model_summary=False, callbacks=[checkpoints, KillAfterCheckpoint()],
    logger=SyvainLogger("killed-fit"), limit_val_batches=0,
)
trainer.fit(Tiny(), loader())
"""


def test_a_fit_killed_right_after_a_checkpoint_keeps_every_step_before_it(
    metrics_server: LocalServer, tmp_path: Path
) -> None:
    # The service takes nothing before the kill: every value comes from the spool.
    metrics_server.faults.fail_next("ingest_metrics", times=10**6, status=503)
    env = subprocess_env(metrics_server, tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", KILLED_AFTER_A_CHECKPOINT.format(ckpt=str(tmp_path / "ckpt"))],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    metrics_server.faults.clear()
    sync_spool(tmp_path / "spool", api_key=metrics_server.api_key, host=metrics_server.url)
    with metrics_server.session() as session:
        exp = by_slug("killed-fit", session)
        assert exp.metrics("train_loss").steps[:10] == list(range(10))
