"""Nested H-Net stages: encoder → chunk → main network → dechunk → decoder, main possibly a stage."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from mmchunk.chunker import ChunkerOutput, DynamicChunker
from mmchunk.ragged import Ragged


@dataclass
class StageOutput:
    """Token-level output `[T, D]` of a stage and the routing of every nested stage, outermost first."""

    output: Ragged
    routing: list[ChunkerOutput]


class ChunkedStage(nn.Module):
    """One H-Net stage over Ragged batches; nest stages by passing a `ChunkedStage` as `main`.

    `encoder`, `main` and `decoder` map a Ragged `[T, D]` to a Ragged `[T, D]` (`main` may instead
    return a `StageOutput`); a missing encoder or decoder is the identity. `main` runs on the chunks.
    """

    def __init__(
        self,
        dim: int,
        main: nn.Module,
        encoder: nn.Module | None = None,
        decoder: nn.Module | None = None,
        chunker: DynamicChunker | None = None,
    ) -> None:
        super().__init__()
        self.encoder = encoder if encoder is not None else nn.Identity()
        self.chunker = chunker if chunker is not None else DynamicChunker(dim)
        self.main = main
        self.decoder = decoder if decoder is not None else nn.Identity()

    def forward(self, x: Ragged) -> StageOutput:
        """Encode `x [T, D]`, chunk, run `main` on the chunks, dechunk and decode back to `[T, D]`."""
        hidden = self.encoder(x)
        routed = self.chunker(hidden)
        inner = self.main(routed.chunks)
        nested = inner.routing if isinstance(inner, StageOutput) else []
        inner = inner.output if isinstance(inner, StageOutput) else inner
        tokens = hidden.with_values(self.chunker.dechunk(inner, routed))
        return StageOutput(self.decoder(tokens), [routed, *nested])
