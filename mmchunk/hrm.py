"""HRM-style backbone (Wang et al. 2025): two recurrent modules at two timescales, one-step
gradient, deep supervision over segments with a detached carry, and ACT halting with a Q-head.

One segment runs `h_cycles × l_cycles` low-level updates `z_L ← norm(L(z_L + z_H + x))`, with a
high-level update `z_H ← norm(H(z_H + z_L))` after every `l_cycles` of them (the RMS norm after
each module keeps the states at one scale however many steps run, as HRM's post-norm blocks do;
without it the residual sums grow with every step and extra segments at inference hurt). All but
the final L and the final H update run under `torch.no_grad()` (the one-step gradient
approximation), so memory does not grow with the number of steps. The carry `(z_H, z_L)` leaves a
segment detached; a training loop calls `segment` repeatedly (deep supervision) and the Q-head on
the pooled `z_H` decides, per sequence, whether to halt (ACT). Everything runs on packed Ragged sequences.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from mmchunk.layers import MixerStack, RMSNorm
from mmchunk.ragged import Ragged
from mmchunk.ragged_ops import mean_pool


class HRMCarry(NamedTuple):
    """The recurrent state between segments: `z_h`, `z_l` `[T, D]` (detached)."""

    z_h: Tensor
    z_l: Tensor


class HRMOutput(NamedTuple):
    """One segment: the next carry (detached), the high-level state `[T, D]` with its one-step graph,
    and the Q-head's (halt, continue) logits per sequence `[B, 2]`."""

    carry: HRMCarry
    hidden: Ragged
    q_logits: Tensor


class HierarchicalReasoning(nn.Module):
    """A slow high-level module H and a fast low-level module L (each `layers` mixer blocks) over a
    Ragged sequence `[T, D]`; see the module docstring."""

    def __init__(
        self,
        dim: int,
        heads: int = 4,
        layers: int = 1,
        h_cycles: int = 2,
        l_cycles: int = 2,
        mixer: str = "attention",
    ) -> None:
        super().__init__()
        if h_cycles < 1 or l_cycles < 1:
            raise ValueError(f"HierarchicalReasoning: cycles must be >= 1, got {h_cycles} and {l_cycles}")
        self.h_cycles, self.l_cycles = h_cycles, l_cycles
        self.high = MixerStack(dim, layers, mixer, heads)
        self.low = MixerStack(dim, layers, mixer, heads)
        self.norm_h, self.norm_l = RMSNorm(dim), RMSNorm(dim)
        self.z_h0 = nn.Parameter(torch.randn(dim) * 0.02)
        self.z_l0 = nn.Parameter(torch.randn(dim) * 0.02)
        self.q_head = nn.Linear(dim, 2)
        with torch.no_grad():  # HRM: start by preferring to continue, so early halting is learned
            self.q_head.weight.zero_()
            self.q_head.bias.fill_(-5.0)

    def initial_carry(self, x: Ragged) -> HRMCarry:
        """The learned initial states, one row per token of `x`."""
        shape = (x.num_tokens, self.z_h0.shape[0])
        return HRMCarry(self.z_h0.detach().expand(shape).clone(), self.z_l0.detach().expand(shape).clone())

    def reset(self, carry: HRMCarry, fresh: Tensor, x: Ragged) -> HRMCarry:
        """`carry` with the tokens of the sequences where `fresh [B]` (bool) is set back to the start."""
        tokens = fresh[x.seq_ids][:, None]
        start = self.initial_carry(x)
        return HRMCarry(torch.where(tokens, start.z_h, carry.z_h), torch.where(tokens, start.z_l, carry.z_l))

    def low_step(self, z_l: Tensor, z_h: Tensor, x: Ragged) -> Tensor:
        """One low-level update `[T, D]`: `norm(L(z_L + z_H + x))`."""
        return self.norm_l(self.low(x.with_values(z_l + z_h + x.values)).values)

    def high_step(self, z_h: Tensor, z_l: Tensor, x: Ragged) -> Tensor:
        """One high-level update `[T, D]`: `norm(H(z_H + z_L))`."""
        return self.norm_h(self.high(x.with_values(z_h + z_l)).values)

    def segment(self, carry: HRMCarry, x: Ragged) -> HRMOutput:
        """One segment of `h_cycles × l_cycles` steps from `carry` on the input `x [T, D]`."""
        z_h, z_l = carry
        steps = self.h_cycles * self.l_cycles
        with torch.no_grad():
            for step in range(1, steps):
                z_l = self.low_step(z_l, z_h, x)
                if step % self.l_cycles == 0:
                    z_h = self.high_step(z_h, z_l, x)
        assert not (z_h.requires_grad or z_l.requires_grad), "HRM: only the last L and H steps keep a graph"
        z_l = self.low_step(z_l, z_h, x)
        z_h = self.high_step(z_h, z_l, x)
        hidden = x.with_values(z_h)
        return HRMOutput(HRMCarry(z_h.detach(), z_l.detach()), hidden, self.q_head(mean_pool(hidden)))


def act_halt(q_logits: Tensor, step: int, max_steps: int, min_steps: Tensor | None = None) -> Tensor:
    """ACT decision per sequence `[B]` (bool) after segment `step` (1-based): halt when the Q-head
    prefers halting (`q_halt > q_continue`) and at least `min_steps [B]` segments ran (exploration
    draws them during training), and always at `max_steps`. Evaluation may pass a larger
    `max_steps` than training used: more segments, more compute, same weights."""
    halt = q_logits[:, 0] > q_logits[:, 1]
    if min_steps is not None:
        halt &= step >= min_steps
    return halt | (step >= max_steps)


def exploration_min_steps(
    batch: int, max_steps: int, prob: float, generator: torch.Generator | None = None
) -> Tensor:
    """HRM's exploration: with probability `prob` a sequence must run a random number of segments in
    [2, max_steps] before it may halt, else at least 1. `[B]` int64."""
    explore = torch.rand(batch, generator=generator) < prob
    random_steps = torch.randint(2, max(max_steps, 2) + 1, (batch,), generator=generator)
    return torch.where(explore, random_steps, torch.ones_like(random_steps))


def continue_target(next_q_logits: Tensor, at_max: bool) -> Tensor:
    """Q-learning target `[B]` of the continue logit of a segment, from the next segment's
    (halt, continue) logits: the probability of its best action, or of halting when the next
    segment is the last allowed. The halt logit's target is simply whether the prediction was right."""
    best = next_q_logits[:, 0] if at_max else next_q_logits.max(dim=-1).values
    return torch.sigmoid(best).detach()


class HRMBackbone(nn.Module):
    """The HRM as the chunk backbone of `ChunkFusionModel` (`backbone="hrm"`): `segments` segments
    from the initial carry, the gradient through the last one only (the carry between them is
    detached), the same interface as `ChunkBackbone` (no second chunking stage, no MoE)."""

    def __init__(
        self,
        dim: int,
        heads: int = 4,
        layers: int = 1,
        h_cycles: int = 2,
        l_cycles: int = 2,
        segments: int = 2,
    ) -> None:
        super().__init__()
        if segments < 1:
            raise ValueError(f"HRMBackbone: segments must be >= 1, got {segments}")
        self.segments = segments
        self.hrm = HierarchicalReasoning(dim, heads, layers, h_cycles, l_cycles)

    def aux_loss(self) -> None:
        """No auxiliary losses (the Q-head is trained only by recipes with ACT)."""
        return None

    def forward(self, x: Ragged) -> tuple[Ragged, None]:
        """Chunks `x [C, D]` → the high-level state after the last segment `[C, D]`, and no second routing."""
        carry = self.hrm.initial_carry(x)
        for _ in range(self.segments):
            out = self.hrm.segment(carry, x)
            carry = out.carry
        return out.hidden, None
