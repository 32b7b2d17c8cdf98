"""Training objectives of the audio-text model, one module each, combined by a recipe's `objectives:`.

A recipe names the objectives it trains with and their options, in order:

    objectives:
      contrastive: {}
      ratio: {weight: 0.2}
      predict: {weight: 0.1}
      my_package.my_module.MyObjective: {weight: 0.3}   # any Objective subclass, by import path

`Objectives` makes them and runs them on one batch. Adding an objective is a new
`Objective` subclass in a new file: nothing else changes.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping

from torch import Tensor, nn

from mmchunk.objectives.alignment_losses import Anchor, Onset, Pause
from mmchunk.objectives.base import Objective
from mmchunk.objectives.contrastive import Contrastive
from mmchunk.objectives.ctc import CTC
from mmchunk.objectives.matching import Matching
from mmchunk.objectives.moe import MoEBalance
from mmchunk.objectives.prediction import NextFeature
from mmchunk.objectives.ratio import Ratio
from mmchunk.objectives.words import BagOfWords
from mmchunk.ragged import Ragged

BUILTIN: dict[str, type[Objective]] = {
    cls.name: cls
    for cls in (Contrastive, Ratio, NextFeature, MoEBalance, Matching, CTC, Pause, Anchor, Onset, BagOfWords)
}
"""The built-in objectives by recipe name."""

DEFAULT_OBJECTIVES: dict[str, dict] = {
    "contrastive": {},
    "ratio": {"weight": 0.03},
    "predict": {"weight": 0.1},
    "match": {"weight": 0.5},
    "moe": {"weight": 0.01},
}
"""What trains when a recipe names no objectives: H-Net's ratio and next-feature losses, CLAP's
contrastive loss and the fusion stack's matching loss (the expert balance where there are experts)."""


def objective_class(name: str) -> type[Objective]:
    """A built-in objective's class by name, or any `Objective` subclass by its import path."""
    if name in BUILTIN:
        return BUILTIN[name]
    module, _, attr = name.rpartition(".")
    known = ", ".join(BUILTIN)
    if not module:
        raise ValueError(f"objectives: unknown objective {name!r} (built in: {known}; or an import path)")
    try:
        cls = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"objectives: cannot import {name!r}: {exc}") from None
    if not (isinstance(cls, type) and issubclass(cls, Objective)):
        raise ValueError(f"objectives: {name!r} is not an Objective subclass")
    return cls


class Objectives(nn.ModuleDict):
    """The objectives a network trains with, keyed by name; calling it gives every term of a batch.

    spec: name → keyword options of each objective, in order (None: `DEFAULT_OBJECTIVES`); each is
    set up for `model` (it checks what it reads and builds its heads). An objective of weight 0 is
    left out: it costs nothing. In any training loop:

        objectives = Objectives({"contrastive": {}, "ratio": {"weight": 0.2}}, model)
        out = model(inputs, align=objectives.needs_alignment)
        objectives(out, inputs)["total"].backward()
    """

    def __init__(self, spec: Mapping[str, Mapping | None] | None, model: nn.Module) -> None:
        super().__init__()
        for name, options in (DEFAULT_OBJECTIVES if spec is None else spec).items():
            cls = objective_class(name)
            if not isinstance(options, Mapping | None):
                raise ValueError(
                    f"objectives: {name}: options must be a mapping, e.g. {{weight: 0.5}}, got {options!r}"
                )
            try:
                objective = cls(**dict(options or {}))
            except TypeError as exc:
                raise ValueError(f"objectives: {name}: {exc}") from None
            if objective.weight == 0:
                continue
            objective.setup(model)
            self[cls.name if name in BUILTIN else name.replace(".", "_")] = objective

    @property
    def needs_alignment(self) -> bool:
        """Whether any objective reads the CTC head's alignment of the transcript (`FusionOutput.frames`)."""
        return any(o.needs_alignment for o in self.values())

    def forward(self, out, inputs: Mapping[str, Ragged], step: int = 0) -> dict[str, Tensor]:
        """Every named term on one batch, and `total`: their sum, each term × its objective's weight
        at optimizer step `step`."""
        terms: dict[str, Tensor] = {}
        total = out.audio_embedding.new_zeros(())
        for objective in self.values():
            weight = objective.weight_at(step)
            for key, value in objective(out, inputs).items():
                terms[key] = value
                total = total + weight * value
        terms["total"] = total
        return terms


__all__ = [
    "BUILTIN",
    "CTC",
    "DEFAULT_OBJECTIVES",
    "Anchor",
    "BagOfWords",
    "Contrastive",
    "Matching",
    "MoEBalance",
    "NextFeature",
    "Objective",
    "Objectives",
    "Onset",
    "Pause",
    "Ratio",
    "objective_class",
]
