"""Retrieval R@1 of checkpoints on a held-out corpus, in galleries of the demo's size (issue 12).

The demo scores R@1 among its 128 val clips: one gallery, whose binomial spread alone is ±0.03
at R@1 0.85, so two recipes (or two seeds of one) cannot be told apart by it. This script embeds
a larger split (for example 512 clips of a corpus synthesized with another seed, which no run
trained on) once per checkpoint, cuts it into disjoint galleries of `--gallery` clips, and prints
a2t and t2a R@1 per gallery and their mean: the same task as the demo's, measured more times.
R@1 over the whole split (more candidates, a harder task) is printed beside it. A clip with several
captions is scored by the first (the built-in corpus has one); samples the loader cannot read are
named and counted, not scored.

    mmchunk data synth --out runs/heldout --num 640 --val-fraction 0.8 --seed 7 --video
    python benchmarks/heldout_retrieval.py --data runs/heldout/val runs/demo/model.ckpt [CKPT ...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import Tensor

from mmchunk.checkpoint import load_module
from mmchunk.data import make_dataset
from mmchunk.eval.robustness import eval_config
from mmchunk.metrics import retrieval_metrics
from mmchunk.training import batch_inputs


def embeddings(checkpoint: Path, shards: Path) -> tuple[Tensor, Tensor, int]:
    """Audio and text embeddings `[N, E]` of every readable sample of `shards`, in shard order, and
    the number of samples skipped (each named on stderr)."""
    try:
        module = load_module(checkpoint, "cpu").eval()
    except ValueError as err:
        raise SystemExit(str(err)) from None
    audio, text, skipped = [], [], 0
    with torch.no_grad():
        for batch in make_dataset(str(shards), eval_config(module)):
            for skip in batch.skipped:
                where = skip.shard if skip.key is None else f"{skip.shard} {skip.key}"
                print(f"skipped {where}: {skip.reason}", file=sys.stderr)
            skipped += len(batch.skipped)
            if len(batch):
                out = module.model(batch_inputs(batch))
                audio.append(out.audio_embedding)
                text.append(out.text_embedding)
    if not audio:
        raise SystemExit(f"{shards}: no samples")
    return torch.cat(audio), torch.cat(text), skipped


def gallery_recall(audio: Tensor, text: Tensor, size: int) -> Tensor:
    """a2t and t2a R@1 `[G, 2]` of the G = N // size disjoint galleries of consecutive samples."""
    scores = []
    for start in range(0, len(audio) - size + 1, size):
        sim = audio[start : start + size] @ text[start : start + size].T
        scores.append([retrieval_metrics(sim, "a")["a_R@1"], retrieval_metrics(sim.T, "t")["t_R@1"]])
    return torch.tensor(scores, dtype=torch.float64).reshape(-1, 2)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", type=Path, nargs="+", help="mmchunk fit checkpoints")
    parser.add_argument("--data", type=Path, required=True, help="a folder of held-out shards")
    parser.add_argument("--gallery", type=int, default=128, help="clips per gallery (the demo's val: 128)")
    args = parser.parse_args(argv)
    if args.gallery < 2:
        parser.error(f"--gallery: at least 2 clips, got {args.gallery}")
    if not args.data.is_dir():
        parser.error(f"{args.data}: no such folder of shards")
    for checkpoint in args.checkpoints:
        if not checkpoint.is_file():
            parser.error(f"{checkpoint}: no such checkpoint")
    header = f"{'checkpoint':<60}{'clips':>6}{'a2t R@1':>9}{'t2a R@1':>9}"
    print(f"{header}  per gallery (a2t / t2a), then the whole split (a2t / t2a), skipped samples")
    for checkpoint in args.checkpoints:
        audio, text, skipped = embeddings(checkpoint, args.data)
        if len(audio) < args.gallery:
            raise SystemExit(f"{args.data}: {len(audio)} clips, fewer than one gallery of {args.gallery}")
        recall = gallery_recall(audio, text, args.gallery)
        whole = audio @ text.T
        per = " ".join(f"{a:.3f}/{t:.3f}" for a, t in recall.tolist())
        mean = f"{recall[:, 0].mean():>9.3f}{recall[:, 1].mean():>9.3f}"
        a2t, t2a = retrieval_metrics(whole, "a")["a_R@1"], retrieval_metrics(whole.T, "t")["t_R@1"]
        everything = f"{a2t:.3f} / {t2a:.3f}"
        print(f"{checkpoint!s:<60}{len(audio):>6}{mean}  {per}  {everything}  {skipped} skipped")


if __name__ == "__main__":
    main()
