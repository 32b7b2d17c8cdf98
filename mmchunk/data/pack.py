"""Packing a folder of media files with matching stems into WebDataset shards."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import soundfile

from mmchunk.data.decode import ALLOWED_EXTS, AUDIO_EXTS, VIDEO_EXTS, DecodeError, decode_json, decode_text
from mmchunk.data.shards import ShardWriter


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


def pack_folder(src: str | Path, out: str | Path, *, shard_size: int = 256, name: str = "data") -> PackReport:
    """Pack every group of files sharing a stem under `src` (audio, video, .txt, .json) into shards.

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
        if ext not in ALLOWED_EXTS:
            report.skipped.append((str(path), f"extension .{ext} is not packed" if ext else "no extension"))
            continue
        members = groups.setdefault(path.relative_to(src).with_suffix(""), {})
        kind = "audio" if ext in AUDIO_EXTS else "video" if ext in VIDEO_EXTS else ext
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
            writer.write(
                sample_key(stem), {p.suffix.lower().lstrip("."): p.read_bytes() for p in members.values()}
            )
            report.written += 1
    report.shards = writer.sizes
    return report
