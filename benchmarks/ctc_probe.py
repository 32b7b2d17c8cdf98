"""CTC probe variants on one trained model's frozen tokens (issue 13): which probe places words best.

The detached CTC probe (`ctc_probe: true`) changes no weight of the model it reads, so its variants
can be compared on one model: the dechunked audio tokens the probe reads are computed once for the
train and val splits (no augmentation), then each variant (`--mixers`, `--depths`, `--seeds`)
trains a fresh probe and head on them as the recipe would (AdamW, warm-up then cosine decay,
`--clips` random clips per step, gradient norm clipped at 1) and is scored on val: transcript-free
word onsets (`ctc_word_onsets`) against the true word starts (F1 and R-value at 50 ms, the clips
laid end to end as `mmchunk eval` lays them) and forced alignment of the transcript (share of
words within 50 and 100 ms, median error). Frozen final tokens flatter a probe a little against one
trained beside the model (the demo recipe's in-run window probe: 0.569 F1; here 0.566-0.599).

    python benchmarks/ctc_probe.py --ckpt runs/demo/model.ckpt --data runs/demo/data
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor, nn
from tqdm import tqdm

from mmchunk.alignment import alignment_scores, ascii_lower, ctc_word_onsets, ctc_word_spans
from mmchunk.checkpoint import load_module
from mmchunk.data import DataConfig, expand_urls, make_dataset
from mmchunk.layers import MixerStack, RMSNorm
from mmchunk.losses import byte_ctc_loss
from mmchunk.metrics import boundary_scores
from mmchunk.ragged import Ragged
from mmchunk.training import batch_inputs


class Clip(NamedTuple):
    """One clip as the probe sees it: its tokens `[T, D]` with their times `[T]`, its transcript, and
    its true word starts (s; for scoring only)."""

    tokens: Tensor
    t_start: Tensor
    t_end: Tensor
    text: str
    words: list[float]


def probe_inputs(model, folder: Path, limit: int | None) -> list[Clip]:
    """Every clip of the shards in `folder` (up to `limit`): the tokens the model's probe reads."""
    seen: list[Ragged] = []
    hook = model.ctc_probe.register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    config = DataConfig(use_video=False, require_text=True, max_samples=32, max_seconds=300.0)
    clips: list[Clip] = []
    with torch.no_grad(), tqdm(desc=f"tokens {folder.name}", unit="clip") as bar:
        for batch in make_dataset(expand_urls(str(folder)), config, split=False):
            seen.clear()
            model.encode(batch_inputs(batch))
            tokens, text = seen[0], batch.text
            for b, meta in enumerate(batch.meta):
                lo, hi = tokens.cu_seqlens[b : b + 2].tolist()
                spoken = bytes(text.values[text.cu_seqlens[b] : text.cu_seqlens[b + 1]].tolist()).decode()
                words = [w["start"] for w in meta.get("words", [])]
                clips.append(
                    Clip(tokens.values[lo:hi], tokens.t_start[lo:hi], tokens.t_end[lo:hi], spoken, words)
                )
            bar.update(len(batch))
            if limit is not None and len(clips) >= limit:
                break
    hook.remove()
    return clips[:limit]


def packed(clips: list[Clip]) -> tuple[Ragged, Ragged]:
    """The clips' tokens as one Ragged `[T, D]` with times, and their transcripts' bytes `[S]`."""
    tokens = Ragged.from_list([c.tokens for c in clips])
    timed = Ragged(tokens.values, tokens.cu_seqlens, t_start=torch.cat([c.t_start for c in clips]),
                   t_end=torch.cat([c.t_end for c in clips]))  # fmt: skip
    return timed, Ragged.from_list([torch.tensor(list(c.text.encode()), dtype=torch.long) for c in clips])


def train_probe(
    train: list[Clip], mixer: str, depth: int, seed: int, args: argparse.Namespace
) -> tuple[nn.Module, nn.Module, float]:
    """A fresh probe (`depth` blocks of `mixer`; 0: the head alone) and head trained on `train`."""
    dim = train[0].tokens.shape[1]
    torch.manual_seed(seed)
    probe = MixerStack(dim, depth, mixer, args.heads) if depth else nn.Sequential()
    head = nn.Sequential(RMSNorm(dim), nn.Linear(dim, 257))
    params = [*probe.parameters(), *head.parameters()]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    order = torch.Generator().manual_seed(seed)
    loss = torch.zeros(())
    for step in range(args.steps):
        scale = min(1.0, (step + 1) / args.warmup) * 0.5 * (1 + math.cos(math.pi * step / args.steps))
        for group in optimizer.param_groups:
            group["lr"] = args.lr * scale
        tokens, text = packed([train[i] for i in torch.randperm(len(train), generator=order)[: args.clips]])
        log_probs = head(probe(tokens).values).log_softmax(-1)
        loss = byte_ctc_loss(log_probs, tokens.cu_seqlens, ascii_lower(text.values), text.cu_seqlens)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
    return probe, head, float(loss)


def score(probe: nn.Module, head: nn.Module, val: list[Clip]) -> dict[str, float]:
    """Transcript-free onsets (F1, R-value at 50 ms) and forced alignment of the transcripts on `val`."""
    tokens, _ = packed(val)
    with torch.no_grad():
        mixed = probe(tokens)
        log_probs = head(mixed.values).log_softmax(-1)
    ctc = Ragged(log_probs, tokens.cu_seqlens, t_start=tokens.t_start, t_end=tokens.t_end)
    predicted, reference = [], []
    for k, (onsets, clip) in enumerate(zip(ctc_word_onsets(ctc), val)):  # clips 1000 s apart
        predicted += [t + 1000.0 * k for t in onsets]
        reference += [t + 1000.0 * k for t in clip.words]
    onset = boundary_scores(predicted, reference, 0.05)
    spans = ctc_word_spans(ctc, [c.text for c in val])
    placed = alignment_scores(
        [None if s is None else [a for a, _ in s] for s in spans], [c.words for c in val]
    )
    return {"f1": onset["f1"], "r_value": onset["r_value"], **placed}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", type=Path, required=True, help="a checkpoint with a detached CTC probe")
    parser.add_argument(
        "--data", type=Path, required=True, help="a corpus folder with train/ and val/ shards"
    )
    parser.add_argument("--mixers", default="window,recurrent", help="probe mixers, comma-separated")
    parser.add_argument("--depths", default="1", help="probe depths, comma-separated (0: the head alone)")
    parser.add_argument("--seeds", default="0,1,2", help="seeds per variant, comma-separated")
    parser.add_argument("--steps", type=int, default=480, help="training steps per probe")
    parser.add_argument("--clips", type=int, default=16, help="clips per step")
    parser.add_argument("--lr", type=float, default=1.5e-3, help="peak learning rate")
    parser.add_argument("--warmup", type=int, default=20, help="warm-up steps")
    parser.add_argument("--heads", type=int, default=4, help="attention heads of a window probe")
    parser.add_argument("--limit", type=int, default=None, help="at most this many clips per split")
    args = parser.parse_args(argv)
    model = load_module(args.ckpt, "cpu").model.eval()
    if model.ctc_probe is None:
        parser.error(f"{args.ckpt}: the model has no detached CTC probe (ctc_probe: true)")
    for split in ("train", "val"):
        if not (args.data / split).is_dir():
            parser.error(f"{args.data / split}: no such folder of shards")
    train = probe_inputs(model, args.data / "train", args.limit)
    val = probe_inputs(model, args.data / "val", args.limit)
    print(f"{len(train)} train and {len(val)} val clips, {args.steps} steps of {args.clips} clips per probe")
    print(f"{'mixer':<10}{'depth':>6}{'seed':>5}{'CTC loss':>9}{'F1@50':>7}{'R-val':>7}"
          f"{'≤50 ms':>7}{'≤100 ms':>8}{'median ms':>10}{'s':>5}")  # fmt: skip
    for mixer in args.mixers.split(","):
        for depth in (int(d) for d in args.depths.split(",")):
            for seed in (int(s) for s in args.seeds.split(",")):
                clock = time.perf_counter()
                probe, head, loss = train_probe(train, mixer, depth, seed, args)
                s = score(probe, head, val)
                print(f"{mixer:<10}{depth:>6}{seed:>5}{loss:>9.3f}{s['f1']:>7.3f}{s['r_value']:>7.3f}"
                      f"{s['align_within_50ms']:>7.3f}{s['align_within_100ms']:>8.3f}{s['align_median_error_ms']:>10.1f}"
                      f"{time.perf_counter() - clock:>5.0f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
