"""The shard loader the trainer uses: shard lists → split by node and worker → safe decode → budget batches.

Stages are plain generators chained by `webdataset.DataPipeline`, so a sample that cannot be read
becomes a `Skipped` record that travels with the batches (counted, with its key, shard and reason)
instead of ending the epoch.
"""

from __future__ import annotations

import glob
import logging
import os
import tarfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO

import braceexpand
import torch
import webdataset as wds

from mmchunk.data.augment import AugmentConfig, augment_samples
from mmchunk.data.captions import draw_captions, sample_captions
from mmchunk.data.decode import (
    ALLOWED_EXTS,
    AUDIO_EXTS,
    VIDEO_EXTS,
    DecodeError,
    decode_audio,
    decode_json,
    decode_text,
    decode_video,
)
from mmchunk.data.distributed import ShardPart
from mmchunk.data.epochs import EpochSeed, ResumableLoader, ShardList, shuffle_samples
from mmchunk.data.subtitles import Cue, cue_words, json_cues
from mmchunk.ragged import Ragged

log = logging.getLogger(__name__)
# URL schemes webdataset's gopen streams itself (through subprocesses such as curl); any other
# scheme (s3://, gs://, az://, memory://, ...) is opened with fsspec and the store's backend.
GOPEN_SCHEMES = ("pipe", "http", "https", "sftp", "ftps", "scp", "hf", "ais", "file")


@dataclass
class DataConfig:
    """How samples are decoded and grouped into batches.

    sample_rate: audio is resampled to this rate (Hz). video_fps, video_size: frames are sampled
    at this rate and resized to (H, W). max_seconds / max_samples: a batch closes before its audio
    would pass `max_seconds` or it would hold more than `max_samples` samples (a longer sample goes
    alone). require_text: samples without a transcript are skipped. draw_caption: a sample with
    several captions trains on one drawn per epoch, seeded by (seed, epoch, key) (`draw_captions`;
    off: the first caption). shuffle_buffer: samples mixed
    in a buffer of this size, seeded by (seed, epoch) (0: stream order). cache: keep every shard's
    decoded samples in memory after its first full read (small corpora; the cache lives in the
    process that decodes, so use it with `num_workers=0`: DataLoader workers restart each epoch).
    augment: training-time audio augmentation (`AugmentConfig`), seeded by (seed, epoch, key);
    None: off.
    """

    sample_rate: int = 16_000
    video_fps: float = 25.0
    video_size: tuple[int, int] = (48, 64)
    max_seconds: float = 120.0
    max_samples: int = 64
    require_text: bool = True
    draw_caption: bool = False
    use_video: bool = True
    shuffle_buffer: int = 0
    seed: int = 0
    cache: bool = False
    augment: AugmentConfig | None = None


@dataclass
class Skipped:
    """A sample (or a whole shard, `key` None) that could not be read, and why."""

    key: str | None
    shard: str
    reason: str


@dataclass
class Sample:
    """One decoded sample: waveform `[N]`, transcript (the caption in use), optional frames
    `[F, 3, H, W]` with times `[F]`, and every caption of the clip (`sample_captions`)."""

    key: str
    shard: str
    audio: torch.Tensor
    text: str | None
    video: torch.Tensor | None
    video_times: torch.Tensor | None
    meta: dict
    captions: list[str] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return self.audio.numel() / self.meta["_sample_rate"]


@dataclass
class Batch:
    """Per-modality Ragged batches over the same B samples (in `keys` order) and what was skipped.

    audio: values `[T]` float32, one token per sample (its time is its index / the sample rate: the
    encoder gives its frames their spans); text: UTF-8 bytes `[T]` int64; video: frames
    `[F, 3, H, W]` uint8 (a sample without video is an empty sequence). Text and video carry
    `t_start`/`t_end` in seconds. `meta` holds each sample's JSON (with `_seconds`, its audio's
    length); `captions` every caption of each sample (the text batch holds the one in use);
    `skipped` what was dropped since the last batch.
    """

    keys: list[str]
    audio: Ragged | None
    text: Ragged | None
    video: Ragged | None
    meta: list[dict]
    skipped: list[Skipped] = field(default_factory=list)
    captions: list[list[str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.keys)


def expand_urls(spec: str | os.PathLike | Iterable[str | os.PathLike]) -> list[str]:
    """Shard URLs from a pattern or list: brace patterns, local globs and folders, remote URLs as given."""
    specs = [spec] if isinstance(spec, str | os.PathLike) else list(spec)
    urls: list[str] = []
    for item in specs:
        for url in braceexpand.braceexpand(os.fspath(item)):
            if url.startswith("pipe:") or "://" in url:
                urls.append(url)
            elif os.path.isdir(url):
                urls.extend(sorted(glob.glob(os.path.join(url, "*.tar"))))
            elif any(ch in url for ch in "*?["):
                urls.extend(sorted(glob.glob(url)))
            elif os.path.isfile(url):
                urls.append(url)
            else:
                raise FileNotFoundError(f"no such shard or folder: {url}")
    if not urls:
        raise FileNotFoundError(f"no shards match {spec!r}")
    return urls


def open_shard(url: str) -> IO[bytes]:
    """A readable binary stream of a shard: local path, gopen URL (pipe:, http(s)://) or fsspec URL."""
    scheme = url.split("://", 1)[0] if "://" in url else ("pipe" if url.startswith("pipe:") else "")
    if scheme and scheme not in GOPEN_SCHEMES:
        import fsspec

        return fsspec.open(url, "rb").open()
    return wds.gopen(url)


def _split_name(name: str) -> tuple[str, str]:
    """`dir/key.ext.more` → (`dir/key`, `ext.more`), as webdataset groups members."""
    folder, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def read_shards(urls: Iterable[str]) -> Iterator[dict | Skipped]:
    """Stream samples `{"__key__", "__url__", ext: bytes}` out of tar shards, whitelisted members only.

    A shard that cannot be opened, or that ends inside a member, yields a `Skipped` naming it; the
    sample being read when a tar breaks off is skipped too.
    """
    for url in urls:
        sample: dict | None = None
        count = 0
        try:
            with open_shard(url) as stream, tarfile.open(fileobj=stream, mode="r|*") as tar:
                for info in tar:
                    if not info.isfile():
                        continue
                    key, ext = _split_name(info.name)
                    if sample is not None and sample["__key__"] != key:
                        yield sample
                        count += 1
                        sample = None
                    if sample is None:
                        sample = {"__key__": key, "__url__": url}
                    if ext in ALLOWED_EXTS:
                        sample[ext] = tar.extractfile(info).read()
            if sample is not None:
                yield sample
        except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            if sample is not None:
                yield Skipped(sample["__key__"], url, f"cut off by the broken shard: {reason}")
            yield Skipped(None, url, f"shard unreadable after {count} samples: {reason}")


def read_part(part: ShardPart) -> Iterator[dict | Skipped]:
    """`read_shards` of one shard, keeping the samples `part` holds (a `Skipped` for the whole
    shard goes to its part 0 only), each with `__order__`: (shard index, position in the shard)."""
    position = 0
    for item in read_shards([part.url]):
        if isinstance(item, Skipped):
            if (item.key is None and part.part == 0) or (item.key is not None and part.keeps(position)):
                yield item
            continue
        if part.keeps(position):
            yield {**item, "__order__": (part.index, position)}
        position += 1


def read_decoded(
    parts: Iterable[ShardPart], config: DataConfig, cache: dict[ShardPart, list] | None = None
) -> Iterator[Sample | Skipped]:
    """`read_part` + `decode_samples` shard by shard; with a `cache` dict, a shard read to its end
    is kept (skip records included) and replayed from memory next time."""
    for part in parts:
        if cache is not None and part in cache:
            yield from cache[part]
            continue
        items = []
        for item in decode_samples(read_part(part), config):
            if cache is not None:
                items.append(item)
            yield item
        if cache is not None:
            cache[part] = items


def decode_samples(items: Iterable[dict | Skipped], config: DataConfig) -> Iterator[Sample | Skipped]:
    """Decode raw samples; any missing or broken member turns the sample into a `Skipped`."""
    for raw in items:
        if isinstance(raw, Skipped):
            yield raw
            continue
        key, url = raw["__key__"], raw["__url__"]
        try:
            yield _decode(raw, config)
        except DecodeError as exc:
            yield Skipped(key, url, str(exc))


def _decode(raw: dict, config: DataConfig) -> Sample:
    audio_ext = next((e for e in AUDIO_EXTS if e in raw), None)
    if audio_ext is None:
        raise DecodeError(f"no audio member (.{', .'.join(AUDIO_EXTS)})")
    member = audio_ext
    try:
        audio, native_rate = decode_audio(raw[audio_ext], config.sample_rate)
        member = "json"
        meta = decode_json(raw["json"]) if "json" in raw else {}
        if "cues" in meta:
            try:
                json_cues(meta["cues"])
            except ValueError as exc:
                raise DecodeError(str(exc)) from None
        member = "txt"
        transcript = decode_text(raw["txt"]) if "txt" in raw else None
        member = "json"
        captions = sample_captions(transcript, meta)
        text = captions[0] if captions else None
        if config.require_text and not text:
            raise DecodeError("no transcript (.txt member or 'text' in .json)")
        video = times = None
        member = next((e for e in VIDEO_EXTS if e in raw), None) if config.use_video else None
        if member is not None:
            video, times, _ = decode_video(raw[member], config.video_fps, config.video_size)
    except DecodeError as exc:
        raise DecodeError(f".{member}: {exc}") from None
    meta = {**meta, "_sample_rate": config.sample_rate, "_native_rate": native_rate}
    if "__order__" in raw:
        meta["_order"] = list(raw["__order__"])
    return Sample(raw["__key__"], raw["__url__"], audio, text, video, times, meta, captions)


def text_byte_times(
    text: str, words: list[dict] | None, duration: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Time span `[start, end]` of every UTF-8 byte of `text`.

    `words` are input timings that exist in the wild (`input_words`: subtitle cues), never a
    corpus' ground truth. Rule: when `words` match the transcript's words in order, a word's bytes
    take its span and the separator bytes the gap to the next word; otherwise the bytes share
    `duration` evenly in reading order.
    """
    data = text.encode()
    tokens = text.split(" ")
    if words and [w["word"] for w in words] == tokens:
        starts, ends = [], []
        for i, (token, w) in enumerate(zip(tokens, words)):
            n = len(token.encode())
            starts += [w["start"]] * n
            ends += [w["end"]] * n
            if i + 1 < len(tokens):
                gap_end = max(words[i + 1]["start"], w["end"])
                starts.append(w["end"])
                ends.append(gap_end)
        return torch.tensor(starts, dtype=torch.float32), torch.tensor(ends, dtype=torch.float32)
    edges = torch.linspace(0.0, duration, len(data) + 1)
    return edges[:-1].clone(), edges[1:].clone()


def input_words(meta: dict) -> list[dict] | None:
    """Word timings a model may read: those of subtitle cues (`cues` in the JSON, cue precision),
    never the corpus' ground-truth `words`."""
    cues = meta.get("cues")
    return cue_words([Cue(*c) for c in cues]) if cues else None


def collate(samples: list[Sample], skipped: list[Skipped]) -> Batch:
    """Pack decoded samples into one `Batch` of per-modality Ragged sequences."""
    if not samples:
        return Batch([], None, None, None, [], skipped)
    audio = Ragged.from_list([s.audio for s in samples])  # sample i lies at i / rate: no per-sample spans
    metas = [{**s.meta, "_seconds": s.seconds} for s in samples]
    text = text_ragged([s.text or "" for s in samples], metas)
    video = None
    if any(s.video is not None for s in samples):
        shape = next(s.video.shape[1:] for s in samples if s.video is not None)
        empty = torch.zeros(0, *shape, dtype=torch.uint8)
        frames = [s.video if s.video is not None else empty for s in samples]
        times = [s.video_times if s.video is not None else torch.zeros(0) for s in samples]
        step = 1.0 / samples[0].meta.get("_video_fps", 25.0)
        video = Ragged.from_list(frames, t_start=times, t_end=[t + step for t in times])
    captions = [s.captions for s in samples]
    return Batch([s.key for s in samples], audio, text, video, metas, skipped, captions)


def text_ragged(texts: list[str], metas: list[dict]) -> Ragged:
    """UTF-8 bytes `[T]` int64 of `texts[i]`, a text of the sample whose batch JSON is `metas[i]`
    (its audio's length in `_seconds`), with byte time spans on that sample's time axis
    (`text_byte_times`)."""
    spans = [text_byte_times(t, input_words(m), m["_seconds"]) for t, m in zip(texts, metas)]
    return Ragged.from_list(
        [torch.tensor(list(t.encode()), dtype=torch.int64) for t in texts],
        t_start=[a for a, _ in spans],
        t_end=[b for _, b in spans],
    )


def budget_batches(items: Iterable[Sample | Skipped], config: DataConfig) -> Iterator[Batch]:
    """Group samples into batches by an audio-seconds budget (and a sample cap), skips attached."""
    samples: list[Sample] = []
    skipped: list[Skipped] = []
    seconds = 0.0
    for item in items:
        if isinstance(item, Skipped):
            log.warning("skipped %s in %s: %s", item.key or "shard", item.shard, item.reason)
            skipped.append(item)
            continue
        item.meta["_video_fps"] = config.video_fps
        if samples and (seconds + item.seconds > config.max_seconds or len(samples) >= config.max_samples):
            yield collate(samples, skipped)
            samples, skipped, seconds = [], [], 0.0
        samples.append(item)
        seconds += item.seconds
    if samples or skipped:
        yield collate(samples, skipped)


def make_dataset(
    shards: str | os.PathLike | Iterable[str],
    config: DataConfig | None = None,
    *,
    resampled: bool = False,
    epoch_batches: int | None = None,
    shuffle_shards: bool = False,
    split: bool = True,
    transform: Callable[[Sample], Sample] | None = None,
) -> wds.DataPipeline:
    """The loader pipeline over `shards` (an IterableDataset yielding `Batch`es).

    Finite mode: shards are shared between the ranks of a process group (`split_shards`: whole
    shards, and the samples of the shards left over) and then between DataLoader workers
    (`split_by_worker`), each sample read once per epoch. Multi-GPU mode (`resampled=True`): every
    worker draws shards with replacement and `epoch_batches` caps each worker's epoch, so every rank
    sees the same number of batches. `split=False`: this process reads every shard (its caller
    has split them already). `transform`: a function applied to every decoded `Sample` just before
    batching (e.g. a robustness condition).
    """
    config = config or DataConfig()
    urls = expand_urls(shards)
    epoch = EpochSeed(config.seed)
    stages = [ShardList(urls, epoch, shuffle=shuffle_shards, resampled=resampled, split=split)]
    if split and not resampled:
        stages.append(wds.split_by_worker)
    cache = {} if config.cache else None
    stages.append(wds.pipelinefilter(read_decoded)(config, cache))
    if config.shuffle_buffer:
        stages.append(wds.pipelinefilter(shuffle_samples)(config.shuffle_buffer, epoch))
    if config.draw_caption:
        stages.append(wds.pipelinefilter(draw_captions)(epoch))
    if config.augment is not None:
        stages.append(wds.pipelinefilter(augment_samples)(config.augment, epoch, config.sample_rate))
    if transform is not None:
        stages.append(wds.pipelinefilter(_map_samples)(transform))
    stages.append(wds.pipelinefilter(budget_batches)(config))
    pipeline = wds.DataPipeline(*stages)
    if epoch_batches:
        pipeline = pipeline.with_epoch(epoch_batches)
    pipeline.epoch_seed = epoch
    return pipeline


def _map_samples(items: Iterable[Sample | Skipped], fn: Callable[[Sample], Sample]) -> Iterator:
    for item in items:
        yield fn(item) if isinstance(item, Sample) else item


def make_loader(
    shards: str | os.PathLike | Iterable[str],
    config: DataConfig | None = None,
    *,
    num_workers: int = 0,
    position: Callable[[], tuple[int, int]] | None = None,
    prefetch: int = 0,
    lockstep: str | None = None,
    **kwargs,
) -> ResumableLoader:
    """A `ResumableLoader` over `make_dataset(shards, config, **kwargs)` (batching happens in the
    pipeline); `position` and `prefetch` as in `ResumableLoader`. `lockstep` keeps the ranks of a
    process group at the same batch count (`mmchunk.data.distributed.lockstep`): "pad" (ranks that
    run out get empty batches: evaluation) or "shortest" (the epoch ends with the first rank to run
    out: training); None: off."""
    if lockstep not in (None, "pad", "shortest"):
        raise ValueError(f"lockstep: 'pad', 'shortest' or None, got {lockstep!r}")
    pad = (lambda: collate([], [])) if lockstep == "pad" else None
    dataset = make_dataset(shards, config, **kwargs)
    return ResumableLoader(dataset, num_workers, position, prefetch, lockstep is not None, pad)
