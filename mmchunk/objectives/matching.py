"""Matching objective: the fusion stack tells a clip's own transcript from its hardest wrong one."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from mmchunk.chunkspace import MODALITY_IDS
from mmchunk.layers import RMSNorm
from mmchunk.losses import hardest_negatives, matching_loss
from mmchunk.objectives.base import Objective
from mmchunk.ragged import Ragged
from mmchunk.ragged_ops import mean_pool, select_rows, take_sequences


class Matching(Objective):
    """Audio-text matching in the common chunk space: each clip's chunks (audio, video) are merged in
    time with the chunks of its own transcript and, apart, with those of its hardest negative in the
    batch (`hardest_negatives` of the embedding similarities), through the network's fusion stack
    (`FusionOutput.fuse`); a head scores the product of the pooled text and other chunks, trained by
    binary cross-entropy (`matching_loss`). Needs every clip's video (no `video_clips`) and batches
    of 2 or more. Term: `match`."""

    name = "match"
    needs_alignment = True  # the text chunks take their aligned times in the common chunk space

    def __init__(self, weight: float = 0.5) -> None:
        super().__init__(weight)
        self.head = nn.Identity()

    def setup(self, model) -> None:
        if model.video_clips is not None:
            raise ValueError(
                f"match: fuses every clip's video: it cannot train with video_clips {model.video_clips}"
            )
        self.head = nn.Sequential(RMSNorm(model.dim), nn.Linear(model.dim, 1))

    def logits(self, out, chunks: Mapping[str, Ragged], text_index: Tensor) -> Tensor:
        """Match logit `[B]` of each sample's audio (and video) with the text of sample `text_index[b]`."""
        parts = {m: c for m, c in chunks.items() if m != "text"}
        parts["text"] = take_sequences(chunks["text"], text_index)
        fused = out.fuse(parts)
        is_text = fused.modality == MODALITY_IDS["text"]
        text = mean_pool(select_rows(fused, is_text))
        other = mean_pool(select_rows(fused, ~is_text))
        return self.head(text * other).squeeze(-1)

    def forward(self, out, inputs: Mapping[str, Ragged]) -> dict[str, Tensor]:
        batch = out.audio_embedding.shape[0]
        if batch < 2 or "text" not in out.chunks:
            return {}
        negatives = hardest_negatives(out.audio_embedding @ out.text_embedding.T)
        own = torch.arange(batch, device=negatives.device)
        # the first B pairs are true, the next B pair each audio with its hardest wrong text
        pairs = {m: take_sequences(c, own.repeat(2)) for m, c in out.chunks.items() if m != "text"}
        pairs["text"] = out.chunks["text"]
        logits = self.logits(out, pairs, torch.cat([own, negatives]))
        labels = torch.cat([torch.ones(batch), torch.zeros(batch)]).to(logits.device)
        return {"match": matching_loss(logits, labels)}
