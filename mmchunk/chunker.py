"""Dynamic chunking (H-Net, Hwang, Wang & Gu 2025): routing, downsample, dechunk, ratio loss."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmchunk.kernels import boundary_probs, ema_scan, segment_reduce, seq_lengths, sequence_starts
from mmchunk.ragged import Ragged
from mmchunk.ragged_ops import segment_quantile, window_means
from mmchunk.stepping import last_rows, merge_rows, state_rows

POOLINGS = ("boundary", "mean")
PEAK_QUANTILE = 0.9  # the routing's peak level: speech sets it, pauses (up to ~half a clip) do not
GAIN_RANGE = (2 / 3, 1.5)  # the ×1.5 band of the chunk-rate target: a noise-only clip gets at most ×1.5 too


@dataclass
class ChunkerOutput:
    """What routing and downsampling produced, and what dechunk needs to return to tokens.

    chunks:        Ragged `[C, D]` chunk vectors; time span `[t0, t1]` and modality per chunk when
                   the input carried them.
    boundary_mask: `[T]` bool, `b_t`: token `t` opens a chunk.
    probs:         `[T]` float, `p_t`, the boundary probability.
    chunk_index:   `[T]` int64, the chunk (row of `chunks.values`) each token belongs to.
    residual:      `[T, D]` the chunker's input, for dechunk's residual path.
    """

    chunks: Ragged
    boundary_mask: Tensor
    probs: Tensor
    chunk_index: Tensor
    residual: Tensor

    @property
    def compression(self) -> float:
        """Tokens per chunk over the whole batch (T / C; 0 for an empty batch)."""
        return self.residual.shape[0] / max(self.chunks.num_tokens, 1)


@dataclass
class ChunkerState:
    """The chunker's state per sequence for the step path: the last token's routing key `key
    [B, D]`, `started [B]` bool and dechunk's smoothed chunk `smoothed [B, D]` (the EMA after the
    last chunk)."""

    key: Tensor
    started: Tensor
    smoothed: Tensor


def straight_through_ones(x: Tensor) -> Tensor:
    """STE: forward value 1, gradient of `x` passes unchanged."""
    return 1.0 + x - x.detach()


def ratio_loss(
    boundary_mask: Tensor, probs: Tensor, target_N: float, cu_seqlens: Tensor | None = None
) -> Tensor:
    """H-Net ratio loss `N/(N−1)·((N−1)·F·G + (1−F)·(1−G))`, `F = mean(b)` (no gradient), `G = mean(p)`.

    `boundary_mask [T]`, `probs [T]` → scalar; minimum 1 at `F = G = 1/N`. Weight it (α ≈ 0.03)
    yourself. An empty batch gives 0. With `cu_seqlens [B+1]`, `F` and `G` are taken per sequence
    and the loss is the mean over the non-empty sequences: every sequence is held to the target,
    so a batch cannot meet it on average by shattering some sequences and leaving others whole.
    """
    if target_N <= 1:
        raise ValueError(f"ratio_loss: target_N must be > 1 (tokens per chunk), got {target_N}")
    if boundary_mask.shape != probs.shape or boundary_mask.dim() != 1:
        raise ValueError(
            f"ratio_loss: boundary_mask and probs must both be [T], got "
            f"{tuple(boundary_mask.shape)} and {tuple(probs.shape)}"
        )
    if probs.numel() == 0:
        return probs.float().sum()
    n = float(target_N)
    if cu_seqlens is None:
        f, g = boundary_mask.float().mean(), probs.float().mean()
        return n / (n - 1.0) * ((n - 1.0) * f * g + (1.0 - f) * (1.0 - g))
    f = segment_reduce(boundary_mask.float()[:, None], cu_seqlens, "mean")[:, 0]
    g = segment_reduce(probs.float()[:, None], cu_seqlens, "mean")[:, 0]
    per_sequence = n / (n - 1.0) * ((n - 1.0) * f * g + (1.0 - f) * (1.0 - g))
    present = (seq_lengths(cu_seqlens) > 0).float()  # a weighted mean: no host sync
    return (per_sequence * present).sum() / present.sum().clamp(min=1.0)


def chunk_targets(chunk_rate_hz: float, native_rates_hz: Mapping[str, float]) -> dict[str, float]:
    """Per-modality compression targets `N_m = native_rate_m / R` from one shared chunk rate `R` in Hz.

    One `R` for all modalities puts their chunks on a common time grid whatever their native rates.
    """
    if chunk_rate_hz <= 0:
        raise ValueError(f"chunk_targets: chunk rate must be > 0 Hz, got {chunk_rate_hz}")
    targets = {}
    for name, rate in native_rates_hz.items():
        n = rate / chunk_rate_hz
        if n <= 1:
            raise ValueError(
                f"chunk_targets: modality {name!r} runs at {rate} Hz, not above the chunk rate "
                f"{chunk_rate_hz} Hz, so it cannot be compressed (target N = {n:.3g} <= 1)"
            )
        targets[name] = n
    return targets


class DynamicChunker(nn.Module):
    """H-Net dynamic chunking layer: routing module + downsampler, with `dechunk` for the way back.

    Routing: `q = W_q x`, `k = W_k x` (identity at init), `p_t = clamp((1 − cos(q_t, k_{t−1}))/2, 0, 1)`,
    `p = 1` at sequence starts, boundary `b_t = p_t > 0.5` (H-Net's argmax rule: 0.5 exactly is not
    a boundary, so a stretch of zero vectors is not split). Downsample: keep the boundary tokens
    (`pooling="boundary"`, H-Net) or average each chunk (`pooling="mean"`). With `num_modalities`,
    a zero-initialised modality embedding is added to the routing input of tokens that carry one.
    `tied_routing=True` uses one projection for q and k (`W_k = W_q`): then a repeated input always
    gives cos = 1, p = 0, so stretches of identical tokens (silence, frozen video) can never be
    split, whatever training does to the projection (H-Net's untied pair loses that guarantee).
    `every_token=True` makes every token its own chunk (p = 1): the unchunked baseline through the
    same code path. `routing_windows` (one width per modality id; 1 = H-Net) compares the mean of
    the next `w` tokens (from t on) with the mean of the `w` tokens before t instead of single
    tokens: a change-point test whose noise shrinks with `w` while a lasting change keeps its full
    contrast, so a noise floor does not open chunks (audio: 3 frames = 60 ms each side).
    `routing_center` (one flag per modality id) subtracts each sequence's mean token from the routing
    input of that modality: a component shared by the whole clip (a video's static background) no
    longer holds the cosine near 1, where it has no gradient, while identical tokens stay identical
    (not causal: the mean spans the whole sequence).
    `routing_gain` (one flag per modality id) is gain control for the routing of that modality: in
    training the chunker keeps a running mean of the sequences' peak level (the 0.9-quantile of p,
    `routing_peak [M]`); in evaluation each sequence's p is scaled by that level over its own, within
    ×2/3 … ×1.5 (`GAIN_RANGE`), so a recording whose neighbouring frames all look alike (a room) keeps
    the training's chunk rate (not causal: the peak level spans the whole sequence).
    """

    def __init__(
        self,
        dim: int,
        *,
        pooling: str = "boundary",
        num_modalities: int = 0,
        tied_routing: bool = False,
        every_token: bool = False,
        routing_windows: Sequence[int] | None = None,
        routing_center: Sequence[bool] | None = None,
        routing_gain: Sequence[bool] | None = None,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"DynamicChunker: pooling must be one of {POOLINGS}, got {pooling!r}")
        self.dim, self.pooling, self.backend, self.every_token = dim, pooling, backend, every_token
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.k_proj = self.q_proj if tied_routing else nn.Linear(dim, dim, bias=False)
        self.residual_proj = nn.Linear(dim, dim)
        self.modality_embedding = nn.Embedding(num_modalities, dim) if num_modalities else None
        windows = torch.tensor(list(routing_windows or []), dtype=torch.long)
        if (windows < 1).any():
            raise ValueError(
                f"DynamicChunker: routing windows must be ≥ 1, got {list(routing_windows or [])}"
            )
        self.register_buffer("routing_windows", windows if (windows > 1).any() else None, persistent=False)
        center = torch.tensor(list(routing_center or []), dtype=torch.bool)
        self.register_buffer("routing_center", center if center.any() else None, persistent=False)
        gain = torch.tensor(list(routing_gain or []), dtype=torch.bool)
        self.register_buffer("routing_gain", gain if gain.any() else None, persistent=False)
        self.register_buffer(
            "routing_peak", torch.full((len(gain),), float("nan")) if gain.any() else None
        )  # NaN until training has measured it: no gain
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Routing projections to identity, residual projection and modality embedding to zero."""
        with torch.no_grad():
            self.q_proj.weight.copy_(torch.eye(self.dim))
            self.k_proj.weight.copy_(torch.eye(self.dim))
            self.residual_proj.weight.zero_()
            self.residual_proj.bias.zero_()
            if self.modality_embedding is not None:
                self.modality_embedding.weight.zero_()

    def routing(self, x: Ragged, peak: Tensor | None = None) -> Tensor:
        """Boundary probabilities `p [T]` of the tokens of `x [T, D]` after the gain control of
        `routing_gain` (`peak [B]` gives each sequence's peak level instead of measuring it in `x`,
        for a recording routed in windows)."""
        probs = self.raw_routing(x)
        if self.routing_gain is None or x.modality is None or x.num_tokens == 0:
            return probs
        return self.gain_control(probs, x.cu_seqlens, x.modality, peak)

    def raw_routing(self, x: Ragged) -> Tensor:
        """Boundary probabilities `p [T]` of the tokens of `x [T, D]` before any gain control."""
        h = x.values
        if self.modality_embedding is not None and x.modality is not None:
            h = h + self.modality_embedding(x.modality)
        if self.routing_center is not None and x.modality is not None:
            means = segment_reduce(h, x.cu_seqlens, "mean", backend=self.backend)
            tokens = means.repeat_interleave(seq_lengths(x.cu_seqlens), dim=0, output_size=h.shape[0])
            h = h - tokens * self.routing_center[x.modality, None]
        h_q = h_k = h
        if self.routing_windows is not None and x.modality is not None:
            h_q, h_k = window_means(h, x.cu_seqlens, self.routing_windows[x.modality])
        q = self.q_proj(h_q)
        k = q if self.k_proj is self.q_proj and h_k is h_q else self.k_proj(h_k)
        return boundary_probs(q, k, x.cu_seqlens, backend=self.backend)

    def gain_control(
        self, probs: Tensor, cu_seqlens: Tensor, modality: Tensor, peak: Tensor | None
    ) -> Tensor:
        """`routing_gain` on `probs [T]`: training updates `routing_peak` and returns `probs`;
        evaluation scales each flagged sequence by `routing_peak / peak` (in `GAIN_RANGE`; `peak [B]`
        measured here when None), sequence starts staying 1."""
        lengths = seq_lengths(cu_seqlens)
        kind = modality[cu_seqlens[:-1].long().clamp(max=probs.numel() - 1)]
        flagged = self.routing_gain[kind] & (lengths > 0)
        if peak is None:
            peak = segment_quantile(probs.detach(), cu_seqlens, PEAK_QUANTILE)
        if self.training:
            with torch.no_grad():
                for m in kind[flagged].unique().tolist():
                    level = peak[flagged & (kind == m)].mean()
                    old = self.routing_peak[m]
                    self.routing_peak[m] = level if old.isnan() else old + 0.05 * (level - old)
            return probs
        gain = (self.routing_peak[kind] / peak.clamp(min=1e-6)).clamp(*GAIN_RANGE)
        gain = torch.where(flagged & ~gain.isnan(), gain, 1.0).repeat_interleave(
            lengths, output_size=probs.numel()
        )
        scaled = (probs * gain).clamp(0.0, 1.0)
        return torch.where(sequence_starts(cu_seqlens, probs.numel()), probs, scaled)

    def forward(
        self, x: Ragged, boundaries: Tensor | None = None, peak: Tensor | None = None
    ) -> ChunkerOutput:
        """Route and downsample `x [T, D]` into chunks `[C, D]` (`peak [B]`: see `routing`).

        `boundaries [T]` bool imposes the chunks instead of routing (a baseline segmentation,
        `mmchunk.segmentation`): `p = 1` where a chunk opens, 0 elsewhere, so dechunk neither smooths
        nor scales, and nothing trains the routing; every sequence's first token opens a chunk.
        """
        if x.values.dim() != 2 or x.values.shape[1] != self.dim:
            raise ValueError(f"DynamicChunker: expected values [T, {self.dim}], got {tuple(x.values.shape)}")
        if boundaries is not None:
            if boundaries.shape != (x.num_tokens,) or boundaries.dtype != torch.bool:
                raise ValueError(
                    f"DynamicChunker: imposed boundaries must be [{x.num_tokens}] bool, got "
                    f"{tuple(boundaries.shape)} {boundaries.dtype}"
                )
            opened = boundaries | sequence_starts(x.cu_seqlens, x.num_tokens)
            probs = opened.to(x.values.dtype)
        elif self.every_token:
            probs = x.values.new_ones(x.num_tokens)
        else:
            probs = self.routing(x, peak)
        boundary_mask = probs > 0.5
        counts = F.pad(boundary_mask.cumsum(0), (1, 0))
        chunk_index = counts[1:] - 1
        first = boundary_mask.nonzero().squeeze(1)
        last = (F.pad(first[1:], (0, 1), value=x.num_tokens) - 1)[: first.numel()]
        token_cu = F.pad(first, (0, 1), value=x.num_tokens).int()
        if self.pooling == "mean":
            values = segment_reduce(x.values, token_cu, "mean", backend=self.backend)
        else:
            values = x.values[first]
        chunks = Ragged(
            values,
            counts[x.cu_seqlens.long()].int(),
            t_start=None if x.t_start is None else x.t_start[first],
            t_end=None if x.t_end is None else x.t_end[last],
            modality=None if x.modality is None else x.modality[first],
        )
        return ChunkerOutput(chunks, boundary_mask, probs, chunk_index, x.values)

    def dechunk(self, z: Tensor | Ragged, out: ChunkerOutput) -> Tensor:
        """Chunk outputs `z [C, D]` back to tokens `[T, D]`.

        EMA smoothing over chunks `z̄_c = P_c·ẑ_c + (1 − P_c)·z̄_{c−1}` (reset per sequence), repeat
        each chunk over its tokens, scale by the confidence `c_t = p_t^b_t·(1 − p_t)^(1−b_t)` through
        an STE (forward 1), add the zero-initialised residual projection of the chunker's input.
        """
        return self.upsample(self.smooth(z, out), out)

    def smooth(self, z: Tensor | Ragged, out: ChunkerOutput) -> Tensor:
        """Dechunk's EMA over the chunk outputs `z [C, D]` of each sequence: `z̄ [C, D]`."""
        values = z.values if isinstance(z, Ragged) else z
        if values.shape != (*out.chunks.values.shape[:1], self.dim):
            raise ValueError(
                f"DynamicChunker.dechunk: expected [{out.chunks.num_tokens}, {self.dim}], got "
                f"{tuple(values.shape)}"
            )
        chunk_probs = out.probs[out.boundary_mask]
        return ema_scan(values, chunk_probs, out.chunks.cu_seqlens, backend=self.backend)

    def upsample(self, smoothed: Tensor, out: ChunkerOutput) -> Tensor:
        """Smoothed chunks `[C, D]` repeated over their tokens, through the confidence STE, plus the
        residual projection: `[T, D]`."""
        confidence = torch.where(out.boundary_mask, out.probs, 1.0 - out.probs)
        upsampled = smoothed[out.chunk_index] * straight_through_ones(confidence)[:, None].to(smoothed.dtype)
        return upsampled + self.residual_proj(out.residual)

    def _check_causal(self) -> None:
        if self.pooling != "boundary" or any(
            flags is not None for flags in (self.routing_windows, self.routing_center, self.routing_gain)
        ):
            raise ValueError(
                "DynamicChunker: the step path needs causal routing and pooling (boundary pooling, "
                "no routing windows, centring or gain): mean pooling, windows and the peak level "
                "read later tokens"
            )

    def init_state(self, batch: int, capacity: int, like: Tensor) -> ChunkerState:
        """The state before any token."""
        self._check_causal()
        zeros = like.new_zeros(batch, self.dim)
        flags = torch.zeros(batch, dtype=torch.bool, device=like.device)
        return ChunkerState(zeros, flags, zeros.clone())

    def prefill(self, x: Ragged, z: Tensor, out: ChunkerOutput) -> tuple[Tensor, ChunkerState]:
        """Dechunk the main network's output `z [C, D]` for the routed `x [T, D]` (`out` = this
        chunker's forward of `x`), and the state after each sequence."""
        self._check_causal()
        smoothed = self.smooth(z, out)
        key = x.values if self.every_token else self.k_proj(x.values)
        lengths = x.cu_seqlens[1:] - x.cu_seqlens[:-1]
        state = ChunkerState(
            last_rows(key, x.cu_seqlens),
            lengths > 0,
            last_rows(smoothed, out.chunks.cu_seqlens),
        )
        return self.upsample(smoothed, out), state

    def route_step(self, x: Tensor, state: ChunkerState, rows: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Boundary probability `p [B]` and boundary flag `b [B]` of one token per sequence `x [B, D]`
        (or of the `[b, D]` of the sequences `rows`)."""
        state = state_rows(state, rows)
        if self.every_token:
            probs = x.new_ones(x.shape[0])
        else:
            dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
            q = F.normalize(self.q_proj(x).to(dtype), dim=-1)
            k = F.normalize(state.key.to(dtype), dim=-1)
            probs = (
                ((1.0 - (q * k).sum(-1)) / 2.0).clamp(0.0, 1.0).masked_fill(~state.started, 1.0).to(x.dtype)
            )
        return probs, probs > 0.5

    def dechunk_step(
        self,
        x: Tensor,
        z: Tensor,
        probs: Tensor,
        boundary: Tensor,
        state: ChunkerState,
        active: Tensor | None = None,
        rows: Tensor | None = None,
    ) -> tuple[Tensor, ChunkerState]:
        """Dechunk one token per sequence: `x [B, D]` the chunker's input (or `[b, D]` of the
        sequences `rows`), `z` the main network's output for the chunk it opened (used where
        `boundary`): the same shape, and the new state."""
        old = state_rows(state, rows)
        opened = probs[:, None] * z + (1.0 - probs[:, None]) * old.smoothed
        smoothed = torch.where(boundary[:, None], opened, old.smoothed)
        key = x if self.every_token else self.k_proj(x)
        new = ChunkerState(key, torch.ones_like(old.started), smoothed)
        return smoothed + self.residual_proj(x), merge_rows(state, new, active, rows)
