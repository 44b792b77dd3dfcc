"""Hugging Face transformers with mlobs: a tiny BERT built from a config (nothing downloaded),
trained for three epochs on random token ids on the CPU.

    MLOBS_DIR=/tmp/mlobs-demo python examples/transformers_example.py
"""

from __future__ import annotations

import tempfile
from typing import Any

import torch
import transformers
from _show import show_runs

from mlobs.instrument.integrations.transformers import MlobsCallback


class Tokens(torch.utils.data.Dataset):  # type: ignore[misc]
    def __init__(self, seed: int, rows: int = 64) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(1, 100, (rows, 16), generator=gen)
        self.labels = (self.ids[:, 0] > 50).long()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


def main() -> None:
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=16,
        num_labels=2,
    )
    model = transformers.BertForSequenceClassification(config)
    with tempfile.TemporaryDirectory() as out:
        args = transformers.TrainingArguments(
            output_dir=out,
            num_train_epochs=3,
            per_device_train_batch_size=16,
            learning_rate=1e-3,
            eval_strategy="epoch",
            logging_strategy="epoch",
            save_strategy="no",
            report_to="none",
            use_cpu=True,
            disable_tqdm=True,
        )
        trainer = transformers.Trainer(
            model=model,
            args=args,
            train_dataset=Tokens(0),
            eval_dataset=Tokens(1),
            callbacks=[MlobsCallback()],  # loss in split "train", eval_loss as loss in "eval"
        )
        trainer.train()
    show_runs()


if __name__ == "__main__":
    main()
