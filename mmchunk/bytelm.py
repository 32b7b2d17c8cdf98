"""Causal byte-level language models for HashHop: a flat Transformer and 1- or 2-stage H-Nets.

`ByteLM(stages=0)` is a stack of causal attention blocks on bytes. With `stages=s ≥ 1` it is
H-Net's nesting: byte embedding → gated-recurrence encoder → `DynamicChunker` (boundary pooling:
a chunk is its first byte, so nothing leaks from later bytes) → the next stage, or the causal
attention main network → dechunk → gated-recurrence decoder → next-byte logits. Every part is
causal, so position t's logits depend on bytes ≤ t only (tested), and the model also runs step by
step: `prefill` the prompts in one packed pass, then `step` one byte per sequence (`generate`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmchunk.chunker import DynamicChunker, ratio_loss
from mmchunk.kernels import sequence_starts
from mmchunk.layers import MixerStack, RMSNorm
from mmchunk.ragged import Ragged
from mmchunk.stage import ChunkedStage, StageOutput
from mmchunk.stepping import last_rows, state_rows

STAGES = (0, 1, 2)


class ByteLM(nn.Module):
    """Next-byte model over packed byte sequences (see the module docstring).

    dim: width; depth: causal attention blocks of the main network; stages: 0 (flat), 1 or 2 chunking
    stages, each with `outer_depth` recurrent blocks before and after it; ratios: the compression
    target of each stage (bytes per chunk, then chunks per chunk).
    """

    def __init__(
        self,
        dim: int = 128,
        depth: int = 2,
        heads: int = 4,
        stages: int = 1,
        outer_depth: int = 1,
        ratios: tuple[float, ...] = (4.0, 3.0),
    ) -> None:
        super().__init__()
        if stages not in STAGES:
            raise ValueError(f"ByteLM: stages must be one of {STAGES}, got {stages}")
        if len(ratios) < stages:
            raise ValueError(f"ByteLM: {stages} stages need {stages} ratios, got {ratios}")
        self.stages, self.ratios = stages, tuple(ratios[:stages])
        self.embed = nn.Embedding(256, dim)
        network: nn.Module = MixerStack(dim, depth, "attention", heads, causal=True)
        for _ in range(stages):
            network = ChunkedStage(
                dim,
                main=network,
                encoder=MixerStack(dim, outer_depth, "recurrent"),
                decoder=MixerStack(dim, outer_depth, "recurrent"),
                chunker=DynamicChunker(dim, pooling="boundary"),
            )
        self.network = network
        self.norm = RMSNorm(dim)
        self.head = nn.Linear(dim, 256, bias=False)

    def forward(self, data: Ragged) -> tuple[Tensor, list]:
        """Bytes `[T]` int64 → next-byte logits `[T, 256]` (row t predicts byte t+1) and the routing of
        each stage, outermost first."""
        x = data.with_values(self.embed(data.values.long()))
        out = self.network(x)
        if isinstance(out, StageOutput):
            hidden, routing = out.output.values, out.routing
        else:
            hidden, routing = out.values, []
        return self.head(self.norm(hidden)), routing

    def loss(self, data: Ragged, target_mask: Tensor, ratio_weight: float = 0.03) -> tuple[Tensor, dict]:
        """Next-byte cross-entropy on the positions whose *next* byte has `target_mask [T]` set (the
        completion), plus α × the ratio loss of each stage. Returns (total, parts)."""
        logits, routing = self(data)
        starts = sequence_starts(data.cu_seqlens, data.num_tokens)
        predict = target_mask[1:] & ~starts[1:]  # predict byte t+1 from row t, never across sequences
        ce = F.cross_entropy(logits[:-1][predict], data.values[1:][predict].long())
        parts = {"next_byte": ce}
        total = ce
        for i, (routed, target) in enumerate(zip(routing, self.ratios)):
            parts[f"ratio_{i + 1}"] = ratio_loss(routed.boundary_mask, routed.probs, target)
            parts[f"compression_{i + 1}"] = torch.tensor(routed.compression)
            total = total + ratio_weight * parts[f"ratio_{i + 1}"]
        return total, parts

    def prefill(self, data: Ragged, room: int) -> tuple[Tensor, object]:
        """Whole prompts (bytes `[T]` of `cu_seqlens [B+1]`, every sequence non-empty) in one packed
        pass: the logits `[B, 256]` of each prompt's next byte and the step state of the network
        (attention caches with room for `room` more bytes per sequence)."""
        x = data.with_values(self.embed(data.values.long()))
        out, state = self.network.prefill(x, room)
        hidden = out.output if isinstance(out, StageOutput) else out
        return self.head(self.norm(last_rows(hidden.values, data.cu_seqlens))), state

    def step(self, byte: Tensor, state: object, ragged: bool = False) -> tuple[Tensor, object]:
        """One byte per sequence, `byte [B]` → the next byte's logits `[B, 256]` and the new state.
        `ragged`: each main network runs on just the sequences that open a chunk (one host sync per
        stage); else a masked step on every row (no sync; compiles as one graph). Same logits."""
        x = self.embed(byte.long())
        hidden, state = (
            self.network.step(x, state, ragged=True)
            if ragged and self.stages
            else self.network.step(x, state)
        )
        return self.head(self.norm(hidden)), state

    @torch.no_grad()
    def generate(
        self,
        prompts: list[bytes],
        max_new_bytes: int,
        temperature: float = 0.0,
        top_k: int | None = None,
        stop: bytes | None = None,
        seed: int = 0,
        ragged: bool = True,
    ) -> list[bytes]:
        """Continue every prompt by up to `max_new_bytes` bytes, all prompts in one batch: greedy at
        `temperature` 0, else sampled from the softmax at that temperature (over the `top_k` most
        likely bytes when given) with a generator seeded by `seed`. A sequence ends at any byte of
        `stop` (left out of its result) and leaves the batch: a finished sequence costs nothing more.
        `ragged`: see `step` (False for the sync-free masked step, e.g. under CUDA graphs)."""
        if any(len(p) == 0 for p in prompts):
            empty = next(i for i, p in enumerate(prompts) if len(p) == 0)
            raise ValueError(
                f"generate: prompt {empty} is empty; the model needs at least one byte to predict from"
            )
        if max_new_bytes < 0 or temperature < 0 or (top_k is not None and not 1 <= top_k <= 256):
            raise ValueError(
                f"generate: need max_new_bytes >= 0, temperature >= 0 and 1 <= top_k <= 256, got "
                f"{max_new_bytes}, {temperature}, {top_k}"
            )
        if not prompts or max_new_bytes == 0:
            return [b"" for _ in prompts]
        device = self.head.weight.device
        data = Ragged.from_list([torch.tensor(list(p), dtype=torch.long) for p in prompts]).to(device)
        logits, state = self.prefill(data, max_new_bytes)
        generator = torch.Generator(device).manual_seed(seed)
        stops = torch.tensor(sorted(set(stop or b"")), dtype=torch.long, device=device)
        rows = torch.arange(len(prompts), device=device)  # the original index of every live row
        out = torch.zeros(len(prompts), max_new_bytes, dtype=torch.long, device=device)
        length = torch.zeros(len(prompts), dtype=torch.long, device=device)
        for i in range(max_new_bytes):
            byte = pick(logits, temperature, top_k, generator)
            done = torch.isin(byte, stops)
            out[rows, i] = byte
            length[rows] += (~done).long()
            if i + 1 == max_new_bytes:
                break
            if done.any():
                keep = (~done).nonzero().squeeze(1)
                rows, byte, state = rows[keep], byte[keep], state_rows(state, keep)
                if rows.numel() == 0:
                    break
            logits, state = self.step(byte, state, ragged)
        return [bytes(out[b, : length[b]].tolist()) for b in range(len(prompts))]


def pick(logits: Tensor, temperature: float, top_k: int | None, generator: torch.Generator) -> Tensor:
    """The next byte `[B]` from logits `[B, 256]`: argmax at temperature 0, else a draw from the
    softmax of `logits / temperature` restricted to the `top_k` largest."""
    if temperature == 0:
        return logits.argmax(-1)
    scaled = logits.float() / temperature
    if top_k is not None:
        kth = scaled.topk(top_k, dim=-1).values[:, -1:]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    return torch.multinomial(scaled.softmax(-1), 1, generator=generator).squeeze(1)
