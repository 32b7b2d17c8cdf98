"""Silero VAD baseline: speech spans and speech/non-speech edge boundaries from silero-vad's bundled model."""

from __future__ import annotations

import functools
import threading
import warnings

import torch
import torchaudio
from torch import Tensor

SILERO_RATES = (8000, 16000)
"""The rates silero's model runs at natively; any other rate is resampled to 16 kHz first."""

_lock = threading.Lock()  # the model keeps recurrent state between calls: one file at a time


@functools.lru_cache(maxsize=1)
def _silero_model() -> torch.jit.ScriptModule:
    """silero-vad's TorchScript model, read from the weights inside the package (offline, CPU), once
    per process."""
    from silero_vad import load_silero_vad

    with warnings.catch_warnings():  # silero's loader uses deprecated importlib and torch.jit APIs
        warnings.simplefilter("ignore", DeprecationWarning)
        return load_silero_vad()


def silero_speech_spans(
    wave: Tensor,
    sample_rate: int,
    *,
    threshold: float = 0.5,
    min_speech_duration_ms: int = 250,
    min_silence_duration_ms: int = 50,
    speech_pad_ms: int = 0,
) -> list[list[float]]:
    """Speech `[start, end]` spans (s, ascending, disjoint) of a mono waveform `[N]` at `sample_rate`.

    Runs silero-vad's `get_speech_timestamps` on 32 ms frames (512 samples at 16 kHz, 256 at 8 kHz);
    other rates are resampled to 16 kHz with `torchaudio.functional.resample` (silero itself would
    decimate multiples of 16 kHz without a low-pass filter). The model's recurrent state is reset
    for every call, so a result never depends on what ran before. Input shorter than one frame
    gives []. A span that runs to the end of the input ends at exactly `N / sample_rate`.

    Keywords (silero's own defaults in brackets):
      threshold: a frame whose speech probability reaches it starts speech [0.5]; speech ends
        below `threshold − 0.15` (silero's hysteresis, kept).
      min_speech_duration_ms: shorter speech spans are dropped (clicks, breaths) [250].
      min_silence_duration_ms: how long the probability must stay low before a span is closed
        [100]. Silero's probability lags the true end of speech by about 100 ms, which eats the
        first part of every pause: with 100 ms, pauses under about 200 ms are never split (on the
        built-in espeak corpus, 40 samples, 27 of 49 pauses ≥ 150 ms were found; with 50 ms, 39).
      speech_pad_ms: widening of each span on both sides [30]. 0 here: padding moves every edge
        into the pause, away from where speech starts or stops (a boundary scorer wants the edge),
        and on top of the ~100 ms lag of the ends it pushes them out of a 50 ms tolerance.
    """
    if wave.dim() != 1:
        raise ValueError(f"silero_speech_spans expects a mono waveform [N], got shape {tuple(wave.shape)}")
    duration = wave.numel() / sample_rate
    if duration < 0.032:  # not one frame of the model
        return []
    wave = wave.detach().to("cpu", torch.float32)
    rate = sample_rate
    if rate not in SILERO_RATES:
        wave = torchaudio.functional.resample(wave, rate, 16000)
        rate = 16000
    from silero_vad import get_speech_timestamps

    with _lock, torch.no_grad():
        stamps = get_speech_timestamps(
            wave,
            _silero_model(),
            threshold=threshold,
            sampling_rate=rate,
            min_speech_duration_ms=min_speech_duration_ms,
            min_silence_duration_ms=min_silence_duration_ms,
            speech_pad_ms=speech_pad_ms,
        )
    n = wave.numel()
    return [
        [min(s["start"] / rate, duration), duration if s["end"] >= n else min(s["end"] / rate, duration)]
        for s in stamps
    ]


def silero_vad_boundaries(wave: Tensor, sample_rate: int, **kwargs: float) -> list[float]:
    """Heuristic baseline for audio: boundaries (s) at the edges of Silero VAD's speech spans of a
    mono waveform `[N]`, rounded to 4 decimals, sorted, unique, strictly inside (0, duration): the
    convention of `mmchunk.evaluation.energy_vad_boundaries`. `kwargs` go to `silero_speech_spans`."""
    duration = wave.numel() / sample_rate
    edges = [t for span in silero_speech_spans(wave, sample_rate, **kwargs) for t in span]
    return sorted({round(t, 4) for t in edges if 0.0 < round(t, 4) < duration})
