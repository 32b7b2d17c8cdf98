"""The hierarchical backbone on fine chunks: outer local mixers, then global attention, optionally
on coarse chunks from a second dynamic chunking stage (2-stage H-Net)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mmchunk.chunker import ChunkerOutput, DynamicChunker
from mmchunk.chunkspace import MODALITY_IDS
from mmchunk.layers import MixerStack
from mmchunk.moe import MoEFeedForward
from mmchunk.ragged import Ragged

STAGES = (1, 2)


class ChunkBackbone(nn.Module):
    """Fine chunks `[C, D]` → `[C, D]`: `outer_depth` local mixing blocks (`outer_mixer`: "recurrent" =
    gated linear recurrence, "window" = sliding-window attention of ±`window` chunks), then `depth`
    global attention blocks. With `stages=2` a second `DynamicChunker` (its own routing, tied unless
    `tied_routing=False`, mean pooling) groups the outer outputs into coarse chunks, the attention
    runs on those and dechunk brings them back to the fine chunks (H-Net's nested stage). `moe`
    (`{"stages": ["outer", "inner"], "experts": E, "top_k": k}`) swaps the feed-forward of the named
    stages for a mixture of experts; `aux_loss()` sums their load-balancing losses of the last call."""

    def __init__(
        self,
        dim: int,
        depth: int = 2,
        heads: int = 4,
        outer_depth: int = 1,
        outer_mixer: str = "recurrent",
        stages: int = 1,
        window: int = 16,
        moe: dict | None = None,
        tied_routing: bool = True,
    ) -> None:
        super().__init__()
        if stages not in STAGES:
            raise ValueError(f"ChunkBackbone: stages must be one of {STAGES}, got {stages}")
        if outer_mixer not in ("recurrent", "window"):
            raise ValueError(f"ChunkBackbone: outer_mixer must be recurrent or window, got {outer_mixer!r}")
        moe = dict(moe or {})
        moe_stages = set(moe.pop("stages", ["inner"])) if moe else set()
        if unknown := moe_stages - {"outer", "inner"}:
            raise ValueError(
                f"ChunkBackbone: moe stages must be 'outer' and/or 'inner', got {sorted(unknown)}"
            )
        self.outer = MixerStack(
            dim, outer_depth, outer_mixer, heads, window, moe if "outer" in moe_stages else None
        )
        self.inner = MixerStack(dim, depth, "attention", heads, moe=moe if "inner" in moe_stages else None)
        self.chunker = (
            DynamicChunker(dim, pooling="mean", num_modalities=len(MODALITY_IDS), tied_routing=tied_routing)
            if stages == 2
            else None
        )

    def aux_loss(self) -> Tensor | None:
        """The summed load-balancing losses of the mixture-of-experts layers' last call (None without)."""
        losses = [m.aux_loss for m in self.modules() if isinstance(m, MoEFeedForward)]
        return torch.stack(losses).sum() if losses else None

    def forward(self, x: Ragged) -> tuple[Ragged, ChunkerOutput | None]:
        """Fine chunks `x [C, D]` → outputs `[C, D]` and the second stage's routing (None with one stage)."""
        hidden = self.outer(x)
        if self.chunker is None:
            return self.inner(hidden), None
        routed = self.chunker(hidden)
        coarse = self.inner(routed.chunks)
        return hidden.with_values(self.chunker.dechunk(coarse, routed)), routed
