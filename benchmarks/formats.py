"""Does the number of chunks depend on how a recording was stored? The same utterance as 16 kHz
FLAC (the reference), 8 kHz WAV, Ogg Vorbis, MP3 and 44.1 kHz stereo FLAC, each chunked by
`mmchunk.segment.segment_file`; the issue-15 goal is every count within ±20 % of the reference.

Every input file is decoded at 16 kHz mono (`mmchunk.data.decode.decode_audio`, what every command
uses), written in the five forms into a temporary folder, and segmented. The table gives the chunk
count of each form and, per form, the mean and the worst ratio to the reference.

Run: `python benchmarks/formats.py [--ckpt runs/demo/model.ckpt] [--json] FILES...` (audio files,
or shards / folders of shards with `--shards N` to take the first N samples' audio from them).
"""

from __future__ import annotations

import argparse
import json
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import soundfile
import torch
import torchaudio.functional as AF

from mmchunk.data import expand_urls
from mmchunk.data.decode import decode_audio
from mmchunk.segment import segment_file

RATE = 16_000
FORMS = {  # name → (suffix, rate, channels, soundfile format, subtype)
    "16k flac": (".flac", 16_000, 1, "FLAC", "PCM_16"),
    "8k wav": (".wav", 8_000, 1, "WAV", "PCM_16"),
    "ogg": (".ogg", 16_000, 1, "OGG", "VORBIS"),
    "mp3": (".mp3", 16_000, 1, "MP3", "MPEG_LAYER_III"),
    "44.1k stereo flac": (".flac", 44_100, 2, "FLAC", "PCM_16"),
}


def write_form(wave: torch.Tensor, form: str, stem: Path) -> Path:
    """`wave` (`[S]` at 16 kHz) stored as `form` at `stem` + a suffix; the stereo form's right
    channel is the left at -1 dB, so the channel mix differs from either channel."""
    suffix, rate, channels, fmt, subtype = FORMS[form]
    x = AF.resample(wave, RATE, rate) if rate != RATE else wave
    data = torch.stack([x, 0.89 * x], 1) if channels == 2 else x
    path = stem.with_name(f"{stem.name}-{form.replace(' ', '_').replace('.', '')}{suffix}")
    soundfile.write(path, data.clamp(-1, 1).numpy(), rate, format=fmt, subtype=subtype)
    return path


def measure(name: str, wave: torch.Tensor, checkpoint: str | None, tmp: Path) -> dict:
    """Chunk counts of one utterance in every form."""
    counts = {
        form: len(segment_file(write_form(wave, form, tmp / "x"), checkpoint)["chunks"]) for form in FORMS
    }
    return {"file": name, "seconds": round(wave.numel() / RATE, 2), "chunks": counts}


def sources(paths: list[Path], shards: int) -> list[tuple[str, torch.Tensor]]:
    """(name, 16 kHz mono waveform) of every audio file, or of the first `shards` samples of shards."""
    out = []
    for path in paths:
        if path.suffix == ".tar" or path.is_dir():
            for url in expand_urls(path):
                with tarfile.open(url) as tar:
                    for member in tar:
                        if len(out) < shards and member.name.endswith((".flac", ".wav")):
                            out.append((member.name, decode_audio(tar.extractfile(member).read(), RATE)[0]))
        else:
            out.append((path.name, decode_audio(path.read_bytes(), RATE)[0]))
    return out


def summary(rows: list[dict]) -> dict:
    """Per form: the mean and the worst (furthest from 1) ratio of its count to the reference's."""
    ratios = np.array([[r["chunks"][f] / max(r["chunks"]["16k flac"], 1) for f in FORMS] for r in rows])
    worst = ratios[np.abs(ratios - 1).argmax(0), np.arange(len(FORMS))]
    return {
        f: {"mean": round(float(m), 3), "worst": round(float(w), 3)}
        for f, m, w in zip(FORMS, ratios.mean(0), worst)
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("files", nargs="+", type=Path, help="audio files, shards or folders of shards")
    parser.add_argument(
        "--ckpt", default=None, help="a Lightning .ckpt of the project (default: untrained model)"
    )
    parser.add_argument("--shards", type=int, default=16, help="samples taken from shards (16)")
    parser.add_argument("--json", action="store_true", help="print the rows and the summary as JSON")
    args = parser.parse_args(argv)
    missing = [str(f) for f in args.files if not f.exists()]
    if missing:
        parser.error(f"no such file: {', '.join(missing)}")
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(name, wave, args.ckpt, Path(tmp)) for name, wave in sources(args.files, args.shards)]
    result = {"rows": rows, "summary": summary(rows), "checkpoint": args.ckpt or "untrained"}
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    width = max(len(r["file"]) for r in rows) + 2
    print(f"segmenter: {result['checkpoint']}; chunks of the same utterance stored five ways")
    print(f"{'file':<{width}}{'s':>6}" + "".join(f"{f:>19}" for f in FORMS))
    for r in rows:
        print(f"{r['file']:<{width}}{r['seconds']:>6.2f}" + "".join(f"{r['chunks'][f]:>19}" for f in FORMS))
    for key in ("mean", "worst"):
        cells = "".join(f"{result['summary'][f][key]:>19.3f}" for f in FORMS)
        print(f"{key + ' ratio to 16k flac':<{width + 6}}" + cells)
    return 0


if __name__ == "__main__":
    sys.exit(main())
