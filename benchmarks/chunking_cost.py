"""Cost of learned chunking: forward+backward of the fusion model on 10 / 30 / 60 s clips, the
learned chunker vs the same network on every 50 Hz audio frame, measured in one run.

Clips are built from the built-in corpus (sentences with their pauses, back to back). With
`--ckpt` (default: runs/demo/model.ckpt when it exists) the trained routing decides the chunks;
without one the untrained routing compresses far more than a trained one, and the table says so.
Run: `python benchmarks/chunking_cost.py --help`.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
from pathlib import Path

import soundfile
import torch
from common import machine_name, median_seconds

from mmchunk import Ragged
from mmchunk.checkpoint import load_module
from mmchunk.data.loader import text_byte_times
from mmchunk.data.synth import synth_sample
from mmchunk.model import ChunkFusionModel
from mmchunk.objectives import Objectives


def make_clip(seconds: float, seed: int) -> tuple[torch.Tensor, str]:
    """A waveform of at least `seconds` s made of corpus samples, and its transcript."""
    waves, text, t, i = [], [], 0.0, 0
    while t < seconds:
        _, sample = synth_sample(seed, i)
        wave, rate = soundfile.read(io.BytesIO(sample["flac"]), dtype="float32")
        meta = json.loads(sample["json"])
        waves.append(torch.from_numpy(wave))
        text.append(meta["text"])
        t += len(wave) / rate
        i += 1
    return torch.cat(waves), " ".join(text)


def inputs_for(clips: list) -> dict[str, Ragged]:
    """Audio and text Ragged batches (with time spans) of a list of clips."""
    rate = 16_000
    waves = [w for w, _ in clips]
    spans = [text_byte_times(t, None, wave.numel() / rate) for wave, t in clips]  # as the loader
    audio = Ragged.from_list(
        waves,
        t_start=[torch.arange(w.numel()) / rate for w in waves],
        t_end=[(torch.arange(w.numel()) + 1) / rate for w in waves],
    )
    text = Ragged.from_list(
        [torch.tensor(list(t.encode())) for _, t in clips],
        t_start=[a for a, _ in spans],
        t_end=[b for _, b in spans],
    )
    return {"audio": audio, "text": text}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--ckpt", type=Path, help="checkpoint of `mmchunk fit` (default runs/demo/model.ckpt)"
    )
    parser.add_argument("--durations", type=float, nargs="+", default=[10, 30, 60], help="clip lengths in s")
    parser.add_argument("--batch", type=int, default=2, help="clips per batch (default 2)")
    parser.add_argument("--reps", type=int, default=3, help="timed repetitions, median reported (default 3)")
    args = parser.parse_args()
    ckpt = args.ckpt or (Path("runs/demo/model.ckpt") if Path("runs/demo/model.ckpt").exists() else None)
    torch.manual_seed(0)
    if ckpt is not None:
        module = load_module(ckpt)
        chunked, objectives = module.model, module.objectives  # one training step of that recipe
    else:
        chunked = ChunkFusionModel(encoders={"audio": {}, "text": {}})
        objectives = Objectives(None, chunked)  # the default objectives
    fixed = copy.deepcopy(chunked)
    fixed.chunker.every_token = True  # the same weights, every 50 Hz frame its own chunk
    print(f"machine: {machine_name()}, {torch.get_num_threads()} threads; torch {torch.__version__}")
    routing = f"trained, {ckpt}" if ckpt else "untrained (compresses far more than a trained model)"
    print(f"routing: {routing}")
    header = f"{'clip':>6}{'audio compression':>19}{'chunked ms':>12}{'fixed-rate ms':>15}{'speed-up':>10}"
    print(header)
    print("-" * len(header))
    for seconds in args.durations:
        inputs = inputs_for([make_clip(seconds, seed) for seed in range(args.batch)])
        with torch.no_grad():
            compression = chunked(inputs).routing["audio"].compression
        times = []
        for model in (chunked, fixed):

            def step(model=model, inputs=inputs) -> None:
                model.zero_grad(set_to_none=True)
                objectives(model(inputs), inputs)["total"].backward()

            times.append(median_seconds(step, args.reps, "cpu"))
        ms = [t * 1e3 for t in times]
        print(f"{seconds:>5.0f}s{compression:>19.1f}{ms[0]:>12.0f}{ms[1]:>15.0f}{times[1] / times[0]:>9.2f}x")


if __name__ == "__main__":
    main()
