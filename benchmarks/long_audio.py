"""Long recordings through `mmchunk segment`: time, peak memory, and agreement with one pass.

Builds a long 16 kHz FLAC from utterances of the built-in corpus (realistic conditions, so noise
floors, rooms and level changes) laid end to end in a seeded order, then in a child process per
row: `segment_file` (read block by block, chunked in windows of `--window` s with `--context` s on
either side), and for reference one pass over the whole waveform held in memory. Reports wall
time, real-time factor, the child's peak resident memory, the chunks, and how many chunk starts
differ from the one pass.

Run: `python benchmarks/long_audio.py [--minutes 60] [--ckpt runs/demo/model.ckpt]`.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

CHILD = """
import json, resource, sys, time
import torch
start = time.perf_counter()
path, ckpt, mode = sys.argv[1], sys.argv[2] or None, sys.argv[3]
window, context = float(sys.argv[4]), float(sys.argv[5])
if mode == "export":
    import tempfile
    from mmchunk.export import export_embeddings
    with tempfile.TemporaryDirectory() as out:
        result = export_embeddings(ckpt, path, out, per_chunk=True, progress=False, window_s=window)
    t0 = [0.0] * result["counts"]["samples"]
elif mode == "one-pass":
    from pathlib import Path
    from mmchunk.checkpoint import load_model
    from mmchunk.data.decode import decode_audio
    from mmchunk.ragged import Ragged
    model, _ = load_model(ckpt)
    encoder = model.encoders["audio"]
    wave, _ = decode_audio(Path(path).read_bytes(), encoder.sample_rate)
    with torch.no_grad():
        feats = encoder(Ragged.from_list([wave]))
        audio = torch.zeros(feats.num_tokens, dtype=torch.long)
        tagged = Ragged(feats.values, feats.cu_seqlens, modality=audio)
        starts = model.chunker(tagged).boundary_mask.nonzero().squeeze(1)
    t0 = [round(int(f) * encoder.hop / encoder.sample_rate, 4) for f in starts]
else:
    from mmchunk.segment import segment_file
    t0 = [c["t0"] for c in segment_file(path, ckpt, window_s=window, context_s=context)["chunks"]]
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": time.perf_counter() - start, "peak_mb": peak, "t0": t0}))
"""


def write_recording(path: Path, minutes: float, clips: int = 64, seed: int = 0) -> tuple[float, str]:
    """A `minutes`-long 16 kHz FLAC of `clips` corpus utterances end to end (seeded order); its
    seconds and its transcript (the utterances' texts in order)."""
    import soundfile

    from mmchunk.data.synth import synth_corpus

    with tempfile.TemporaryDirectory() as tmp:
        synth_corpus(Path(tmp), clips, video=False, seed=seed, val_fraction=0.0, progress=False)
        waves, texts = [], []
        for shard in sorted(Path(tmp).rglob("*.tar")):
            with tarfile.open(shard) as tar:
                members = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}
            for name in sorted(n for n in members if n.endswith(".flac")):
                wave, rate = soundfile.read(io.BytesIO(members[name]), dtype="float32")
                waves.append(wave)
                texts.append(members[name.replace(".flac", ".txt")].decode().strip())
    rng = np.random.default_rng(seed)
    total = int(minutes * 60 * rate)
    with soundfile.SoundFile(path, "w", rate, 1, format="FLAC", subtype="PCM_16") as out:
        written, transcript = 0, []
        while written < total:
            pick = int(rng.integers(len(waves)))
            clip = waves[pick][: total - written]
            out.write(clip)
            written += clip.size
            transcript.append(texts[pick])
    return total / rate, " ".join(transcript)


def run_child(path: Path, ckpt: str, mode: str, window: float, context: float) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), ckpt, mode, str(window), str(context)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode:
        raise SystemExit(f"{mode} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=60.0, help="length of the recording (60)")
    parser.add_argument(
        "--ckpt", default="", help="checkpoint of `mmchunk fit` (default: the untrained model)"
    )
    parser.add_argument("--window", type=float, default=60.0, help="window of segment, s (60)")
    parser.add_argument("--clips", type=int, default=64, help="corpus utterances to draw from (64)")
    parser.add_argument(
        "--contexts", default="10,2,0", help="context on either side, s, one row each (10,2,0)"
    )
    parser.add_argument(
        "--no-one-pass", action="store_true", help="skip the one-pass reference (memory-hungry)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "src" / "long.flac"
        path.parent.mkdir()
        seconds, transcript = write_recording(path, args.minutes, args.clips)
        path.with_suffix(".txt").write_text(transcript)
        size = path.stat().st_size / 2**20
        label = args.ckpt or "untrained"
        print(f"recording: {seconds / 60:.1f} min, 16 kHz FLAC, {size:.0f} MB; checkpoint: {label}")
        reference = None if args.no_one_pass else run_child(path, args.ckpt, "one-pass", 0, 0)
        rows = [(f"windows {args.window:g} s, context {c} s", float(c)) for c in args.contexts.split(",")]
        print(f"{'run':<32}{'time s':>8}{'× real time':>13}{'peak MB':>9}{'chunks':>8}{'differ':>8}")
        if reference is not None:
            row("one pass (whole file in memory)", reference, seconds, "-")
        for name, context in rows:
            r = run_child(path, args.ckpt, "windowed", args.window, context)
            row(name, r, seconds, "-" if reference is None else str(len(set(r["t0"]) ^ set(reference["t0"]))))
        if not args.ckpt:
            print("export: needs --ckpt (a checkpoint of `mmchunk fit`)")
            return
        from mmchunk.data.pack import pack_folder

        pack_folder(path.parent, Path(tmp) / "shards")
        r = run_child(Path(tmp) / "shards", args.ckpt, "export", args.window, 0)
        row(f"export, transcript {len(transcript) // 1000} kB", {**r, "t0": []}, seconds, "-")


def row(name: str, r: dict, seconds: float, differ: str) -> None:
    """One line of the table."""
    speed = seconds / r["seconds"]
    print(f"{name:<32}{r['seconds']:>8.1f}{speed:>13.0f}{r['peak_mb']:>9.0f}{len(r['t0']):>8}{differ:>8}")


if __name__ == "__main__":
    main()
