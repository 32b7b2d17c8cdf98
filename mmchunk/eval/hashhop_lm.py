"""Byte-level models on HashHop: training batches, greedy answering, exact-match scoring, checkpoints.

A training sequence is `prompt + "\\n" + completion` as UTF-8 bytes; the loss covers the bytes of
the answers (what follows each `H1 = '`, closing quote included). Answering feeds the prompt, the
completion header and the earlier (true) query lines, then `H = '`, and decodes greedily until the
closing quote; scoring gets the same exact matches from one teacher-forced pass (`answer_scores`).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file

from mmchunk.atomic import atomic_write
from mmchunk.bytelm import ByteLM
from mmchunk.eval.hashhop import HashHopTask
from mmchunk.ragged import Ragged


def context_of(task: HashHopTask) -> str:
    """The prompt, a newline and the completion's header (`COMPLETION:`, `Hops=`, `CoT=` lines)."""
    return task.prompt + "\n" + "".join(task.completion.splitlines(keepends=True)[:3])


def task_bytes(task: HashHopTask) -> tuple[torch.Tensor, torch.Tensor]:
    """`prompt + "\n" + completion` as bytes `[L]` int64 and the mask `[L]` of the answer bytes
    (each answer and its closing quote)."""
    head = context_of(task).encode()
    data, mask = list(head), [False] * len(head)
    for query, answer in task.targets.items():
        prefix = f"{query} = '".encode()
        body = f"{answer}'".encode()
        data += list(prefix) + list(body) + [ord("\n")]
        mask += [False] * len(prefix) + [True] * len(body) + [False]
    return torch.tensor(data, dtype=torch.int64), torch.tensor(mask)


def batch(tasks: list[HashHopTask]) -> tuple[Ragged, torch.Tensor]:
    """Packed bytes of several tasks and their answer mask `[T]`."""
    pairs = [task_bytes(t) for t in tasks]
    return Ragged.from_list([b for b, _ in pairs]), torch.cat([m for _, m in pairs])


@torch.no_grad()
def answer(model: ByteLM, context: str, max_bytes: int) -> str:
    """Greedy bytes after `context` until a closing quote (or `max_bytes`)."""
    data = list(context.encode())
    out = []
    for _ in range(max_bytes):
        logits, _ = model(Ragged.from_list([torch.tensor(data, dtype=torch.int64)]))
        byte = int(logits[-1].argmax())
        if byte == ord("'"):
            break
        out.append(byte)
        data.append(byte)
    return bytes(out).decode("utf-8", errors="replace")


def query_contexts(task: HashHopTask) -> list[str]:
    """The context each query of `task` is answered from: the prompt, the completion's header, the
    earlier queries with their true answers, then `H = '` (in `targets` order)."""
    contexts, context = [], context_of(task)
    for query, expected in task.targets.items():
        contexts.append(context + f"{query} = '")
        context += f"{query} = '{expected}'\n"
    return contexts


@torch.no_grad()
def decode_answers(model: ByteLM, tasks: list[HashHopTask], batch_size: int = 8) -> list[str]:
    """Greedy answers of every query of `tasks` (tasks in order, queries in `targets` order) by
    `ByteLM.generate`, `batch_size` queries at a time, each ending at its closing quote."""
    jobs = [
        (context, len(answer))
        for task in tasks
        for context, answer in zip(query_contexts(task), task.targets.values())
    ]
    out = []
    for start in range(0, len(jobs), batch_size):
        group = jobs[start : start + batch_size]
        longest = max(n for _, n in group) + 2
        texts = model.generate([c.encode() for c, _ in group], longest, stop=b"'")
        out += [t.decode("utf-8", errors="replace") for t in texts]
    return out


class AnswerScores(NamedTuple):
    """Exact match of every query `hits [Q]` (bool) and the mean cross-entropy of the answer bytes
    `nats` (closing quotes included; chance is about ln 52 per letter)."""

    hits: torch.Tensor
    nats: float


@torch.no_grad()
def answer_scores(model: ByteLM, tasks: list[HashHopTask], max_bytes: int = 32_768) -> AnswerScores:
    """Scores of every query of `tasks` (tasks in order, queries in `targets` order) in one
    teacher-forced pass per group of ≤ `max_bytes` bytes: a query is right when the argmax at each
    of its answer bytes and its closing quote is the true byte — what greedy decoding from the true
    earlier lines yields, since row t sees bytes ≤ t only (`answer` is that decoding)."""
    model.eval()
    hits, nats, count, group, size = [], 0.0, 0, [], 0
    for i, task in enumerate(tasks):
        group.append(task)
        size += len(context_of(task)) + len(task.completion)
        if size >= max_bytes or i == len(tasks) - 1:
            data, mask = batch(group)
            logits, _ = model(data)
            target = mask[1:]  # row t predicts byte t + 1
            truth = data.values[1:][target]
            nats += float(F.cross_entropy(logits[:-1][target], truth, reduction="sum"))
            count += len(truth)
            right = logits[:-1][target].argmax(-1) == truth
            opens = target & ~torch.cat([target.new_zeros(1), target[:-1]])
            run = (torch.cumsum(opens.long(), 0) - 1)[target]
            per_answer = torch.ones(int(opens.sum()), dtype=torch.long)
            hits.append(per_answer.scatter_reduce(0, run, right.long(), "amin").bool())
            group, size = [], 0
    all_hits = torch.cat(hits) if hits else torch.zeros(0, dtype=torch.bool)
    return AnswerScores(all_hits, nats / max(count, 1))


def hop_accuracy(tasks: list[HashHopTask], hits: torch.Tensor) -> dict[int, float]:
    """Exact-match accuracy per hop count from the per-query `hits [Q]` of `answer_scores`."""
    flat = iter(hits.tolist())
    right, total = defaultdict(int), defaultdict(int)
    for task in tasks:
        for _ in task.targets:
            right[task.hops] += next(flat)
            total[task.hops] += 1
    return {h: right[h] / total[h] for h in sorted(total)}


def score_tasks(model: ByteLM, tasks: list[HashHopTask]) -> dict[int, float]:
    """Exact-match accuracy per hop count over every query of `tasks`."""
    return hop_accuracy(tasks, answer_scores(model, tasks).hits)


def save_model(model: ByteLM, config: dict, path: str | Path) -> None:
    """Weights as safetensors, the constructor arguments in its metadata."""
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata={"config": json.dumps(config)}))


def load_model(path: str | Path) -> ByteLM:
    """A `ByteLM` saved by `save_model` (safetensors: no pickle)."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder, not a byte model file")
    if not path.is_file():
        raise FileNotFoundError(f"no such byte model file: {path}")
    try:
        with safe_open(str(path), "pt") as f:
            config = json.loads(f.metadata()["config"])
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    except Exception as exc:
        raise ValueError(f"{path}: not a byte model file ({' '.join(str(exc).split())[:160]})") from None
    try:
        model = ByteLM(**config)
        model.load_state_dict(state)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(
            f"{path}: a byte model file this version cannot load ({' '.join(str(exc).split())[:160]})"
        ) from None
    return model.eval()
