"""Helper of test_ddp: fit a tiny model with 2 CPU processes (gloo DDP) on each of several shard layouts.

LAYOUTS is a JSON list of {"name", "train": [shards], "val": [shards] or [], "steps"}. For each
layout every rank writes OUT/{name}.rank{r}.json: the keys it trained on per epoch, the keys it
validated in the last validation, the validation figures it logged, a checksum of its weights and,
on rank 0, the figures of one process validating the same weights on the whole val set.
Run: python tests/ddp_train.py LAYOUTS OUT
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lightning as L
import torch

from mmchunk.data import DataConfig, make_dataset
from mmchunk.evaluation import ValidationAccumulator
from mmchunk.training import AudioTextModule, ShardDataModule, batch_inputs, validate_batch


class RecordKeys(L.Callback):
    """Remembers the keys of this rank's training batches per epoch and of its last validation."""

    def __init__(self) -> None:
        self.train: dict[int, list[str]] = {}
        self.val: list[str] = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self.train.setdefault(trainer.current_epoch, []).extend(batch.keys)

    def on_validation_epoch_start(self, trainer, module) -> None:
        self.val = []

    def on_validation_batch_start(self, trainer, module, batch, batch_idx, dataloader_idx=0) -> None:
        self.val += batch.keys


def one_process_scores(module: AudioTextModule, val: list[str], config: DataConfig) -> dict[str, float]:
    """The validation figures of `module` on every val shard, read by this process alone."""
    module.eval()
    accumulator = ValidationAccumulator(module.model.token_periods)
    with torch.no_grad():
        for batch in make_dataset(val, config, split=False):
            if len(batch):
                out = validate_batch(module.model, batch, accumulator)
                terms = module.objectives(out, batch_inputs(batch))
                accumulator.add_loss(terms["total"].item(), len(batch))
    return accumulator.compute()


def fit_layout(layout: dict, out: Path) -> None:
    L.seed_everything(0)
    module = AudioTextModule(
        dim=32, embed_dim=16, heads=2, backbone={"depth": 1}, max_steps=layout["steps"],
        encoders={"audio": {"depth": 1}, "text": {"depth": 1}, "video": {"depth": 1, "fps": 10.0}},
        aligner={"probe": True}, objectives={"contrastive": {}, "ratio": {}, "predict": {}, "ctc": {},
                                             "words": {"buckets": 64}},
    )  # fmt: skip
    val = layout["val"] or layout["train"]
    data = ShardDataModule(train=layout["train"], val=val, max_samples=2, shuffle_buffer=0, video_fps=10.0)
    record = RecordKeys()
    trainer = L.Trainer(
        accelerator="cpu", devices=2, strategy="ddp", max_steps=layout["steps"], logger=False,
        limit_val_batches=1.0 if layout["val"] else 0, val_check_interval=layout["steps"],
        check_val_every_n_epoch=None, enable_checkpointing=False, enable_progress_bar=False,
        callbacks=[record],
    )  # fmt: skip
    trainer.fit(module, data)
    weights = torch.cat([p.detach().flatten() for p in module.parameters()])
    result = {
        "train": {str(k): v for k, v in record.train.items()},
        "val": record.val,
        "logged": {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")},
        "checksum": float(weights.double().sum()),
        "norm": float(weights.norm()),
    }
    if trainer.global_rank == 0 and layout["val"]:
        result["one_process"] = one_process_scores(module, layout["val"], data.config(train=False))
    (out / f"{layout['name']}.rank{trainer.global_rank}.json").write_text(json.dumps(result))


def main() -> None:
    layouts, out = json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2])
    for layout in layouts:
        fit_layout(layout, out)


if __name__ == "__main__":
    main()
