"""The fixed batch, weights and recipe settings of the objectives' equivalence test (no model code).

`fixed_batch()` is built from a seed (no file): four clips of noise bursts between silences, with
transcripts, three of them with video, one shorter than a word. `recipe_model_args(name)` is the
`model:` section of a shipped recipe as `mmchunk demo --config` composes it (a variant layered on
demo_cpu), at width 32 (256 word buckets) and without `init_from`. `set_weights` gives every
parameter values drawn from its name, so two codes that name a tensor alike start alike whatever
order they build in.
`fingerprint` sums up a gradient.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from mmchunk.data.loader import Batch, Sample, collate

RECIPES = ("demo_cpu", "words_cpu", "align_cpu", "streaming_cpu", "hrm_cpu", "ddp_multi_gpu")
LAYERED = {"words_cpu", "align_cpu", "streaming_cpu", "hrm_cpu"}
RECIPE_DIR = Path(__file__).resolve().parent.parent / "recipes" / "audio_text"
SMALL = {"dim": 32, "embed_dim": 16, "heads": 2}
WORD_BUCKETS = 256
TEXTS = ("the red circle slides left", "a blue square", "near the green garden it stops", "go")
SECONDS = (2.4, 1.6, 3.0, 0.3)


def fixed_batch(seed: int = 0, rate: int = 16_000, fps: float = 10.0) -> Batch:
    """Four clips (`SECONDS`, `TEXTS`): noise bursts of random level between silences, 48×64 video at
    `fps` for the first three."""
    generator = torch.Generator().manual_seed(seed)
    samples = []
    for i, (seconds, text) in enumerate(zip(SECONDS, TEXTS)):
        n = round(seconds * rate)
        envelope = (torch.rand(n // 800 + 1, generator=generator) > 0.35).float().repeat_interleave(800)[:n]
        audio = 0.1 * torch.randn(n, generator=generator) * envelope
        video = times = None
        if i < 3:
            frames = max(1, int(seconds * fps))
            video = torch.randint(0, 256, (frames, 3, 48, 64), generator=generator, dtype=torch.uint8)
            times = torch.arange(frames) / fps
        meta = {"_sample_rate": rate, "_native_rate": rate, "_video_fps": fps, "text": text}
        samples.append(Sample(f"clip{i}", "fixed", audio, text, video, times, meta, [text]))
    return collate(samples, [])


def recipe_model_args(name: str, load_yaml: Callable[[str], dict]) -> dict:
    """The `model:` arguments of recipe `name` (layered on demo_cpu where it is a variant), small."""
    read = lambda n: load_yaml((RECIPE_DIR / f"{n}.yaml").read_text()).get("model", {})
    args = {**read("demo_cpu"), **read(name)} if name in LAYERED else read(name)
    args.pop("init_from", None)
    args.update(SMALL)
    if "objectives" not in args:  # the flat arguments of the model before objectives were parts
        return {**args, "word_buckets": WORD_BUCKETS}
    objectives = {k: dict(v or {}) for k, v in (args["objectives"] or {}).items()}
    if "words" in objectives:
        objectives["words"]["buckets"] = WORD_BUCKETS
    return {**args, "objectives": objectives}


def set_weights(module: nn.Module, rename: Callable[[str], str] = lambda n: n) -> None:
    """Every parameter drawn from a generator seeded by its name (`rename(name)`): matrices
    N(0, 1/fan_in), vectors named `weight` 1 + N(0, 0.1²), other vectors and scalars N(0, 0.1²)
    (scalars: added to their value)."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            g = torch.Generator().manual_seed(zlib.crc32(rename(name).encode()))
            noise = torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype)
            if p.dim() >= 2:
                p.copy_(noise / p[0].numel() ** 0.5)
            elif p.dim() == 1:
                p.copy_(1 + 0.1 * noise if name.endswith("weight") else 0.1 * noise)
            else:
                p.add_(0.1 * noise)


def fingerprint(name: str, grad: torch.Tensor, picks: int = 8) -> dict:
    """A gradient's sum, sum of squares and its values at `picks` positions drawn from `name`."""
    flat = grad.detach().double().flatten()
    g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    index = torch.randint(0, flat.numel(), (min(picks, flat.numel()),), generator=g)
    return {"sum": float(flat.sum()), "sq": float((flat**2).sum()), "picks": flat[index].tolist()}
