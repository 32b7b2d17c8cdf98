"""Packing source files into WebDataset shards: the items every dataset format yields, the shard
writing by split with a counted skip for every broken item, and the plain folder format (files
with matching stems)."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import soundfile
from tqdm import tqdm

from mmchunk.atomic import replacing_shards
from mmchunk.data.decode import (
    ALLOWED_EXTS,
    AUDIO_EXTS,
    VIDEO_EXTS,
    DecodeError,
    decode_container_audio,
    decode_json,
    decode_text,
)
from mmchunk.data.shards import ShardWriter
from mmchunk.data.subtitles import SUBTITLE_EXTS, SubtitleError, read_subtitles


@dataclass
class PackItem:
    """One sample to write: its split ("" for none), shard key and members (extension → bytes)."""

    split: str
    key: str
    members: dict[str, bytes]


@dataclass
class PackReport:
    """What was written (samples, shard path → sample count, samples without any text) and what
    was left out, with the reason for each source file or item."""

    written: int = 0
    shards: dict[str, int] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    textless: int = 0

    def skip(self, source: str | Path, reason: str) -> None:
        """Count one left-out source (a file, or `file:line`) and why."""
        self.skipped.append((str(source), reason))


def sample_key(stem: Path | str) -> str:
    """Shard key of a file stem relative to the source folder: `a/b.c/d` → `a__b_c__d`."""
    return re.sub(r"[^A-Za-z0-9_\-]", "_", "__".join(Path(stem).parts))


def check_member(path: Path, ext: str) -> None:
    """Raise DecodeError when a member could not be read back by the loader's decoders."""
    if ext in AUDIO_EXTS:
        try:
            info = soundfile.info(str(path))
        except Exception as exc:  # libsndfile raises several types for corrupt input
            raise DecodeError(f"unreadable audio: {' '.join(str(exc).split())}") from None
        if info.frames == 0:
            raise DecodeError("audio has no samples")
    elif ext == "txt":
        decode_text(path.read_bytes())
    elif ext == "json":
        decode_json(path.read_bytes())
    elif ext in SUBTITLE_EXTS:
        try:
            if not read_subtitles(path):
                raise DecodeError("subtitles without any cue")
        except SubtitleError as exc:
            raise DecodeError(str(exc)) from None


def audio_member(path: Path) -> dict[str, bytes]:
    """`{ext: bytes}` of a readable audio file (`check_member`); DecodeError otherwise."""
    ext = path.suffix.lower().lstrip(".")
    if ext not in AUDIO_EXTS:
        raise DecodeError(f"extension .{ext} is not a packed audio format (.{', .'.join(AUDIO_EXTS)})")
    check_member(path, ext)
    return {ext: path.read_bytes()}


def container_flac(path: Path) -> bytes:
    """The first audio stream of a video file as mono 16-bit FLAC at its own rate; DecodeError
    when the file cannot be read or has no audio stream."""
    decoded = decode_container_audio(path.read_bytes(), None)
    if decoded is None:
        raise DecodeError("no audio track in the video")
    wave, rate = decoded
    buffer = io.BytesIO()
    soundfile.write(buffer, wave.clamp(-1.0, 1.0).numpy(), rate, format="FLAC", subtype="PCM_16")
    return buffer.getvalue()


def write_items(
    items: Iterable[PackItem],
    out: str | Path,
    report: PackReport,
    *,
    shard_size: int = 256,
    name: str = "data",
    overwrite: bool = True,
) -> PackReport:
    """Write `items` into shards: `out/{name}-%06d.tar` for split "", `out/{split}/{split}-%06d.tar`
    otherwise, `sizes.json` beside each split's shards. A key seen before in its split is a skip.
    The shards already under `out` are replaced once all new ones are written (`replacing_shards`;
    refused without `overwrite`), and stay when nothing could be written."""
    with replacing_shards(out, overwrite) as stage:
        _write_staged(items, stage, report, shard_size, name)
    return report


def _write_staged(
    items: Iterable[PackItem], out: Path, report: PackReport, shard_size: int, name: str
) -> None:
    writers: dict[str, ShardWriter] = {}
    seen: set[tuple[str, str]] = set()
    try:
        for item in tqdm(items, desc="pack", unit="sample", disable=None):
            if (item.split, item.key) in seen:
                report.skip(f"{item.split}/{item.key}" if item.split else item.key, "duplicate sample key")
                continue
            seen.add((item.split, item.key))
            if item.split not in writers:
                where = out / item.split if item.split else out
                writers[item.split] = ShardWriter(where, item.split or name, shard_size)
            writers[item.split].write(item.key, item.members)
            report.written += 1
            report.textless += "txt" not in item.members and not has_json_text(item.members.get("json"))
    finally:
        for split, writer in writers.items():
            for shard, count in writer.close().items():
                report.shards[f"{split}/{shard}" if split else shard] = count


def has_json_text(data: bytes | None) -> bool:
    """Whether a JSON member carries a non-empty `text` (a caption or a list of captions)."""
    if data is None:
        return False
    text = json.loads(data).get("text")
    return bool(text.strip() if isinstance(text, str) else isinstance(text, list) and any(text))


def payload(members: dict[str, Path]) -> dict[str, bytes]:
    """The shard members of one stem: its files' bytes; subtitles become the JSON's `cues`
    (`[[start, end, text], ...]`) and, when the stem has no `.txt`, the transcript."""
    payload = {p.suffix.lower().lstrip("."): p.read_bytes() for k, p in members.items() if k != "subtitles"}
    if "subtitles" in members:
        cues = read_subtitles(members["subtitles"])
        meta = decode_json(payload["json"]) if "json" in payload else {}
        meta["cues"] = [[c.start, c.end, c.text] for c in cues]
        payload["json"] = json.dumps(meta, ensure_ascii=False).encode()
        payload.setdefault("txt", " ".join(c.text for c in cues).encode())
    return payload


def group_stems(src: Path, report: PackReport, exts: tuple[str, ...]) -> dict[Path, dict[str, Path]]:
    """Files under `src` with extensions in `exts`, grouped by stem (relative to `src`) as
    `{stem: {"audio" | "video" | "subtitles" | ext: path}}`; other extensions, a second file of one
    kind for a stem and unreadable members are skips."""
    if not src.is_dir():
        raise NotADirectoryError(f"{src} is not a folder")
    groups: dict[Path, dict[str, Path]] = {}
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        ext = path.suffix.lower().lstrip(".")
        if ext not in exts:
            report.skip(path, f"extension .{ext} is not packed" if ext else "no extension")
            continue
        members = groups.setdefault(path.relative_to(src).with_suffix(""), {})
        kind = "audio" if ext in AUDIO_EXTS else "video" if ext in VIDEO_EXTS else ext
        kind = "subtitles" if ext in SUBTITLE_EXTS else kind
        if kind in members:
            report.skip(path, f"a second {kind} file for this stem ({members[kind].name} kept)")
            continue
        try:
            check_member(path, ext)
        except DecodeError as exc:
            report.skip(path, str(exc))
            continue
        members[kind] = path
    return groups


def read_folder(src: str | Path, report: PackReport) -> Iterator[PackItem]:
    """The folder format: every group of files sharing a stem under `src` (audio, video, .txt,
    .json, .srt or .vtt subtitles) with an audio or a video file is one sample; a video without an
    audio file of its stem brings its own sound (`container_flac`). Groups without media, and
    videos without any sound, are skips: the loader needs audio."""
    for stem, members in group_stems(Path(src), report, ALLOWED_EXTS + SUBTITLE_EXTS).items():
        if "audio" not in members and "video" not in members:
            for path in members.values():
                report.skip(path, "no audio or video file with this stem")
            continue
        sound = {}
        if "audio" not in members:
            try:
                sound = {"flac": container_flac(members["video"])}
            except DecodeError as exc:
                report.skip(members["video"], f"{exc}, and no audio file with this stem")
                continue
        yield PackItem("", sample_key(stem), {**payload(members), **sound})


def pack_folder(src: str | Path, out: str | Path, *, shard_size: int = 256, name: str = "data") -> PackReport:
    """Pack a folder (`read_folder`) into `out/{name}-%06d.tar`; every skip is in the report."""
    report = PackReport()
    return write_items(read_folder(src, report), out, report, shard_size=shard_size, name=name)
