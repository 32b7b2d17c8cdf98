"""The objective protocol: a module that turns the network's output into named, weighted loss terms."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar

from torch import Tensor, nn

from mmchunk.ragged import Ragged

if TYPE_CHECKING:
    from mmchunk.model import ChunkFusionModel, FusionOutput


class Objective(nn.Module):
    """A training objective (open_clip's loss pattern): it reads the network's output, never runs the
    network, owns its own heads and options, and has its own weight in the total.

    `name` is its key in a recipe's `objectives:` and the prefix of the terms it logs;
    `needs_alignment`: it reads the CTC head's alignment of the transcript (`FusionOutput.frames`),
    which the network then computes in training too.
    """

    name: ClassVar[str]
    needs_alignment: ClassVar[bool] = False

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
        if weight < 0:
            raise ValueError(f"{self.name}: weight must be ≥ 0, got {weight}")
        self.weight = float(weight)

    def setup(self, model: ChunkFusionModel) -> None:
        """Check that `model` has what this objective reads (a one-line `ValueError` when it does
        not) and build the objective's own heads; called once, before training."""

    def weight_at(self, step: int) -> float:
        """The weight of every term of this objective at optimizer step `step` (a schedule's hook)."""
        return self.weight

    def forward(self, out: FusionOutput, inputs: Mapping[str, Ragged]) -> dict[str, Tensor]:
        """Named unweighted loss terms (scalars) of one batch; `inputs` are the network's inputs."""
        raise NotImplementedError
