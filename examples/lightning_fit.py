"""A Lightning fit logged with ``SyvainLogger``: a small MLP on a synthetic regression task.

Run it with ``python examples/lightning_fit.py`` (needs ``pip install "syvain-metrics[lightning]"``
and torch). Without ``SYVAIN_METRICS_API_KEY`` it starts a local server, so it works offline;
it prints what the run holds and ends with a link to the run's dashboard page.

The one line that matters: ``lightning.Trainer(logger=SyvainLogger(slug))``. Every value the module
logs with ``self.log(...)`` is stored at Lightning's step, ``save_hyperparameters()`` becomes
the run's metadata, and the run ends ``done`` (or ``error`` with the exception).
"""

from __future__ import annotations

import time

import lightning
import torch
from _connect import session_for_example, show_in_dashboard
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from syvain_metrics.integrations.lightning import SyvainLogger

STEPS = 200


class MLP(lightning.LightningModule):
    """A two-layer perceptron fitting ``y = sin(x) . w``."""

    def __init__(self, width: int = 32, lr: float = 0.01) -> None:
        super().__init__()
        self.save_hyperparameters()  # becomes the run's metadata
        self.net = nn.Sequential(nn.Linear(8, width), nn.ReLU(), nn.Linear(width, 1))

    def training_step(self, batch: list[torch.Tensor], index: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: list[torch.Tensor], index: int) -> None:
        x, y = batch
        self.log("val_loss", nn.functional.mse_loss(self.net(x), y))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams["lr"])


def data(rows: int, seed: int) -> DataLoader[tuple[torch.Tensor, ...]]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, 8, generator=generator)
    y = torch.sin(x) @ torch.linspace(-1, 1, 8).unsqueeze(1)
    return DataLoader(TensorDataset(x, y), batch_size=32, shuffle=seed == 0)


def main() -> None:
    with session_for_example() as session:
        logger = SyvainLogger(
            f"lightning-fit-{time.strftime('%Y%m%d-%H%M%S')}",
            description="a small MLP fitted with Lightning",
            session=session,
        )
        trainer = lightning.Trainer(
            max_steps=STEPS,
            log_every_n_steps=1,
            val_check_interval=50,
            check_val_every_n_epoch=None,
            accelerator="cpu",
            logger=logger,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        trainer.fit(MLP(), data(1024, seed=0), data(256, seed=1))

        exp = logger.experiment.refresh()
        train = exp.metrics("train_loss")
        valid = exp.metrics("val_loss")
        print(
            f"{exp.slug}: {exp.status}, {len(train)} train_loss points, val_loss at steps "
            f"{valid.steps}"
        )
        print(f"  hyperparameters: width={exp.metadata['width']}, lr={exp.metadata['lr']}")
        print(
            f"  train_loss {train.values[0]:.4f} at step 0 -> {train.values[-1]:.4f} at step "
            f"{train.steps[-1]}"
        )
        show_in_dashboard(exp)


if __name__ == "__main__":
    main()
