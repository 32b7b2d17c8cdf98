"""Streaming segmentation of a long recording (`mmchunk.streaming`): real-time factor and peak
memory on one core, per block size, for two lengths (memory must not grow with the length).

The recording is `long_audio.py`'s (corpus utterances end to end, realistic conditions, 16 kHz
FLAC). Each row runs in a child process with one torch thread: the file read block by block
(`mmchunk.longform.read_blocks`, what `mmchunk segment --stream` does) through a
`StreamingSegmenter`. "× real time": the whole run (reading and decoding the FLAC block by block
included); "segmenter ×": the time inside `feed` and `flush` only, what a live source (a
microphone) costs. "differ": chunk starts not in the one-pass boundaries of the whole
waveform (computed for the shorter recording only; the longer one's one pass needs its whole
waveform in memory).

Run: `python benchmarks/streaming.py [--ckpt CKPT] [--minutes 5 60] [--blocks 0.02 0.37 1]`; without
--ckpt an untrained model with the streaming_cpu recipe's audio path (the same cost).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from long_audio import write_recording

CHILD = """
import json, resource, sys, time
import torch
torch.set_num_threads(1)
from mmchunk.longform import read_blocks
from mmchunk.streaming import StreamingSegmenter
path, ckpt, block = sys.argv[1], sys.argv[2] or None, float(sys.argv[3])
if ckpt:
    from mmchunk.checkpoint import load_model
    model, _ = load_model(ckpt)
else:
    from mmchunk.model import ChunkFusionModel
    torch.manual_seed(0)
    audio = {"depth": 2, "stem": "logmel", "band_mean": True, "frame_ms": 40.0, "window_ms": 60.0,
             "context": 1, "level": "causal"}
    model = ChunkFusionModel(dim=128, encoders={"audio": audio, "text": {"depth": 2}},
                             routing={"windows": {"audio": 2}}).eval()
segmenter = StreamingSegmenter(model)
start = time.perf_counter()
inside = 0.0
if block > 0:
    t0 = []
    for piece in read_blocks(path, segmenter.rate, block):
        clock = time.perf_counter()
        t0 += [c["t0"] for c in segmenter.feed(piece)]
        inside += time.perf_counter() - clock
    clock = time.perf_counter()
    t0 += [c["t0"] for c in segmenter.flush()]
    inside += time.perf_counter() - clock
else:
    from mmchunk.data.decode import decode_audio
    from mmchunk.ragged import Ragged
    from pathlib import Path
    wave, _ = decode_audio(Path(path).read_bytes(), segmenter.rate)
    with torch.no_grad():
        feats = model.encoders["audio"](Ragged.from_list([wave]))
        audio = torch.zeros(feats.num_tokens, dtype=torch.long)
        tagged = Ragged(feats.values, feats.cu_seqlens, modality=audio)
        starts = model.chunker(tagged).boundary_mask.nonzero().squeeze(1)
    t0 = [round(int(f) * segmenter.hop / segmenter.rate, 4) for f in starts]
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
seconds = time.perf_counter() - start
report = {"seconds": seconds, "inside": inside, "peak_mb": peak, "t0": t0}
print(json.dumps({**report, "latency": segmenter.latency_s}))
"""


def run_child(path: Path, ckpt: str, block: float) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), ckpt, str(block)], capture_output=True, text=True
    )
    if done.returncode:
        raise SystemExit(f"block {block} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--ckpt", default="", help="a causal checkpoint (recipe streaming_cpu); default untrained"
    )
    parser.add_argument("--minutes", type=float, nargs="+", default=[5.0, 60.0], help="lengths (5 60)")
    parser.add_argument(
        "--blocks", type=float, nargs="+", default=[0.02, 0.37, 1.0], help="block s (0.02 0.37 1)"
    )
    args = parser.parse_args()
    print(f"checkpoint: {args.ckpt or 'untrained, streaming_cpu audio path'}; one torch thread per row")
    head = f"{'recording':>10}{'block s':>9}{'time s':>9}{'× real time':>13}{'segmenter ×':>13}{'peak MB':>9}"
    print(f"{head}{'chunks':>8}{'differ':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for number, minutes in enumerate(sorted(args.minutes)):
            path = Path(tmp) / f"long{number}.flac"
            seconds, _ = write_recording(path, minutes)
            reference = run_child(path, args.ckpt, 0.0) if number == 0 else None
            for block in args.blocks:
                r = run_child(path, args.ckpt, block)
                differ = "-" if reference is None else str(len(set(r["t0"]) ^ set(reference["t0"])))
                speed = seconds / r["seconds"]
                alone = seconds / max(r["inside"], 1e-9)
                cells = (
                    f"{r['seconds']:>9.1f}{speed:>13.0f}{alone:>13.0f}{r['peak_mb']:>9.0f}{len(r['t0']):>8}"
                )
                print(f"{minutes:>8g} m{block:>9g}{cells}{differ:>8}", flush=True)
        print(f"latency: {r['latency'] * 1000:.0f} ms (a boundary's decision waits this long for audio)")


if __name__ == "__main__":
    main()
