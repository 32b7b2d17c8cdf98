"""Nested H-Net stages: encoder → chunk → main network → dechunk → decoder, main possibly a stage."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from mmchunk import stepping
from mmchunk.chunker import ChunkerOutput, ChunkerState, DynamicChunker
from mmchunk.ragged import Ragged


@dataclass
class StageOutput:
    """Token-level output `[T, D]` of a stage and the routing of every nested stage, outermost first."""

    output: Ragged
    routing: list[ChunkerOutput]


@dataclass
class StageState:
    """A stage's step state: its encoder's, chunker's (routing and dechunk), main network's and
    decoder's (None for an identity)."""

    encoder: Any
    chunker: ChunkerState
    main: Any
    decoder: Any


class ChunkedStage(nn.Module):
    """One H-Net stage over Ragged batches; nest stages by passing a `ChunkedStage` as `main`.

    `encoder`, `main` and `decoder` map a Ragged `[T, D]` to a Ragged `[T, D]` (`main` may instead
    return a `StageOutput`); a missing encoder or decoder is the identity. `main` runs on the chunks.
    The step path (`init_state`, `prefill`, `step`) runs one token per sequence; `main` steps only
    for the sequences whose token opens a chunk.
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

    def init_state(self, batch: int, capacity: int, like: Tensor) -> StageState:
        """The state of `batch` sequences before any token (`capacity`: the most tokens a
        sequence will hold, for attention caches)."""
        return StageState(
            stepping.init_state(self.encoder, batch, capacity, like),
            self.chunker.init_state(batch, capacity, like),
            self.main.init_state(batch, capacity, like),
            stepping.init_state(self.decoder, batch, capacity, like),
        )

    def prefill(self, x: Ragged, room: int) -> tuple[StageOutput, StageState]:
        """`forward` over whole prompts `x [T, D]`, and the state after each sequence, with room
        for `room` more tokens per sequence (so as many chunks at most)."""
        hidden, encoder = stepping.prefill(self.encoder, x, room)
        routed = self.chunker(hidden)
        inner, main = self.main.prefill(routed.chunks, room)
        nested = inner.routing if isinstance(inner, StageOutput) else []
        inner = inner.output if isinstance(inner, StageOutput) else inner
        tokens, chunker = self.chunker.prefill(hidden, inner.values, routed)
        output, decoder = stepping.prefill(self.decoder, hidden.with_values(tokens), room)
        return StageOutput(output, [routed, *nested]), StageState(encoder, chunker, main, decoder)

    def step(
        self,
        x: Tensor,
        state: StageState,
        active: Tensor | None = None,
        rows: Tensor | None = None,
        ragged: bool = False,
    ) -> tuple[Tensor, StageState]:
        """One token per sequence, `x [B, D]` → `[B, D]`, masked or ragged (`mmchunk.stepping`). Masked:
        rows with `active [B]` False keep their state, and the main network steps on every row,
        kept where a chunk opens. Ragged (`ragged`, or `x [b, D]` of the sequences `rows [b]`): the
        main network runs on just the sequences that open a chunk, and not at all when none does."""
        hidden, encoder = stepping.step(self.encoder, x, state.encoder, active, rows)
        probs, boundary = self.chunker.route_step(hidden, state.chunker, rows)
        opens = boundary if active is None else boundary & active
        if rows is None and not ragged:
            inner, main = self.main.step(hidden, state.main, opens)
        else:
            opening = opens.nonzero().squeeze(1)
            inner, main = torch.zeros_like(hidden), state.main
            if opening.numel():
                sub = opening if rows is None else rows[opening]
                z, main = self.main.step(hidden[opening], state.main, None, sub)
                inner = inner.index_copy(0, opening, z)
        tokens, chunker = self.chunker.dechunk_step(
            hidden, inner, probs, boundary, state.chunker, active, rows
        )
        output, decoder = stepping.step(self.decoder, tokens, state.decoder, active, rows)
        return output, StageState(encoder, chunker, main, decoder)
