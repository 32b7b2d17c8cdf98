"""Training-time audio augmentation: random gain, additive noise, reverberation, speed perturbation
and a telephone channel.

A loader stage (`augment_samples`) between the shuffle buffer and the batcher. Each sample's draws
come from `numpy.random.default_rng([seed, epoch, crc32(key)])`, so a replayed epoch (a resumed run)
gives the same bytes, and the next epoch new ones. Cached decoded samples are never modified: every
augmented sample is a new `Sample`. The signal processing is `mmchunk.data.acoustics`
(torchaudio.functional, pyroomacoustics rooms).
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torchaudio.functional as AF

from mmchunk.data.acoustics import (
    COLOUR_EXPONENTS,
    ROOMS,
    add_noise,
    make_noise,
    reverberate,
    room_impulse_response,
    telephone,
)
from mmchunk.data.epochs import EpochSeed

AUGMENT_NOISES = (*COLOUR_EXPONENTS, "hum", "other")
TIMED_KEYS = ("silences", "static")


@dataclass
class AugmentConfig:
    """What `augment_samples` does to each training waveform, every part with its own probability.

    gain_db: gain drawn uniformly from this range (dB), then the ±1 full scale clips, as an ADC does.
    noise: add one of `noises` ("white", "pink", "brown", "hum", or "other": the audio of the sample
    before it in the stream) at an SNR drawn from `snr_db`. reverb: a simulated room (pyroomacoustics)
    with RT60 drawn from `rt60` in steps of 0.1 s. speed: resample to a speed factor drawn from
    `speed` in steps of 0.05 (0.9 = 10 % slower; 1.0 is a no-op); the sample's word, silence, static
    and frame times scale with it. telephone: the narrow-band channel of `acoustics.telephone`
    (300–3400 Hz, 8 kHz μ-law), after the noise as on a real line; 0 draws nothing, so the other
    parts' draws stay those of a configuration without it.
    """

    p_gain: float = 1.0
    gain_db: tuple[float, float] = (-20.0, 10.0)
    p_noise: float = 0.5
    snr_db: tuple[float, float] = (0.0, 30.0)
    noises: tuple[str, ...] = AUGMENT_NOISES
    p_reverb: float = 0.3
    rt60: tuple[float, float] = (0.2, 0.8)
    p_speed: float = 0.3
    speed: tuple[float, float] = (0.9, 1.1)
    p_telephone: float = 0.0

    def __post_init__(self) -> None:
        unknown = sorted(set(self.noises) - set(AUGMENT_NOISES))
        if unknown:
            raise ValueError(f"augment.noises: unknown {unknown} (known: {', '.join(AUGMENT_NOISES)})")
        for name in ("p_gain", "p_noise", "p_reverb", "p_speed", "p_telephone"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"augment.{name} must lie in [0, 1], got {getattr(self, name)}")
        if not 0.5 <= self.speed[0] <= self.speed[1] <= 2.0:
            raise ValueError(f"augment.speed must be a range inside [0.5, 2], got {self.speed}")


def sample_rng(seed: int, epoch: int, key: str) -> np.random.Generator:
    """The generator of one sample's augmentation in one epoch."""
    return np.random.default_rng([seed, epoch, zlib.crc32(key.encode())])


def _scale_times(meta: dict, factor: float) -> dict:
    """`meta` with word, cue, silence and static times (and the duration) divided by a speed `factor`."""
    meta = dict(meta)
    if "words" in meta:
        meta["words"] = [
            {**w, "start": round(w["start"] / factor, 4), "end": round(w["end"] / factor, 4)}
            for w in meta["words"]
        ]
    for key in TIMED_KEYS:
        if key in meta:
            meta[key] = [[round(a / factor, 4), round(b / factor, 4)] for a, b in meta[key]]
    if "cues" in meta:
        meta["cues"] = [[round(a / factor, 4), round(b / factor, 4), text] for a, b, text in meta["cues"]]
    if "duration" in meta:
        meta["duration"] = round(meta["duration"] / factor, 4)
    return meta


def augment_waveform(
    wave: torch.Tensor,
    config: AugmentConfig,
    rng: np.random.Generator,
    sample_rate: int,
    other: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict]:
    """Augment one waveform `[N]` → (`[N']`, the parameters drawn). Order: speed, room, noise,
    telephone, gain.

    `other`: a waveform `[M]` to use as "other" noise (looped or cut to length); without it "other"
    becomes white noise.
    """
    params: dict = {}
    out = wave.float()
    if rng.random() < config.p_speed and out.numel():
        factor = round(float(rng.uniform(*config.speed)) * 20) / 20  # steps of 0.05: short resampling kernels
        out = AF.speed(out[None], sample_rate, factor)[0][0]
        params["speed"] = factor
    if rng.random() < config.p_reverb:
        low, high = (round(v * 10) for v in config.rt60)
        rt60 = round(int(rng.integers(low, high + 1)) / 10, 1)
        room = int(rng.integers(ROOMS))
        out = reverberate(out, room_impulse_response(rt60, room, sample_rate))
        params.update(rt60=rt60, room_seed=room)
    if rng.random() < config.p_noise and config.noises:
        kind = config.noises[int(rng.integers(len(config.noises)))]
        snr = round(float(rng.uniform(*config.snr_db)), 2)
        if kind == "other" and other is not None and other.numel():
            start = int(rng.integers(other.numel()))
            noise = other[(start + torch.arange(out.numel())) % other.numel()]
        else:
            kind = "white" if kind == "other" else kind
            noise = make_noise(kind, out.numel(), sample_rate, rng)
        out = add_noise(out, noise, snr)
        params.update(noise=kind, snr_db=snr)
    if config.p_telephone > 0 and rng.random() < config.p_telephone:
        out = telephone(out, sample_rate)
        params["telephone"] = True
    if rng.random() < config.p_gain:
        gain = round(float(rng.uniform(*config.gain_db)), 2)
        out = (out * 10 ** (gain / 20)).clamp(-1.0, 1.0)
        params["gain_db"] = gain
    return out, params


def augment_samples(items: Iterable, config: AugmentConfig, epoch: EpochSeed, sample_rate: int) -> Iterator:
    """Loader stage: augment every `Sample`'s audio (skip records pass through), seeded by
    (epoch seed, epoch, key). The augmentation goes into `meta["augment"]`."""
    from mmchunk.data.loader import Sample

    previous: torch.Tensor | None = None
    for item in items:
        if not isinstance(item, Sample):
            yield item
            continue
        rng = sample_rng(epoch.seed, epoch.epoch, item.key)
        audio, params = augment_waveform(item.audio, config, rng, sample_rate, previous)
        previous = item.audio
        meta, times = {**item.meta, "augment": params}, item.video_times
        if "speed" in params:
            meta = _scale_times(meta, params["speed"])
            times = times / params["speed"] if times is not None else None
        yield dataclasses.replace(item, audio=audio, meta=meta, video_times=times)
