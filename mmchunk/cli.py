"""The `mmchunk` command line: a thin layer over library functions, one subcommand each.

Expected failures (bad arguments, unreadable input) end with one line `mmchunk CMD: error: ...` and
exit code 2; set MMCHUNK_DEBUG=1 to see the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import mmchunk
from mmchunk.atomic import atomic_write
from mmchunk.cli_data import add_data_commands
from mmchunk.cli_generate import add_generate_command
from mmchunk.cli_types import positive_float, positive_int


def _demo(args: argparse.Namespace) -> int:
    if args.quick:
        from mmchunk.demo import format_demo, run_demo

        report = run_demo(seed=args.seed, num_clips=args.clips)
        print(json.dumps(report, indent=2) if args.json else format_demo(report))
        return 0
    from mmchunk.builtin_recipes import resolve_recipe
    from mmchunk.pipeline import format_summary, run_pipeline

    extra = [arg for name in args.config for arg in ("--config", str(resolve_recipe(name)))]
    if args.steps:
        extra += [f"--trainer.max_steps={args.steps}"]
    scores = run_pipeline(args.out, num=args.num + args.val, val=args.val, extra=extra, data=args.data)
    if args.json:
        print(json.dumps(scores, indent=2))
    else:
        from mmchunk.eval.robustness import format_report

        print(format_summary(scores))
        ckpt = args.out / "model.ckpt"
        print(f"\nrobustness (short form; every condition: mmchunk eval robustness --ckpt {ckpt})")
        print(format_report(scores["robustness"]))
    print(f"wrote {args.out / 'metrics.json'}, {args.out / 'boundaries.png'}, {args.out / 'model.ckpt'}")
    return 0


def _fit(args: argparse.Namespace) -> int:
    from mmchunk.training import run_fit

    run_fit(args.lightning_args)
    return 0


def _is_file(name: str) -> bool:
    """Whether `name` names a file (a long transcript given as text is no file name at all)."""
    try:
        return Path(name).is_file()
    except OSError:
        return False


def _segment(args: argparse.Namespace) -> int:
    from mmchunk.data.decode import decode_text
    from mmchunk.segment import plot_segments, segment_file

    if args.stream:
        return _segment_stream(args)
    text = args.text
    if text is not None and _is_file(text):
        text = decode_text(Path(text).read_bytes())
    report = segment_file(args.file, args.ckpt, window_s=args.window, text=text)
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        several = len(report["modalities"]) > 1
        head = f"{report['file']}: {'+'.join(report['modalities'])}, {report['duration']:.2f} s"
        print(f"{head}, {len(report['chunks'])} chunks ({report['compression']:.1f} tokens/chunk)")
        print(f"model: {report['checkpoint']}")
        for chunk in report["chunks"]:
            label = f"  {chunk['modality']}" if several else ""
            text = f"  bytes {chunk['byte0']}–{chunk['byte1']}  {chunk['text']!r}" if "text" in chunk else ""
            print(f"  {chunk['t0']:8.3f} – {chunk['t1']:8.3f} s{label}{text}")
        if "stage2_chunks" in report:
            print("stage-2 chunks open at: " + " ".join(f"{c['t0']:.2f}" for c in report["stage2_chunks"]))
        if "word_onsets" in report:
            print(
                "word onsets (CTC head, no transcript): "
                + " ".join(f"{t:.2f}" for t in report["word_onsets"])
            )
        if "words" in report:
            print(f"words ({report['alignment']} alignment):")
            for word in report["words"]:
                print(f"  {word['start']:8.3f} – {word['end']:8.3f} s  {word['word']}")
    if args.plot:
        plot_segments(report, args.plot)
    return 0


def _segment_stream(args: argparse.Namespace) -> int:
    from mmchunk.data.decode import AUDIO_EXTS
    from mmchunk.streaming import stream_file

    if args.plot:
        raise ValueError("--plot draws the whole file: leave out --stream")
    if args.file.suffix.lower().lstrip(".") not in AUDIO_EXTS:
        raise ValueError(f"{args.file}: --stream reads audio files (.{', .'.join(AUDIO_EXTS)})")
    if not args.file.is_file():
        raise FileNotFoundError(f"no such file: {args.file}")
    for chunk in stream_file(args.file, args.ckpt, block_s=args.block_ms / 1000):
        line = json.dumps(chunk) if args.json else f"  {chunk['t0']:8.3f} – {chunk['t1']:8.3f} s"
        print(line, flush=True)
    return 0


def _export(args: argparse.Namespace) -> int:
    from mmchunk.export import export_embeddings

    result = export_embeddings(
        args.ckpt, args.data, args.out, per_chunk=args.per_chunk, modalities=args.modalities.split(","),
        dtype=args.dtype, device=args.device, part_size=args.part_size, max_samples=args.batch,
        window_s=args.window,
    )  # fmt: skip
    counts = result["counts"]
    print(
        f"{args.out}: {counts['samples']} samples in {counts['files']} files ({counts['skipped']} skipped); "
        f"this run exported {result['exported']} in {result['seconds']:.1f} s "
        f"({result['samples_per_second']:.1f} samples/s)"
    )
    for item in result["skipped"]:
        print(f"  skipped {item['key']}: {item['reason']}")
    if not result["complete"]:
        print(f"  not finished: {len(result['pending_shards'])} input shards (other ranks, or rerun)")
    return 0


def _hashhop_generate(args: argparse.Namespace) -> int:
    from mmchunk.eval.hashhop import generate

    tasks = generate(args.num, args.n_chars, args.hops, args.num_queries, args.hash_len, args.seed, args.cot)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps(task.to_json()) + "\n" for task in tasks)
    atomic_write(args.out, lambda tmp: tmp.write_text(lines))
    sizes = [len(t.prompt) for t in tasks]
    print(f"wrote {len(tasks)} tasks to {args.out} (prompts of {min(sizes)}–{max(sizes)} characters)")
    if args.spoken:
        from mmchunk.eval.hashhop_spoken import write_spoken

        count = write_spoken(tasks, args.spoken)
        print(f"wrote {count} spoken prompts (flac + txt + json) as shards under {args.spoken}")
    return 0


def _hashhop_score(args: argparse.Namespace) -> int:
    import torch

    from mmchunk.eval.hashhop import HashHopTask
    from mmchunk.eval.hashhop_lm import answer_scores, decode_answers, hop_accuracy, load_model

    tasks = []
    for number, line in enumerate(args.data.read_text().splitlines(), 1):
        try:
            tasks.append(HashHopTask(**json.loads(line)))
        except (json.JSONDecodeError, TypeError) as exc:
            raise ValueError(f"{args.data}:{number}: not a HashHop task ({exc})") from None
    tasks = tasks[: args.num] if args.num else tasks
    if not tasks:
        raise ValueError(f"{args.data}: no HashHop tasks to score")
    model = load_model(args.ckpt)
    scores = answer_scores(model, tasks)
    hits = scores.hits
    if args.decode == "generate":
        truth = [a for task in tasks for a in task.targets.values()]
        hits = torch.tensor([got == want for got, want in zip(decode_answers(model, tasks), truth)])
    accuracy = hop_accuracy(tasks, hits)
    if args.json:
        report = {
            "file": str(args.data),
            "accuracy": accuracy,
            "answer_nats": scores.nats,
            "decode": args.decode,
        }
        print(json.dumps(report))
    else:
        for hops, value in accuracy.items():
            print(f"hops={hops}: exact match {value:.3f}")
        print(f"answer bytes: {scores.nats:.3f} nats")
    return 0


def _robustness(args: argparse.Namespace) -> int:
    from mmchunk.data import expand_urls
    from mmchunk.eval.robustness import format_report, parse_conditions, run_robustness

    names = parse_conditions(args.conditions)  # bad input fails before the model loads
    if not args.ckpt.is_file():
        raise FileNotFoundError(f"no such checkpoint: {args.ckpt}")
    expand_urls(args.data)
    report = run_robustness(
        args.ckpt, args.data, names, seed=args.seed, progress=not args.json, routing_gain=args.routing_gain
    )
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `mmchunk` and all its subcommands."""
    parser = argparse.ArgumentParser(
        prog="mmchunk",
        description="Learned dynamic segmentation (H-Net chunking) of audio, video and text.",
    )
    parser.add_argument("--version", action="version", version=f"mmchunk {mmchunk.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = sub.add_parser(
        "demo",
        help="the audio-text pipeline end to end: synthesize a corpus, train, evaluate (minutes)",
        description=(
            "Synthesize the built-in corpus (speech, transcripts, video) into OUT/data when it is not "
            "there yet, train the built-in CPU recipe demo_cpu (recipes/audio_text/demo_cpu.yaml), "
            "evaluate on the validation split beside the heuristic baselines, and write OUT/metrics.json, "
            "OUT/boundaries.png and OUT/model.ckpt. --quick instead runs the untrained chunker on "
            "synthetic tones and silences (seconds)."
        ),
    )
    demo.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder (default runs/demo)")
    demo.add_argument(
        "--data", type=Path, default=None, help="corpus folder, synthesized when empty (default OUT/data)"
    )
    demo.add_argument(
        "--config",
        action="append",
        default=[],
        help="a YAML file or built-in recipe name layered over the recipe (repeatable), e.g. hrm_cpu",
    )
    demo.add_argument("--num", type=positive_int, default=1000, help="training samples to synthesize (1000)")
    demo.add_argument("--val", type=positive_int, default=128, help="validation samples to synthesize (128)")
    demo.add_argument(
        "--steps", type=positive_int, default=None, help="training steps (default: the recipe's max_steps)"
    )
    demo.add_argument("--json", action="store_true", help="print the full report as JSON")
    demo.add_argument(
        "--quick", action="store_true", help="only the untrained chunker on synthetic tones (no training)"
    )
    demo.add_argument("--seed", type=int, default=0, help="--quick: seed of the synthetic clips (default 0)")
    demo.add_argument("--clips", type=positive_int, default=4, help="--quick: number of clips (default 4)")
    demo.set_defaults(func=_demo)

    fit = sub.add_parser(
        "fit",
        help="train the audio-text model with LightningCLI (--config demo_cpu, a built-in recipe, or a file)",
        add_help=False,
    )
    fit.add_argument("lightning_args", nargs=argparse.REMAINDER, help="LightningCLI fit arguments (--help)")
    fit.set_defaults(func=_fit)

    segment = sub.add_parser(
        "segment",
        help="chunk one audio, video or text file with the learned chunker",
        description=(
            "Run the encoder of the file's modality and the shared chunker on one file of any "
            "sample or frame rate and print where the chunks fall (untrained model without --ckpt)."
        ),
    )
    segment.add_argument(
        "file", type=Path, help="audio (.wav .flac .mp3 .ogg), video (.mp4 .mkv .webm) or .txt"
    )
    segment.add_argument("--ckpt", type=Path, help="a checkpoint written by `mmchunk fit`")
    segment.add_argument("--json", action="store_true", help="print the chunks as JSON")
    segment.add_argument("--plot", type=Path, help="also draw the chunk timeline to this PNG")
    segment.add_argument(
        "--text",
        help="the recording's transcript (a .txt file or the text itself): its words are placed on the "
        "audio's time axis by the checkpoint's CTC head (evenly spread without one)",
    )
    segment.add_argument(
        "--window", type=positive_float, default=60.0,
        help="audio longer than this (s) is read and chunked in windows, in bounded memory (60)",
    )  # fmt: skip
    segment.add_argument(
        "--stream",
        action="store_true",
        help="read the audio in blocks as a microphone delivers it and print each chunk as soon as it "
        "closes (one JSON object per line with --json); needs a causal checkpoint (recipe streaming_cpu)",
    )
    segment.add_argument(
        "--block-ms", type=positive_float, default=20.0, help="--stream: block length in ms (20)"
    )  # fmt: skip
    segment.set_defaults(func=_segment)

    export = sub.add_parser(
        "export",
        help="export pooled (and per-chunk) fused embeddings as safetensors shards",
        description=(
            "Run a checkpoint over shards and write, per input shard, safetensors parts with the "
            "pooled fused embedding of every sample (and with --per-chunk every fused chunk with its "
            "t0, t1 and modality), the contrastive audio/text embeddings and the sample keys, plus "
            "manifest.json. Resumable: a rerun skips finished shards and completes partial ones. "
            "Read back with mmchunk.load_embeddings(DIR)."
        ),
    )
    export.add_argument("--ckpt", type=Path, required=True, help="a checkpoint written by `mmchunk fit`")
    export.add_argument("--data", required=True, help="shards: folder, glob, brace pattern or URL")
    export.add_argument("--out", type=Path, required=True, help="output folder")
    export.add_argument("--per-chunk", action="store_true", help="also write every fused chunk's vector")
    export.add_argument(
        "--modalities", default="audio,text", help="modalities fused into the embedding (audio,text)"
    )
    export.add_argument("--dtype", choices=["float16", "float32"], default="float16", help="(float16)")
    export.add_argument("--device", default="cpu", help="torch device, e.g. cuda:0 (cpu)")
    export.add_argument("--batch", type=positive_int, default=32, help="samples per forward pass (32)")
    export.add_argument("--part-size", type=positive_int, default=512, help="samples per output file (512)")
    export.add_argument(
        "--window", type=positive_float, default=60.0,
        help="a sample's audio longer than this (s) is chunked in windows, in bounded memory (60)",
    )  # fmt: skip
    export.set_defaults(func=_export)

    evaluation = sub.add_parser("eval", help="evaluations: robustness, HashHop").add_subparsers(
        dest="eval_command", metavar="EVAL", required=True
    )
    robustness = evaluation.add_parser(
        "robustness",
        help="retrieval, boundaries and chunk rates of a checkpoint under recording conditions",
        description=(
            "Play the validation shards under seeded conditions (clean; gain -20/+10 dB; white and "
            "pink noise at 20/10/5 dB SNR; babble at 10 dB; rooms with RT60 0.3/0.8 s; an 8 kHz "
            "telephone band; video pixel noise, darkening and shake) and print, per condition, "
            "a2t/t2a R@1, boundary F1@50 ms beside the energy and Silero VAD baselines, the share of "
            "boundaries inside silences beside the share of silent time, frames per chunk and "
            "chunks per second of speech (video: the static boundary share)."
        ),
    )
    robustness.add_argument("--ckpt", type=Path, required=True, help="a checkpoint of `mmchunk fit`")
    robustness.add_argument("--data", required=True, help="validation shards (folder, glob or brace pattern)")
    robustness.add_argument(
        "--conditions", help="comma-separated condition names (default: all; see the description)"
    )
    robustness.add_argument("--seed", type=int, default=0, help="seed of the conditions' noise (0)")
    robustness.add_argument("--json", action="store_true", help="print the scores of every condition as JSON")
    robustness.add_argument(
        "--no-routing-gain", dest="routing_gain", action="store_false",
        help="switch the audio routing's gain control off (model.routing_gain): the ablation",
    )  # fmt: skip
    robustness.set_defaults(func=_robustness)
    hashhop = evaluation.add_parser("hashhop", help="HashHop multi-hop long-context tasks").add_subparsers(
        dest="hashhop_command", metavar="HASHHOP_COMMAND", required=True
    )
    hh_generate = hashhop.add_parser(
        "generate",
        help="write HashHop tasks as JSON lines (prompt, completion, targets)",
        description=(
            "Magic's HashHop format: shuffled edges 'k = v' between random letter hashes forming "
            "chains of --hops edges (the last edge of a chain quoted), and a completion "
            "'COMPLETION:\\nHops=h\\nCoT=...\\n' with one line per query. Seeded; queries drawn at "
            "random; targets only for the queried chains; prompts within 2% of --n-chars."
        ),
    )
    hh_generate.add_argument(
        "--n-chars", type=positive_int, required=True, help="prompt length in characters"
    )
    hh_generate.add_argument("--hops", type=positive_int, default=2, help="edges per chain (2)")
    hh_generate.add_argument("--num-queries", type=positive_int, default=1, help="queries per task (1)")
    hh_generate.add_argument("--hash-len", type=positive_int, default=8, help="letters per hash (8)")
    hh_generate.add_argument("--seed", type=int, default=0, help="seed (0)")
    hh_generate.add_argument("--num", type=positive_int, default=1, help="number of tasks (1)")
    hh_generate.add_argument("--cot", action="store_true", help="answers list every hash of the chain")
    hh_generate.add_argument("--out", type=Path, required=True, help="output .jsonl file")
    hh_generate.add_argument(
        "--spoken", type=Path, help="also read each prompt aloud (espeak-ng) into shards in this folder"
    )
    hh_generate.set_defaults(func=_hashhop_generate)
    hh_score = hashhop.add_parser(
        "score",
        help="exact-match accuracy per hop count of a byte model on HashHop tasks",
        description="Greedy answers of a model saved by recipes/hashhop/train.py, scored per hop count.",
    )
    hh_score.add_argument("--ckpt", type=Path, required=True, help="a .safetensors byte model")
    hh_score.add_argument("--data", type=Path, required=True, help="tasks from `hashhop generate` (.jsonl)")
    hh_score.add_argument("--num", type=positive_int, help="score only the first N tasks")
    hh_score.add_argument(
        "--decode",
        choices=["teacher-forced", "generate"],
        default="teacher-forced",
        help="exact matches from one teacher-forced pass (default), or by generating each answer "
        "(ByteLM.generate, batched; the same answers, slower)",
    )
    hh_score.add_argument("--json", action="store_true", help="print the result as JSON")
    hh_score.set_defaults(func=_hashhop_score)

    add_generate_command(sub)
    add_data_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `mmchunk` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if argv[:1] == ["fit"]:  # everything after `fit` belongs to LightningCLI, --config and --help included
        args = argparse.Namespace(command="fit", func=_fit, lightning_args=argv[1:])
    else:
        args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    subcommands = ("data_command", "eval_command", "hashhop_command")
    name = " ".join(filter(None, [args.command, *(getattr(args, n, None) for n in subcommands)]))
    try:
        return args.func(args)
    except BrokenPipeError:
        sys.stderr.close()
        return 0
    except (ValueError, OSError) as exc:
        if os.environ.get("MMCHUNK_DEBUG") == "1":
            raise
        print(f"mmchunk {name}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
