"""Subtitle cues (SRT, WebVTT): timed text that exists in the wild, usable as cue-level input timings."""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass
from pathlib import Path

SUBTITLE_EXTS = ("srt", "vtt")
_TIME = r"(?:(\d+):)?(\d{1,2}):(\d{2})[,.](\d{3})"
_TIMING = re.compile(rf"^\s*{_TIME}\s+-->\s+{_TIME}(?:\s+.*)?$")
_TAG = re.compile(r"<[^>]*>")


class SubtitleError(ValueError):
    """A subtitle file that cannot be read; the message names the file and the line."""


@dataclass(frozen=True)
class Cue:
    """One subtitle cue: its text shown from `start` to `end` (seconds)."""

    start: float
    end: float
    text: str


def _seconds(hours: str | None, minutes: str, seconds: str, millis: str) -> float:
    return int(hours or 0) * 3600 + int(minutes) * 60 + int(seconds) + int(millis) / 1000


def _blocks(lines: list[str]) -> list[tuple[int, list[str]]]:
    """Blank-line separated blocks: (1-based number of the block's first line, its lines)."""
    blocks, current, start = [], [], 0
    for number, line in enumerate(lines, 1):
        if line.strip():
            if not current:
                start = number
            current.append(line)
        elif current:
            blocks.append((start, current))
            current = []
    if current:
        blocks.append((start, current))
    return blocks


def parse_subtitles(source: str, name: str = "<subtitles>", kind: str | None = None) -> list[Cue]:
    """Cues of an SRT or WebVTT text in file order (`kind` "srt" or "vtt"; default: "vtt" when the
    text starts with `WEBVTT`). Tags (`<i>`, `<v Name>`) are dropped, lines of a cue joined by a
    space, empty cues skipped. Malformed cues, and cues out of order (starting before the previous
    cue's start), raise `SubtitleError` "name:line: what is wrong"."""
    lines = source.lstrip("\ufeff").splitlines()
    if kind is None:
        kind = "vtt" if lines and lines[0].startswith("WEBVTT") else "srt"
    if kind not in SUBTITLE_EXTS:
        raise SubtitleError(f"{name}: unknown subtitle kind {kind!r} (known: srt, vtt)")
    if kind == "vtt" and not (lines and re.match(r"WEBVTT(\s|$)", lines[0])):
        raise SubtitleError(f"{name}:1: a WebVTT file starts with 'WEBVTT'")
    cues, blocks = [], _blocks(lines)
    for start, block in blocks[1:] if kind == "vtt" else blocks:  # a WebVTT header runs to a blank line
        if kind == "vtt" and re.match(r"(NOTE|STYLE|REGION)(\s|$)", block[0]):
            continue
        timing = next((i for i, line in enumerate(block[:2]) if "-->" in line), None)
        if timing is None:
            raise SubtitleError(f"{name}:{start}: a cue needs a 'start --> end' timing line")
        match = _TIMING.match(block[timing])
        if match is None:
            raise SubtitleError(f"{name}:{start + timing}: bad cue timing {block[timing].strip()!r}")
        begin, end = _seconds(*match.groups()[:4]), _seconds(*match.groups()[4:])
        if end < begin:
            raise SubtitleError(f"{name}:{start + timing}: the cue ends ({end:.3f} s) before it starts")
        if cues and begin < cues[-1].start:
            at, previous = f"{name}:{start + timing}", cues[-1].start
            raise SubtitleError(f"{at}: cue out of order: starts at {begin:.3f} s, before {previous:.3f} s")
        text = " ".join(" ".join(_TAG.sub("", line).split()) for line in block[timing + 1 :]).strip()
        if text:
            cues.append(Cue(begin, end, text))
    return cues


def read_subtitles(path: str | Path) -> list[Cue]:
    """`parse_subtitles` of a `.srt` or `.vtt` file (UTF-8); errors name the file and line."""
    path = Path(path)
    kind = path.suffix.lower().lstrip(".")
    try:
        source = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SubtitleError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return parse_subtitles(source, str(path), kind if kind in SUBTITLE_EXTS else None)


def cue_words(cues: list[Cue]) -> list[dict]:
    """Word spans at cue precision: each cue's span shared by its whitespace-separated words in
    proportion to their UTF-8 lengths, as `[{"word", "start", "end"}]` in reading order (the
    timings `text_byte_times` takes); a cue without words adds none."""
    words = []
    for cue in cues:
        tokens = cue.text.split()
        if not tokens:
            continue
        sizes = [len(t.encode()) for t in tokens]
        edges = [0, *itertools.accumulate(sizes)]
        times = [cue.start + (cue.end - cue.start) * e / edges[-1] for e in edges]
        words += [{"word": t, "start": a, "end": b} for t, a, b in zip(tokens, times[:-1], times[1:])]
    return words


def json_cues(value: object) -> None:
    """Validate the `cues` of a sample's JSON: `[[start, end, text], ...]` with finite
    `0 ≤ start ≤ end` in seconds; raises `ValueError` naming the first bad item."""
    if not isinstance(value, list):
        raise ValueError(f"'cues' must be a list of [start, end, text], got {type(value).__name__}")
    for i, item in enumerate(value):
        ok = isinstance(item, list) and len(item) == 3 and isinstance(item[2], str)
        ok = ok and all(isinstance(t, int | float) and not isinstance(t, bool) for t in item[:2])
        if not ok or not 0 <= item[0] <= item[1] < math.inf:
            raise ValueError(f"'cues' item {i}: expected [start, end, text], 0 <= start <= end; got {item!r}")
