"""Shared test helpers: packed batches from lengths, and hypothesis settings."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

# Triton reads this when the kernel modules are imported: before anything imports mmchunk. On a
# GPU machine, run `TRITON_INTERPRET=0 make test` to test the compiled kernels on CUDA instead.
os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest
import torch
from hypothesis import settings

settings.register_profile("mmchunk", max_examples=25, deadline=None, derandomize=True)
settings.load_profile("mmchunk")

# Lengths that cover the edge cases every op must handle: empty, length 1, odd, longer.
EDGE_LENGTHS = [0, 1, 5, 0, 2, 17, 1]


def cu_from_lengths(lengths: list[int], device: str = "cpu") -> torch.Tensor:
    """`cu_seqlens [B+1]` int32 of the given sequence lengths."""
    cu = torch.zeros(len(lengths) + 1, dtype=torch.int64)
    cu[1:] = torch.tensor(lengths, dtype=torch.int64).cumsum(0)
    return cu.to(torch.int32).to(device)


def bounds(cu: torch.Tensor) -> list[tuple[int, int]]:
    """(start, end) token offsets of every sequence."""
    c = cu.tolist()
    return list(itertools.pairwise(c))


@pytest.fixture(autouse=True)
def _seed():
    """Every test draws the same random numbers on every run."""
    torch.manual_seed(0)


RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "audio_text" / "demo_cpu.yaml"


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """A tiny corpus (10 train and 6 val samples, 3 per shard) and a 2-step checkpoint (shared by the
    export and robustness tests). Without the pause loss: on the 2-step probe's near-flat posteriors
    its weights put a forced-alignment tie in the windowed export test's transcript."""
    root = tmp_path_factory.mktemp("trained")
    data = root / "data"
    from mmchunk.data.synth import synth_corpus
    from mmchunk.training import run_fit

    synth_corpus(data, 16, video=True, seed=3, val_fraction=0.375, shard_size=3, workers=1, progress=False)
    run_fit([
        "--config", str(RECIPE), "--trainer.max_steps", "2", "--trainer.val_check_interval", "2",
        "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(root / "run"),
        "--trainer.logger.init_args.save_dir", str(root / "run"),
        "--model.dim", "32", "--model.embed_dim", "16", "--model.heads", "2", "--model.backbone.depth", "1",
        "--data.train", str(data / "train"), "--data.val", str(data / "val"),
        "--data.max_samples", "4", "--model.objectives.pause.weight", "0",
    ])  # fmt: skip
    ckpt = next(root.glob("run/logs/version_*/checkpoints/last.ckpt"))
    return data, ckpt
