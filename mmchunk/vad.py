"""VAD baselines: speech/non-speech edge boundaries of an energy VAD and of Silero VAD (silero-vad's
bundled model, its speech spans)."""

from __future__ import annotations

import functools
import math
import threading
import warnings
from collections.abc import Callable

import torch
import torchaudio
from torch import Tensor

from mmchunk.data.energy import silent_intervals

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


class _Replay:
    """Silero's model as `get_speech_timestamps` calls it, answering with probabilities computed
    beforehand (so that many waveforms run through the model as one batch, and silero's own
    post-processing still makes the spans)."""

    def __init__(self, probs: list[float]) -> None:
        self._probs = iter(probs)

    def reset_states(self) -> None:
        return None

    def __call__(self, chunk: Tensor, sampling_rate: int) -> Tensor:
        return torch.tensor(next(self._probs))


def silero_speech_probs(waves: list[Tensor], rate: int) -> list[list[float]]:
    """Silero's speech probability of every frame (512 samples at 16 kHz, 256 at 8 kHz; the last one
    zero-padded) of each waveform `[N_i]` at `rate` (8 or 16 kHz). The waveforms run side by side as
    one batch (the model keeps one recurrent state per row, reset first), zero-padded at their
    ends, which no earlier frame sees."""
    window = 512 if rate == 16000 else 256
    counts = [math.ceil(w.numel() / window) for w in waves]
    if not waves or max(counts) == 0:
        return [[] for _ in waves]
    batch = torch.zeros(len(waves), max(counts) * window)
    for row, wave in zip(batch, waves):
        row[: wave.numel()] = wave
    model = _silero_model()
    with _lock, torch.no_grad():
        model.reset_states()
        frames = [model(batch[:, i : i + window], rate) for i in range(0, batch.shape[1], window)]
    probs = torch.cat(frames, 1)
    return [probs[i, :n].tolist() for i, n in enumerate(counts)]


def silero_speech_spans_batch(
    waves: list[Tensor],
    sample_rate: int,
    *,
    threshold: float = 0.5,
    min_speech_duration_ms: int = 250,
    min_silence_duration_ms: int = 50,
    speech_pad_ms: int = 0,
) -> list[list[list[float]]]:
    """`silero_speech_spans` of each mono waveform `[N_i]` at `sample_rate`, the model running on all
    of them as one batch (`silero_speech_probs`); the same keywords."""
    from silero_vad import get_speech_timestamps

    for wave in waves:
        if wave.dim() != 1:
            raise ValueError(f"silero_speech_spans expects mono waveforms [N], got shape {tuple(wave.shape)}")
    rate = sample_rate if sample_rate in SILERO_RATES else 16000
    durations = [w.numel() / sample_rate for w in waves]
    run = [i for i, d in enumerate(durations) if d >= 0.032]  # shorter: not one frame of the model
    ready = {i: waves[i].detach().to("cpu", torch.float32) for i in run}
    if rate != sample_rate:
        ready = {i: torchaudio.functional.resample(w, sample_rate, rate) for i, w in ready.items()}
    probs = dict(zip(run, silero_speech_probs(list(ready.values()), rate)))
    spans: list[list[list[float]]] = []
    for i, duration in enumerate(durations):
        if i not in probs:
            spans.append([])
            continue
        wave = ready[i]
        stamps = get_speech_timestamps(
            wave, _Replay(probs[i]), threshold=threshold, sampling_rate=rate,
            min_speech_duration_ms=min_speech_duration_ms,
            min_silence_duration_ms=min_silence_duration_ms, speech_pad_ms=speech_pad_ms,
        )  # fmt: skip
        n = wave.numel()
        end = [duration if s["end"] >= n else min(s["end"] / rate, duration) for s in stamps]
        spans.append([[min(s["start"] / rate, duration), e] for s, e in zip(stamps, end)])
    return spans


def silero_speech_spans(wave: Tensor, sample_rate: int, **kwargs: float) -> list[list[float]]:
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
    return silero_speech_spans_batch([wave], sample_rate, **kwargs)[0]


def _edges(spans: list[list[float]], duration: float) -> list[float]:
    """Span edges rounded to 4 decimals, sorted, unique, strictly inside (0, duration)."""
    edges = [round(t, 4) for span in spans for t in span]
    return sorted({t for t in edges if 0.0 < t < duration})


def silero_vad_boundaries(wave: Tensor, sample_rate: int, **kwargs: float) -> list[float]:
    """Heuristic baseline for audio: boundaries (s) at the edges of Silero VAD's speech spans of a
    mono waveform `[N]`, rounded to 4 decimals, sorted, unique, strictly inside (0, duration): the
    convention of `energy_vad_boundaries`. `kwargs` go to `silero_speech_spans`."""
    return _edges(silero_speech_spans(wave, sample_rate, **kwargs), wave.numel() / sample_rate)


def silero_vad_boundaries_batch(waves: list[Tensor], sample_rate: int, **kwargs: float) -> list[list[float]]:
    """`silero_vad_boundaries` of each waveform `[N_i]`, the model running on all of them as one batch."""
    spans = silero_speech_spans_batch(waves, sample_rate, **kwargs)
    return [_edges(s, w.numel() / sample_rate) for s, w in zip(spans, waves)]


def energy_vad_boundaries(wave: Tensor, sample_rate: int) -> list[float]:
    """Heuristic baseline for audio: boundaries at the edges of the silences an energy VAD finds
    (every 10 ms frame under −50 dBFS for ≥ 100 ms), the clip's own start and end left out."""
    duration = wave.numel() / sample_rate
    edges = [t for span in silent_intervals(wave.double().numpy(), sample_rate) for t in span]
    return sorted({round(t, 4) for t in edges if 0.0 < t < duration})


def vad_baselines() -> dict[str, Callable[[list[Tensor], int], list[list[float]]]]:
    """The VAD boundary baselines by name, each mapping waveforms `[N_i]` to their boundaries (s):
    edges of the energy VAD's and Silero VAD's speech/non-speech decisions (Silero runs on all the
    waveforms as one batch)."""

    def energy(waves: list[Tensor], sample_rate: int) -> list[list[float]]:
        return [energy_vad_boundaries(wave, sample_rate) for wave in waves]

    return {"energy": energy, "silero": silero_vad_boundaries_batch}
