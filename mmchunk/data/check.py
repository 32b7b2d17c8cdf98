"""Checking shards by streaming them through the trainer's loader."""

from __future__ import annotations

import os
from collections.abc import Iterable

from mmchunk.data.loader import DataConfig, make_dataset


def check_shards(shards: str | os.PathLike | Iterable[str], config: DataConfig | None = None) -> dict:
    """`{"ok": n, "skipped": m, "errors": [{"key", "shard", "reason"}]}` for every sample of `shards`.

    Uses exactly the loader pipeline of training (one process, no shuffling); a shard-level failure
    appears in `errors` with `key` None.
    """
    ok, errors = 0, []
    for batch in make_dataset(shards, config or DataConfig()):
        ok += len(batch)
        errors += [{"key": s.key, "shard": s.shard, "reason": s.reason} for s in batch.skipped]
    return {"ok": ok, "skipped": sum(e["key"] is not None for e in errors), "errors": errors}
