"""Clotho v2 (zenodo.org/records/4783391; DCASE task 6): audio in `<split>/` (or
`clotho_audio_<split>/`) as `<file_name>.wav`, and `clotho_captions_<split>.csv` with the columns
`file_name,caption_1,...,caption_5`, for the splits development, validation and evaluation."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

from mmchunk.data.decode import AUDIO_EXTS, DecodeError
from mmchunk.data.pack import PackItem, PackReport, audio_member, sample_key

COLUMNS = ("file_name", "caption_1", "caption_2", "caption_3", "caption_4", "caption_5")


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


def read_clotho(src: Path, report: PackReport) -> Iterator[PackItem]:
    """One sample per captions row whose audio is readable, its 5 captions as the JSON's `text`
    list (the LAION-audio convention the loader reads); the split comes from the CSV's name.
    Rows without audio, audio without a row, and rows without any caption are skips."""
    index = audio_index(src)
    used: set[Path] = set()
    sheets = sorted(src.rglob("clotho_captions_*.csv"))
    if not sheets:
        raise FileNotFoundError(f"{src}: no clotho_captions_<split>.csv found")
    for sheet in sheets:
        split = sheet.stem.removeprefix("clotho_captions_")
        for line, row in read_csv_rows(sheet, COLUMNS, report):
            name = row["file_name"].strip()
            captions = [row[c].strip() for c in COLUMNS[1:] if row[c].strip()]
            if not name or not captions:
                report.skip(f"{sheet}:{line}", "no file_name" if not name else f"no caption for {name}")
                continue
            path = find_audio(index, [name], split)
            if path is None:
                report.skip(f"{sheet}:{line}", f"no audio file {name} under {src}")
                continue
            used.add(path)
            try:
                members = audio_member(path)
            except DecodeError as exc:
                report.skip(path, str(exc))
                continue
            meta = {"dataset": "clotho", "split": split, "file_name": name, "text": captions}
            members["json"] = json.dumps(meta, ensure_ascii=False).encode()
            yield PackItem(split, sample_key(Path(name).stem), members)
    for path in unused_audio(index, used):
        report.skip(path, "no row of a clotho_captions_*.csv names this file")


def unused_audio(index: dict[str, list[Path]], used: set[Path]) -> list[Path]:
    """The audio files of `index` not in `used`, sorted."""
    return sorted({p for paths in index.values() for p in paths} - used)
