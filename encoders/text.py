"""TextBytes: UTF-8 bytes → embeddings → local mixing."""

from __future__ import annotations

from torch import nn

from mmchunk.layers import MixerStack
from mmchunk.ragged import Ragged

from .base import ModalityEncoder, register


@register
class TextBytes(ModalityEncoder):
    """Byte embedding (256 entries) followed by `depth` local mixing blocks; one token per byte.

    `native_rate_hz` is the speaking rate in bytes per second that sets the text chunk target.
    """

    modality = "text"

    def __init__(
        self, dim: int, depth: int = 2, mixer: str = "recurrent", native_rate_hz: float = 14.0
    ) -> None:
        super().__init__(dim)
        self.native_rate_hz = native_rate_hz
        self.embed = nn.Embedding(256, dim)
        self.mixing = MixerStack(dim, depth, mixer)

    def forward(self, x: Ragged) -> Ragged:
        """Bytes `[T]` int64 → features `[T, D]`."""
        return self.mixing(x.with_values(self.embed(x.values)))
