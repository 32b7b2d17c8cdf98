"""VideoFrames: per-frame patch stem → pooled frame vector → temporal local mixing."""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from mmchunk.layers import MixerStack, RMSNorm
from mmchunk.ragged import Ragged

from .base import ModalityEncoder, register


@register
class VideoFrames(ModalityEncoder):
    """Each frame `[3, H, W]` uint8 → patch convolution → mean over patches → `[D]`, then `depth`
    temporal mixing blocks across the frames of each video. Identical frames give identical
    stem features."""

    modality = "video"

    def __init__(
        self, dim: int, depth: int = 1, mixer: str = "recurrent", patch: int = 8, fps: float = 25.0
    ) -> None:
        super().__init__(dim)
        self.native_rate_hz = fps
        self.patch = nn.Conv2d(3, dim, patch, stride=patch)
        self.norm = RMSNorm(dim)
        self.mixing = MixerStack(dim, depth, mixer)

    def forward(self, x: Ragged) -> Ragged:
        """Frames `[F, 3, H, W]` uint8 → features `[F, D]` (time spans kept)."""
        pixels = x.values.float() / 255.0 - 0.5
        pooled = (
            F.gelu(self.patch(pixels)).mean(dim=(-2, -1)) if x.num_tokens else pixels.new_zeros(0, self.dim)
        )
        return self.mixing(x.with_values(self.norm(pooled)))
