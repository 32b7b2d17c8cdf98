"""Robustness report: the validation split played under named, seeded recording conditions.

Each condition changes every decoded validation sample (its waveform, or its video frames) before the
model sees it; the ground truth (word onsets, silences, static spans) is untouched. Per condition the
report gives retrieval, boundary quality beside the VAD baselines, the silence / static boundary
shares and the chunk rates, so one table shows where a checkpoint holds up and where it breaks.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from mmchunk.data import DataConfig, Sample
from mmchunk.data.acoustics import (
    add_noise,
    babble,
    babble_talkers,
    make_noise,
    reverberate,
    room_impulse_response,
    telephone,
)
from mmchunk.data.camera import brightness, pixel_noise, shake

AUDIO_CONDITIONS: dict[str, dict] = {
    "clean": {},
    "gain-20dB": {"gain_db": -20.0},
    "gain+10dB": {"gain_db": 10.0},
    **{f"{c}-{snr}dB": {"noise": c, "snr_db": float(snr)} for c in ("white", "pink") for snr in (20, 10, 5)},
    "babble-10dB": {"noise": "babble", "snr_db": 10.0},
    "reverb-0.3s": {"rt60": 0.3},
    "reverb-0.8s": {"rt60": 0.8},
    "telephone": {"telephone": True},
}
VIDEO_CONDITIONS: dict[str, dict] = {
    "video-noise": {"pixel_sigma": 8.0},
    "video-dark": {"brightness": 0.6},
    "video-shake": {"shake_px": 1.5},
}
CONDITIONS = {**AUDIO_CONDITIONS, **VIDEO_CONDITIONS}
SHORT = ("clean", "gain-20dB", "gain+10dB", "white-10dB", "babble-10dB", "reverb-0.3s", "telephone")
BABBLE_SEED = 1_000_003  # babble talkers apart from any corpus seed's
ROOM_SEED = 1_000  # rooms apart from the corpus' and the augmentation's (seeds 0 … ROOMS − 1)


def parse_conditions(names: str | list[str] | None) -> list[str]:
    """Condition names from a comma-separated string or list (None: all); unknown names are an error."""
    if names is None:
        return list(CONDITIONS)
    items = [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)
    unknown = [n for n in items if n not in CONDITIONS]
    if unknown:
        raise ValueError(f"unknown condition {unknown[0]!r} (known: {', '.join(CONDITIONS)})")
    return items


def condition_transform(name: str, seed: int, sample_rate: int) -> Callable[[Sample], Sample]:
    """The function that plays one `Sample` under condition `name`, seeded by (seed, name, key).

    Gains are applied in floating point (no clipping: clipping is a condition of its own in the
    corpus); noise SNRs are against the whole recording's power; rooms are pyroomacoustics shoeboxes.
    """
    spec = CONDITIONS[name]

    def play(sample: Sample) -> Sample:
        rng = np.random.default_rng([seed, zlib.crc32(name.encode()), zlib.crc32(sample.key.encode())])
        audio, video = sample.audio, sample.video
        if "gain_db" in spec:
            audio = audio * 10 ** (spec["gain_db"] / 20)
        if "rt60" in spec:
            audio = reverberate(audio, room_impulse_response(spec["rt60"], ROOM_SEED + seed, sample_rate))
        if "noise" in spec:
            n = audio.numel()
            if spec["noise"] == "babble":
                noise = babble(n, list(babble_talkers(BABBLE_SEED, sample_rate=sample_rate)), rng)
            else:
                noise = make_noise(spec["noise"], n, sample_rate, rng)
            audio = add_noise(audio, noise, spec["snr_db"])
        if spec.get("telephone"):
            audio = telephone(audio, sample_rate)
        if video is not None and len(video):
            if "pixel_sigma" in spec:
                video = pixel_noise(video, spec["pixel_sigma"], rng)
            if "brightness" in spec:
                video = brightness(video, spec["brightness"])
            if "shake_px" in spec:
                video = shake(video, spec["shake_px"], rng)
        return dataclasses.replace(sample, audio=audio, video=video)

    return play


AUDIO_COLUMNS = (
    ("a2t R@1", "a2t_R@1"), ("t2a R@1", "t2a_R@1"), ("F1@50", "boundary_f1_50ms"),
    ("word F1", "word_boundary_f1_50ms"),
    ("energy F1", "baseline_boundary_f1_50ms"), ("silero F1", "silero_boundary_f1_50ms"),
    ("bnd in sil.", "silence_boundary_fraction"), ("sil. time", "silence_time_fraction"),
    ("frames/chunk", "compression_audio"), ("chunks/s speech", "chunk_rate_audio_speech_hz"),
)  # fmt: skip
VIDEO_COLUMNS = (
    ("a2t R@1", "a2t_R@1"), ("t2a R@1", "t2a_R@1"), ("bnd in static", "static_boundary_fraction"),
    ("static time", "static_time_fraction"), ("frames/chunk", "compression_video"),
    ("RLT frames/kept", "baseline_compression_video"),
)  # fmt: skip


def eval_config(module) -> DataConfig:
    """Validation loader settings for a trained `AudioTextModule`: the video at its encoder's rate."""
    encoders = module.model.encoders
    return DataConfig(video_fps=encoders["video"].native_rate_hz if "video" in encoders else 25.0)


def run_robustness(
    checkpoint: str | Path,
    data: str,
    conditions: list[str] | None = None,
    seed: int = 0,
    config: DataConfig | None = None,
    progress: bool = True,
    routing_gain: bool = True,
) -> dict:
    """Evaluate a checkpoint on the shards `data` under each condition (default: all);
    `routing_gain=False` switches the routing's gain control off (the ablation).

    Returns `{"checkpoint", "data", "seed", "routing_gain", "conditions": {name: scores}}` with the
    scores of `mmchunk.pipeline.evaluate`.
    """
    from tqdm import tqdm

    from mmchunk.checkpoint import load_module
    from mmchunk.pipeline import evaluate

    names = parse_conditions(conditions)
    module = load_module(checkpoint)
    if not routing_gain:
        without_routing_gain(module.model)
    config = config or eval_config(module)
    results = {}
    with torch.no_grad():
        for name in tqdm(names, desc="conditions", unit="condition", disable=not progress):
            transform = condition_transform(name, seed, config.sample_rate)
            results[name], _ = evaluate(module, data, config, transform=transform)
    gained = (
        module.model.chunker.routing_peak is not None and not module.model.chunker.routing_peak.isnan().all()
    )
    return {"checkpoint": str(checkpoint), "data": str(data), "seed": seed, "routing_gain": bool(gained),
            "conditions": results}  # fmt: skip


def without_routing_gain(model) -> None:
    """Switch off a `ChunkFusionModel`'s routing gain control (its running peak level unmeasured)."""
    if model.chunker.routing_peak is not None:
        model.chunker.routing_peak.fill_(float("nan"))


def format_report(report: dict) -> str:
    """The report as text tables: audio conditions, then video conditions (where the data has video);
    "—" where the data has no annotation for a column (real datasets have no word or silence times)."""
    lines = []
    for title, names, columns in (
        ("audio", AUDIO_CONDITIONS, AUDIO_COLUMNS),
        ("video", VIDEO_CONDITIONS, VIDEO_COLUMNS),
    ):
        rows = [(n, s) for n, s in report["conditions"].items() if n in names]
        if title == "video":
            rows = [(n, s) for n, s in rows if "compression_video" in s]
        if not rows:
            continue
        lines.append(
            f"{title + ' condition':<14}" + "".join(f"{h:>{max(len(h) + 2, 9)}}" for h, _ in columns)
        )
        for name, scores in rows:
            cells = [
                f"{scores[key]:>{max(len(h) + 2, 9)}.3f}" if key in scores else f"{'—':>{max(len(h) + 2, 9)}}"
                for h, key in columns
            ]
            lines.append(f"{name:<14}" + "".join(cells))
        lines.append("")
    clean = report["conditions"].get("clean", {})
    if "a2t_R@1_low" in clean:
        spans = ", ".join(
            f"{d} {clean[f'{d}_R@1_low']:.3f}–{clean[f'{d}_R@1_high']:.3f}" for d in ("a2t", "t2a")
        )
        lines.append(f"R@1 clean, 95 % bootstrap interval over the val queries: {spans}")
    per_clip = max((s.get("captions_per_clip", 1.0) for s in report["conditions"].values()), default=1.0)
    if per_clip > 1:
        protocol = "t2a: every caption; a2t: the best one"
        lines.append(f"retrieval: LAION-CLAP protocol, {per_clip:.2f} captions per clip ({protocol})")
    if any("—" in line for line in lines):
        lines.append("—: the data has no annotation (word, silence or static times) to score this against")
    return "\n".join(lines).rstrip()
