"""Learned chunking against baseline segmentations at the same compression, in one run (issue 13).

Trains one recipe (default: the demo's, `demo_cpu`) once per audio segmentation rule with the same
steps: the learned routing; fixed-stride pooling every k frames, k the learned model's measured
frames per chunk; random boundaries at the same rate; the edges of the energy VAD and of Silero VAD
(their own compression). Each model is then scored on the validation split, clean and under white
noise at 10 dB SNR: retrieval R@1, boundary F1 and R-value at 20 and 50 ms against word onsets,
frames per chunk, and the forward+backward time of one training step on a validation batch.

    python benchmarks/segmentation.py --data runs/demo/data
    python benchmarks/segmentation.py --data runs/demo/data --learned runs/demo/model.ckpt  # reuse the demo's
    python benchmarks/segmentation.py --data D --steps 20 -- --model.dim 32   # more fit arguments after --

Every rule's final checkpoint is kept in OUT/RULE/model.ckpt, so a second run trains only what is
missing; OUT/segmentation.json holds the scores.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine_name, median_seconds

from mmchunk.atomic import atomic_write, write_json
from mmchunk.builtin_recipes import resolve_recipe
from mmchunk.checkpoint import load_module
from mmchunk.data import make_dataset
from mmchunk.eval.robustness import eval_config, run_robustness
from mmchunk.segmentation import RULES
from mmchunk.training import run_fit

CONDITIONS = ("clean", "white-10dB")
COLUMNS = (
    ("frames/chunk", "clean", "compression_audio", ".2f"),
    ("a2t R@1", "clean", "a2t_R@1", ".3f"),
    ("t2a R@1", "clean", "t2a_R@1", ".3f"),
    ("a2t 10dB", "white-10dB", "a2t_R@1", ".3f"),
    ("t2a 10dB", "white-10dB", "t2a_R@1", ".3f"),
    ("F1@20", "clean", "boundary_f1_20ms", ".3f"),
    ("R-val@20", "clean", "boundary_r_value_20ms", ".3f"),
    ("F1@50", "clean", "boundary_f1_50ms", ".3f"),
    ("R-val@50", "clean", "boundary_r_value_50ms", ".3f"),
    ("F1@50 10dB", "white-10dB", "boundary_f1_50ms", ".3f"),
    ("R-val@50 10dB", "white-10dB", "boundary_r_value_50ms", ".3f"),
)


def train(rule: str, frames_per_chunk: float | None, args: argparse.Namespace) -> Path:
    """The final checkpoint of the recipe trained with `rule` for the audio (kept in OUT/RULE)."""
    folder = args.out / rule
    ckpt = folder / "model.ckpt"
    if ckpt.exists():
        print(f"{rule}: using {ckpt}")
        return ckpt
    extra = []
    if args.steps is not None:
        extra = ["--trainer.max_steps", str(args.steps), "--trainer.val_check_interval", str(args.steps)]
    if rule != "learned":
        setting = {"audio": {"rule": rule, "frames_per_chunk": frames_per_chunk}}
        extra += ["--model.segmentation", json.dumps(setting)]
        extra += ["--model.objectives.pause.weight", "0"]  # the pause loss trains learned routing only
    trainer = run_fit(
        [
            "--config", str(resolve_recipe(args.recipe)), "--trainer.default_root_dir", str(folder),
            "--trainer.logger.init_args.save_dir", str(folder), "--data.train", str(args.data / "train"),
            "--data.val", str(args.data / "val"), *extra, *args.fit_args,
        ]
    )  # fmt: skip
    atomic_write(ckpt, lambda tmp: shutil.copyfile(trainer.checkpoint_callback.last_model_path, tmp))
    return ckpt


def step_seconds(ckpt: Path, val: str, reps: int) -> float:
    """Median seconds of one forward+backward pass of the checkpoint's model, in training mode, on
    the first validation batch."""
    module = load_module(ckpt)
    config = eval_config(module)
    batch = next(b for b in make_dataset(val, config) if len(b) >= 2)
    module.train()

    def step() -> None:
        module.losses(batch)[1]["total"].backward()
        module.zero_grad(set_to_none=True)

    return median_seconds(step, reps, "cpu")


def format_table(results: dict) -> str:
    """One row per rule, the columns of `COLUMNS` and the step time."""
    width = max(len(r) for r in results) + 2
    head = f"{'rule':<{width}}" + "".join(f"{h:>{len(h) + 2}}" for h, *_ in COLUMNS) + f"{'fwd+bwd ms':>12}"
    lines = [head]
    for rule, r in results.items():
        cells = "".join(f"{r['conditions'][cond].get(key, float('nan')):>{len(h) + 2}{fmt}}"
                        for h, cond, key, fmt in COLUMNS)  # fmt: skip
        lines.append(f"{rule:<{width}}{cells}{1000 * r['step_seconds']:>12.0f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    fit_args = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True, help="a corpus with train/ and val/ shards")
    parser.add_argument("--out", type=Path, default=Path("runs/segmentation"), help="checkpoints and scores")
    parser.add_argument("--recipe", default="demo_cpu", help="built-in recipe name or YAML path (demo_cpu)")
    parser.add_argument("--steps", type=int, default=None, help="training steps of every run (the recipe's)")
    parser.add_argument("--learned", type=Path, help="a checkpoint of the recipe to use as the learned row")
    parser.add_argument("--rules", default=",".join(RULES), help="baseline rules, comma-separated (all)")
    parser.add_argument("--reps", type=int, default=3, help="timed forward+backward passes per model (3)")
    args = parser.parse_args(argv)
    args.fit_args = fit_args
    rules = [r for r in args.rules.split(",") if r]
    if unknown := sorted(set(rules) - set(RULES)):
        parser.error(f"unknown rule {unknown[0]!r} (known: {', '.join(RULES)})")
    if not (args.data / "train").is_dir() or not (args.data / "val").is_dir():
        parser.error(f"{args.data}: no train/ and val/ shard folders")
    val = str(args.data / "val")
    if args.learned is not None and not args.learned.is_file():
        parser.error(f"{args.learned}: no such checkpoint")
    results, ckpts, k = {}, {"learned": args.learned}, None
    for rule in itertools.chain(["learned"], rules):
        ckpts[rule] = ckpts.get(rule) or train(rule, k, args)
        report = run_robustness(ckpts[rule], val, list(CONDITIONS), progress=False)
        results[rule] = {"checkpoint": str(ckpts[rule]), "conditions": report["conditions"],
                         "step_seconds": step_seconds(ckpts[rule], val, args.reps)}  # fmt: skip
        if rule == "learned":
            k = report["conditions"]["clean"]["compression_audio"]
            print(f"learned: {k:.2f} frames per chunk; fixed and random run at that rate")
    write_json(args.out / "segmentation.json", {"machine": machine_name(), "results": results})
    print(f"\nmachine: {machine_name()}, torch {torch.__version__}; val: {val}")
    print(format_table(results))


if __name__ == "__main__":
    main()
