"""Shared test helpers: packed batches from lengths, and hypothesis settings."""

from __future__ import annotations

import itertools
import os

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
