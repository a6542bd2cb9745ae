"""The Lightning fit that ``benchmarks/integrations.py`` times, one contender per process.

It runs in whichever environment holds the contender's logger: this repository's (no
logger, ``CSVLogger``, ours) or a peer venv (MLflow's, W&B's), so it imports nothing of the
benchmark and, except for ours, nothing of this SDK. It talks to the parent through JSON
lines on the process's original stdout; whatever the frameworks print goes to stderr.

The fit: a 3-layer MLP (32 -> 64 -> 64 -> 4) on 8,192 in-memory samples (a seeded, learnable
classification), batches of 16 served whole by a ``Dataset`` of batches (``batch_size=None``,
``num_workers=0``: no per-sample collation), SGD with momentum, ``train_loss`` and
``train_acc`` logged every step (``log_every_n_steps=1``), ``val_loss``/``val_acc`` at each
epoch's end (512 steps an epoch; 4 validation batches of 64), ``max_steps`` steps. Torch uses
one thread (``torch.set_num_threads(1)``) in every contender.

Example (what the parent runs)::

    python benchmarks/integrations_fit.py --kind csv --steps 500 --out /tmp/fit
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path
from typing import IO, Any

Json = dict[str, Any]

FEATURES, HIDDEN, CLASSES = 32, 64, 4
SAMPLES, BATCH = 8_192, 16
VAL_BATCHES, VAL_BATCH = 4, 64
SEED = 7

_channel: IO[str] | None = None


def emit(message: Json) -> None:
    """One JSON line to the parent (on the original stdout, line-buffered)."""
    assert _channel is not None
    _channel.write(json.dumps(message) + "\n")
    _channel.flush()


def take_stdout() -> None:
    """Keep the original stdout for :func:`emit`; send everything else printed to stderr."""
    global _channel
    sys.stdout.flush()
    _channel = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)


def versions(kind: str) -> Json:
    from importlib.metadata import PackageNotFoundError, version

    names = ["torch", "lightning", "numpy"]
    names += {"mlflow": ["mlflow-skinny", "mlflow", "sqlalchemy"], "wandb": ["wandb"]}.get(
        kind.split("-")[0], []
    )
    found: Json = {"python": sys.version.split()[0]}
    for name in names:
        with contextlib.suppress(PackageNotFoundError):
            found[name] = version(name)
    return found


def build(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """The model and the two data loaders (the same numbers in every contender)."""
    import torch
    from lightning.pytorch import LightningModule
    from torch import nn
    from torch.nn import functional as F  # noqa: N812 - torch's own spelling
    from torch.utils.data import DataLoader, Dataset

    class Batches(Dataset[tuple[Any, Any]]):
        """Whole batches, sliced from tensors held in memory: no per-sample collation."""

        def __init__(self, x: Any, y: Any, size: int) -> None:
            self.x, self.y, self.size = x, y, size

        def __len__(self) -> int:
            return len(self.x) // self.size

        def __getitem__(self, index: int) -> tuple[Any, Any]:
            window = slice(index * self.size, (index + 1) * self.size)
            return self.x[window], self.y[window]

    class MLP(LightningModule):
        def __init__(self, lr: float = 0.05, hidden: int = HIDDEN) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.net = nn.Sequential(
                nn.Linear(FEATURES, hidden),
                nn.ReLU(),
                nn.Linear(hidden, hidden),
                nn.ReLU(),
                nn.Linear(hidden, CLASSES),
            )

        def _step(self, batch: tuple[Any, Any]) -> tuple[Any, Any]:
            x, y = batch
            logits = self.net(x)
            return F.cross_entropy(logits, y), (logits.argmax(1) == y).float().mean()

        def training_step(self, batch: tuple[Any, Any], batch_idx: int) -> Any:
            loss, acc = self._step(batch)
            self.log("train_loss", loss)
            self.log("train_acc", acc)
            return loss

        def validation_step(self, batch: tuple[Any, Any], batch_idx: int) -> None:
            loss, acc = self._step(batch)
            self.log("val_loss", loss)
            self.log("val_acc", acc)

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)

    generator = torch.Generator().manual_seed(SEED)
    teacher = torch.randn(FEATURES, CLASSES, generator=generator)
    x = torch.randn(SAMPLES + VAL_BATCHES * VAL_BATCH, FEATURES, generator=generator)
    y = (x @ teacher).argmax(1)
    train = DataLoader(
        Batches(x[:SAMPLES], y[:SAMPLES], BATCH), batch_size=None, shuffle=True, num_workers=0
    )
    val = DataLoader(Batches(x[SAMPLES:], y[SAMPLES:], VAL_BATCH), batch_size=None, num_workers=0)
    return MLP(), train, val


def make_logger(args: argparse.Namespace) -> tuple[Any, Any]:
    """The contender's logger (``False`` for none) and what closes it after the fit."""
    kind, out = args.kind, Path(args.out)
    if kind == "none":
        return False, None
    if kind == "csv":
        from lightning.pytorch.loggers import CSVLogger

        return CSVLogger(save_dir=str(out), name="bench"), None
    if kind in ("mlflow", "mlflow-async"):
        from lightning.pytorch.loggers import MLFlowLogger
        from mlflow.tracking import MlflowClient

        uri = f"sqlite:///{out / 'mlflow.db'}"
        # A tracking database is made once, not per run: its schema migrations stay untimed.
        MlflowClient(uri).search_experiments()
        options = {"synchronous": False} if kind == "mlflow-async" else {}
        logger = MLFlowLogger(
            experiment_name="bench", run_name=args.slug, tracking_uri=uri, **options
        )
        return logger, None
    if kind == "wandb":
        import wandb
        from lightning.pytorch.loggers import WandbLogger

        os.environ.update(WANDB_MODE="offline", WANDB_SILENT="true", WANDB_DIR=str(out))
        logger = WandbLogger(name=args.slug, project="bench", save_dir=str(out), offline=True)
        return logger, wandb.finish
    if kind == "ours":
        import syvain_metrics as sm
        from syvain_metrics.integrations.lightning import SyvainLogger

        session = sm.Session(args.api_key, host=args.host, spool_dir=args.spool_dir)
        return SyvainLogger(args.slug, session=session), session.close
    raise SystemExit(f"unknown contender {kind!r}")


class Recorder:
    """What the logger was given: ``(step, {name: value})`` per ``log_metrics`` call, in
    memory (a list append per call, the same for every contender), or also on disk line by
    line (a fit that is killed leaves what it had logged)."""

    def __init__(self, logger: Any, path: Path | None, live: bool) -> None:
        self.calls: list[tuple[int | None, Json]] = []
        self.taken_ns: list[int] = []  # each log_metrics() + the save() Lightning calls after
        self.path = path
        self.file = path.open("w", buffering=1) if (path is not None and live) else None
        original, save = logger.log_metrics, logger.save
        clock = time.perf_counter_ns

        def log_metrics(metrics: Json, step: int | None = None) -> None:
            self.calls.append((step, metrics))
            if self.file is not None:
                self.file.write(json.dumps([step, {k: float(v) for k, v in metrics.items()}]))
                self.file.write("\n")
            self._began = clock()
            original(metrics=metrics, step=step)

        def timed_save() -> None:
            save()
            if self._began is not None:  # Lightning also saves at other moments: not timed
                self.taken_ns.append(clock() - self._began)
                self._began = None

        self._began: int | None = None
        logger.log_metrics = log_metrics
        logger.save = timed_save

    def timing(self) -> Json:
        """The time the training thread spent in the logger per call: median, p99, total."""
        taken = sorted(self.taken_ns) or [0]
        return {
            "logger_p50_us": taken[len(taken) // 2] / 1e3,
            "logger_p99_us": taken[min(len(taken) - 1, int(len(taken) * 0.99))] / 1e3,
            "logger_s": sum(taken) / 1e9,
        }

    def dump(self) -> None:
        if self.path is None or self.file is not None:
            return
        with self.path.open("w") as out:
            for step, metrics in self.calls:
                out.write(json.dumps([step, {k: float(v) for k, v in metrics.items()}]) + "\n")


def callbacks(args: argparse.Namespace, marks: Json) -> list[Any]:
    from lightning.pytorch.callbacks import Callback, ModelCheckpoint

    stop = Path(args.stop_file) if args.stop_file else None

    class Marks(Callback):
        """When the loop starts and ends; a line to the parent at ``--announce-step``."""

        def on_train_start(self, trainer: Any, pl_module: Any) -> None:
            marks["loop_start"] = time.perf_counter()
            marks["first_step"] = int(trainer.global_step)
            emit({"event": "loop_started", "step": int(trainer.global_step)})

        def on_train_batch_end(self, trainer: Any, *rest: Any) -> None:
            if trainer.global_step == args.announce_step:
                emit({"event": "step", "step": int(trainer.global_step)})
            if stop is not None and trainer.global_step % 20 == 0 and stop.exists():
                trainer.should_stop = True  # the parent says the fit has run long enough

        def on_train_end(self, trainer: Any, pl_module: Any) -> None:
            marks["loop_end"] = time.perf_counter()

    chosen: list[Any] = [Marks()]
    if args.checkpoint_every:
        chosen.append(
            ModelCheckpoint(
                dirpath=str(Path(args.out) / "checkpoints"),
                filename="{step}",
                every_n_train_steps=args.checkpoint_every,
                save_top_k=-1,
            )
        )
    return chosen


def run(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(1)  # every contender: a fair share of 2 cores
    torch.set_num_interop_threads(1)
    from lightning.pytorch import Trainer, seed_everything

    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    seed_everything(SEED + args.seed, workers=True, verbose=False)

    Path(args.out).mkdir(parents=True, exist_ok=True)
    model, train, val = build(args)
    logger, close = make_logger(args)
    record = Path(args.record) if args.record else None
    recorder = Recorder(logger, record, args.live_record) if logger is not False else None
    warned = WarningCount()
    logging.getLogger("syvain_metrics").addHandler(warned)
    marks: Json = {}
    trainer = Trainer(
        max_steps=args.steps,
        max_epochs=-1,
        accelerator="cpu",
        devices=1,
        logger=logger,
        log_every_n_steps=1,
        callbacks=callbacks(args, marks),
        enable_checkpointing=bool(args.checkpoint_every),
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=VAL_BATCHES,
        default_root_dir=args.out,
    )
    emit({"event": "ready", "versions": versions(args.kind), "threads": torch.get_num_threads()})
    gc.collect()  # a real script has run its full collections during set-up
    error = None
    cpu = time.process_time()
    start = time.perf_counter()
    try:
        trainer.fit(model, train, val, ckpt_path=args.resume_from)
    except Exception as failure:  # the logger raised into training
        error = f"{type(failure).__name__}: {failure}"
    fit_end = time.perf_counter()
    if close is not None:
        close()
    closed = time.perf_counter()
    cpu = time.process_time() - cpu
    if recorder is not None:
        recorder.dump()
    emit(
        {
            "event": "result",
            "fit_s": fit_end - start,
            "loop_s": marks.get("loop_end", fit_end) - marks.get("loop_start", start),
            "setup_s": marks.get("loop_start", start) - start,
            "end_s": fit_end - marks.get("loop_end", fit_end),
            "close_s": closed - fit_end,
            "cpu_s": cpu,
            "steps": int(trainer.global_step) - int(marks.get("first_step", 0)),
            "last_step": int(trainer.global_step),
            "error": error,
            "warnings": warned.count,
            "first_warnings": warned.first,
            "calls": len(recorder.calls) if recorder is not None else 0,
            **(recorder.timing() if recorder is not None else {}),
        }
    )


class WarningCount(logging.Handler):
    """Counts the warnings the SDK logged (a failure it kept out of training)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0
        self.first: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        if len(self.first) < 3:
            self.first.append(record.getMessage())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kind", required=True)
    parser.add_argument("--steps", type=int, default=5_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="the run's folder (logs, checkpoints)")
    parser.add_argument("--slug", default="bench")
    parser.add_argument("--host")
    parser.add_argument("--api-key")
    parser.add_argument("--spool-dir")
    parser.add_argument("--record", help="write what the logger was given to this file")
    parser.add_argument("--live-record", action="store_true", help="... line by line")
    parser.add_argument("--checkpoint-every", type=int, default=0)
    parser.add_argument("--resume-from", help="a checkpoint to resume the fit from")
    parser.add_argument("--announce-step", type=int, default=-1)
    parser.add_argument("--stop-file", help="stop the fit once this file exists")
    args = parser.parse_args()
    take_stdout()
    run(args)


if __name__ == "__main__":
    main()
