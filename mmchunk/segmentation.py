"""Baseline segmentations the learned chunker must beat: fixed-stride pooling, random boundaries at a
rate, and the edges of a voice-activity detector, each as the boundary mask `[T]` that
`DynamicChunker` takes in place of its routing (`forward(x, boundaries=...)`)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch import Tensor

from mmchunk.kernels import segment_ids, seq_lengths
from mmchunk.ragged import Ragged

RULES = ("fixed", "random", "energy_vad", "silero_vad")


def local_positions(cu_seqlens: Tensor, total: int) -> Tensor:
    """Index of every token within its own sequence, `[T]` int64."""
    starts = cu_seqlens[:-1].long()
    return torch.arange(total, device=cu_seqlens.device) - starts[segment_ids(cu_seqlens, total)]


def fixed_stride_boundaries(cu_seqlens: Tensor, total: int, frames_per_chunk: float) -> Tensor:
    """Token `i` of its sequence opens a chunk when `⌊i/k⌋ > ⌊(i−1)/k⌋` (`k = frames_per_chunk`, `i = 0`
    always): one chunk every `k` tokens, a fractional `k` alternating strides `⌊k⌋` and `⌈k⌉`. `[T]` bool."""
    if frames_per_chunk < 1:
        raise ValueError(f"fixed-stride segmentation: frames_per_chunk must be ≥ 1, got {frames_per_chunk}")
    i = local_positions(cu_seqlens, total).double()
    return torch.floor(i / frames_per_chunk) > torch.floor((i - 1) / frames_per_chunk)


def random_boundaries(cu_seqlens: Tensor, total: int, frames_per_chunk: float, seed: int) -> Tensor:
    """Each token opens a chunk with probability `1/frames_per_chunk` (the first of each sequence
    always). The draw of a sequence is seeded by (`seed`, its length): the same clip gets the same
    boundaries in any batch. `[T]` bool."""
    if frames_per_chunk < 1:
        raise ValueError(f"random segmentation: frames_per_chunk must be ≥ 1, got {frames_per_chunk}")
    parts = []
    for n in seq_lengths(cu_seqlens).tolist():
        generator = torch.Generator().manual_seed(seed * 1_000_003 + n)
        draw = torch.rand(n, generator=generator) < 1.0 / frames_per_chunk
        parts.append(draw | (torch.arange(n) == 0))
    out = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.bool)
    return out.to(cu_seqlens.device)


def time_boundaries(x: Ragged, times: list[list[float]]) -> Tensor:
    """Boundaries at given times (s) per sequence of `x` (which carries `t_start`): each time opens a
    chunk at the first token of its sequence that starts at or after it (times past the last token
    open none), and every sequence's first token opens one. `[T]` bool."""
    if x.t_start is None:
        raise ValueError("time_boundaries: the tokens carry no start times (t_start)")
    if len(times) != x.batch_size:
        raise ValueError(f"time_boundaries: {len(times)} lists of times for {x.batch_size} sequences")
    mask = torch.zeros(x.num_tokens, dtype=torch.bool, device=x.values.device)
    cu = x.cu_seqlens.tolist()
    for (a, b), ts in zip(itertools.pairwise(cu), times):
        if a == b:
            continue
        mask[a] = True
        where = torch.searchsorted(x.t_start[a:b].contiguous(), torch.tensor(ts, dtype=x.t_start.dtype))
        mask[a + where[where < b - a].to(mask.device)] = True
    return mask


@dataclass
class BaselineSegmentation:
    """A rule in place of learned routing for one modality (`RULES`).

    rule: fixed (every `frames_per_chunk` tokens), random (each token with probability
    `1/frames_per_chunk`), energy_vad or silero_vad (the edges of the VAD's speech spans, audio only;
    the compression is the VAD's own). frames_per_chunk: the learned model's measured compression,
    to compare at equal compression. seed: of the random rule.
    """

    rule: str
    frames_per_chunk: float = 4.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            known = ", ".join(RULES)
            raise ValueError(f"baseline segmentation: unknown rule {self.rule!r} (known: {known})")

    def boundaries(self, feats: Ragged, raw: Ragged | None = None, sample_rate: int | None = None) -> Tensor:
        """The boundary mask `[T]` of the encoder tokens `feats [T, D]`; the VAD rules read the raw
        waveforms `raw` (samples `[N]`, `cu_seqlens [B+1]`) at `sample_rate`."""
        if self.rule == "fixed":
            return fixed_stride_boundaries(feats.cu_seqlens, feats.num_tokens, self.frames_per_chunk)
        if self.rule == "random":
            return random_boundaries(feats.cu_seqlens, feats.num_tokens, self.frames_per_chunk, self.seed)
        if raw is None or sample_rate is None or raw.values.dim() != 1:
            raise ValueError(f"baseline segmentation {self.rule}: needs the raw mono waveforms (audio only)")
        from mmchunk.vad import vad_baselines

        waves = [w.detach().float().cpu() for w in raw.split()]
        edges = vad_baselines()[self.rule.removesuffix("_vad")](waves, sample_rate)
        return time_boundaries(feats, edges)
