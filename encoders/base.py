"""The protocol of the per-modality encoders, and how configs name them."""

from __future__ import annotations

from torch import nn

from mmchunk.ragged import Ragged


class ModalityEncoder(nn.Module):
    """Raw Ragged input of one modality → features Ragged `[T, D]` at the modality's native rate.

    Subclasses set `modality` (its name in batches and configs) and `native_rate_hz` (tokens per
    second of the features they return, which fixes the modality's chunking target), and keep the
    input's time spans on every output token.
    """

    modality: str = ""
    native_rate_hz: float = 0.0

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: Ragged) -> Ragged:  # pragma: no cover - the protocol
        raise NotImplementedError


REGISTRY: dict[str, type[ModalityEncoder]] = {}


def register(cls: type[ModalityEncoder]) -> type[ModalityEncoder]:
    """Class decorator: make an encoder selectable by its `modality` name."""
    REGISTRY[cls.modality] = cls
    return cls


def build_encoder(modality: str, dim: int, **kwargs) -> ModalityEncoder:
    """The registered encoder of `modality` ("text", "audio", "video")."""
    if modality not in REGISTRY:
        raise ValueError(f"unknown encoder {modality!r}; known: {sorted(REGISTRY)}")
    return REGISTRY[modality](dim, **kwargs)
