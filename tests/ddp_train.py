"""Helper of test_ddp: train a tiny model for 3 steps with 2 CPU processes (gloo DDP).

Each rank writes the sample keys it trained on and a checksum of its final weights to OUT.
Run: python tests/ddp_train.py SHARDS OUT
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lightning as L
import torch

from mmchunk.training import AudioTextModule, ShardDataModule


class RecordKeys(L.Callback):
    """Remembers the keys of every training batch of this rank."""

    def __init__(self) -> None:
        self.keys: list[str] = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self.keys += batch.keys


def main() -> None:
    shards, out = sys.argv[1], Path(sys.argv[2])
    L.seed_everything(0)
    module = AudioTextModule(dim=32, embed_dim=16, heads=2, main_depth=1, max_steps=3,
                             encoders={"audio": {"depth": 1}, "text": {"depth": 1}})  # fmt: skip
    data = ShardDataModule(train=shards, val=shards, max_samples=2, shuffle_buffer=0, use_video=False)
    record = RecordKeys()
    trainer = L.Trainer(
        accelerator="cpu", devices=2, strategy="ddp", max_steps=3, limit_val_batches=0, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, callbacks=[record],
    )  # fmt: skip
    trainer.fit(module, data)
    weights = torch.cat([p.detach().flatten() for p in module.parameters()])
    result = {"keys": record.keys, "checksum": float(weights.double().sum()), "norm": float(weights.norm())}
    (out / f"rank{trainer.global_rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
