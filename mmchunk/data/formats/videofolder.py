"""A folder of videos with sound (`.mp4`, `.mkv`, `.webm`), each with optional `.srt` / `.vtt`
subtitles, `.txt` transcript or `.json` beside it under the same stem. The container's audio
stream becomes the sample's audio (FLAC at the stream's rate)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from mmchunk.data.decode import VIDEO_EXTS, DecodeError
from mmchunk.data.pack import PackItem, PackReport, container_flac, group_stems, payload, sample_key
from mmchunk.data.subtitles import SUBTITLE_EXTS


def read_videofolder(src: Path, report: PackReport) -> Iterator[PackItem]:
    """One sample per video with an audio track: the video, its audio as FLAC, and the text of its
    subtitles (cues in the JSON, as the folder format does) or `.txt`. Videos without sound,
    unreadable videos, broken subtitles and files without a video of their stem are skips; a
    video without any text is packed (export needs none) and counted in `PackReport.textless`."""
    for stem, members in group_stems(src, report, (*VIDEO_EXTS, "txt", "json", *SUBTITLE_EXTS)).items():
        if "video" not in members:
            for path in members.values():
                report.skip(path, "no video file with this stem")
            continue
        try:
            flac = container_flac(members["video"])
        except DecodeError as exc:
            report.skip(members["video"], str(exc))
            continue
        yield PackItem("", sample_key(stem), {**payload(members), "flac": flac})
