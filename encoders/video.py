"""VideoFrames: per-frame patch stem on a fixed spatial grid → frame vector → temporal local mixing."""

from __future__ import annotations

import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from mmchunk.layers import MixerStack, RMSNorm
from mmchunk.ragged import Ragged

from .base import ModalityEncoder, register


@register
class VideoFrames(ModalityEncoder):
    """Each frame `[3, H, W]` uint8 → patch convolution (`channels` per patch) → average-pooled to a
    fixed `grid` of cells → flattened, so the vector keeps *where* things are (a moving object
    changes it; a spatial mean would not) → linear to `[D]`; then `depth` temporal mixing blocks
    across the frames of each video. Identical frames give identical stem features; any frame size
    works (the grid is pooled adaptively)."""

    modality = "video"

    def __init__(
        self,
        dim: int,
        depth: int = 1,
        mixer: str = "recurrent",
        patch: int = 8,
        channels: int = 16,
        grid: tuple[int, int] = (6, 8),
        fps: float = 25.0,
    ) -> None:
        super().__init__(dim)
        self.native_rate_hz, self.grid = fps, tuple(grid)
        self.patch = nn.Conv2d(3, channels, patch, stride=patch)
        self.proj = nn.Linear(channels * self.grid[0] * self.grid[1], dim)
        self.norm = RMSNorm(dim)
        self.mixing = MixerStack(dim, depth, mixer)

    def stem(self, frames: Tensor) -> Tensor:
        """Frames `[F, 3, H, W]` uint8 → per-frame features `[F, D]` (before temporal mixing)."""
        if frames.shape[0] == 0:
            return frames.new_zeros(0, self.dim, dtype=self.proj.weight.dtype)
        # patch(frames / 255 − 0.5) with the scaling folded into the weights: no pass over the pixels
        weight = self.patch.weight / 255.0
        bias = self.patch.bias - 0.5 * self.patch.weight.sum((1, 2, 3))
        cells = F.gelu(F.conv2d(frames.float(), weight, bias, stride=self.patch.stride))
        if cells.shape[-2:] != self.grid:
            cells = F.adaptive_avg_pool2d(cells, self.grid)
        return self.norm(self.proj(rearrange(cells, "f c h w -> f (c h w)")))

    def forward(self, x: Ragged) -> Ragged:
        """Frames `[F, 3, H, W]` uint8 → features `[F, D]` (time spans kept)."""
        if x.values.dim() != 4 or x.values.shape[1] != 3:
            raise ValueError(f"VideoFrames: expected frames [F, 3, H, W], got {tuple(x.values.shape)}")
        return self.mixing(x.with_values(self.stem(x.values)))
