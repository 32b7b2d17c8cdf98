"""Streaming segmentation: audio blocks of any size in, audio chunks out as soon as they close.

`StreamingSegmenter` runs the audio encoder and the shared chunker's routing incrementally, with
the state each needs carried between blocks: the samples of frames not yet complete, the running
level sums of `level="causal"`, the last `context` frames' features, the recurrent mixers' state,
and the routing windows' prefix sums. The boundaries are those of the whole recording in one pass
(`mmchunk.segment`), whatever the block sizes. It needs a causal audio configuration: the logmel
stem with `level: causal`, recurrent mixing, and no routing centring for audio.

Latency: a chunk is emitted once the frame that opens the next one has been routed, which needs
the audio up to `context + window − 1` frames past that frame, and then to the end of the last
one's analysis window (`latency_s`): 40 ms frames, `context: 1`, routing window 2 and 60 ms
windows give 130 ms (2 frames, and the 50 ms from a frame's start to its window's end).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from mmchunk.chunkspace import MODALITY_IDS
from mmchunk.data.decode import DecodeError
from mmchunk.encoders.audio import MEL_FLOOR
from mmchunk.layers import GatedRecurrence
from mmchunk.model import ChunkFusionModel


class StreamingSegmenter:
    """Feed audio blocks (`feed`), get the chunks they close; `flush` at the end of the stream.

    Chunks are `{"modality": "audio", "t0", "t1"}` in seconds, contiguous, the last ending at the
    stream's end: what `mmchunk.segment.segment_file` reports for the same audio.
    """

    def __init__(self, model: ChunkFusionModel) -> None:
        check_causal(model)
        encoder = model.encoders["audio"]
        self.model, self.encoder = model, encoder
        self.hop, self.width, self.rate = encoder.hop, encoder.width, encoder.sample_rate
        self.context, self.left = encoder.context, (encoder.width - encoder.hop) // 2
        windows = model.chunker.routing_windows
        self.window = int(windows[MODALITY_IDS["audio"]]) if windows is not None else 1
        embedding = model.chunker.modality_embedding
        audio = torch.tensor(MODALITY_IDS["audio"])
        self.bias = embedding(audio).detach() if embedding is not None else torch.zeros(encoder.dim)
        self.received = 0
        self.samples, self.sample_base = torch.zeros(self.left), -self.left  # absolute index of samples[0]
        self.sums: dict[str, Tensor] = {}  # running float64 sums of the causal level
        self.feats, self.feat_base = torch.zeros(0, encoder.fbank.shape[1]), 0  # stem features
        self.mixer_state = encoder.mixing.init_state(1, 0, self.bias)
        self.mixed = 0  # frames through projection and mixing
        self.prefix, self.prefix_base = torch.zeros(1, encoder.dim, dtype=torch.float64), 0
        self.routed, self.last_key, self.chunk_start = 0, None, 0

    @property
    def latency_s(self) -> float:
        """The most audio past a boundary that its decision waits for (s)."""
        frames = self.context + self.window - 1
        return (frames * self.hop + self.width - self.left) / self.rate

    @torch.inference_mode()
    def feed(self, block: Tensor) -> list[dict]:
        """Add a block of samples `[n]` (mono, at the encoder's rate); returns the chunks it closed."""
        if block.dim() != 1:
            raise ValueError(
                f"StreamingSegmenter.feed: a block is [n] mono samples, got {tuple(block.shape)}"
            )
        if not torch.isfinite(block).all():
            raise DecodeError("audio contains NaN or infinite samples")
        self.samples = torch.cat([self.samples, block.float()])
        self.received += block.numel()
        end = self.sample_base + self.samples.numel()
        complete = max(0, (end + self.left - self.width) // self.hop + 1)  # frames whose window is in
        if complete <= self.feat_base + len(self.feats):
            return []
        self._stem(complete)
        self._mix(self.feat_base + len(self.feats) - self.context)
        return self._route(self.mixed - (self.window - 1), total=None)

    @torch.inference_mode()
    def flush(self) -> list[dict]:
        """End of stream: the chunks still open, the last one ending with the audio."""
        total = -(-self.received // self.hop)
        self.samples = torch.cat([self.samples, self.samples.new_zeros(self.width)])
        self._stem(total)
        self._mix(total, total)
        chunks = self._route(total, total)
        if total:
            chunks.append(self._chunk(self.chunk_start, total))
        return chunks

    def stream(self, blocks: Iterable[Tensor]) -> Iterator[dict]:
        """Every chunk of a stream of blocks, each as soon as it closes, then the rest at its end."""
        for block in blocks:
            yield from self.feed(block)
        yield from self.flush()

    def _stem(self, frames: int) -> None:
        """Stem features of the frames up to `frames` (the level and floor of the frames so far)."""
        first = self.feat_base + len(self.feats)
        if frames <= first:
            return
        offset = first * self.hop - self.left - self.sample_base
        span = self.samples[offset : offset + (frames - first - 1) * self.hop + self.width]
        power = self.encoder.frame_power(span.unfold(0, self.width, self.hop))
        floor = self._running("power", power.mean(1, keepdim=True), first) * MEL_FLOOR + 1e-30
        logmel = torch.log(power + floor)
        level = self._running(
            "level", logmel if self.encoder.band_mean else logmel.mean(1, keepdim=True), first
        )
        self.feats = torch.cat([self.feats, (logmel - level) / 4.0])
        drop = frames * self.hop - self.left - self.sample_base  # samples before the next frame's window
        self.samples, self.sample_base = self.samples[drop:], self.sample_base + drop

    def _running(self, name: str, values: Tensor, first: int) -> Tensor:
        """Running means of `values [n, C]` over the stream, the same float64 prefix sums as
        `causal_means` (the carried sum continues the cumulative sum)."""
        carry = self.sums.get(name)
        prefix = (
            values.double().cumsum(0) if carry is None else torch.cat([carry, values.double()]).cumsum(0)[1:]
        )
        self.sums[name] = prefix[-1:]
        count = torch.arange(first + 1, first + values.shape[0] + 1, dtype=torch.float64)
        return (prefix / count[:, None]).to(values.dtype)

    def _mix(self, upto: int, total: int | None = None) -> None:
        """Project and mix the frames up to `upto`, each with its `context` neighbours' features
        (the first and last frame repeated past the stream's ends)."""
        if upto <= self.mixed:
            return
        last = (total if total is not None else self.feat_base + len(self.feats)) - 1
        lo, hi, base = self.mixed - self.context, upto + self.context, self.feat_base  # frames read
        if lo >= 0 and hi - 1 <= last:  # inside the stream: a strided view, no gather
            rows = self.feats[lo - base : hi - base].unfold(0, 2 * self.context + 1, 1).transpose(1, 2)
        else:  # at an end of the stream: the first or last frame repeated
            index = torch.arange(self.mixed, upto)[:, None] + torch.arange(-self.context, self.context + 1)
            rows = self.feats[index.clamp(min=0, max=last) - base]
        x = self.encoder.norm(self.encoder.proj(rows.flatten(1)))  # [f, k, c] -> [f, k·c]
        hidden, self.mixer_state = self.encoder.mixing.extend(x, self.mixer_state)
        prefix = torch.cat([self.prefix[-1:], (hidden + self.bias).double()]).cumsum(0)[1:]
        self.prefix = torch.cat([self.prefix, prefix])
        self.mixed = upto
        keep = max(0, self.mixed - self.context - self.feat_base)
        self.feats, self.feat_base = self.feats[keep:], self.feat_base + keep

    def _route(self, upto: int, total: int | None) -> list[dict]:
        """Boundaries of the frames up to `upto` (window means as `window_means`, cosine rule as
        `boundary_probs`); returns the chunks they close."""
        if upto <= self.routed:
            return []
        w, chunker, p, base = self.window, self.model.chunker, self.prefix, self.prefix_base
        lo = self.routed
        if total is None and lo - w + 1 >= 0:  # inside the stream: every window whole, slices
            ahead = ((p[lo + w - base : upto + w - base] - p[lo - base : upto - base]) / w).float()
            behind = (
                (p[lo + 1 - base : upto + 1 - base] - p[lo + 1 - w - base : upto + 1 - w - base]) / w
            ).float()
        else:  # at an end of the stream: windows cut short
            t = torch.arange(lo, upto)
            stop = t + w if total is None else (t + w).clamp(max=total)
            first = (t - w + 1).clamp(min=0)
            ahead = ((p[stop - base] - p[t - base]) / (stop - t)[:, None]).float()
            behind = ((p[t + 1 - base] - p[first - base]) / (t + 1 - first)[:, None]).float()
        q = F.normalize(chunker.q_proj(ahead), dim=-1)
        k = chunker.k_proj(behind)
        previous = torch.cat([k[:1] if self.last_key is None else self.last_key, k[:-1]])
        probs = ((1.0 - (q * F.normalize(previous, dim=-1)).sum(-1)) / 2.0).clamp(0.0, 1.0)
        if self.routed == 0:
            probs[0] = 1.0
        self.last_key, self.routed = k[-1:], upto
        closed = []
        for frame in (torch.nonzero(probs > 0.5)[:, 0] + lo).tolist():
            if frame > self.chunk_start:
                closed.append(self._chunk(self.chunk_start, frame))
                self.chunk_start = frame
        keep = max(0, self.routed - w - base)  # `behind` of the next frame reaches w − 1 back
        self.prefix, self.prefix_base = self.prefix[keep:], base + keep
        return closed

    def _chunk(self, start: int, end: int) -> dict:
        """A chunk over frames `[start, end)`: times from integer sample positions, clipped to the audio."""
        t0 = round(min(start * self.hop, self.received) / self.rate, 4)
        t1 = round(min(end * self.hop, self.received) / self.rate, 4)
        return {"modality": "audio", "t0": t0, "t1": t1}


def check_causal(model: ChunkFusionModel) -> None:
    """Raise ValueError naming what keeps `model`'s audio path from streaming."""
    encoder = model.encoders["audio"]
    if getattr(encoder, "level", "recording") != "causal":
        raise ValueError(
            "streaming needs an audio encoder with level: causal (this one takes each recording's "
            "level from the whole recording); train one with the streaming_cpu recipe, e.g. "
            "mmchunk demo --config streaming_cpu"
        )
    if not all(isinstance(block.mixer, GatedRecurrence) for block in encoder.mixing):
        raise ValueError(
            "streaming needs the recurrent audio mixer (attention and window mixers read later frames)"
        )
    for flags, what in ((model.chunker.routing_center, "centre the audio routing input (the mean"),
                        (model.chunker.routing_gain, "scale the audio routing (its peak level")):  # fmt: skip
        if flags is not None and bool(flags[MODALITY_IDS["audio"]]):
            raise ValueError(f"streaming cannot {what} spans the whole recording)")
    if "audio" in model.segmentation:
        raise ValueError("streaming runs the learned routing; this model has a baseline audio segmentation")


def stream_file(path: str | Path, checkpoint: str | Path | None, block_s: float = 0.02) -> Iterator[dict]:
    """The chunks of an audio file read in blocks of `block_s` seconds (as a microphone would
    deliver them) through a `StreamingSegmenter`, each as soon as it closes."""
    from mmchunk.checkpoint import load_model
    from mmchunk.longform import audio_length, read_blocks

    model, _ = load_model(checkpoint)
    segmenter = StreamingSegmenter(model)
    audio_length(path, segmenter.rate)  # an empty or unreadable file: one line naming it
    try:
        yield from segmenter.stream(read_blocks(path, segmenter.rate, block_s))
    except DecodeError as exc:
        raise DecodeError(f"{path}: {exc}") from None
