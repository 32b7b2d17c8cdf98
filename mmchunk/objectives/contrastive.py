"""Contrastive objective: symmetric InfoNCE between the pooled audio and text embeddings of a batch."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from mmchunk.losses import info_nce
from mmchunk.objectives.base import Objective
from mmchunk.ragged import Ragged


class Contrastive(Objective):
    """Symmetric InfoNCE of the audio and text embeddings `[B, E]` at the network's learned
    temperature (`logit_scale`); each clip's own transcript is its positive, the batch's other
    transcripts its negatives. Term: `contrastive`."""

    name = "contrastive"

    def forward(self, out, inputs: Mapping[str, Ragged]) -> dict[str, Tensor]:
        return {"contrastive": info_nce(out.audio_embedding, out.text_embedding, out.logit_scale)}
