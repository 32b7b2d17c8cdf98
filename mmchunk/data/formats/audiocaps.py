"""AudioCaps (github.com/cdjkim/audiocaps, `dataset/{train,val,test}.csv`): one row per caption
with the columns `audiocap_id,youtube_id,start_time,caption`; a clip is a YouTube id and a start
time (val and test give each clip 5 rows). Audio files are named by an id: `<audiocap_id>`,
`<youtube_id>`, `Y<youtube_id>` or `<youtube_id>_<start_time>`, with any audio extension."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from mmchunk.data.decode import DecodeError
from mmchunk.data.formats.sheets import audio_index, caption_sheets, find_audio, read_csv_rows, unused_audio
from mmchunk.data.pack import PackItem, PackReport, audio_member, sample_key

COLUMNS = ("audiocap_id", "youtube_id", "start_time", "caption")


def clips(sheet: Path, report: PackReport) -> dict[tuple[str, int], list[tuple[str, str]]]:
    """`{(youtube id, start second): [(audiocap id, caption), ...]}` of one CSV, in row order;
    rows with an empty cell or a start time that is not a whole number of seconds are skips."""
    found: dict[tuple[str, int], list[tuple[str, str]]] = {}
    for line, row in read_csv_rows(sheet, COLUMNS, report):
        cells = {c: row[c].strip() for c in COLUMNS}
        empty = [c for c, v in cells.items() if not v]
        if empty:
            report.skip(f"{sheet}:{line}", f"empty {', '.join(empty)}")
            continue
        try:
            start = int(float(cells["start_time"]))
        except ValueError:
            report.skip(f"{sheet}:{line}", f"start_time {cells['start_time']!r} is not a number")
            continue
        if start < 0 or start != float(cells["start_time"]):
            report.skip(f"{sheet}:{line}", f"start_time {cells['start_time']} is not whole seconds ≥ 0")
            continue
        found.setdefault((cells["youtube_id"], start), []).append((cells["audiocap_id"], cells["caption"]))
    return found


def read_audiocaps(src: Path, report: PackReport) -> Iterator[PackItem]:
    """One sample per clip with readable audio, its captions as the JSON's `text` list; the split
    is the CSV's name. Clips without an audio file (videos gone from YouTube, most often) and audio
    files no row names are skips."""
    index, used = audio_index(src), set()
    for sheet in caption_sheets(src, "*.csv", "AudioCaps CSV (train.csv, val.csv, test.csv)"):
        split = sheet.stem
        for (youtube, start), rows in clips(sheet, report).items():
            names = [a for a, _ in rows] + [youtube, f"Y{youtube}", f"{youtube}_{start}"]
            found = [p for n in names if (p := find_audio(index, [n], split)) is not None]
            used.update(found)
            if not found:
                tried = ", ".join(names)
                report.skip(sheet, f"no audio file for clip {youtube} at {start} s (tried {tried})")
                continue
            try:
                members = audio_member(found[0])
            except DecodeError as exc:
                report.skip(found[0], str(exc))
                continue
            meta = {
                "dataset": "audiocaps", "split": split, "youtube_id": youtube, "start_time": start,
                "audiocap_ids": [a for a, _ in rows], "text": [c for _, c in rows],
            }  # fmt: skip
            members["json"] = json.dumps(meta, ensure_ascii=False).encode()
            yield PackItem(split, sample_key(f"{youtube}_{start}"), members)
    for path in unused_audio(index, used):
        report.skip(path, "no row of an AudioCaps CSV names this file")
