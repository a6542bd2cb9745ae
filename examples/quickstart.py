"""Quickstart: a folder, two runs logged with ``run()``, an annotation, a read-back and a comparison.

Run it with ``python examples/quickstart.py``. Without ``SYVAIN_METRICS_API_KEY`` it starts a
local server, so it works offline; it ends with a link to the first run's dashboard page (from
a terminal, the local server keeps serving it until you press Enter).
"""

from __future__ import annotations

import math
import random
import secrets
import time

from _connect import session_for_example, show_in_dashboard

import syvain_metrics as sm

STEPS = 200


def train(exp: sm.Experiment, *, lr: float, seed: int) -> None:
    """A stand-in training loop: a noisy decaying loss on two splits."""
    rng = random.Random(seed)
    with exp.run():
        for step in range(STEPS):
            loss = 2.5 * math.exp(-lr * step) + rng.uniform(0, 0.05)
            exp.log("loss", loss, step=step, metadata={"split": "train"})
            if step % 10 == 0:
                exp.log("loss", loss * 1.1, step=step, metadata={"split": "valid"})
        exp.annotate("Checkpoint saved", metadata={"path": f"ckpt/{exp.slug}/{STEPS - 1}.pt"})


def main() -> None:
    with session_for_example() as session:
        # Unique per run: the local server keeps the runs of every earlier one.
        tag = f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
        folder = sm.Folder.create(f"quickstart-{tag}", session=session)
        runs = [
            folder.create_experiment(f"quickstart-{tag}-lr{lr}", metadata={"lr": lr})
            for lr in (0.01, 0.03)
        ]
        for seed, exp in enumerate(runs):
            train(exp, lr=exp.metadata["lr"], seed=seed)

        first = runs[0].refresh()
        train_rows = first.metrics("loss", metadata={"split": "train"})
        valid_rows = first.metrics("loss", metadata={"split": "valid"})
        print(
            f"{first.slug}: {first.status}, {len(train_rows)} train and {len(valid_rows)} valid points"
        )
        print(f"  last train loss {train_rows[-1].value:.4f} at step {train_rows[-1].step}")
        print(f"  annotations: {[note.text for note in first.annotations()]}")

        rows = sm.compare([exp.series("loss", metadata={"split": "valid"}) for exp in runs])
        best: dict[str, float] = {}
        for metric in rows:
            best[metric.experiment_slug] = min(
                best.get(metric.experiment_slug, math.inf), metric.value
            )
        print(f"compared {len(rows)} valid points across {len(runs)} runs:")
        for slug, value in sorted(best.items(), key=lambda item: item[1]):
            print(f"  {slug}: best valid loss {value:.4f}")
        contents = sm.Folder.get(folder.id, session=session)
        print(f"folder {contents.path_name} holds {len(contents.experiments)} experiments")
        show_in_dashboard(first)


if __name__ == "__main__":
    main()
