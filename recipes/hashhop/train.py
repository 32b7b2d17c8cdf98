"""Train a byte-level model on HashHop and score it: a flat Transformer or a 1-/2-stage H-Net with the
same number of blocks (6: flat = 6 causal attention blocks; 1 stage = 2 recurrent + 2 attention + 2
recurrent; 2 stages = 1 + 1 recurrent, 2 attention, 1 + 1 recurrent).

Each step draws fresh seeded tasks; with `--min-chars` their prompt length is drawn uniformly from
[min, n] characters, and with `--ramp R` from [min, a bound growing from min to n over R steps] (a
length curriculum: short prompts teach the lookup sooner). The loss covers the
answer bytes. At the end, held-out tasks are scored at every `--eval-chars` length (exact match per
hop count), which measures how far a model trained at one length carries to longer ones.
Checkpoints (`{out}/{model}_{n}.state.pt`, tensors only) every `--save-every` steps; `--resume`
continues from one.

Run: `.venv/bin/python recipes/hashhop/train.py --model stage1 --n-chars 1000 --steps 500` (--help).
`--timing-only` measures the mean step time (fwd + bwd + AdamW) without training to the end.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import torch
from tqdm import tqdm

from mmchunk.atomic import atomic_write, write_json
from mmchunk.bytelm import ByteLM
from mmchunk.eval.hashhop import chain_chars, generate
from mmchunk.eval.hashhop_lm import answer_scores, batch, hop_accuracy, save_model

MODELS = {
    "flat": {"depth": 6, "stages": 0},
    "stage1": {"depth": 2, "stages": 1, "outer_depth": 2, "ratios": [4.0]},
    "stage2": {"depth": 2, "stages": 2, "outer_depth": 1, "ratios": [3.0, 2.0]},
}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=sorted(MODELS), default="stage1", help="architecture (stage1)")
    p.add_argument("--n-chars", type=int, default=1000, help="prompt length in characters (1000)")
    p.add_argument("--min-chars", type=int, default=None, help="shortest training prompt (= --n-chars)")
    p.add_argument(
        "--ramp", type=int, default=0, help="steps over which the longest prompt grows from min to n (0)"
    )
    p.add_argument("--eval-chars", type=int, nargs="+", default=None, help="scored lengths (--n-chars)")
    p.add_argument("--hops", type=int, default=1, help="hops per chain (1)")
    p.add_argument("--hash-len", type=int, default=4, help="letters per hash (4)")
    p.add_argument("--queries", type=int, default=4, help="queries per task, at most (4)")
    p.add_argument("--steps", type=int, default=500, help="training steps (500)")
    p.add_argument("--batch", type=int, default=8, help="tasks per step (8)")
    p.add_argument("--dim", type=int, default=128, help="width (128)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak AdamW learning rate (1e-3)")
    p.add_argument("--warmup", type=int, default=100, help="linear warm-up steps, then cosine to 10%% (100)")
    p.add_argument("--eval-tasks", type=int, default=50, help="held-out tasks per scored length (50)")
    p.add_argument("--seed", type=int, default=0, help="seed (0)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (torch default)")
    p.add_argument("--save-every", type=int, default=200, help="checkpoint period in steps (200)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument("--timing-only", action="store_true", help="time --steps steps, no scoring")
    p.add_argument("--out", default="runs/hashhop", help="output folder (runs/hashhop)")
    args = p.parse_args()
    args.min_chars = args.min_chars or args.n_chars
    args.eval_chars = args.eval_chars or [args.n_chars]
    if not 0 < args.min_chars <= args.n_chars:
        p.error(f"--min-chars must be in (0, --n-chars], got {args.min_chars}")
    return args


def step_tasks(args: argparse.Namespace, step: int) -> list:
    """The training tasks of `step` (seeded by step): a length in whole chains within [min, longest],
    the longest growing linearly from min to n over the first `--ramp` steps."""
    per_chain = chain_chars(args.hops, args.hash_len)
    rng = random.Random(f"{args.seed}/{step}")
    longest = (
        args.n_chars
        if step >= args.ramp
        else args.min_chars + (args.n_chars - args.min_chars) * step / args.ramp
    )
    chains = rng.randint(max(1, args.min_chars // per_chain), max(1, int(longest) // per_chain))
    queries = min(args.queries, chains)
    return generate(
        args.batch, chains * per_chain - 1, args.hops, queries, args.hash_len, seed=args.seed * 10**6 + step
    )


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    config = {"dim": args.dim, "heads": 4, **MODELS[args.model]}
    model = ByteLM(**config)
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)

    def lr_factor(step: int) -> float:
        progress = max(0, step - args.warmup) / max(1, args.steps - args.warmup)
        return min(1.0, (step + 1) / args.warmup) * (
            0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, progress)))
        )

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    out = Path(args.out)
    name = f"{args.model}_{args.n_chars}"
    state_path, start = out / f"{name}.state.pt", 0
    if args.resume and state_path.exists():
        try:
            state = torch.load(state_path, weights_only=True)
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["opt"])
            sched.load_state_dict(state["sched"])
            start = int(state["step"])
        except Exception as exc:
            raise SystemExit(
                f"{state_path}: not a checkpoint of this run ({' '.join(str(exc).split())[:160]})"
            ) from None
        print(f"resuming {state_path} at step {start}")
    elif args.resume:
        print(f"no checkpoint at {state_path}: starting at step 0")
    times, smooth = [], {}  # exponential moving averages of the loss parts
    bar = tqdm(range(start, args.steps), desc=name, unit="step", initial=start, total=args.steps)
    for step in bar:
        data, mask = batch(step_tasks(args, step))
        clock = time.perf_counter()
        model.train()
        loss, parts = model.loss(data, mask)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()
        times.append(time.perf_counter() - clock)
        smooth = {k: 0.98 * smooth.get(k, float(v)) + 0.02 * float(v) for k, v in parts.items()}
        bar.set_postfix({k: f"{v:.3f}" for k, v in smooth.items()}, refresh=False)
        if not args.timing_only and ((step + 1) % args.save_every == 0 or step + 1 == args.steps):
            out.mkdir(parents=True, exist_ok=True)
            state = {
                "model": model.state_dict(),
                "opt": opt.state_dict(),
                "sched": sched.state_dict(),
                "step": step + 1,
            }
            atomic_write(state_path, lambda tmp, state=state: torch.save(state, tmp))
    step_ms = 1e3 * sum(times[1:]) / max(len(times) - 1, 1)
    report = {
        "model": args.model,
        "params": params,
        "n_chars": args.n_chars,
        "step_ms": step_ms,
        "smoothed": smooth,
    }
    if not args.timing_only:
        report["accuracy"], report["answer_nats"] = {}, {}
        for n in args.eval_chars:
            held_out = generate(
                args.eval_tasks, n, args.hops, args.queries, args.hash_len, seed=-1 - args.seed
            )
            scores = answer_scores(model, held_out)
            report["accuracy"][n] = hop_accuracy(held_out, scores.hits)
            report["answer_nats"][n] = scores.nats
        save_model(model, config, out / f"{name}.safetensors")
        write_json(out / f"{name}.json", report)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
