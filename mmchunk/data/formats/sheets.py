"""What the caption-sheet datasets (Clotho, AudioCaps) share: their CSV files, read with a skip
for every bad row, and the audio files the rows name."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

from mmchunk.data.decode import AUDIO_EXTS
from mmchunk.data.pack import PackReport


def caption_sheets(src: Path, pattern: str, expected: str) -> list[Path]:
    """The CSV files under `src` matching `pattern`, sorted; none is an error naming `expected`."""
    sheets = sorted(src.rglob(pattern))
    if not sheets:
        raise FileNotFoundError(f"{src}: no {expected} found")
    return sheets


def read_csv_rows(path: Path, columns: tuple[str, ...], report: PackReport) -> Iterator[tuple[int, dict]]:
    """(line number, row) of a UTF-8 CSV with a header holding `columns`; a file that is not UTF-8
    or lacks a column is one skip, and a row missing a cell of `columns` is a skip (`file:line`)."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        report.skip(path, f"not UTF-8 text (byte {exc.start})")
        return
    reader = csv.DictReader(io.StringIO(text, newline=""))
    missing = [c for c in columns if c not in (reader.fieldnames or [])]
    if missing:
        report.skip(path, f"no column {', '.join(missing)} in its header {reader.fieldnames}")
        return
    for row in reader:
        if any(row.get(c) is None for c in columns):
            report.skip(f"{path}:{reader.line_num}", f"a row of {len([v for v in row.values() if v])} cells")
            continue
        yield reader.line_num, row


def audio_index(src: Path) -> dict[str, list[Path]]:
    """Audio files under `src` by file name (and by stem), sorted paths for each."""
    index: dict[str, list[Path]] = {}
    for path in sorted(p for p in src.rglob("*") if p.suffix.lower().lstrip(".") in AUDIO_EXTS):
        index.setdefault(path.name, []).append(path)
        index.setdefault(path.stem, []).append(path)
    return index


def find_audio(index: dict[str, list[Path]], names: list[str], split: str) -> Path | None:
    """The first of `names` in `index`; among several files of one name, the one in a folder named
    after `split` (`<split>`, `clotho_audio_<split>`, ...)."""
    for name in names:
        paths = index.get(name, [])
        in_split = [p for p in paths if split and split in p.parent.name]
        if in_split or len(paths) == 1:
            return (in_split or paths)[0]
    return None


def unused_audio(index: dict[str, list[Path]], used: set[Path]) -> list[Path]:
    """The audio files of `index` not in `used`, sorted."""
    return sorted({p for paths in index.values() for p in paths} - used)
