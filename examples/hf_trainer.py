"""A Hugging Face ``Trainer`` logged with one callback: a tiny BERT built from a config (no
download) learns a toy task, and the run holds every ``Trainer.log()`` at its global step.

Run it with ``python examples/hf_trainer.py`` (needs ``pip install "syvain-metrics[transformers]"``
and torch). Without ``SYVAIN_METRICS_API_KEY`` it starts a local server, so it works offline.
"""

from __future__ import annotations

import tempfile
import time

import torch
from _connect import session_for_example, show_in_dashboard
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

from syvain_metrics.integrations.transformers import SyvainCallback


def toy_dataset(count: int, seed: int) -> list[dict[str, object]]:
    """Sequences of token ids; the label says whether token 1 appears more than token 2."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(count):
        ids = torch.randint(0, 8, (12,), generator=generator)
        rows.append({"input_ids": ids, "labels": int((ids == 1).sum() > (ids == 2).sum())})
    return rows


def main() -> None:
    # The example's session is the default one: the callback logs through it.
    with session_for_example(), tempfile.TemporaryDirectory() as out:
        torch.manual_seed(0)
        config = BertConfig(
            vocab_size=8,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            id2label={0: "fewer ones", 1: "more ones"},
        )
        args = TrainingArguments(
            output_dir=out,
            max_steps=30,
            learning_rate=3e-3,
            per_device_train_batch_size=8,
            logging_steps=5,
            eval_strategy="steps",
            eval_steps=10,
            save_strategy="no",
            report_to="none",
            use_cpu=True,
            disable_tqdm=True,
        )
        callback = SyvainCallback(f"hf-trainer-{time.strftime('%Y%m%d-%H%M%S')}")
        trainer = Trainer(
            model=BertForSequenceClassification(config),
            args=args,
            train_dataset=toy_dataset(256, seed=1),
            eval_dataset=toy_dataset(64, seed=2),
            callbacks=[callback],
        )
        trainer.train()

        exp = callback.experiment.refresh()
        loss = exp.metrics("loss")
        evals = exp.metrics("eval_loss")
        print(f"{exp.slug}: {exp.status}, {len(loss)} loss and {len(evals)} eval_loss points")
        first, last = loss[0], loss[-1]
        print(
            f"  loss {first.value:.3f} at step {first.step} -> {last.value:.3f} at step {last.step}"
        )
        print(
            f"  hyperparameters: learning_rate={exp.metadata['learning_rate']}, "
            f"model.hidden_size={exp.metadata['model.hidden_size']}"
        )
        show_in_dashboard(exp)


if __name__ == "__main__":
    main()
