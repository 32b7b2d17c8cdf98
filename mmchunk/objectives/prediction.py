"""Next-feature objective: H-Net's routing signal, predicting each next encoder feature through dechunk."""

from __future__ import annotations

from collections.abc import Mapping

import torch.nn.functional as F
from torch import Tensor, nn

from mmchunk.kernels import sequence_starts
from mmchunk.objectives.base import Objective
from mmchunk.ragged import Ragged


class NextFeature(Objective):
    """Per modality, a linear head on the dechunked main-network output `[T, D]` at token t predicts
    the encoder feature of token t+1 (detached); the loss is 1 − cosine, averaged over the tokens
    that have a successor in their sequence. Its gradient through dechunk's confidence is what
    trains the routing. Term: `predict_{m}`."""

    name = "predict"

    def __init__(self, weight: float = 0.1) -> None:
        super().__init__(weight)
        self.heads = nn.ModuleDict()

    def setup(self, model) -> None:
        self.heads = nn.ModuleDict({m: nn.Linear(model.dim, model.dim) for m in model.encoders})

    def forward(self, out, inputs: Mapping[str, Ragged]) -> dict[str, Tensor]:
        terms = {}
        for m, feats in out.features.items():
            tokens = out.tokens[m]
            keep = ~sequence_starts(feats.cu_seqlens, feats.num_tokens)[1:]
            if not keep.any():
                terms[f"predict_{m}"] = tokens.sum() * 0.0
                continue
            pred = self.heads[m](tokens[:-1][keep])
            target = feats.values[1:][keep].detach()
            terms[f"predict_{m}"] = (1.0 - F.cosine_similarity(pred, target, dim=-1)).mean()
        return terms
