"""Packing a folder of media files with matching stems into WebDataset shards."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import soundfile

from mmchunk.data.decode import ALLOWED_EXTS, AUDIO_EXTS, VIDEO_EXTS, DecodeError, decode_json, decode_text
from mmchunk.data.shards import ShardWriter
from mmchunk.data.subtitles import SUBTITLE_EXTS, SubtitleError, read_subtitles


@dataclass
class PackReport:
    """What `pack_folder` wrote and what it left out, with the reason for each file."""

    written: int = 0
    shards: dict[str, int] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def sample_key(stem: Path) -> str:
    """Shard key of a file stem relative to the source folder: `a/b.c/d` → `a__b_c__d`."""
    return re.sub(r"[^A-Za-z0-9_\-]", "_", "__".join(stem.parts))


def _check_member(path: Path, ext: str) -> None:
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


def _payload(members: dict[str, Path]) -> dict[str, bytes]:
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


def pack_folder(src: str | Path, out: str | Path, *, shard_size: int = 256, name: str = "data") -> PackReport:
    """Pack every group of files sharing a stem under `src` (audio, video, .txt, .json, .srt or
    .vtt subtitles) into shards.

    A group becomes one sample when it has an audio or a video file; files with other extensions,
    unreadable audio, invalid text or JSON, a second audio or video file for the same stem, and
    groups without media are skipped, each with its reason in the report.
    """
    src = Path(src)
    if not src.is_dir():
        raise NotADirectoryError(f"{src} is not a folder")
    groups: dict[Path, dict[str, Path]] = {}
    report = PackReport()
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        ext = path.suffix.lower().lstrip(".")
        if ext not in ALLOWED_EXTS + SUBTITLE_EXTS:
            report.skipped.append((str(path), f"extension .{ext} is not packed" if ext else "no extension"))
            continue
        members = groups.setdefault(path.relative_to(src).with_suffix(""), {})
        kind = "audio" if ext in AUDIO_EXTS else "video" if ext in VIDEO_EXTS else ext
        kind = "subtitles" if ext in SUBTITLE_EXTS else kind
        if kind in members:
            report.skipped.append(
                (str(path), f"a second {kind} file for this stem ({members[kind].name} kept)")
            )
            continue
        try:
            _check_member(path, ext)
        except DecodeError as exc:
            report.skipped.append((str(path), str(exc)))
            continue
        members[kind] = path
    with ShardWriter(out, name, shard_size) as writer:
        for stem, members in groups.items():
            if "audio" not in members and "video" not in members:
                for path in members.values():
                    report.skipped.append((str(path), "no audio or video file with this stem"))
                continue
            writer.write(sample_key(stem), _payload(members))
            report.written += 1
    report.shards = writer.sizes
    return report
