"""Sequence layers over Ragged batches: norms, SwiGLU, continuous-time RoPE, local and global mixers."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from mmchunk.kernels import ema_scan, segment_ids, seq_lengths, sequence_starts, varlen_attention
from mmchunk.ragged import Ragged
from mmchunk.stepping import last_rows, merge_rows, state_rows

MIXERS = ("recurrent", "window", "attention")


class RMSNorm(nn.Module):
    """Root-mean-square layer norm with a learned scale."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        """`x [..., D]` → same shape: `x / sqrt(mean(x²) + eps) * weight` (one fused op)."""
        return F.rms_norm(x, self.weight.shape, self.weight, self.eps)


class SwiGLU(nn.Module):
    """Gated MLP `W2 (silu(W1 x) ⊙ W3 x)`."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.w13 = nn.Linear(dim, 2 * hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """`x [T, D]` → `[T, D]`."""
        a, b = self.w13(x).chunk(2, dim=-1)
        return self.w2(F.silu(a) * b)


def token_positions(x: Ragged, time_scale: float) -> Tensor:
    """Rotary positions `[T]`: each token's start time × `time_scale` (steps per second) when the
    batch carries time spans, else its index within its sequence."""
    if x.t_start is not None:
        return x.t_start.float() * time_scale
    index = torch.arange(x.num_tokens, device=x.values.device)
    return (index - x.cu_seqlens.long()[x.seq_ids]).float()


def rotary(x: Tensor, positions: Tensor, base: float = 10_000.0) -> Tensor:
    """Rotary embedding at real-valued positions: `x [T, H, Dh]` (Dh even), `positions [T]`."""
    half = x.shape[-1] // 2
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    freqs = base ** (-torch.arange(half, device=x.device, dtype=dtype) / half)
    angles = positions.to(dtype)[:, None, None] * freqs
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


@dataclass
class RecurrentState:
    """A gated recurrence's state: `h [B, D]` after the last token, `started [B]` bool."""

    h: Tensor
    started: Tensor


@dataclass
class KVCache:
    """An attention layer's keys and values (rotated), `k, v [B, H, S, Dh]` (heads before slots, so a
    step's attention is a batched matmul over the cache as it lies), the position of each slot's
    token `pos [B, S]` (-1: empty) and the tokens seen per sequence `length [B]`. Global attention
    keeps every token (S = capacity: stepping past it drops the oldest); a window of w keeps the
    last w + 1 in a ring. Steps write into `k`, `v` and `pos` in place."""

    k: Tensor
    v: Tensor
    pos: Tensor
    length: Tensor


class GatedRecurrence(nn.Module):
    """Gated linear recurrence (minGRU / HGRN style): `h_t = z_t ⊙ h̃_t + (1 − z_t) ⊙ h_{t−1}`.

    `h̃ = W_h x`, `z = σ(W_z x)` (1 at each sequence's first token), output `W_o (h ⊙ silu(W_g x))`;
    runs as one per-channel `ema_scan` over every sequence of the batch.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.in_proj = nn.Linear(dim, 3 * dim, bias=False)
        self.out_proj = nn.Linear(dim, dim, bias=False)

    def forward(self, x: Tensor, batch: Ragged) -> Tensor:
        """`x [T, D]` (values of `batch`) → `[T, D]`."""
        h, out_gate = self._scan(x, batch)
        return self.out_proj(h * F.silu(out_gate))

    def _scan(self, x: Tensor, batch: Ragged) -> tuple[Tensor, Tensor]:
        candidate, gate_logit, out_gate = self.in_proj(x).chunk(3, dim=-1)
        # z = 1 at each sequence start (h_0 = h̃_0): a constant input gives a constant state from
        # the first token on, with no warm-up transient that the chunker would mistake for change.
        starts = sequence_starts(batch.cu_seqlens, batch.num_tokens)[:, None]
        rate = torch.sigmoid(gate_logit).masked_fill(starts, 1.0)
        return ema_scan(candidate, rate, batch.cu_seqlens), out_gate

    def prefill(self, x: Tensor, batch: Ragged, room: int = 0) -> tuple[Tensor, RecurrentState]:
        """`forward`, and the state after each sequence's last token."""
        h, out_gate = self._scan(x, batch)
        state = RecurrentState(last_rows(h, batch.cu_seqlens), seq_lengths(batch.cu_seqlens) > 0)
        return self.out_proj(h * F.silu(out_gate)), state

    def init_state(self, batch: int, capacity: int, like: Tensor) -> RecurrentState:
        """The state before any token: `h` zero, no sequence started."""
        dim = self.out_proj.in_features
        return RecurrentState(
            like.new_zeros(batch, dim), torch.zeros(batch, dtype=torch.bool, device=like.device)
        )

    def step(
        self, x: Tensor, state: RecurrentState, active: Tensor | None = None, rows: Tensor | None = None
    ) -> tuple[Tensor, RecurrentState]:
        """One token per sequence: `x [B, D]` (or `[b, D]` of the sequences `rows`) → the same shape."""
        old = state_rows(state, rows)
        candidate, gate_logit, out_gate = self.in_proj(x).chunk(3, dim=-1)
        rate = torch.sigmoid(gate_logit).masked_fill(~old.started[:, None], 1.0)
        h = rate * candidate + (1.0 - rate) * old.h
        new = RecurrentState(h, torch.ones_like(old.started))
        return self.out_proj(h * F.silu(out_gate)), merge_rows(state, new, active, rows)

    def extend(self, x: Tensor, state: RecurrentState) -> tuple[Tensor, RecurrentState]:
        """The next tokens `x [n, D]` of one sequence (`state` of batch 1): `[n, D]` and the state
        after them, as `forward` over the whole sequence would give (a stream's blocks)."""
        candidate, gate_logit, out_gate = self.in_proj(x).chunk(3, dim=-1)
        rate = torch.sigmoid(gate_logit)
        if not bool(state.started.all()):  # the sequence's first token: z = 1
            rate = torch.cat([torch.ones_like(rate[:1]), rate[1:]])
        h = continue_scan(candidate, rate, state.h)
        return self.out_proj(h * F.silu(out_gate)), RecurrentState(h[-1:], torch.ones_like(state.started))


def continue_scan(x: Tensor, rate: Tensor, h: Tensor) -> Tensor:
    """`h_t = rate_t·x_t + (1 − rate_t)·h_{t−1}` over `x [n, D]` from `h [1, D]`: one `addcmul` per
    step for a few steps (a stream's usual block), `ema_scan` with `h` prepended for more."""
    if x.shape[0] > 8:
        cu = torch.tensor([0, x.shape[0] + 1], dtype=torch.int32, device=x.device)
        return ema_scan(torch.cat([h, x]), torch.cat([torch.ones_like(rate[:1]), rate]), cu)[1:]
    drive, keep = rate * x, 1.0 - rate
    rows = []
    for t in range(x.shape[0]):
        h = torch.addcmul(drive[t : t + 1], keep[t : t + 1], h)
        rows.append(h)
    return rows[0] if len(rows) == 1 else torch.cat(rows)


class Attention(nn.Module):
    """Multi-head attention within each sequence (`window=None`: global; `window=w`: ±w tokens;
    `causal`: earlier tokens only), with rotary positions in continuous time."""

    def __init__(
        self, dim: int, heads: int, window: int | None = None, time_scale: float = 50.0, causal: bool = False
    ) -> None:
        super().__init__()
        if dim % heads or (dim // heads) % 2:
            raise ValueError(f"Attention: dim {dim} must split into {heads} heads of even size")
        self.heads, self.window, self.time_scale, self.causal = heads, window, time_scale, causal
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)

    def forward(self, x: Tensor, batch: Ragged) -> Tensor:
        """`x [T, D]` (values of `batch`) → `[T, D]`."""
        return self._attend(x, batch)[0]

    def _attend(self, x: Tensor, batch: Ragged) -> tuple[Tensor, Tensor, Tensor]:
        q, k, v = rearrange(self.qkv(x), "t (three h d) -> three t h d", three=3, h=self.heads)
        positions = token_positions(batch, self.time_scale)
        q, k = rotary(q, positions), rotary(k, positions)
        out = varlen_attention(q, k, v, batch.cu_seqlens, causal=self.causal, window=self.window)
        return self.out(rearrange(out, "t h d -> t (h d)")), k, v

    def init_state(self, batch: int, capacity: int, like: Tensor) -> KVCache:
        """An empty cache for `batch` sequences of up to `capacity` tokens (causal only)."""
        if not self.causal:
            raise ValueError("Attention: only causal attention can run step by step")
        slots = capacity if self.window is None else min(capacity, self.window + 1)
        head_dim = self.out.in_features // self.heads
        kv = like.new_zeros(batch, self.heads, slots, head_dim)
        pos = torch.full((batch, slots), -1, dtype=torch.long, device=like.device)
        return KVCache(kv, kv.clone(), pos, torch.zeros(batch, dtype=torch.long, device=like.device))

    def prefill(self, x: Tensor, batch: Ragged, room: int) -> tuple[Tensor, KVCache]:
        """`forward` over token indices as positions, and the cache of every sequence's tokens with
        `room` more slots (the longest sequence + `room`: steps attend over the slots, so a cache
        sized for this level's tokens, not the bytes', keeps a chunk level's steps cheap)."""
        if batch.t_start is not None:
            raise ValueError("Attention: the step path takes token indices as positions, not times")
        out, k, v = self._attend(x, batch)
        lengths = seq_lengths(batch.cu_seqlens)
        longest = int(lengths.max()) if lengths.numel() else 0
        cache = self.init_state(batch.batch_size, longest + room, x)
        seq = segment_ids(batch.cu_seqlens, batch.num_tokens)
        index = torch.arange(batch.num_tokens, device=x.device) - batch.cu_seqlens.long()[seq]
        slots = cache.k.shape[2]
        keep = index >= lengths[seq] - slots  # a window keeps the last `slots` tokens
        seq, index = seq[keep], index[keep]
        cache.k[seq, :, index % slots] = k[keep].to(cache.k.dtype)
        cache.v[seq, :, index % slots] = v[keep].to(cache.v.dtype)
        cache.pos[seq, index % slots] = index
        cache.length = lengths
        return out, cache

    def step(
        self, x: Tensor, cache: KVCache, active: Tensor | None = None, rows: Tensor | None = None
    ) -> tuple[Tensor, KVCache]:
        """One token per sequence: `x [B, D]` (or `[b, D]` of the sequences `rows`) → the same shape,
        at position `cache.length`; its key and value go into the cache in place (not for rows with
        `active` False, whose output is unused). A sub-batch attends over a gathered copy of its
        rows of the cache."""
        slots = cache.k.shape[2]
        q, k, v = rearrange(self.qkv(x), "b (three h d) -> three b h d", three=3, h=self.heads)
        index = torch.arange(x.shape[0], device=x.device) if rows is None else rows
        position = cache.length[index]
        q, k = rotary(q, position.float()), rotary(k, position.float())
        write = torch.ones_like(position, dtype=torch.bool) if active is None else active
        slot = position % slots
        cache.k[index, :, slot] = torch.where(write[:, None, None], k, cache.k[index, :, slot])
        cache.v[index, :, slot] = torch.where(write[:, None, None], v, cache.v[index, :, slot])
        cache.pos[index, slot] = torch.where(write, position, cache.pos[index, slot])
        keys, values, pos = (t if rows is None else t[rows] for t in (cache.k, cache.v, cache.pos))
        visible = (pos >= 0) & (pos <= position[:, None])
        if self.window is not None:
            visible &= position[:, None] - pos <= self.window
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        scores = torch.einsum("bhd,bhsd->bhs", q.to(dtype), keys.to(dtype)) / q.shape[-1] ** 0.5
        weights = scores.masked_fill(~visible[:, None, :], float("-inf")).softmax(-1).nan_to_num(0.0)
        out = torch.einsum("bhs,bhsd->bhd", weights, values.to(dtype)).to(x.dtype)
        length = merge_rows(cache.length, position + write.long(), None, rows)
        return self.out(rearrange(out, "b h d -> b (h d)")), KVCache(cache.k, cache.v, cache.pos, length)


class MixerBlock(nn.Module):
    """Pre-norm residual block: a sequence mixer ("recurrent", "window" or "attention"), then a
    SwiGLU feed-forward, or with `moe={"experts": E, "top_k": k}` a mixture of SwiGLU experts.
    `causal`: attention mixers see earlier tokens only (the recurrence always does)."""

    def __init__(
        self,
        dim: int,
        mixer: str,
        heads: int = 4,
        window: int = 16,
        mlp_ratio: float = 2.0,
        moe: dict | None = None,
        causal: bool = False,
    ) -> None:
        super().__init__()
        if mixer not in MIXERS:
            raise ValueError(f"MixerBlock: mixer must be one of {MIXERS}, got {mixer!r}")
        self.norm1, self.norm2 = RMSNorm(dim), RMSNorm(dim)
        if mixer == "recurrent":
            self.mixer = GatedRecurrence(dim)
        else:
            self.mixer = Attention(dim, heads, window if mixer == "window" else None, causal=causal)
        if moe is None:
            self.mlp = SwiGLU(dim, int(dim * mlp_ratio))
        else:
            from mmchunk.moe import MoEFeedForward

            self.mlp = MoEFeedForward(dim, int(dim * mlp_ratio), moe.get("experts", 4), moe.get("top_k", 2))

    def forward(self, x: Ragged) -> Ragged:
        """Ragged `[T, D]` → Ragged `[T, D]`."""
        h = x.values + self.mixer(self.norm1(x.values), x)
        return x.with_values(h + self.mlp(self.norm2(h)))

    def init_state(self, batch: int, capacity: int, like: Tensor) -> RecurrentState | KVCache:
        """The mixer's state before any token."""
        return self.mixer.init_state(batch, capacity, like)

    def prefill(self, x: Ragged, room: int) -> tuple[Ragged, RecurrentState | KVCache]:
        """`forward`, and the mixer's state after each sequence (`room`: tokens still to come)."""
        mixed, state = self.mixer.prefill(self.norm1(x.values), x, room)
        h = x.values + mixed
        return x.with_values(h + self.mlp(self.norm2(h))), state

    def step(
        self, x: Tensor, state, active: Tensor | None = None, rows: Tensor | None = None
    ) -> tuple[Tensor, RecurrentState | KVCache]:
        """One token per sequence: `x [B, D]` (or `[b, D]` of the sequences `rows`) → the same shape."""
        mixed, state = self.mixer.step(self.norm1(x), state, active, rows)
        return self._feed_forward(x + mixed), state

    def extend(self, x: Tensor, state: RecurrentState) -> tuple[Tensor, RecurrentState]:
        """The next tokens `x [n, D]` of one sequence after `state` (recurrent mixer only)."""
        mixed, state = self.mixer.extend(self.norm1(x), state)
        return self._feed_forward(x + mixed), state

    def _feed_forward(self, h: Tensor) -> Tensor:
        return h + self.mlp(self.norm2(h))


class MixerStack(nn.Sequential):
    """`depth` MixerBlocks of one kind: Ragged `[T, D]` → Ragged `[T, D]`."""

    def __init__(
        self,
        dim: int,
        depth: int,
        mixer: str,
        heads: int = 4,
        window: int = 16,
        moe: dict | None = None,
        causal: bool = False,
    ) -> None:
        super().__init__(
            *(MixerBlock(dim, mixer, heads, window, moe=moe, causal=causal) for _ in range(depth))
        )

    def init_state(self, batch: int, capacity: int, like: Tensor) -> list:
        """Every block's state before any token."""
        return [block.init_state(batch, capacity, like) for block in self]

    def prefill(self, x: Ragged, room: int) -> tuple[Ragged, list]:
        """`forward`, and every block's state after each sequence."""
        states = []
        for block in self:
            x, state = block.prefill(x, room)
            states.append(state)
        return x, states

    def step(
        self, x: Tensor, states: list, active: Tensor | None = None, rows: Tensor | None = None
    ) -> tuple[Tensor, list]:
        """One token per sequence through every block: `x [B, D]` (or `[b, D]` of the sequences
        `rows`, `mmchunk.stepping`) → the same shape."""
        new = []
        for block, state in zip(self, states):
            x, state = block.step(x, state, active, rows)
            new.append(state)
        return x, new

    def extend(self, x: Tensor, states: list) -> tuple[Tensor, list]:
        """The next tokens `x [n, D]` of one sequence through every block (recurrent mixers only),
        continuing from `states` (`init_state(1, ...)` at the sequence's start)."""
        new = []
        for block, state in zip(self, states):
            x, state = block.extend(x, state)
            new.append(state)
        return x, new
