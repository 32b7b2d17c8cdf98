"""Writing WebDataset shards: tar files of `{key}.{ext}` members, `sizes.json` beside them."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

from mmchunk.atomic import atomic_write


class ShardWriter:
    """Writes samples into `DIR/{name}-%06d.tar`, `shard_size` samples each, then `DIR/sizes.json`.

    Members carry no timestamps or owners, so the same samples give the same bytes. Each shard is
    written to a temporary name and renamed when complete: a crash never leaves a half shard.
    """

    def __init__(self, directory: str | Path, name: str, shard_size: int) -> None:
        if shard_size < 1:
            raise ValueError(f"shard_size must be at least 1, got {shard_size}")
        self.directory, self.name, self.shard_size = Path(directory), name, shard_size
        self.directory.mkdir(parents=True, exist_ok=True)
        self.sizes: dict[str, int] = {}
        self._tar: tarfile.TarFile | None = None
        self._path: Path | None = None

    def write(self, key: str, members: dict[str, bytes]) -> None:
        """Add one sample: `members` maps extensions ("flac", "txt", "json", "mp4") to bytes."""
        if "." in key or "/" in key:
            raise ValueError(f"sample key {key!r} must not contain '.' or '/'")
        if self._tar is None or self.sizes[self._path.name] >= self.shard_size:
            self._open_next()
        for ext, data in sorted(members.items()):
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            self._tar.addfile(info, io.BytesIO(data))
        self.sizes[self._path.name] += 1

    def _open_next(self) -> None:
        self._close_current()
        self._path = self.directory / f"{self.name}-{len(self.sizes):06d}.tar"
        tmp = self._path.with_suffix(".tar.tmp")
        self._tar = tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT)  # noqa: SIM115 (closed in close())
        self.sizes[self._path.name] = 0

    def _close_current(self) -> None:
        if self._tar is not None:
            self._tar.close()
            os.replace(self._path.with_suffix(".tar.tmp"), self._path)
            self._tar = None

    def close(self) -> dict[str, int]:
        """Finish the last shard, write `sizes.json`, return the sample count of every shard."""
        self._close_current()
        atomic_write(
            self.directory / "sizes.json", lambda tmp: tmp.write_text(json.dumps(self.sizes, indent=2) + "\n")
        )
        return self.sizes

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
