"""Silero VAD baseline on espeak speech with a known pause, on silence, on noise, across sample rates."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torchaudio

from mmchunk.data.espeak import Espeak
from mmchunk.vad import (
    _silero_model,
    silero_speech_spans,
    silero_speech_spans_batch,
    silero_vad_boundaries,
    silero_vad_boundaries_batch,
)

RATE = 16_000
LEAD, PAUSE, TRAIL = 0.5, 0.6, 0.5


def _phrase(text: str) -> torch.Tensor:
    """espeak speech `[N]` at 16 kHz, cut to its first and last sample above −50 dBFS."""
    utterance = Espeak.get().speak(f"<speak>{text}</speak>", "en", 160, 50, seed=3)
    speech = torch.from_numpy(utterance.pcm.astype(np.float64) / 32768.0)
    speech = torchaudio.functional.resample(speech, utterance.sample_rate, RATE).float()
    loud = torch.nonzero(speech.abs() > 10 ** (-50 / 20)).flatten()
    return speech[loud[0] : loud[-1] + 1]


def _noise(n: int, dbfs: float, seed: int) -> torch.Tensor:
    """White noise `[n]` with an RMS of `dbfs` dB full scale, from a seeded generator."""
    return 10 ** (dbfs / 20) * torch.randn(n, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def two_phrases() -> tuple[torch.Tensor, list[float]]:
    """(waveform `[N]` at 16 kHz, true speech edges [start, end of phrase 1, start of phrase 2, end]):
    two phrases around a 600 ms digital-zero pause, with −60 dBFS noise over everything."""
    a, b = _phrase("The quick brown fox jumps over the lazy dog"), _phrase("and then it ran into the forest")
    zeros = [torch.zeros(round(s * RATE)) for s in (LEAD, PAUSE, TRAIL)]
    wave = torch.cat([zeros[0], a, zeros[1], b, zeros[2]])
    wave = wave + _noise(wave.numel(), -60, seed=0)
    end_a = LEAD + a.numel() / RATE
    return wave, [LEAD, end_a, end_a + PAUSE, end_a + PAUSE + b.numel() / RATE]


def _nearest(times: list[float], t: float) -> float:
    return min(times, key=lambda x: abs(x - t))


def _check_convention(bounds: list[float], duration: float) -> None:
    assert bounds == sorted(set(bounds))
    assert all(0.0 < t < duration for t in bounds)
    assert all(t == round(t, 4) for t in bounds)


def test_boundaries_at_the_pause_edges(two_phrases):
    wave, edges = two_phrases
    bounds = silero_vad_boundaries(wave, RATE)
    _check_convention(bounds, wave.numel() / RATE)
    for t in edges:  # both edges of the pause, and the outer speech edges too
        assert abs(_nearest(bounds, t) - t) <= 0.1, (t, bounds)
    spans = silero_speech_spans(wave, RATE)
    assert all(0 <= s < e <= wave.numel() / RATE for s, e in spans)
    assert all(e1 <= s2 for (_, e1), (s2, _) in itertools.pairwise(spans))
    assert not any(s < edges[2] - 0.1 and e > edges[1] + 0.1 for s, e in spans)  # the pause is not speech


def test_no_speech_gives_no_boundaries():
    for wave in (torch.zeros(3 * RATE), _noise(3 * RATE, -50, seed=1), _noise(3 * RATE, -60, seed=2)):
        assert silero_speech_spans(wave, RATE) == []
        assert silero_vad_boundaries(wave, RATE) == []
    for n in (0, 1, 100):
        assert silero_speech_spans(torch.zeros(n), RATE) == []
        assert silero_vad_boundaries(torch.zeros(n), 44_100) == []
    with pytest.raises(ValueError, match="mono"):
        silero_speech_spans(torch.zeros(2, RATE), RATE)


def test_other_sample_rates_agree(two_phrases):
    wave, edges = two_phrases
    reference = silero_vad_boundaries(wave, RATE)
    for rate in (8000, 44_100):
        other = torchaudio.functional.resample(wave, RATE, rate)
        bounds = silero_vad_boundaries(other, rate)
        _check_convention(bounds, other.numel() / rate)
        for t in edges:
            assert abs(_nearest(bounds, t) - _nearest(reference, t)) <= 0.06, (rate, t, bounds, reference)
    assert silero_vad_boundaries(wave, RATE) == reference  # no state carried over from other calls


def test_speech_to_the_end_has_no_boundary_there(two_phrases):
    wave, edges = two_phrases
    cut = torchaudio.functional.resample(wave[: round((edges[3] - 0.3) * RATE)], RATE, 44_100)
    duration = cut.numel() / 44_100
    spans = silero_speech_spans(cut, 44_100)
    assert spans[-1][1] == duration
    assert all(t < duration - 0.2 for t in silero_vad_boundaries(cut, 44_100))


def test_batched_spans_equal_silero_run_on_each_waveform(two_phrases):
    """Many waveforms through the model as one batch give the spans that silero's own
    get_speech_timestamps gives with its model on each waveform alone (uneven lengths, a waveform
    shorter than a frame, an empty one), at 16 kHz and at a resampled rate."""
    from silero_vad import get_speech_timestamps

    wave, _ = two_phrases
    waves = [wave, wave[: RATE + 123], torch.zeros(100), wave[RATE // 2 :], torch.zeros(0)]
    batched = silero_speech_spans_batch(waves, RATE)
    for one, spans in zip(waves, batched):
        if one.numel() < 512:
            assert spans == []
            continue
        stamps = get_speech_timestamps(one, _silero_model(), min_silence_duration_ms=50, speech_pad_ms=0)
        duration = one.numel() / RATE
        want = [[s["start"] / RATE, duration if s["end"] >= one.numel() else s["end"] / RATE] for s in stamps]
        flat = [t for span in want for t in span]
        assert [t for span in spans for t in span] == pytest.approx(flat, abs=1e-9)
        assert silero_speech_spans(one, RATE) == spans
    assert len(batched[0]) == 2
    resampled = [torchaudio.functional.resample(w, RATE, 22_050) for w in waves[:2]]
    one_by_one = [silero_vad_boundaries(w, 22_050) for w in resampled]
    assert silero_vad_boundaries_batch(resampled, 22_050) == one_by_one
