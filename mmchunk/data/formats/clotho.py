"""Clotho v2 (zenodo.org/records/4783391; DCASE task 6): audio in `<split>/` (or
`clotho_audio_<split>/`) as `<file_name>.wav`, and `clotho_captions_<split>.csv` with the columns
`file_name,caption_1,...,caption_5`, for the splits development, validation and evaluation."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from mmchunk.data.decode import DecodeError
from mmchunk.data.formats.sheets import audio_index, caption_sheets, find_audio, read_csv_rows, unused_audio
from mmchunk.data.pack import PackItem, PackReport, audio_member, sample_key

COLUMNS = ("file_name", "caption_1", "caption_2", "caption_3", "caption_4", "caption_5")


def read_clotho(src: Path, report: PackReport) -> Iterator[PackItem]:
    """One sample per captions row whose audio is readable, its 5 captions as the JSON's `text`
    list (the LAION-audio convention the loader reads); the split comes from the CSV's name.
    Rows without audio, audio without a row, and rows without any caption are skips."""
    index, used = audio_index(src), set()
    for sheet in caption_sheets(src, "clotho_captions_*.csv", "clotho_captions_<split>.csv"):
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
