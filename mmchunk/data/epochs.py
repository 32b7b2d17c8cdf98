"""Epoch-seeded shard order and sample shuffling, and the loader Lightning checkpoints mid-epoch.

Every random choice of the loader (shard order, resampled shard draws, the sample shuffle buffer)
derives from (`seed`, `epoch`), so epoch `e` is the same sequence of batches whenever it is replayed,
and different from epoch `e + 1`. `ResumableLoader` uses that to resume exactly: restored inside
epoch `e` after `n` trained batches, it replays epoch `e` and drops its first `n` batches.
"""

from __future__ import annotations

import queue
import random
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import torch
from webdataset.utils import pytorch_worker_info

from mmchunk.data.distributed import ShardPart, lockstep, split_shards

T = TypeVar("T")


@dataclass
class EpochSeed:
    """The seed of the current epoch's randomness; `rng(salt)` is the same for the same epoch."""

    seed: int
    epoch: int = 0

    def rng(self, *salt: object) -> random.Random:
        """A generator seeded by (seed, epoch, *salt)."""
        return random.Random("/".join(map(str, (self.seed, self.epoch, *salt))))


class ShardList(torch.utils.data.IterableDataset):
    """The pipeline's source: a `ShardPart` per shard to read, in the listed order or an epoch-seeded
    order (`shuffle`, the same on every rank), shared between the ranks of a process group
    (`split`: `split_shards`); or (`resampled`) whole shards drawn with replacement forever, per rank
    and worker."""

    def __init__(
        self,
        urls: list[str],
        epoch: EpochSeed,
        shuffle: bool = False,
        resampled: bool = False,
        split: bool = True,
    ):
        super().__init__()
        self.urls, self.epoch, self.shuffle, self.resampled = list(urls), epoch, shuffle, resampled
        self.split = split

    def __iter__(self) -> Iterator[ShardPart]:
        rank, world, worker, _ = pytorch_worker_info()
        if self.resampled:
            rng = self.epoch.rng("resampled", rank, worker)
            while True:
                index = rng.randrange(len(self.urls))
                yield ShardPart(self.urls[index], index)
        order = list(range(len(self.urls)))
        if self.shuffle:
            self.epoch.rng("shards").shuffle(order)
        parts = split_shards([self.urls[i] for i in order], *((rank, world) if self.split else (0, 1)))
        yield from (ShardPart(p.url, order[p.index], p.part, p.parts) for p in parts)


def shuffle_samples(items: Iterable, size: int, epoch: EpochSeed) -> Iterator:
    """Mix `items` in a buffer of `size` (filled before the first draw), seeded by the epoch."""
    rng = epoch.rng("samples")
    buffer: list = []
    for item in items:
        buffer.append(item)
        if len(buffer) >= size:
            yield buffer.pop(rng.randrange(len(buffer)))
    while buffer:
        yield buffer.pop(rng.randrange(len(buffer)))


class ResumableLoader(torch.utils.data.DataLoader):
    """DataLoader over a shard pipeline (an IterableDataset with an `EpochSeed` at `.epoch_seed`)
    that resumes exactly.

    `position()` → (epoch, batches already trained in it), e.g. read from Lightning's loop
    progress, which a checkpoint restores: each iteration seeds the pipeline with that epoch and
    skips those batches. Without `position`, iteration `k` is epoch `k`.

    `prefetch` > 0 with `num_workers=0`: a background thread of this process makes up to `prefetch`
    batches ahead (`prefetched`), so decoding and augmentation overlap the training step while the
    decoded-sample cache stays in this process. The batches are the same, in the same order.

    `in_step`: the ranks of a process group yield the same number of batches (`lockstep`, with
    `pad` making the empty batch of a rank that ran out; None: the epoch ends with the shortest rank).
    """

    def __init__(
        self,
        dataset: torch.utils.data.IterableDataset,
        num_workers: int = 0,
        position: Callable[[], tuple[int, int]] | None = None,
        prefetch: int = 0,
        in_step: bool = False,
        pad: Callable[[], object] | None = None,
    ) -> None:
        if prefetch < 0:
            raise ValueError(f"prefetch must be ≥ 0 batches, got {prefetch}")
        if prefetch and num_workers:
            raise ValueError(
                f"prefetch works with num_workers=0 (got {num_workers}: DataLoader workers prefetch already)"
            )
        super().__init__(dataset, batch_size=None, num_workers=num_workers)
        self.position = position
        self.prefetch = prefetch
        self.in_step, self.pad = in_step, pad
        self.iterations = 0

    def __iter__(self) -> Iterator:
        epoch, skip = self.position() if self.position is not None else (self.iterations, 0)
        self.iterations += 1
        self.dataset.epoch_seed.epoch = epoch  # set before the workers copy the pipeline
        batches = self._skipping(super().__iter__(), skip)
        batches = prefetched(batches, self.prefetch) if self.prefetch else batches
        return lockstep(batches, self.pad) if self.in_step else batches

    @staticmethod
    def _skipping(batches: Iterator, skip: int) -> Iterator:
        for index, batch in enumerate(batches):
            if index >= skip:
                yield batch


@dataclass
class _Failure:
    """An exception of the producer thread, carried to the consumer."""

    error: BaseException


_END = object()


def prefetched(items: Iterator[T], size: int) -> Iterator[T]:
    """`items` in the same order, made up to `size` ahead by a daemon thread; the producer's
    exceptions are raised here, and the thread stops when this generator is closed early."""
    buffer: queue.Queue = queue.Queue(size)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_END)
        except BaseException as error:  # re-raised in the consumer
            put(_Failure(error))

    thread = threading.Thread(target=produce, name="mmchunk-prefetch", daemon=True)
    thread.start()
    try:
        while (item := buffer.get()) is not _END:
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()
        thread.join()
