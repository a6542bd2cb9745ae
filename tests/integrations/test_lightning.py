"""``SyvainLogger`` in real Lightning fits (CPU, ``nn.Linear(4, 1)``), against the local server:
each value once at Lightning's step, hyperparameters as metadata, the run's end (done, error,
Ctrl-C, SIGTERM), rank zero only, NaN, a resumed fit, an outage, both distributions."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import syvain_metrics as sm
from tests.integrations.conftest import framework

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
