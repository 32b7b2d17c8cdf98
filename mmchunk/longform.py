"""Long recordings in bounded memory: the file read block by block at the model's rate, the audio
encoder's level statistics from streamed passes, and the encoder and chunker run on overlapping
windows whose boundaries are stitched into those of one pass over the whole recording.

One pass over an hour of audio holds the waveform, every frame and every activation at once (GBs);
here memory is set by the window. Boundaries equal one pass wherever the receptive field allows:
the stem's frames, context stacking and the routing windows are local, and the level statistics
are the whole recording's (the same numbers, summed in another order); only the recurrent mixers
see back to the recording's start in one pass, so a window starts them `context_s` early, by
which time what came before has faded (measured: `benchmarks/long_audio.py`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import soundfile
import torch
import torchaudio
from torch import Tensor
from tqdm import tqdm

from mmchunk.chunker import PEAK_QUANTILE
from mmchunk.chunkspace import MODALITY_IDS
from mmchunk.data.decode import DecodeError
from mmchunk.encoders.audio import MEL_FLOOR, frame_waveforms
from mmchunk.kernels import ema_scan
from mmchunk.layers import GatedRecurrence
from mmchunk.model import ChunkFusionModel
from mmchunk.ragged import Ragged
from mmchunk.ragged_ops import segment_quantile

RESAMPLE_MARGIN = 4096  # native samples beyond each block: more than the resampling kernel's reach


def audio_length(path: str | Path, rate: int) -> int:
    """Samples of the file's audio at `rate` (as `decode_audio` would give); DecodeError when the
    file cannot be read or holds no samples, naming the file once."""
    if Path(path).stat().st_size == 0:
        raise DecodeError(f"{path}: the file is empty")
    try:
        info = soundfile.info(str(path))
    except Exception as exc:  # libsndfile raises several types for corrupt input
        reason = re.sub(r"^Error opening .*?: ", "", " ".join(str(exc).split()))
        raise DecodeError(f"{path}: unreadable audio: {reason}") from None
    if info.frames <= 0:
        raise DecodeError(f"{path}: audio has no samples")
    return math.ceil(info.frames * rate / info.samplerate)


def read_blocks(path: str | Path, rate: int, block_seconds: float = 30.0) -> Iterator[Tensor]:
    """The file's mono waveform at `rate` as consecutive float32 pieces `[n_i]` of about
    `block_seconds`, read and resampled block by block: concatenated, they are `decode_audio` of the
    whole file (channels averaged; each block resampled with `RESAMPLE_MARGIN` native samples on
    either side, starting on the resampler's phase grid, so its output samples are the whole file's)."""
    with soundfile.SoundFile(str(path)) as f:
        native, total = f.samplerate, f.frames

        def read(n: int) -> Tensor:
            return torch.from_numpy(f.read(n, dtype="float32", always_2d=True).mean(axis=1))

        if native == rate:
            block = max(1, round(block_seconds * rate))
            many = block * -(-rate // block)  # read ≥ 1 s at once: small reads of a compressed file are slow
            while (piece := read(many)).numel():
                yield from piece.split(block)
            return
        g = math.gcd(native, rate)
        step_in, step_out = native // g, rate // g
        block = max(1, round(block_seconds * native / step_in)) * step_in
        margin = (-(-RESAMPLE_MARGIN // step_in) + 1) * step_in
        out_total = math.ceil(total * rate / native)
        buffer, buffer_start, emitted, position = torch.zeros(0), 0, 0, 0
        while emitted < out_total:
            want = min(total, position + block + margin)
            while (missing := want - buffer_start - buffer.numel()) > 0 and (more := read(missing)).numel():
                buffer = torch.cat([buffer, more])
            start = max(0, position - margin)
            segment = buffer[start - buffer_start : want - buffer_start]
            out = torchaudio.functional.resample(segment, native, rate)
            offset = (position - start) // step_in * step_out
            count = min(block // step_in * step_out, out_total - emitted)
            piece = out[offset : offset + count]
            if not piece.numel():
                return
            yield piece
            emitted += piece.numel()
            position += block
            keep = max(0, position - margin) - buffer_start
            buffer, buffer_start = buffer[keep:], buffer_start + keep


def waveform_envelope(path: str | Path, rate: int, bins: int = 4000) -> tuple[Tensor, Tensor]:
    """The file's waveform at `rate` as the peak |x| of (up to) `bins` equal spans `[S]` and the
    spans' centre times `[S]` in s, streamed (`read_blocks`): a plot of any length in fixed memory."""
    length = audio_length(path, rate)
    size = -(-length // bins)
    peaks, position = torch.zeros(-(-length // size)), 0
    for piece in read_blocks(path, rate):
        index = (position + torch.arange(piece.numel())) // size
        peaks.scatter_reduce_(0, index.clamp(max=peaks.numel() - 1), piece.abs(), "amax")
        position += piece.numel()
    return (torch.arange(peaks.numel()) + 0.5) * size / rate, peaks


class SampleCursor:
    """Forward-only access to a stream of waveform pieces: `take(start, stop)` gives samples
    `[start, stop)` (cut at the stream's end) and forgets everything before `start`."""

    def __init__(self, pieces: Iterator[Tensor]) -> None:
        self.pieces, self.start = pieces, 0
        self.buffer = next(pieces, torch.zeros(0))

    def take(self, start: int, stop: int) -> Tensor:
        if start < self.start:
            raise ValueError(f"SampleCursor: sample {start} was already dropped (at {self.start})")
        while self.start + self.buffer.numel() < stop and (piece := next(self.pieces, None)) is not None:
            self.buffer = torch.cat([self.buffer, piece])
        self.buffer, self.start = self.buffer[start - self.start :], start
        return self.buffer[: stop - start]


@dataclass
class FrameWindow:
    """Global frames `[first, stop)` of a recording, computed from samples that begin at frame
    `offset` (`offset ≤ first`): local frame j of those samples is global frame `offset + j`."""

    first: int
    stop: int
    offset: int


def frame_windows(frames: int, window: int, context: int) -> Iterator[FrameWindow]:
    """Windows of `window` frames over `frames`, each computed with `context` frames on either side."""
    for first in range(0, frames, window):
        yield FrameWindow(first, min(frames, first + window), max(0, first - context))


def window_samples(cursor: SampleCursor, w: FrameWindow, hop: int, context: int, length: int) -> Tensor:
    """The samples of window `w`'s frames with `context` frames on either side, from frame `w.offset`."""
    return cursor.take(w.offset * hop, min(length, (w.stop + context) * hop))


Pieces = Callable[[], Iterator[Tensor]]  # a fresh stream of a recording's waveform pieces `[n_i]` per call


def streamed_level_stats(encoder, pieces: Pieces, length: int, window: int) -> dict[str, Tensor]:
    """`encoder.level_stats` of a whole recording of `length` samples at the encoder's rate, from
    passes over `pieces()` in windows of `window` frames (two for the log-mel stem: the floor, then
    the mean log-mel above it), summed in float64. Returns `[1, ...]` tensors."""
    hop = encoder.hop
    frames = -(-length // hop)
    reach = -(-encoder.width // hop)  # frames whose analysis window reaches a window's edge

    def powers() -> Iterator[Tensor]:
        cursor = SampleCursor(pieces())
        for w in frame_windows(frames, window, reach):
            wave = window_samples(cursor, w, hop, reach, length)
            cut, _, _ = frame_waveforms(Ragged.from_list([wave]), hop, encoder.width)
            yield encoder.frame_power(cut[w.first - w.offset : w.stop - w.offset]).double()

    if encoder.stem_kind == "conv":
        total = sum(p.sum() for p in powers())
        return {"rms": (total / frames).sqrt().float().reshape(1, 1)}
    floor = sum(p.mean(1).sum() for p in powers()) / frames * MEL_FLOOR + 1e-30
    log_sum = sum(torch.log(p + floor).sum(0) for p in powers())
    level = log_sum / frames if encoder.band_mean else (log_sum / frames).mean().reshape(1)
    return {"floor": floor.float().reshape(1, 1), "level": level.float()[None, :]}


def windowed_routing(
    model: ChunkFusionModel,
    pieces: Pieces,
    length: int,
    *,
    window_s: float = 60.0,
    context_s: float = 10.0,
    progress: bool = False,
) -> Iterator[tuple[FrameWindow, Tensor, Tensor, Tensor]]:
    """The audio encoder and chunker over a recording of `length` samples (`pieces`), window by
    window with `context_s` on either side and the whole recording's level statistics: per window,
    (its frames, their boundary mask `[n]`, their encoder features `[n, D]`, their boundary
    probabilities `[n]`). Memory is set by `window_s + 2·context_s`, not the recording's length."""
    if getattr(model.encoders["audio"], "level", "recording") == "causal":
        raise ValueError(
            "a causal audio encoder (level: causal) chunks long recordings with mmchunk.streaming, "
            "not in windows"
        )
    if "audio" in model.segmentation:
        raise ValueError(
            "long recordings are chunked in windows by the learned routing only (this model "
            "has a baseline audio segmentation)"
        )
    encoder = model.encoders["audio"]
    center = model.chunker.routing_center
    if center is not None and MODALITY_IDS["audio"] < len(center) and bool(center[MODALITY_IDS["audio"]]):
        raise ValueError("routing_center for audio uses the whole recording's mean: it has no windowed form")
    hop, rate = encoder.hop, encoder.sample_rate
    frames = -(-length // hop)
    window = max(1, round(window_s * rate / hop))
    context = round(context_s * rate / hop) + -(-encoder.width // hop)
    with torch.no_grad():
        stats = streamed_level_stats(encoder, pieces, length, window)

        def encoded(desc: str) -> Iterator[tuple[FrameWindow, Ragged, slice]]:
            cursor = SampleCursor(pieces())
            windows = frame_windows(frames, window, context)
            for w in tqdm(windows, total=-(-frames // window), desc=desc, disable=not progress):
                feats = encoder(Ragged.from_list([window_samples(cursor, w, hop, context, length)]), stats)
                audio = torch.full((feats.num_tokens,), MODALITY_IDS["audio"], device=feats.values.device)
                tagged = Ragged(feats.values, feats.cu_seqlens, t_start=feats.t_start, t_end=feats.t_end,
                                modality=audio)  # fmt: skip
                yield w, tagged, slice(w.first - w.offset, w.stop - w.offset)

        peak = recording_peak(model, encoded("peak level"))
        for w, tagged, keep in encoded("windows"):
            routed = model.chunker(tagged, peak=peak)
            yield w, routed.boundary_mask[keep], tagged.values[keep], routed.probs[keep]


def recording_peak(
    model: ChunkFusionModel, windows: Iterator[tuple[FrameWindow, Ragged, slice]]
) -> Tensor | None:
    """The whole recording's peak routing level `[1]` for the audio gain control (`DynamicChunker`'s
    `routing_gain`), from a pass over its `windows`; None (and no pass) where the model has none."""
    chunker, audio = model.chunker, MODALITY_IDS["audio"]
    if (
        chunker.routing_gain is None
        or not bool(chunker.routing_gain[audio])
        or chunker.routing_peak[audio].isnan()
    ):
        return None
    probs = torch.cat([chunker.raw_routing(tagged)[keep] for _, tagged, keep in windows])
    return segment_quantile(probs, torch.tensor([0, probs.numel()], dtype=torch.int32), PEAK_QUANTILE)


def long_audio_boundaries(
    model: ChunkFusionModel,
    path: str | Path,
    *,
    window_s: float = 60.0,
    context_s: float = 10.0,
    block_s: float = 30.0,
    progress: bool = False,
) -> tuple[Tensor, int, int]:
    """The audio chunker's boundaries on the file at `path`, read block by block and chunked window
    by window (`windowed_routing`): (global frame indices of the chunk starts `[C]` int64, the first
    0; the number of frames; the number of samples at the encoder's rate)."""
    rate = model.encoders["audio"].sample_rate
    length = audio_length(path, rate)
    routing = windowed_routing(model, lambda: read_blocks(path, rate, block_s), length,
                               window_s=window_s, context_s=context_s, progress=progress)  # fmt: skip
    starts = torch.cat([mask.nonzero().squeeze(1) + w.first for w, mask, *_ in routing])
    return starts, -(-length // model.encoders["audio"].hop), length


def long_audio_chunks(
    model: ChunkFusionModel, wave: Tensor, *, window_s: float = 60.0, context_s: float = 10.0
) -> tuple[Ragged, Tensor]:
    """The audio chunks of one long waveform `[N]` (at the encoder's rate), as the chunker gives them
    in one pass (`chunks`: features `[C, D]` pooled as the chunker pools, one sequence, with time
    spans and the audio modality id), and their boundary probabilities `[C]` (dechunk's EMA weights),
    computed window by window (`windowed_routing`); a chunk that runs across windows is pooled
    across them."""
    encoder = model.encoders["audio"]
    starts, values, probs = [], [], []
    open_sum, open_count = None, 0  # the last chunk so far, which the next window may continue
    for w, mask, feats, p in windowed_routing(model, lambda: iter([wave]), wave.numel(),
                                              window_s=window_s, context_s=context_s):  # fmt: skip
        starts.append(mask.nonzero().squeeze(1) + w.first)
        probs.append(p[mask])
        if model.chunker.pooling == "boundary":
            values.append(feats[mask])
            continue
        ids = mask.long().cumsum(0)  # 0: tokens that continue the open chunk; k: the window's k-th chunk
        sums = feats.new_zeros(int(ids[-1]) + 1, feats.shape[1]).index_add_(0, ids, feats)
        counts = torch.bincount(ids, minlength=sums.shape[0])
        if open_sum is not None:
            open_sum, open_count = open_sum + sums[0], open_count + int(counts[0])
        if sums.shape[0] > 1:
            if open_sum is not None:
                values.append((open_sum / open_count)[None])
            values.append(sums[1:-1] / counts[1:-1, None])
            open_sum, open_count = sums[-1], int(counts[-1])
    if open_sum is not None:
        values.append((open_sum / open_count)[None])
    starts = torch.cat(starts)
    frames = -(-wave.numel() // encoder.hop)
    period = encoder.hop / encoder.sample_rate
    device = starts.device
    chunks = Ragged(
        torch.cat(values),
        torch.tensor([0, starts.numel()], dtype=torch.int32, device=device),
        t_start=starts.float() * period,
        t_end=torch.cat([starts[1:], torch.tensor([frames], device=device)]).float() * period,
        modality=torch.full((starts.numel(),), MODALITY_IDS["audio"], device=device),
    )
    return chunks, torch.cat(probs)


def long_audio_ctc(
    model: ChunkFusionModel,
    wave: Tensor,
    mixed: Ragged,
    chunk_probs: Tensor,
    *,
    window_s: float = 60.0,
    context_s: float = 10.0,
) -> Ragged:
    """The CTC head's byte log-probabilities `[T, 257]` of one long waveform `[N]`, with the audio
    tokens' times, as one pass gives them, window by window: dechunk of the main network's outputs
    `mixed [C, D]` over the recording's chunks (boundary probabilities `chunk_probs [C]`, from
    `long_audio_chunks`), then the CTC probe and head. A recurrent probe carries its state from
    window to window; a window-attention probe sees `reach` tokens either side, so a window's last
    `reach` tokens wait for the next window. The result is the whole recording's (25 Hz: ~185 MB an
    hour), as forced alignment of its transcript needs."""
    chunker, encoder, probe = model.chunker, model.encoders["audio"], model.ctc_probe
    recurrent = probe is not None and isinstance(probe[0].mixer, GatedRecurrence)
    reach = 0 if probe is None or recurrent else sum(block.mixer.window for block in probe)
    smoothed = ema_scan(mixed.values, chunk_probs, mixed.cu_seqlens, backend=chunker.backend)
    states = probe.init_state(1, 0, smoothed) if recurrent else None
    frames, period = -(-wave.numel() // encoder.hop), encoder.hop / encoder.sample_rate
    buffer, first, done, opened, out = smoothed[:0], 0, 0, 0, []
    for w, mask, feats, _ in windowed_routing(model, lambda: iter([wave]), wave.numel(),
                                              window_s=window_s, context_s=context_s):  # fmt: skip
        ids = mask.long().cumsum(0) + (opened - 1)  # the chunk of each token, counted over the recording
        opened += int(mask.sum())
        tokens = smoothed[ids] + chunker.residual_proj(feats)
        if recurrent:
            for i, block in enumerate(probe):
                tokens, states[i] = block.extend(tokens, states[i])
            out.append(model.ctc_head(tokens).log_softmax(-1))
            continue
        buffer = torch.cat([buffer, tokens])
        stop = frames if w.stop == frames else w.stop - reach
        if stop > done:
            seen = frame_sequence(buffer, first, period)
            if probe is not None:
                seen = probe(seen)
            out.append(model.ctc_head(seen.values[done - first : stop - first]).log_softmax(-1))
            done = stop
        keep = max(first, done - reach)
        buffer, first = buffer[keep - first :], keep
    return frame_sequence(torch.cat(out), 0, period)


def frame_sequence(values: Tensor, first: int, period: float) -> Ragged:
    """One sequence of frame rows `[n, ...]` from global frame `first`, with the frames' time spans
    (`period` s apart, as the audio encoder gives them)."""
    n, device = values.shape[0], values.device
    times = torch.arange(first, first + n, device=device).float() * period
    return Ragged(
        values, torch.tensor([0, n], dtype=torch.int32, device=device), t_start=times, t_end=times + period
    )
