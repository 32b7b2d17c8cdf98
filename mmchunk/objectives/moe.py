"""Mixture-of-experts balance objective: the load-balancing loss of the backbone's expert routers."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from mmchunk.objectives.base import Objective
from mmchunk.ragged import Ragged


class MoEBalance(Objective):
    """The backbone's expert load-balancing loss per modality (`FusionOutput.aux`; none without
    mixture-of-experts stages). Term: `moe_{m}`."""

    name = "moe"

    def __init__(self, weight: float = 0.01) -> None:
        super().__init__(weight)

    def forward(self, out, inputs: Mapping[str, Ragged]) -> dict[str, Tensor]:
        return {f"moe_{m}": balance for m, balance in out.aux.items()}
