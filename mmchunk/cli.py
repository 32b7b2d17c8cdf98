"""The `mmchunk` command line: a thin layer over library functions, one subcommand each."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import mmchunk


def _demo(args: argparse.Namespace) -> int:
    from mmchunk.demo import format_demo, run_demo

    report = run_demo(seed=args.seed, num_clips=args.clips)
    print(json.dumps(report, indent=2) if args.json else format_demo(report))
    return 0


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


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
        help="chunk synthetic audio with silences and report where the boundaries fell",
        description=(
            "Synthesize clips of tones, chirps and noise separated by silences, pack their log-mel "
            "frames into one Ragged batch, run the dynamic chunker (routing at its identity "
            "initialisation) and score the boundaries against the true transitions."
        ),
    )
    demo.add_argument("--seed", type=int, default=0, help="seed of the synthetic clips (default 0)")
    demo.add_argument("--clips", type=positive_int, default=4, help="number of clips (default 4)")
    demo.add_argument("--json", action="store_true", help="print the full report as JSON")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `mmchunk` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except BrokenPipeError:
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
