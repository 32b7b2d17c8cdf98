"""Acoustic conditions of a recording: level, background noise, room reverberation, telephone band, clipping.

The building blocks of the realistic corpus (`draw_condition` + `apply_condition`), of training-time
augmentation and of the robustness report. Every random draw takes an explicit
`numpy.random.Generator`, so the same seed gives the same samples in any process. Rooms come from
pyroomacoustics (image-source shoebox rooms), filtering, resampling, companding and mixing at an SNR
from `torchaudio.functional`, convolution from scipy.
"""

from __future__ import annotations

import functools

import numpy as np
import scipy.fft
import scipy.signal
import torch
import torchaudio.functional as AF

NOISES = ("white", "pink", "brown", "hum", "babble")
COLOUR_EXPONENTS = {"white": 0.0, "pink": 1.0, "brown": 2.0}
TELEPHONE_RATE = 8_000
ROOMS = 3


def unit_rms(x: np.ndarray) -> np.ndarray:
    """`x [n]` scaled to an RMS of 1, as float32 (all-zero or empty input stays as it is)."""
    if x.size == 0:
        return x.astype(np.float32)
    return (x / (np.sqrt(np.mean(x**2)) + 1e-12)).astype(np.float32)


def coloured_noise(n: int, colour: str, rng: np.random.Generator) -> np.ndarray:
    """Noise `[n]` with power spectrum ∝ 1/f^β (white β=0, pink 1, brown 2), unit RMS.

    (audiomentations' `AddColorNoise` does the same spectral shaping but draws from numpy's global
    generator, which cannot be seeded per sample.)
    """
    if n == 0:
        return np.zeros(0, np.float32)
    beta = COLOUR_EXPONENTS[colour]
    size = scipy.fft.next_fast_len(n, real=True)  # shaped at a fast FFT length, then cut to n
    spectrum = scipy.fft.rfft(rng.standard_normal(size))
    freqs = np.fft.rfftfreq(size)
    spectrum[0], freqs[0] = 0.0, 1.0  # no DC offset
    return unit_rms(scipy.fft.irfft(spectrum / freqs ** (beta / 2), size)[:n])


def hum(n: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Mains hum `[n]`: 50 or 60 Hz and its first harmonics with random amplitudes and phases, unit RMS."""
    t = np.arange(n) / sample_rate
    base = 50.0 if rng.random() < 0.5 else 60.0
    wave = sum(
        rng.uniform(0.2, 1.0) / k * np.sin(2 * np.pi * base * k * t + rng.uniform(0, 2 * np.pi))
        for k in range(1, 6)
    )
    return unit_rms(wave + 0.05 * rng.standard_normal(n))


def babble(n: int, talkers: list[np.ndarray], rng: np.random.Generator, voices: int = 4) -> np.ndarray:
    """Babble `[n]`: the sum of `voices` talkers from the bank, each looped from a random offset, unit RMS."""
    mix = np.zeros(n, np.float64)
    for i in rng.choice(len(talkers), size=min(voices, len(talkers)), replace=False):
        talker = talkers[int(i)]
        start = int(rng.integers(len(talker)))
        idx = (start + np.arange(n)) % len(talker)
        mix += unit_rms(talker)[idx]
    return unit_rms(mix)


@functools.lru_cache(maxsize=4)
def babble_talkers(seed: int, count: int = 12, sample_rate: int = 16_000) -> tuple[np.ndarray, ...]:
    """`count` talkers `[N_i]` for babble: corpus-style sentences spoken by random espeak-ng voices.

    Seeded apart from the corpus' own utterances (another seed stream), cached per process.
    """
    from mmchunk.data.espeak import Espeak
    from mmchunk.data.sentences import make_sentence
    from mmchunk.data.synth import VARIANTS, VOICES

    talkers = []
    for j in range(count):
        rng = np.random.default_rng([seed, 7919, j])
        phrases, _ = make_sentence(rng)
        voice = VOICES[int(rng.integers(len(VOICES)))] + VARIANTS[int(rng.integers(len(VARIANTS)))]
        utt = Espeak.get().speak(f"<speak>{' '.join(phrases)}</speak>", voice, int(rng.integers(130, 191)),
                                 int(rng.integers(30, 71)), seed=int(rng.integers(2**31)))  # fmt: skip
        pcm = torch.from_numpy(utt.pcm.astype(np.float64) / 32768.0)
        talkers.append(AF.resample(pcm, utt.sample_rate, sample_rate).float().numpy())
    return tuple(talkers)


@functools.lru_cache(maxsize=256)
def room_impulse_response(rt60: float, seed: int, sample_rate: int = 16_000) -> np.ndarray:
    """Impulse response `[L]` of a random shoebox room with reverberation time `rt60` (s), from
    pyroomacoustics' image-source model, shifted so that its direct path is sample 0 and scaled to a
    unit direct path (convolving keeps word times and the dry level)."""
    import pyroomacoustics as pra

    rng = np.random.default_rng([seed, round(rt60 * 1000)])
    room = np.array([rng.uniform(3.0, 9.0), rng.uniform(3.0, 7.0), rng.uniform(2.4, 3.5)])
    absorption, max_order = pra.inverse_sabine(rt60, room)
    shoebox = pra.ShoeBox(room, fs=sample_rate, materials=pra.Material(absorption), max_order=max_order)
    margin = 0.5
    source = rng.uniform(margin, room - margin)
    mic = rng.uniform(margin, room - margin)
    while np.linalg.norm(source - mic) < 1.0:
        mic = rng.uniform(margin, room - margin)
    shoebox.add_source(source)
    shoebox.add_microphone(mic)
    shoebox.compute_rir()
    rir = np.asarray(shoebox.rir[0][0], np.float64)
    direct = int(np.argmax(np.abs(rir)))
    return (rir[direct:] / rir[direct]).astype(np.float32)


def reverberate(wave: torch.Tensor, rir: np.ndarray) -> torch.Tensor:
    """`wave [N]` convolved with an impulse response whose direct path is sample 0, cut to `[N]`
    (scipy's overlap-add convolution: FFTs of fast lengths, unlike one FFT of length N + L − 1)."""
    if wave.numel() == 0:
        return wave
    wet = scipy.signal.oaconvolve(wave.double().numpy(), rir.astype(np.float64))[: wave.numel()]
    return torch.from_numpy(wet).float()


def add_noise(wave: torch.Tensor, noise: np.ndarray | torch.Tensor, snr_db: float) -> torch.Tensor:
    """`wave [N]` plus `noise [N]` scaled to `snr_db` against the whole recording's power (torchaudio).

    A recording of digital silence has no power to compare with: it gets the noise at −60 dBFS.
    """
    noise = torch.as_tensor(noise, dtype=torch.float32)
    if wave.numel() == 0 or float(wave.pow(2).sum()) == 0.0:
        return wave + noise * 1e-3
    return AF.add_noise(wave[None].double(), noise[None].double(), torch.tensor([snr_db]))[0].float()


def telephone(wave: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """A narrow-band telephone channel: 300 Hz high-pass, 8 kHz sampling (3.4 kHz low-pass), μ-law
    companding, back at `sample_rate`."""
    if wave.numel() == 0:
        return wave
    narrow = AF.resample(wave.double(), sample_rate, TELEPHONE_RATE, lowpass_filter_width=16, rolloff=0.85)
    narrow = AF.highpass_biquad(narrow, TELEPHONE_RATE, 300.0)
    peak = float(narrow.abs().max()) or 1.0
    coded = AF.mu_law_decoding(AF.mu_law_encoding(narrow / peak, 256), 256) * peak
    return AF.resample(coded, TELEPHONE_RATE, sample_rate)[: wave.numel()].float()


def clip(wave: torch.Tensor, fraction: float) -> torch.Tensor:
    """Hard clipping of `wave [N]` at the level that `fraction` of its samples exceed."""
    if wave.numel() == 0 or fraction <= 0:
        return wave
    limit = float(torch.quantile(wave.abs().double(), 1.0 - fraction))
    return wave.clamp(-limit, limit)


def rms_dbfs(wave: torch.Tensor) -> float:
    """RMS level of `wave [N]` in dB relative to full scale (1.0); −inf for silence."""
    power = float(wave.double().pow(2).mean()) if wave.numel() else 0.0
    return 10 * np.log10(power) if power > 0 else float("-inf")


def set_level(wave: torch.Tensor, dbfs: float, peak: float = 0.999) -> torch.Tensor:
    """`wave [N]` scaled to an RMS of `dbfs` dBFS, or less where its peak would pass `peak`."""
    level = rms_dbfs(wave)
    if not np.isfinite(level):
        return wave
    gain = 10 ** ((dbfs - level) / 20)
    top = float(wave.abs().max())
    return wave * min(gain, peak / top)


def make_noise(kind: str, n: int, sample_rate: int, rng: np.random.Generator, talkers=()) -> np.ndarray:
    """Background noise `[n]`, unit RMS, of one of `NOISES`."""
    if kind in COLOUR_EXPONENTS:
        return coloured_noise(n, kind, rng)
    if kind == "hum":
        return hum(n, sample_rate, rng)
    if kind == "babble":
        return babble(n, list(talkers), rng)
    raise ValueError(f"unknown noise {kind!r} (known: {', '.join(NOISES)})")


def draw_condition(rng: np.random.Generator) -> dict:
    """A recording condition for the realistic corpus: level −40…−10 dBFS, one of `NOISES` at 0–30 dB
    SNR, a room (RT60 0.2–0.8 s in steps of 0.1, one of `ROOMS` layouts: a bank of rooms each
    process computes once) for half of them, a telephone channel for 15 % and clipping (0.5–3 % of
    samples) for 10 %. Plain JSON values."""
    room = rng.random() < 0.5
    return {
        "level_dbfs": round(float(rng.uniform(-40.0, -10.0)), 2),
        "noise": NOISES[int(rng.integers(len(NOISES)))],
        "snr_db": round(float(rng.uniform(0.0, 30.0)), 2),
        "rt60": round(0.2 + 0.1 * int(rng.integers(7)), 1) if room else None,
        "room_seed": int(rng.integers(ROOMS)),
        "telephone": bool(rng.random() < 0.15),
        "clip_fraction": round(float(rng.uniform(0.005, 0.03)), 4) if rng.random() < 0.1 else 0.0,
    }


def apply_condition(
    wave: torch.Tensor, condition: dict, rng: np.random.Generator, sample_rate: int, talkers=()
) -> torch.Tensor:
    """Play dry speech `wave [N]` under `condition`: room, then noise at the SNR, then the telephone
    channel, clipping and the level. Returns `[N]` float32 (time-aligned with the input)."""
    out = wave.float()
    if condition.get("rt60"):
        rir = room_impulse_response(condition["rt60"], condition.get("room_seed", 0), sample_rate)
        out = reverberate(out, rir)
    if condition.get("noise"):
        noise = make_noise(condition["noise"], out.numel(), sample_rate, rng, talkers)
        out = add_noise(out, noise, condition["snr_db"])
    if condition.get("telephone"):
        out = telephone(out, sample_rate)
    out = clip(out, condition.get("clip_fraction", 0.0))
    return set_level(out, condition["level_dbfs"]) if "level_dbfs" in condition else out
