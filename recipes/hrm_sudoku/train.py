"""Train the HRM backbone on in-repo Sudoku puzzles (deep supervision + ACT) and report exact-puzzle
accuracy against the number of segments allowed at inference.

Run: `.venv/bin/python recipes/hrm_sudoku/train.py` (4×4, 10 blanks, ~7 min on one core; see --help).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from tqdm import tqdm

from mmchunk.atomic import atomic_write, write_json
from mmchunk.hrm import HierarchicalReasoning, act_halt, continue_target, exploration_min_steps
from mmchunk.ragged import Ragged
from mmchunk.ragged_ops import mean_pool
from mmchunk.sudoku import puzzle_set


class SudokuHRM(nn.Module):
    """Cell digits (0 = blank) + cell position → HRM over the n·n cells → digit logits `[T, n]`."""

    def __init__(self, n: int, dim: int, heads: int, layers: int, h_cycles: int, l_cycles: int) -> None:
        super().__init__()
        self.n = n
        self.digit = nn.Embedding(n + 1, dim)
        self.position = nn.Embedding(n * n, dim)
        self.hrm = HierarchicalReasoning(dim, heads, layers, h_cycles, l_cycles)
        self.head = nn.Linear(dim, n)

    def embed(self, puzzles: Tensor) -> Ragged:
        """Puzzles `[B, n·n]` → packed cell embeddings (one sequence per puzzle)."""
        cells = self.digit(puzzles) + self.position.weight
        return Ragged.from_list(list(cells))


def run_segments(
    model: SudokuHRM, puzzles: Tensor, max_steps: int, act: bool = True
) -> tuple[Tensor, Tensor]:
    """Inference: predictions `[B, n·n]` and the segments used `[B]`; with `act` each sequence
    stops when its Q-head halts (at most `max_steps`), else every sequence runs `max_steps`."""
    x = model.embed(puzzles)
    carry = model.hrm.initial_carry(x)
    running = torch.ones(len(puzzles), dtype=torch.bool)
    preds = torch.zeros_like(puzzles)
    used = torch.zeros(len(puzzles), dtype=torch.long)
    for step in range(1, max_steps + 1):
        out = model.hrm.segment(carry, x)
        guess = model.head(out.hidden.values).argmax(-1).view_as(puzzles) + 1
        preds = torch.where(running[:, None], guess, preds)
        used += running.long()
        if act:
            running &= ~act_halt(out.q_logits, step, max_steps)
        if not running.any():
            break
        carry = out.carry
    return preds, used


def train(args: argparse.Namespace) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    test_x, test_y = puzzle_set(args.size, args.test, args.blanks, seed=args.seed + 1)
    model = SudokuHRM(args.size, args.dim, args.heads, args.layers, args.h_cycles, args.l_cycles)
    out_dir = Path(args.out)
    weights = out_dir / f"sudoku{args.size}.safetensors"
    if args.evaluate_only:
        try:
            model.load_state_dict(load_file(str(weights)))
        except (OSError, RuntimeError, ValueError) as exc:
            raise SystemExit(
                f"{weights}: no weights of this configuration ({' '.join(str(exc).split())[:160]})"
            ) from None
        return evaluate(
            model, test_x, test_y, args.eval_segments, {"config": vars(args), "train_seconds": 0.0}
        )
    train_x, train_y = puzzle_set(args.size, args.train, args.blanks, seed=args.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1)
    gen = torch.Generator().manual_seed(args.seed)
    clock = time.perf_counter()
    for _ in tqdm(range(args.steps), desc="train", unit="batch"):
        idx = torch.randint(0, len(train_x), (args.batch,), generator=gen)
        puzzles, solutions = train_x[idx], train_y[idx]
        carry = model.hrm.initial_carry(model.embed(puzzles))
        min_steps = exploration_min_steps(args.batch, args.max_segments, args.explore, gen)
        running = torch.ones(args.batch, dtype=torch.bool)
        previous = None  # (pooled hidden state, running mask) of the last segment, for its continue target
        for step in range(1, args.max_segments + 1):
            out = model.hrm.segment(carry, model.embed(puzzles))  # a fresh graph per segment
            logits = model.head(out.hidden.values).view(args.batch, -1, args.size)
            correct = (logits.argmax(-1) + 1 == solutions).all(-1)
            ce = F.cross_entropy(logits[running].flatten(0, 1), (solutions[running] - 1).flatten())
            q_halt = F.binary_cross_entropy_with_logits(out.q_logits[running, 0], correct[running].float())
            loss = ce + 0.5 * q_halt
            if previous is not None:
                pooled, mask = previous
                target = continue_target(out.q_logits.detach(), step == args.max_segments)
                q_cont = model.hrm.q_head(pooled)[:, 1]
                loss = loss + 0.5 * F.binary_cross_entropy_with_logits(q_cont[mask], target[mask])
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            previous = (mean_pool(out.hidden).detach(), running.clone())
            running &= ~act_halt(out.q_logits.detach(), step, args.max_segments, min_steps)
            if not running.any():
                break
            carry = out.carry
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    atomic_write(weights, lambda tmp: save_file(tensors, str(tmp)))
    report = {"config": vars(args), "train_seconds": time.perf_counter() - clock}
    report = evaluate(model, test_x, test_y, args.eval_segments, report)
    write_json(out_dir / f"sudoku{args.size}.json", report)
    return report


def evaluate(model: SudokuHRM, test_x: Tensor, test_y: Tensor, caps: list[int], report: dict) -> dict:
    """Exact-puzzle accuracy and accuracy on the blank cells of the test puzzles for each number of
    segments, with ACT halting (the cap is a maximum) and with every puzzle run exactly that many."""
    model.eval()
    rows, blank = [], test_x == 0
    with torch.no_grad():
        for act in (True, False):
            for max_steps in caps:
                preds, used = run_segments(model, test_x, max_steps, act)
                right = preds == test_y
                rows.append({
                    "act": act, "max_segments": max_steps, "exact": right.all(-1).float().mean().item(),
                    "cells": (right & blank).sum().item() / blank.sum().item(),
                    "mean_segments": used.float().mean().item(),
                })  # fmt: skip
    return {**report, "results": rows}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=4, choices=[4, 6, 9], help="grid size (4)")
    p.add_argument("--blanks", type=int, default=10, help="empty cells per puzzle (10)")
    p.add_argument("--train", type=int, default=4000, help="training puzzles (4000)")
    p.add_argument("--test", type=int, default=500, help="test puzzles, other seeds (500)")
    p.add_argument("--steps", type=int, default=1500, help="training batches (1500)")
    p.add_argument("--batch", type=int, default=64, help="puzzles per batch (64)")
    p.add_argument("--dim", type=int, default=64, help="width (64)")
    p.add_argument("--heads", type=int, default=4, help="attention heads (4)")
    p.add_argument("--layers", type=int, default=1, help="blocks in each of H and L (1)")
    p.add_argument("--h-cycles", type=int, default=1, help="high-level updates per segment (1)")
    p.add_argument("--l-cycles", type=int, default=1, help="low-level updates per high-level one (1)")
    p.add_argument("--max-segments", type=int, default=8, help="ACT cap during training (8)")
    p.add_argument("--explore", type=float, default=0.5, help="ACT exploration probability (0.5)")
    p.add_argument("--eval-segments", type=int, nargs="+", default=[1, 2, 4, 8, 16], help="caps at inference")
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (1e-3)")
    p.add_argument("--seed", type=int, default=0, help="seed (0)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (torch default)")
    p.add_argument("--out", default="runs/hrm_sudoku", help="output folder (runs/hrm_sudoku)")
    p.add_argument(
        "--evaluate-only", action="store_true", help="evaluate OUT/sudokuN.safetensors, no training"
    )
    report = train(p.parse_args())
    print(f"trained in {report['train_seconds']:.0f} s")
    print(f"{'halting':>8}{'max segments':>13}{'exact puzzles':>15}{'cells':>8}{'mean segments':>15}")
    for r in report["results"]:
        halting = "ACT" if r["act"] else "fixed"
        print(
            f"{halting:>8}{r['max_segments']:>13}{r['exact']:>15.3f}{r['cells']:>8.3f}{r['mean_segments']:>15.2f}"
        )


if __name__ == "__main__":
    main()
