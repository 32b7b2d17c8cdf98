"""Real-size video through `mmchunk segment`: time and peak memory of decoding and segmenting.

Writes a test video with PyAV (H.264 at `--size`, `--fps`, with an AAC soundtrack of tones and
pauses; moving shapes on a textured background), then runs `mmchunk segment FILE --json` on it in
a child process per row and reports wall time, the peak resident memory of that process, and the
chunks it returned per modality. The first row is the whole file; the second segments only the
first `--prefix` seconds with the decoder that holds every frame at full size (what `decode_video`
did before it streamed), for scale: its memory grows with length × resolution.

Run: `python benchmarks/video_decode.py [--seconds 300] [--size 1280x720] [--fps 30]`.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

CHILD = """
import json, resource, sys, time
from pathlib import Path
start = time.perf_counter()
if sys.argv[2] == "full-frames":
    import numpy as np, torch
    from mmchunk.data.decode import read_frames
    frames, native = read_frames(Path(sys.argv[1]).read_bytes())
    report = {"chunks": [], "frames": len(frames)}
else:
    from mmchunk.segment import segment_file
    report = segment_file(sys.argv[1])
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": time.perf_counter() - start, "peak_mb": peak, "report": report}))
"""


def write_video(path: Path, seconds: float, size: tuple[int, int], fps: int, rate: int = 48_000) -> None:
    """An H.264 + AAC file: a square moving across a fixed noise texture; a 440 Hz tone in the
    first half of every second, silence in the second."""
    import av

    width, height = size
    rng = np.random.default_rng(0)
    background = rng.integers(40, 90, (height, width, 3), dtype=np.uint8)
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "crf": "28"})
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio = container.add_stream("aac", rate=rate, layout="mono")
        side = height // 6
        for i in range(int(seconds * fps)):
            frame = background.copy()
            x = int((i / fps) * 60) % (width - side)
            frame[height // 3 : height // 3 + side, x : x + side] = (220, 60, 60)
            for packet in video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        t = np.arange(int(seconds * rate)) / rate
        wave = (0.3 * np.sin(2 * np.pi * 440 * t) * ((t % 1.0) < 0.5)).astype(np.float32)
        for start in range(0, len(wave), 1024):
            block = av.AudioFrame.from_ndarray(wave[None, start : start + 1024], format="fltp", layout="mono")
            block.sample_rate, block.pts, block.time_base = rate, start, Fraction(1, rate)
            for packet in audio.encode(block):
                container.mux(packet)
        for stream in (video, audio):
            for packet in stream.encode(None):
                container.mux(packet)


def measure(path: Path, mode: str) -> dict:
    """One child process: `segment` (the streaming path) or `full-frames` (every frame decoded)."""
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), mode], capture_output=True, text=True, timeout=1800
    )
    if done.returncode != 0:
        raise SystemExit(f"{mode} on {path.name} failed: {done.stderr.strip().splitlines()[-1]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=300.0, help="length of the test video (300)")
    parser.add_argument("--size", default="1280x720", help="WIDTHxHEIGHT (1280x720)")
    parser.add_argument("--fps", type=int, default=30, help="frame rate of the test video (30)")
    parser.add_argument("--prefix", type=float, default=20.0, help="seconds for the full-frame row (20)")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    print(f"test video: {args.seconds:.0f} s, {width}x{height}, {args.fps} fps H.264 + AAC (PyAV)")
    print(f"{'row':<44} {'video s':>8} {'wall s':>8} {'x real time':>12} {'peak MB':>8}  chunks")
    with tempfile.TemporaryDirectory() as tmp:
        rows = [("mmchunk segment (streaming decode)", args.seconds, "segment")]
        if args.prefix > 0:
            rows.append(("every frame decoded at full size", min(args.prefix, args.seconds), "full-frames"))
        for label, seconds, mode in rows:
            path = Path(tmp) / f"test_{seconds:g}s.mp4"
            if not path.exists():
                clock = time.perf_counter()
                write_video(path, seconds, (width, height), args.fps)
                took = time.perf_counter() - clock
                print(f"  (wrote {path.name}, {path.stat().st_size / 1e6:.1f} MB, in {took:.0f} s)")
            result = measure(path, mode)
            chunks = result["report"]["chunks"]
            counts = {m: sum(c["modality"] == m for c in chunks) for m in ("audio", "video")}
            shown = ", ".join(f"{m} {n}" for m, n in counts.items()) if chunks else "-"
            print(
                f"{label:<44} {seconds:>8.0f} {result['seconds']:>8.1f} "
                f"{seconds / result['seconds']:>12.1f} {result['peak_mb']:>8.0f}  {shown}"
            )
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"own process peak (writing the videos): {own:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
