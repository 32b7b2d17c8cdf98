"""Ratio objective: H-Net's ratio loss, holding each modality's learned routing to its compression target."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from mmchunk.chunker import ratio_loss
from mmchunk.objectives.base import Objective
from mmchunk.ragged import Ragged


class Ratio(Objective):
    """`ratio_loss` of every modality with learned routing against its target (`FusionOutput.targets`,
    from the one chunk rate), and of a second chunking stage against `inner_ratio` fine chunks per
    coarse chunk. per_sequence: every clip is held to the target, not only the batch on average.
    Terms: `ratio_{m}`, `ratio_{m}_stage2`."""

    name = "ratio"

    def __init__(self, weight: float = 0.03, per_sequence: bool = True, inner_ratio: float = 3.0) -> None:
        super().__init__(weight)
        if inner_ratio <= 1:
            raise ValueError(
                f"ratio: inner_ratio must be > 1 fine chunks per coarse chunk, got {inner_ratio}"
            )
        self.per_sequence, self.inner_ratio = per_sequence, inner_ratio

    def forward(self, out, inputs: Mapping[str, Ragged]) -> dict[str, Tensor]:
        terms = {}
        for m, feats in out.features.items():
            routed = out.routing[m]
            if m in out.targets:  # learned routing (a baseline segmentation has no target)
                cu = feats.cu_seqlens if self.per_sequence else None
                terms[f"ratio_{m}"] = ratio_loss(routed.boundary_mask, routed.probs, out.targets[m], cu)
            if (inner := out.routing.get(f"{m}_stage2")) is not None:
                inner_cu = routed.chunks.cu_seqlens if self.per_sequence else None
                terms[f"ratio_{m}_stage2"] = ratio_loss(
                    inner.boundary_mask, inner.probs, self.inner_ratio, inner_cu
                )
        return terms
