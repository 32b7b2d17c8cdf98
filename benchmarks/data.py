"""Data loader throughput: audio decode + resample + batch as a multiple of real time, video frames/s.

Synthesizes a small corpus (or reads `--shards`), then on one CPU thread: streams it through the
training loader (audio + text) with 16 kHz FLAC sources and with 44.1 kHz sources resampled to
16 kHz, and decodes every MP4 with decord and with PyAV. Run: `python benchmarks/data.py --help`.
"""

from __future__ import annotations

import argparse
import io
import tarfile
import tempfile
import time
from pathlib import Path

import soundfile
import torch
import torchaudio
from common import machine_name

from mmchunk.data import DataConfig, expand_urls, make_dataset
from mmchunk.data.decode import read_frames
from mmchunk.data.shards import ShardWriter
from mmchunk.data.synth import synth_corpus


def resampled_copy(shards: list[Path], out: Path, rate: int) -> None:
    """The same samples with their audio re-encoded as `rate` Hz FLAC (to time the resampler)."""
    with ShardWriter(out, "resampled", shard_size=10_000) as writer:
        for shard in shards:
            with tarfile.open(shard) as tar:
                samples: dict[str, dict[str, bytes]] = {}
                for member in tar:
                    key, _, ext = member.name.partition(".")
                    samples.setdefault(key, {})[ext] = tar.extractfile(member).read()
            for key, members in samples.items():
                wave, native = soundfile.read(io.BytesIO(members["flac"]), dtype="float32")
                up = torchaudio.functional.resample(torch.from_numpy(wave), native, rate).numpy()
                buf = io.BytesIO()
                soundfile.write(buf, up, rate, format="FLAC")
                writer.write(key, {**members, "flac": buf.getvalue()})


def loader_speed(shards: list[str], reps: int) -> tuple[float, float]:
    """Best of `reps`: audio seconds delivered per wall second, and the audio seconds read."""
    best, audio_seconds = 0.0, 0.0
    for _ in range(reps):
        start = time.perf_counter()
        audio_seconds = sum(
            b.audio.num_tokens / 16_000 for b in make_dataset(shards, DataConfig(use_video=False)) if len(b)
        )
        best = max(best, audio_seconds / (time.perf_counter() - start))
    return best, audio_seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shards", help="existing shards with .flac and .mp4 (default: synthesize)")
    parser.add_argument("--num", type=int, default=64, help="samples to synthesize (default 64)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions, best reported (default 3)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        if args.shards:
            shards = sorted(Path(p) for p in expand_urls(args.shards))
        else:
            synth_corpus(tmp, args.num, video=True, val_fraction=0.0, progress=False)
            shards = sorted(Path(tmp, "train").glob("*.tar"))
        resampled_copy(shards, Path(tmp, "r44k"), 44_100)
        print(f"machine: {machine_name()}, 1 thread; torch {torch.__version__}")
        header = f"{'stage':<44}{'throughput':>22}"
        print(header)
        print("-" * len(header))
        for label, urls in (
            ("audio 16 kHz FLAC: decode + batch", [str(p) for p in shards]),
            (
                "audio 44.1 kHz FLAC: decode + resample + batch",
                sorted(str(p) for p in Path(tmp, "r44k").glob("*.tar")),
            ),
        ):
            speed, seconds = loader_speed(urls, args.reps)
            print(f"{label:<44}{speed:>14.0f}x real time  ({seconds:.0f} s of audio)")
        videos = []
        for shard in shards:
            with tarfile.open(shard) as tar:
                videos += [tar.extractfile(m).read() for m in tar if m.name.endswith(".mp4")]
        for backend in ("decord", "pyav"):
            try:
                best = 0.0
                for _ in range(args.reps):
                    start = time.perf_counter()
                    frames = sum(len(read_frames(v, backend)[0]) for v in videos)
                    best = max(best, frames / (time.perf_counter() - start))
                label = f"video {backend}: decode all frames"
                print(f"{label:<44}{best:>14.0f} frames/s  ({len(videos)} videos)")
            except Exception as exc:  # a backend that cannot run here is reported, not fatal
                print(f"{'video ' + backend:<44}unavailable: {type(exc).__name__}: {exc}")


if __name__ == "__main__":
    main()
