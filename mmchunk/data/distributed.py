"""Shards shared between ranks, and ranks kept in step, so that data-parallel training never hangs.

Every collective of data-parallel training (DDP's gradient all-reduce, its buffer broadcast before
each forward, Lightning's barriers) needs every rank to run the same number of steps. A rank's
batch count depends on its shards, and shards are rarely a multiple of the ranks nor of equal size:
`split_shards` gives each rank an equal share of the samples wherever the shards allow it, and
`lockstep` makes the ranks agree, batch by batch, on when the epoch ends.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class ShardPart:
    """A shard, or a share of its samples, that one process reads.

    url: the shard; index: its place in the full shard list (the order of a single process);
    part, parts: the process keeps the samples at positions `p` with `p % parts == part`
    (parts 1: every sample).
    """

    url: str
    index: int
    part: int = 0
    parts: int = 1

    def keeps(self, position: int) -> bool:
        """Whether the sample at `position` in the shard is this process's."""
        return position % self.parts == self.part


def split_shards(urls: list[str], rank: int, world: int) -> list[ShardPart]:
    """Rank `rank`'s share of `urls` among `world` ranks.

    The first `⌊S/W⌋·W` shards go whole, every `W`-th to each rank; each of the `S mod W` shards left
    over is read by every rank, which keeps one sample in `W` of it. Over the ranks every sample is
    kept exactly once, and with shards of equal size every rank holds the same number of samples
    (±1 per shared shard), even with fewer shards than ranks.
    """
    if not 0 <= rank < world:
        raise ValueError(f"split_shards: rank {rank} outside a world of {world}")
    whole = len(urls) // world * world
    mine = [ShardPart(urls[i], i) for i in range(rank, whole, world)]
    return mine + [ShardPart(urls[i], i, rank, world) for i in range(whole, len(urls))]


def data_parallel_world() -> tuple[int, int]:
    """(rank, world size) of the initialised process group; (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _agree(value: int, op: dist.ReduceOp) -> int:
    """`value` reduced over the ranks with `op` (a tensor on the device the backend needs)."""
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    flag = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(flag, op=op)
    return int(flag.item())


def lockstep(batches: Iterator[T], pad: Callable[[], T] | None = None) -> Iterator[T]:
    """`batches`, with every rank of the process group yielding the same number of them.

    Before each batch the ranks agree on whether to go on (one small all-reduce). With `pad`, the
    epoch lasts as long as the longest rank's and a rank that has run out yields `pad()` (an empty
    batch): nothing is lost, for evaluation. Without `pad`, the epoch ends on every rank when the
    first one runs out (the batches the others had left are not trained this epoch), for training.
    Without a process group of two or more ranks, `batches` as they are.
    """
    _, world = data_parallel_world()
    if world < 2:
        yield from batches
        return
    op = dist.ReduceOp.MAX if pad is not None else dist.ReduceOp.MIN
    done = False
    while True:
        item = None if done else next(batches, None)
        done = item is None
        if not _agree(int(not done), op):
            if not done:
                log.info(
                    "rank %d ends the epoch with batches left: another rank ran out first", dist.get_rank()
                )
            return
        yield pad() if done else item
