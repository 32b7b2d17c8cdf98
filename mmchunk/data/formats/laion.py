"""LAION-audio WebDataset shards (LAION-Audio-630K, github.com/LAION-AI/audio-dataset): tar files
of `<key>.flac` + `<key>.json`, whose `text` is a caption or a list of captions. The loader reads
such shards directly; this format re-shards them, checked, with the split from their folders."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import soundfile

from mmchunk.data.captions import sample_captions
from mmchunk.data.decode import AUDIO_EXTS, DecodeError, decode_json
from mmchunk.data.loader import Skipped, read_shards
from mmchunk.data.pack import PackItem, PackReport, sample_key


def check_laion_sample(raw: dict) -> dict[str, bytes]:
    """The members of one LAION sample (`{"__key__", ext: bytes}`) to write: its audio and JSON,
    checked as the loader reads them; DecodeError names what is wrong."""
    ext = next((e for e in AUDIO_EXTS if e in raw), None)
    if ext is None:
        raise DecodeError(f"no audio member (.{', .'.join(AUDIO_EXTS)})")
    try:
        frames = soundfile.info(io.BytesIO(raw[ext])).frames
    except Exception as exc:  # libsndfile raises several types for corrupt input
        raise DecodeError(f".{ext}: unreadable audio: {' '.join(str(exc).split())}") from None
    if frames == 0:
        raise DecodeError(f".{ext}: audio has no samples")
    if "json" not in raw:
        raise DecodeError("no .json member (the captions are its 'text')")
    try:
        captions = sample_captions(None, decode_json(raw["json"]))
    except DecodeError as exc:
        raise DecodeError(f".json: {exc}") from None
    if not captions:
        raise DecodeError(".json: no caption in 'text'")
    return {ext: raw[ext], "json": raw["json"]}


def read_laion(src: Path, report: PackReport) -> Iterator[PackItem]:
    """Every sample of every `*.tar` under `src` with readable audio and at least one caption;
    the split is the shard's folder relative to `src`, the key `<shard stem>__<key>` (shards
    reuse keys). Broken shards and samples are skips naming the shard and key."""
    shards = sorted(src.rglob("*.tar"))
    if not shards:
        raise FileNotFoundError(f"{src}: no .tar shards found")
    for shard in shards:
        rel = shard.relative_to(src)
        for raw in read_shards([str(shard)]):
            if isinstance(raw, Skipped):
                report.skip(f"{shard}:{raw.key}" if raw.key else shard, raw.reason)
                continue
            try:
                members = check_laion_sample(raw)
            except DecodeError as exc:
                report.skip(f"{shard}:{raw['__key__']}", str(exc))
                continue
            yield PackItem("/".join(rel.parent.parts), sample_key(Path(rel.stem) / raw["__key__"]), members)
