"""Dataset formats `mmchunk data pack --format NAME` reads: each turns a dataset's own on-disk
layout into `PackItem`s, with a counted, reasoned skip for every broken item."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from mmchunk.data.formats.audiocaps import read_audiocaps
from mmchunk.data.formats.clotho import read_clotho
from mmchunk.data.formats.laion import read_laion
from mmchunk.data.formats.librispeech import read_librispeech
from mmchunk.data.formats.videofolder import read_videofolder
from mmchunk.data.pack import PackItem, PackReport, read_folder, write_items

Reader = Callable[[Path, PackReport], Iterator[PackItem]]
FORMATS: dict[str, Reader] = {
    "folder": read_folder,
    "librispeech": read_librispeech,
    "clotho": read_clotho,
    "audiocaps": read_audiocaps,
    "laion": read_laion,
    "videofolder": read_videofolder,
}


def pack_dataset(
    fmt: str,
    src: str | Path,
    out: str | Path,
    *,
    shard_size: int = 256,
    name: str = "data",
    overwrite: bool = True,
) -> PackReport:
    """Pack the dataset at `src`, laid out as format `fmt` (a key of `FORMATS`), into shards under
    `out` (one subfolder per split where the format has splits), replacing the shards there once
    all are written (refused without `overwrite`)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown dataset format {fmt!r} (known: {', '.join(FORMATS)})")
    src = Path(src)
    if not src.is_dir():
        raise NotADirectoryError(f"{src} is not a folder")
    report = PackReport()
    return write_items(
        FORMATS[fmt](src, report), out, report, shard_size=shard_size, name=name, overwrite=overwrite
    )
