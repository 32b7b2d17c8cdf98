"""The `mmchunk generate` command: batched byte generation with a saved ByteLM."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from mmchunk.cli_types import positive_int


def _generate(args: argparse.Namespace) -> int:
    from mmchunk.eval.hashhop_lm import load_model

    if args.top_k is not None and not 1 <= args.top_k <= 256:
        raise ValueError(f"--top-k must lie in 1..256, got {args.top_k}")
    if args.temperature < 0:
        raise ValueError(f"--temperature must be at least 0, got {args.temperature}")
    prompts = [p.encode() for p in args.prompt]
    model = load_model(args.ckpt)
    clock = time.perf_counter()
    outs = model.generate(
        prompts,
        args.max_new_bytes,
        temperature=args.temperature,
        top_k=args.top_k,
        stop=args.stop.encode() if args.stop else None,
        seed=args.seed,
        ragged=not args.masked,
    )
    seconds = time.perf_counter() - clock
    if args.json:
        rows = [{"prompt": p.decode(), "output": o.decode("utf-8", errors="replace"), "bytes": len(o)}
                for p, o in zip(prompts, outs)]  # fmt: skip
        print(
            json.dumps(
                {"checkpoint": str(args.ckpt), "seconds": round(seconds, 3), "outputs": rows}, indent=1
            )
        )
        return 0
    for i, (prompt, out) in enumerate(zip(args.prompt, outs)):
        if len(outs) > 1:
            print(f"--- prompt {i}: {prompt!r}")
        print(out.decode("utf-8", errors="replace"))
    return 0


def add_generate_command(sub: argparse._SubParsersAction) -> None:
    """Register `mmchunk generate` on the top-level subparsers."""
    gen = sub.add_parser(
        "generate",
        help="continue text prompts with a byte model (flat or H-Net), all prompts in one batch",
        description=(
            "Prefill every prompt in one packed pass, then generate byte by byte for all of them at "
            "once (ByteLM.generate): greedy by default, sampled with --temperature; each prompt "
            "stops on its own at --stop or after --max-new-bytes."
        ),
    )
    gen.add_argument("--ckpt", type=Path, required=True, help="a .safetensors byte model (recipes/hashhop)")
    gen.add_argument("--prompt", action="append", required=True, help="a prompt (repeat for a batch)")
    gen.add_argument("--max-new-bytes", type=int, default=64, help="bytes to generate per prompt (64)")
    gen.add_argument("--temperature", type=float, default=0.0, help="0: greedy (default); > 0: sampling")
    gen.add_argument("--top-k", type=positive_int, help="sample among the k most likely bytes only")
    gen.add_argument("--stop", help="stop a prompt's generation at any of these characters (left out)")
    gen.add_argument("--seed", type=int, default=0, help="sampling seed (0)")
    gen.add_argument(
        "--masked",
        action="store_true",
        help="step every sequence through every main network, kept where a chunk opens (no host "
        "sync; same bytes) instead of running each main network on just the sequences that open a chunk",
    )
    gen.add_argument("--json", action="store_true", help="print the outputs as JSON")
    gen.set_defaults(func=_generate)
