"""Whole-or-absent output: files written under a temporary name and renamed when complete, and
shard folders replaced only once the new shards are all written."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> None:
    """`write(tmp)` to a hidden temporary file beside `path` (same suffix, so writers that infer
    the format from it work), then rename it onto `path`; on error the temporary file is removed."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # safetensors creates its file owner-only
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: str | Path, value: object) -> None:
    """`value` as indented JSON with sorted keys, written atomically."""
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n"))


def shard_files(out: Path) -> list[Path]:
    """The shards (`*.tar`) and `sizes.json` files anywhere under `out`."""
    if not out.is_dir():
        return []
    return sorted([*out.rglob("*.tar"), *out.rglob("sizes.json")])


@contextmanager
def replacing_shards(out: str | Path, overwrite: bool = True) -> Iterator[Path]:
    """Yield an empty staging folder beside `out` to write shards into. When the block ends
    normally, the shards and `sizes.json` files under `out` are deleted and the staged files
    renamed into their places; on any error (or Ctrl-C) the staging folder is deleted and `out` is
    left exactly as it was, as it is when nothing was staged. Without `overwrite`, an `out` that
    holds shards is refused up front."""
    out = Path(out).absolute()
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out} is a file, not a folder for shards")
    existing = [p for p in shard_files(out) if p.suffix == ".tar"]
    if existing and not overwrite:
        raise ValueError(f"{out} already holds shards ({existing[0]}); pass --overwrite to replace them")
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir()
    try:
        yield stage
        staged = sorted(p for p in stage.rglob("*") if p.is_file())
        for old in shard_files(out) if staged else []:
            old.unlink()
        for new in staged:
            target = out / new.relative_to(stage)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(new, target)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
