"""AudioSamples: 16 kHz waveform → 20 ms frames → level-invariant log-mel (or conv) stem → local mixing."""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchaudio
from einops import rearrange
from torch import Tensor, nn

from mmchunk.kernels import segment_reduce, seq_lengths
from mmchunk.layers import MixerStack, RMSNorm
from mmchunk.ragged import Ragged

from .base import ModalityEncoder, register

STEMS = ("conv", "logmel")
LEVELS = ("recording", "causal")
MEL_FLOOR = 1e-6  # power floor of the log-mel stem relative to the recording's mean power (−60 dB)


def per_sequence(stat: Tensor, lengths: Tensor) -> Tensor:
    """Per-sequence statistics `[B, ...]` repeated over each sequence's `lengths [B]` rows → `[F, ...]`."""
    return stat.repeat_interleave(lengths, dim=0, output_size=int(lengths.sum()))


def causal_means(values: Tensor, frame_cu: Tensor) -> Tensor:
    """Each row's mean over the rows of its sequence up to and including it: `values [F, C]` →
    `[F, C]`, from float64 prefix sums (a stream keeps the same sums as it goes)."""
    lengths = seq_lengths(frame_cu)
    prefix = values.double().cumsum(0)
    start = per_sequence(frame_cu[:-1].long(), lengths)
    before = torch.where((start > 0)[:, None], prefix[(start - 1).clamp(min=0)], 0.0)
    count = torch.arange(1, values.shape[0] + 1, device=values.device) - start
    return ((prefix - before) / count[:, None]).to(values.dtype)


def frame_waveforms(x: Ragged, hop: int, width: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Cut every waveform of `x` (values `[N]`) into frames at a stride of `hop` samples.

    Frame i of a sequence covers samples `[i·hop, (i+1)·hop)`; with `width > hop` it is widened to
    `width` samples centred on that span (analysis windows that overlap their neighbours). Returns
    frames `[F, width]` (samples outside the sequence are zero: no frame reads another sequence),
    the frames' `cu_seqlens [B+1]`, and each frame's index within its sequence `[F]`.
    """
    width = width or hop
    if width < hop:
        raise ValueError(f"frame_waveforms: the window ({width} samples) is shorter than the hop ({hop})")
    lengths = seq_lengths(x.cu_seqlens).long()
    counts = torch.div(lengths + hop - 1, hop, rounding_mode="floor")
    frame_cu = F.pad(counts.cumsum(0), (1, 0)).to(torch.int32)
    total = int(frame_cu[-1])
    # each sequence gets its own run of hop-sized slots in one zero-padded buffer (`left` zeros
    # before its first sample, room for its last window after it): one strided view of the buffer
    # then holds every frame
    left, spare = (width - hop) // 2, -(-(width - hop) // hop)
    slots = counts + spare
    pads = (slots * hop - lengths).tolist()  # zeros after each sequence, the next one's `left` among them
    zeros = x.values.new_zeros(max([width, *pads]))
    pieces = [zeros[:left]]
    for values, pad in zip(x.values.split(lengths.tolist()), pads):
        pieces += [values, zeros[:pad]]
    buffer = torch.cat([*pieces, zeros[:width]])
    slot_start = F.pad(slots.cumsum(0), (1, 0))
    seq = torch.repeat_interleave(torch.arange(len(counts), device=counts.device), counts, output_size=total)
    index = torch.arange(total, device=counts.device) - frame_cu.long()[seq]
    frames = buffer.unfold(0, width, hop).index_select(0, slot_start[seq] + index)
    return frames, frame_cu, index


def stack_context(feats: Tensor, frame_cu: Tensor, index: Tensor, context: int) -> Tensor:
    """Each frame's features `[F, C]` beside those of its `context` neighbours on either side within
    its own sequence (the edge frame repeated past a sequence's ends) → `[F, (2·context+1)·C]`."""
    if context == 0:
        return feats
    lengths = seq_lengths(frame_cu)
    first = per_sequence(frame_cu[:-1].long(), lengths)
    last = per_sequence(lengths.long(), lengths) - 1
    offsets = torch.arange(-context, context + 1, device=feats.device)
    rows = first[:, None] + (index[:, None] + offsets).clamp(min=0).minimum(last[:, None])
    return rearrange(feats[rows], "f k c -> f (k c)")


@register
class AudioSamples(ModalityEncoder):
    """Waveform encoder at 50 Hz: 20 ms frames through log-mel features (or a strided conv stem),
    then `depth` local mixing blocks. The stem's output does not depend on a recording's level (a
    waveform and the same waveform × g give the same features); digital silence gives identical
    frames, hence identical features.

    logmel options: `window_ms` widens each frame's analysis window beyond the 20 ms hop (centred);
    `band_mean` takes out each band's mean over the recording (cepstral mean normalisation: the
    channel's colour) instead of one level per recording; `context` stacks the log-mels of that many
    neighbouring frames on each side before the projection (a kernel-(2·context+1) convolution);
    `level="causal"` takes the level (and the floor) over the frames up to each frame instead of
    the whole recording, so a frame's features never depend on later audio than `context` frames
    ahead: the configuration `mmchunk.streaming` chunks as audio arrives. The recurrent mixer is
    causal; the attention and window mixers and `level="recording"` are not.
    """

    modality = "audio"

    def __init__(
        self,
        dim: int,
        depth: int = 2,
        mixer: str = "recurrent",
        stem: str = "logmel",
        sample_rate: int = 16_000,
        frame_ms: float = 20.0,
        n_mels: int = 40,
        channels: int = 64,
        band_mean: bool = False,
        window_ms: float | None = None,
        context: int = 0,
        level: str = "recording",
    ) -> None:
        super().__init__(dim)
        if stem not in STEMS:
            raise ValueError(f"AudioSamples: stem must be one of {STEMS}, got {stem!r}")
        if level not in LEVELS or (level == "causal" and stem != "logmel"):
            raise ValueError(
                f"AudioSamples: level must be one of {LEVELS} (causal with the logmel stem), got {level!r}"
            )
        self.level = level
        self.stem_kind, self.sample_rate, self.band_mean = stem, sample_rate, band_mean
        self.hop = round(sample_rate * frame_ms / 1000)
        self.width = round(sample_rate * (window_ms or frame_ms) / 1000) if stem == "logmel" else self.hop
        if self.width < self.hop:
            raise ValueError(f"AudioSamples: window_ms {window_ms} is shorter than frame_ms {frame_ms}")
        self.context = context
        self.native_rate_hz = sample_rate / self.hop
        if stem == "conv":
            self.stem = nn.Sequential(
                nn.Conv1d(1, channels, 10, stride=5), nn.GELU(),
                nn.Conv1d(channels, channels, 8, stride=4), nn.GELU(),
                nn.Conv1d(channels, channels, 4, stride=2), nn.GELU(),
            )  # fmt: skip
            self.proj = nn.Linear(channels, dim)
        else:
            n_fft = 1 << (self.width - 1).bit_length()
            self.register_buffer("window", torch.hann_window(self.width), persistent=False)
            fbank = torchaudio.functional.melscale_fbanks(
                n_fft // 2 + 1, 0.0, sample_rate / 2, n_mels, sample_rate
            )
            self.register_buffer("fbank", fbank, persistent=False)
            self.n_fft = n_fft
            self.proj = nn.Linear(n_mels * (2 * context + 1), dim)
        self.norm = RMSNorm(dim)
        self.mixing = MixerStack(dim, depth, mixer)

    def frame_power(self, frames: Tensor) -> Tensor:
        """What the level statistics average over a recording's frames `[F, width]`: each frame's
        mean power `[F, 1]` (conv) or its mel power `[F, n_mels]` (logmel)."""
        if self.stem_kind == "conv":
            return frames.pow(2).mean(1, keepdim=True)
        return torch.fft.rfft(frames * self.window, n=self.n_fft).abs().pow(2) @ self.fbank

    def level_stats(self, power: Tensor, frame_cu: Tensor) -> dict[str, Tensor]:
        """The per-recording statistics `features` takes the level out with, from the `frame_power`
        `[F, ...]` of all the frames of the recordings `frame_cu [B+1]`: conv `{"rms": [B, 1]}`;
        logmel `{"floor": [B, 1], "level": [B, n_mels] or [B, 1]}` (`band_mean`). A long recording
        gets them from streamed passes over its frames instead (`mmchunk.longform`)."""
        if self.stem_kind == "conv":
            return {"rms": segment_reduce(power, frame_cu, "mean").sqrt()}
        floor = segment_reduce(power.mean(1, keepdim=True), frame_cu, "mean") * MEL_FLOOR + 1e-30
        logmel = torch.log(power + per_sequence(floor, seq_lengths(frame_cu)))
        level = segment_reduce(logmel if self.band_mean else logmel.mean(1, keepdim=True), frame_cu, "mean")
        return {"floor": floor, "level": level}

    def features(
        self, frames: Tensor, frame_cu: Tensor, index: Tensor, stats: dict[str, Tensor] | None = None
    ) -> Tensor:
        """Frames `[F, width]` of the recordings `frame_cu [B+1]` (each frame's `index [F]` within its
        recording) → stem features `[F, D]`, the same for any level of each recording.

        conv: each recording is scaled to unit RMS first. logmel: log of the mel power above a floor
        at `MEL_FLOOR` × the recording's mean power, minus the recording's mean log-mel (one number
        per recording: its level), scaled by a fixed 1/4. Only the level is taken out: the relative
        energies of frames and bands, which tell speech from a noise floor, stay as they are
        (per-band variance normalisation would blow a band holding only noise up to the scale of
        the bands that carry speech). `stats` (`level_stats`, `[B, ...]` per recording) replaces
        the statistics of these frames: a window of a long recording uses the whole recording's.
        """
        lengths = seq_lengths(frame_cu)
        power = self.frame_power(frames)
        stats = stats or (None if self.level == "causal" else self.level_stats(power, frame_cu))
        if self.stem_kind == "conv":
            frames = frames / (per_sequence(stats["rms"], lengths) + 1e-12)
            return self.proj(self.stem(frames[:, None]).mean(-1))
        if self.level == "causal":
            return self.proj(
                stack_context(self.causal_logmel(power, frame_cu), frame_cu, index, self.context)
            )
        logmel = torch.log(power + per_sequence(stats["floor"], lengths))
        feats = (logmel - per_sequence(stats["level"], lengths)) / 4.0
        return self.proj(stack_context(feats, frame_cu, index, self.context))

    def causal_logmel(self, power: Tensor, frame_cu: Tensor) -> Tensor:
        """`level="causal"`: log-mels `[F, n_mels]` of the mel powers `[F, n_mels]` with the floor
        and the level of the frames up to each frame (`causal_means`), scaled by 1/4."""
        floor = causal_means(power.mean(1, keepdim=True), frame_cu) * MEL_FLOOR + 1e-30
        logmel = torch.log(power + floor)
        level = causal_means(logmel if self.band_mean else logmel.mean(1, keepdim=True), frame_cu)
        return (logmel - level) / 4.0

    def forward(self, x: Ragged, stats: dict[str, Tensor] | None = None) -> Ragged:
        """Waveforms `[N]` (float, `sample_rate`) → frame features `[F, D]` with frame time spans;
        `stats` as in `features`."""
        frames, frame_cu, index = frame_waveforms(x, self.hop, self.width)
        t_start = index.float() * (self.hop / self.sample_rate)
        features = Ragged(
            self.norm(self.features(frames, frame_cu, index, stats)),
            frame_cu,
            t_start=t_start,
            t_end=t_start + self.hop / self.sample_rate,
        )
        return self.mixing(features)
