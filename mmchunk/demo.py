"""Foundation demo: chunk synthetic audio (tones, chirps, noise, silences) and report the boundaries."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torchaudio
from torch import Tensor

from mmchunk.chunker import DynamicChunker
from mmchunk.metrics import boundary_scores
from mmchunk.ragged import Ragged

SAMPLE_RATE = 16_000
HOP_S = 0.010
WIN_S = 0.025
N_MELS = 40
NOISE_FLOOR = 1e-3
SOUNDS = ("tone", "chirp", "noise")


@dataclass
class Segment:
    """One stretch of a synthetic clip: its kind ("silence", "tone", "chirp", "noise") and span in s."""

    kind: str
    t0: float
    t1: float
    boundaries: int = 0


@dataclass
class ClipReport:
    """What the chunker made of one clip."""

    frames: int
    chunks: int
    seconds: float
    segments: list[Segment]
    boundary_times: list[float]


def synth_clip(gen: torch.Generator, sample_rate: int = SAMPLE_RATE) -> tuple[Tensor, list[Segment]]:
    """A mono clip `[N]`: 3–5 sounds separated by silences, over a −60 dBFS noise floor."""

    def uniform(lo: float, hi: float) -> float:
        return lo + (hi - lo) * float(torch.rand((), generator=gen))

    pieces, segments, t = [], [], 0.0
    for _ in range(int(torch.randint(3, 6, (), generator=gen))):
        for kind in ("silence", SOUNDS[int(torch.randint(len(SOUNDS), (), generator=gen))]):
            dur = uniform(0.25, 0.6) if kind == "silence" else uniform(0.3, 0.8)
            n = round(dur * sample_rate)
            time = torch.arange(n, dtype=torch.float64) / sample_rate
            if kind == "silence":
                wave = torch.zeros(n, dtype=torch.float64)
            elif kind == "tone":
                f0 = uniform(120.0, 400.0)
                wave = sum(torch.sin(2 * math.pi * f0 * h * time) / h for h in range(1, 6))
            elif kind == "chirp":
                f0, f1 = uniform(200.0, 600.0), uniform(1500.0, 4000.0)
                wave = torch.sin(2 * math.pi * (f0 * time + (f1 - f0) * time**2 / (2 * dur)))
            else:
                wave = torch.randn(n, generator=gen, dtype=torch.float64)
            if kind != "silence":
                wave = 0.3 * wave / wave.abs().max()
            pieces.append(wave)
            segments.append(Segment(kind, round(t, 4), round(t + n / sample_rate, 4)))
            t += n / sample_rate
    tail = round(uniform(0.25, 0.6) * sample_rate)
    pieces.append(torch.zeros(tail, dtype=torch.float64))
    segments.append(Segment("silence", round(t, 4), round(t + tail / sample_rate, 4)))
    wave = torch.cat(pieces) + NOISE_FLOOR * torch.randn(
        sum(map(len, pieces)), generator=gen, dtype=torch.float64
    )
    return wave.float(), segments


def log_mel_frames(wave: Tensor, sample_rate: int = SAMPLE_RATE) -> tuple[Tensor, Tensor, Tensor]:
    """Standardised log-mel frames `[F, 40]` (10 ms hop, 25 ms window) and their spans `[F]`, `[F]` in s."""
    hop, win = round(HOP_S * sample_rate), round(WIN_S * sample_rate)
    mel = torchaudio.transforms.MelSpectrogram(
        sample_rate, n_fft=512, win_length=win, hop_length=hop, n_mels=N_MELS, center=False
    )(wave)
    feats = torch.log(mel + 1e-6).T
    feats = (feats - feats.mean(0)) / (feats.std(0) + 1e-5)
    t_start = torch.arange(feats.shape[0]) * HOP_S
    return feats, t_start, t_start + WIN_S


def run_demo(seed: int = 0, num_clips: int = 4) -> dict:
    """Synthesize `num_clips` clips, chunk them in one packed batch with an untrained chunker, report.

    At initialisation the routing projections are the identity, so a boundary opens wherever a
    frame's spectrum turns away from the previous one (cosine < 0): silences and steady sounds stay
    in one chunk, onsets and offsets open new ones. Boundaries (frame centres, the forced one at
    each clip start left out) are scored against the true segment transitions.
    """
    gen = torch.Generator().manual_seed(seed)
    clips = [synth_clip(gen) for _ in range(num_clips)]
    frames = [log_mel_frames(wave) for wave, _ in clips]
    batch = Ragged.from_list(
        [f for f, _, _ in frames],
        t_start=[s for _, s, _ in frames],
        t_end=[e for _, _, e in frames],
    )
    chunker = DynamicChunker(N_MELS)
    with torch.no_grad():
        out = chunker(batch)
        restored = chunker.dechunk(out.chunks, out)
    centres = (out.chunks.t_start + WIN_S / 2).tolist()
    reports, predicted, reference = [], [], []
    for i, (wave, segments) in enumerate(clips):
        lo, hi = out.chunks.cu_seqlens[i : i + 2].tolist()
        times = centres[lo + 1 : hi]
        for seg in segments:
            seg.boundaries = sum(seg.t0 <= t < seg.t1 for t in times)
        transitions = [seg.t0 for seg in segments[1:]]
        offset = sum(w.numel() for w, _ in clips[:i]) / SAMPLE_RATE
        predicted += [t + offset for t in times]
        reference += [t + offset for t in transitions]
        reports.append(
            ClipReport(
                frames=int(batch.lengths[i]),
                chunks=hi - lo,
                seconds=round(wave.numel() / SAMPLE_RATE, 3),
                segments=segments,
                boundary_times=[round(t, 3) for t in times],
            )
        )
    scores = {tol: boundary_scores(predicted, reference, tol / 1000) for tol in (20, 50)}
    return {
        "seed": seed,
        "frames": batch.num_tokens,
        "chunks": out.chunks.num_tokens,
        "compression": round(out.compression, 3),
        "transitions": len(reference),
        **{f"boundary_{k}_{tol}ms": round(v, 4) for tol, s in scores.items() for k, v in s.items()},
        "dechunk_shape": list(restored.shape),
        "clips": [asdict(r) for r in reports],
    }


def format_demo(report: dict) -> str:
    """Human-readable tables of `run_demo`'s report."""
    lines = []
    for i, clip in enumerate(report["clips"]):
        lines.append(
            f"clip {i}: {clip['seconds']:.2f} s, {clip['frames']} frames -> {clip['chunks']} chunks "
            f"({clip['frames'] / max(clip['chunks'], 1):.1f} frames/chunk)"
        )
        lines.append(f"  {'segment':<8} {'start s':>8} {'end s':>8} {'boundaries':>11}")
        for seg in clip["segments"]:
            lines.append(f"  {seg['kind']:<8} {seg['t0']:>8.2f} {seg['t1']:>8.2f} {seg['boundaries']:>11}")
        lines.append("  boundaries at (s): " + ", ".join(f"{t:.2f}" for t in clip["boundary_times"]))
    lines.append(
        f"all clips: {report['frames']} frames -> {report['chunks']} chunks "
        f"(compression {report['compression']:.2f}x), {report['transitions']} true transitions"
    )
    lines.append(f"  {'tolerance':<10} {'precision':>9} {'recall':>7} {'F1':>6} {'R-value':>8}")
    for tol in (20, 50):
        p, r, f, rv = (report[f"boundary_{k}_{tol}ms"] for k in ("precision", "recall", "f1", "r_value"))
        lines.append(f"  {f'{tol} ms':<10} {p:>9.3f} {r:>7.3f} {f:>6.3f} {rv:>8.3f}")
    lines.append(f"dechunk back to tokens: {report['dechunk_shape']}")
    return "\n".join(lines)
