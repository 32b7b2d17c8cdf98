"""LibriSpeech (openslr.org/12; layout in the corpus' README.TXT):
`<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<utterance>.flac`, and per chapter
`<speaker>-<chapter>.trans.txt` with one `<utterance id> <TRANSCRIPT>` line per utterance."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from mmchunk.data.decode import DecodeError
from mmchunk.data.pack import PackItem, PackReport, audio_member


def read_transcripts(path: Path, report: PackReport) -> dict[str, str]:
    """`{utterance id: transcript}` of one `.trans.txt`; malformed lines are skips (`file:line`)."""
    try:
        lines = path.read_bytes().decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        report.skip(path, f"not UTF-8 text (byte {exc.start}): every utterance of this chapter is left out")
        return {}
    found = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        utterance, _, text = line.strip().partition(" ")
        if not text.strip():
            report.skip(f"{path}:{number}", f"no transcript after the utterance id {utterance!r}")
        elif utterance in found:
            report.skip(f"{path}:{number}", f"utterance {utterance} listed twice (the first line kept)")
        else:
            found[utterance] = text.strip()
    return found


def read_librispeech(src: Path, report: PackReport) -> Iterator[PackItem]:
    """Every utterance with a transcript line and readable audio; the split is the subset folder
    (`train-clean-100`, ...) when `src` is the corpus root, none when it is one subset. Transcripts
    are kept as given (upper case); the JSON holds speaker, chapter and dataset."""
    audio = {p.stem: p for p in sorted(src.rglob("*.flac"))}
    listed: set[str] = set()
    for trans in sorted(src.rglob("*.trans.txt")):
        rel = trans.parent.relative_to(src).parts
        split = "/".join(rel[:-2])
        for utterance, text in read_transcripts(trans, report).items():
            listed.add(utterance)
            path = audio.get(utterance)
            if path is None or path.parent != trans.parent:
                report.skip(trans, f"no audio file {utterance}.flac beside it")
                continue
            try:
                members = audio_member(path)
            except DecodeError as exc:
                report.skip(path, str(exc))
                continue
            speaker, chapter, _ = [*utterance.split("-"), "", ""][:3]
            meta = {"dataset": "librispeech", "speaker": speaker, "chapter": chapter}
            members.update(txt=text.encode(), json=json.dumps(meta).encode())
            yield PackItem(split, utterance, members)
    for stem, path in audio.items():
        if stem not in listed:
            report.skip(path, "no line in a .trans.txt lists this utterance")
