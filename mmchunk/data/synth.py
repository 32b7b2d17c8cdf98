"""The built-in spoken corpus: espeak-ng sentences with word timings, true silences and optional video.

By default every utterance is played under a seeded acoustic condition (level, background noise,
room, telephone channel, clipping: `mmchunk.data.acoustics`) and every video through a seeded camera
(sensor noise, flicker, shake, zoom, compression: `mmchunk.data.camera`); the ground truth (word
times, silences = no speech, static spans = no scene motion) is measured on the dry signal and the
undisturbed scene, so it stays exact. `realistic=False` keeps the dry corpus.
"""

from __future__ import annotations

import io
import json
import multiprocessing
from pathlib import Path

import numpy as np
import soundfile
import torch
import torchaudio
from tqdm import tqdm

from mmchunk.atomic import replacing_shards
from mmchunk.data.acoustics import apply_condition, babble_talkers, draw_condition, rms_dbfs
from mmchunk.data.camera import apply_camera, draw_camera
from mmchunk.data.energy import frame_rms, silent_intervals
from mmchunk.data.espeak import Espeak
from mmchunk.data.scene import FPS, encode_mp4, render_scene
from mmchunk.data.sentences import make_sentence
from mmchunk.data.shards import ShardWriter

SAMPLE_RATE = 16_000
VOICES = ["en", "en-us", "en-gb-x-rp", "en-029", "en-gb-scotland"]
VARIANTS = ["", "+f2", "+f3", "+m3", "+m5"]


def _ssml(phrases: list[str], pauses_ms: list[int]) -> tuple[str, list[tuple[str, int]]]:
    """SSML with a `<break>` between phrases, and each word with its 1-based character offset."""
    text, words = "<speak>", []
    for i, phrase in enumerate(phrases):
        if i:
            text += f' <break time="{pauses_ms[i - 1]}ms"/> '
        for j, word in enumerate(phrase.split()):
            if j:
                text += " "
            words.append((word, len(text) + 1))
            text += word
    return text + "</speak>", words


def _word_end(wave: np.ndarray, start: float, limit: float) -> float:
    """Last moment before `limit` (s) at which the 10 ms frame energy of `wave` is above −50 dBFS."""
    lo, hi = round(start * SAMPLE_RATE), round(limit * SAMPLE_RATE)
    loud = np.nonzero(frame_rms(wave[lo:hi], SAMPLE_RATE) >= 10 ** (-50 / 20))[0]
    return round(min(start + (loud[-1] + 1) * 0.010, limit), 4) if len(loud) else round(start, 4)


def _phone_spans(phonemes: list[tuple[str, int, int]], length: int, rate: int, lead: float) -> list[dict]:
    """Phones `{"phone", "start", "end"}` (s, after `lead` seconds of silence) from espeak's phoneme
    events at `rate`: each lasts until the next event (a phoneme or a pause) or the `length`-sample
    end; the pauses themselves (mnemonics `_…`) are left out."""
    ends = [sample for *_, sample in phonemes[1:]] + [length]
    return [
        {"phone": name, "start": round(sample / rate + lead, 4), "end": round(end / rate + lead, 4)}
        for (name, _, sample), end in zip(phonemes, ends)
        if not name.startswith("_") and end > sample
    ]


def synth_sample(
    seed: int, index: int, video: bool = False, realistic: bool = True
) -> tuple[str, dict[str, bytes]]:
    """One sample `(key, members)`: 16 kHz mono FLAC, transcript, JSON ground truth, optional MP4.

    Everything random is drawn from `numpy.random.default_rng([seed, index])` (text, voice, timing)
    and `default_rng([seed, index, 1])` (recording condition, camera): the same seed and index give
    the same bytes in any process. With `realistic`, the JSON's `condition` holds the acoustic
    condition (and `camera` the video's).
    """
    rng = np.random.default_rng([seed, index])
    phrases, scene = make_sentence(rng)
    voice = VOICES[int(rng.integers(len(VOICES)))] + VARIANTS[int(rng.integers(len(VARIANTS)))]
    rate, pitch = int(rng.integers(130, 191)), int(rng.integers(30, 71))
    pauses = [int(rng.integers(150, 500)) for _ in phrases[1:]]
    lead, trail = float(rng.uniform(0.2, 0.6)), float(rng.uniform(0.2, 0.6))
    ssml, words = _ssml(phrases, pauses)
    utterance = Espeak.get().speak(ssml, voice, rate, pitch, seed=int(rng.integers(2**31)))
    speech = torch.from_numpy(utterance.pcm.astype(np.float64) / 32768.0)  # float64: same bits anywhere
    speech = torchaudio.functional.resample(speech, utterance.sample_rate, SAMPLE_RATE).float().numpy()
    lead_n, trail_n = round(lead * SAMPLE_RATE), round(trail * SAMPLE_RATE)
    wave = np.concatenate([np.zeros(lead_n, np.float32), speech, np.zeros(trail_n, np.float32)])
    duration = len(wave) / SAMPLE_RATE
    onsets = {pos: sample / utterance.sample_rate + lead for pos, _, sample in utterance.words}
    for name, pos, sample in reversed(utterance.phonemes):  # a word starts with its first phoneme
        if not name.startswith("_") and pos in onsets:
            onsets[pos] = sample / utterance.sample_rate + lead
    missing = [w for w, pos in words if pos not in onsets]
    if missing:
        raise RuntimeError(f"espeak-ng reported no word event for {missing} in {ssml!r}")
    starts = [round(onsets[pos], 4) for _, pos in words]
    limits = [*starts[1:], duration]
    timed = [
        {"word": w, "start": s, "end": _word_end(wave, s, lim)}
        for (w, _), s, lim in zip(words, starts, limits)
    ]
    phones = _phone_spans(utterance.phonemes, len(utterance.pcm), utterance.sample_rate, lead)
    key = f"sample-{index:06d}"
    silences = silent_intervals(wave, SAMPLE_RATE)
    condition_rng = np.random.default_rng([seed, index, 1])
    condition = camera = None
    if realistic:
        condition = draw_condition(condition_rng)
        talkers = babble_talkers(seed, sample_rate=SAMPLE_RATE)
        wave = apply_condition(torch.from_numpy(wave), condition, condition_rng, SAMPLE_RATE, talkers)
        condition["measured_dbfs"] = round(rms_dbfs(wave), 2)  # below level_dbfs where the peak limits
        wave = wave.numpy()
    meta = {
        "key": key,
        "text": " ".join(phrases),
        "words": timed,
        "phones": phones,
        "silences": silences,
        "voice": voice,
        "rate": rate,
        "pitch": pitch,
        "sample_rate": SAMPLE_RATE,
        "duration": round(duration, 4),
        "seed": seed,
        "index": index,
    }
    if condition is not None:
        meta["condition"] = condition
    flac = io.BytesIO()
    soundfile.write(flac, wave, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    members = {"flac": flac.getvalue(), "txt": meta["text"].encode()}
    if video:
        frames, static = render_scene(scene, duration, silences)
        crf = 18
        if realistic:
            camera = draw_camera(condition_rng)
            shot = apply_camera(torch.from_numpy(frames).permute(0, 3, 1, 2), camera, condition_rng)
            frames, crf = shot.permute(0, 2, 3, 1).contiguous().numpy(), camera["crf"]
            meta["camera"] = camera
        members["mp4"] = encode_mp4(frames, crf=crf)
        static = [[s, min(e, meta["duration"])] for s, e in static]
        meta.update(fps=FPS, static=static, scene=scene)
    members["json"] = json.dumps(meta, indent=1).encode()
    return key, members


def _one_thread() -> None:
    """Worker set-up: one intra-op thread per synthesis process (the processes are the parallelism;
    nested thread pools on top of them oversubscribe the cores)."""
    torch.set_num_threads(1)


def _synth_job(job: tuple[int, int, bool, bool]) -> tuple[str, dict[str, bytes]]:
    return synth_sample(*job)


def synth_corpus(
    out: str | Path,
    num: int,
    *,
    video: bool = False,
    realistic: bool = True,
    seed: int = 0,
    val_fraction: float = 0.1,
    shard_size: int = 256,
    workers: int | None = None,
    progress: bool = True,
    overwrite: bool = True,
) -> dict[str, dict[str, int]]:
    """Write `num` samples as shards under `out/train/` and `out/val/`; returns each split's sizes.

    The shards already under `out` are replaced once all new ones are written, and stay as they
    were if synthesis fails (`replacing_shards`; refused without `overwrite`).
    `realistic=False`: the dry corpus (digital silence, one level, no room, bit-identical static
    video).
    The last `round(num · val_fraction)` indices form the validation split, at least one when
    `val_fraction > 0` and `num ≥ 2` (a single sample has no validation split). `workers` processes
    synthesize in parallel (default: up to 2); the result does not depend on their number.
    """
    if num < 1:
        raise ValueError(f"--num must be at least 1, got {num}")
    if not 0 <= val_fraction < 1:
        raise ValueError(f"--val-fraction must lie in [0, 1), got {val_fraction}")
    num_val = max(round(num * val_fraction), 1 if val_fraction > 0 and num >= 2 else 0)
    workers = workers or min(2, multiprocessing.cpu_count())
    jobs = [(seed, i, video, realistic) for i in range(num)]
    ctx = multiprocessing.get_context("spawn")
    with replacing_shards(out, overwrite) as stage:
        writers = {"train": ShardWriter(stage / "train", "train", shard_size)}
        if num_val:
            writers["val"] = ShardWriter(stage / "val", "val", shard_size)
        with ctx.Pool(workers, initializer=_one_thread) if workers > 1 else _InProcess() as pool:
            results = pool.imap(_synth_job, jobs, chunksize=4)
            for index, (key, members) in enumerate(
                tqdm(results, total=num, desc="synth", unit="sample", disable=not progress)
            ):
                writers["val" if index >= num - num_val else "train"].write(key, members)
        return {split: writer.close() for split, writer in writers.items()}


class _InProcess:
    """Pool stand-in that maps in the calling process."""

    def imap(self, fn, jobs, chunksize: int = 1):
        return map(fn, jobs)

    def __enter__(self) -> _InProcess:
        return self

    def __exit__(self, *exc) -> None:
        return None
