"""Bag-of-words objective: the pooled audio chunks predict which hashed words the transcript holds."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn

from mmchunk.layers import RMSNorm
from mmchunk.losses import bag_of_words_loss, word_buckets, word_hash_table
from mmchunk.objectives.base import Objective
from mmchunk.ragged import Ragged
from mmchunk.ragged_ops import mean_pool


class BagOfWords(Objective):
    """A head on the mean of the audio chunk outputs `[B, D]` gives logits over `buckets` hashed words
    (`word_buckets`); the loss is the cross-entropy against each transcript's bag of words
    (`bag_of_words_loss`): no timings, no word order, a lexical push against memorising clips.
    Term: `words`."""

    name = "words"

    def __init__(self, weight: float = 0.5, buckets: int = 4096) -> None:
        super().__init__(weight)
        if buckets < 2:
            raise ValueError(f"words: buckets must be ≥ 2, got {buckets}")
        self.buckets = buckets
        self.head = nn.Identity()
        self.register_buffer("table", word_hash_table(), persistent=False)

    def setup(self, model) -> None:
        self.head = nn.Sequential(RMSNorm(model.dim), nn.Linear(model.dim, self.buckets))

    def forward(self, out, inputs: Mapping[str, Ragged]) -> dict[str, Tensor]:
        text = inputs.get("text")
        if text is None or "audio" not in out.chunks:
            return {}
        logits = self.head(mean_pool(out.chunks["audio"]))
        bucket, sequence = word_buckets(text.values, text.cu_seqlens, self.table, logits.shape[1])
        return {"words": bag_of_words_loss(logits, bucket, sequence)}
