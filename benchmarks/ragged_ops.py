"""Ragged (packed) torch ops against padded-dense equivalents on a log-normal length distribution.

Prints one table: forward+backward time of each op (torch backend) on the packed batch and on the
same batch padded to its longest sequence, their ratio, and packed throughput; then the ema_scan
target case (64 sequences, 100k tokens, D=256). Run: `python benchmarks/ragged_ops.py --help`.
"""

from __future__ import annotations

import argparse

import torch
from common import (
    forward_backward_seconds,
    lengths_summing_to,
    lognormal_lengths,
    machine_name,
    padded_attention,
    padded_boundary_probs,
    padded_copy,
    padded_ema,
)

from mmchunk import Ragged
from mmchunk.kernels import boundary_probs, ema_scan, segment_reduce, varlen_attention


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seqs", type=int, default=32, help="sequences per batch (default 32)")
    parser.add_argument("--median", type=float, default=256, help="median sequence length (default 256)")
    parser.add_argument("--sigma", type=float, default=0.8, help="log-std of the lengths (default 0.8)")
    parser.add_argument("--max-len", type=int, default=1024, help="longest allowed sequence (default 1024)")
    parser.add_argument("--dim", type=int, default=256, help="feature size D (default 256)")
    parser.add_argument("--heads", type=int, default=4, help="attention heads (default 4)")
    parser.add_argument("--reps", type=int, default=5, help="timed repetitions, median reported (default 5)")
    parser.add_argument(
        "--target-tokens", type=int, default=100_000, help="ema_scan target size (default 100k)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of lengths and data (default 0)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    gen = torch.Generator().manual_seed(args.seed)
    lengths = lognormal_lengths(args.seqs, args.median, args.sigma, args.max_len, gen)
    d, h = args.dim, args.heads
    x = Ragged.from_list([torch.randn(n, d, generator=gen) for n in lengths])
    _, mask = x.to_padded()
    cu, total, slots = x.cu_seqlens, x.num_tokens, mask.numel()
    print(f"machine: {machine_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(
        f"batch: {args.seqs} sequences, lengths log-normal(median {args.median:g}, sigma {args.sigma:g}) "
        f"clipped to {args.max_len}: T = {total} tokens, padded B x L_max = {slots} "
        f"({1 - total / slots:.0%} padding), D = {d}, heads = {h}"
    )
    print("packed = the mmchunk op on the packed batch; padded = the same job written on the padded batch")

    xr = x.values.clone().requires_grad_()
    xp = padded_copy(xr, mask)
    p_r = torch.rand(total, generator=gen).requires_grad_()
    p_p = padded_copy(p_r, mask)
    qkv_r = [torch.randn(total, h, d // h, generator=gen).requires_grad_() for _ in range(3)]
    qkv_p = [padded_copy(t, mask) for t in qkv_r]
    lengths_p = mask.sum(1, keepdim=True).clamp(min=1)

    cases = [
        ("segment_reduce mean", lambda: segment_reduce(xr, cu, "mean"), [xr],
         lambda: (xp * mask[..., None]).sum(1) / lengths_p, [xp]),
        ("segment_reduce max", lambda: segment_reduce(xr, cu, "max"), [xr],
         lambda: xp.masked_fill(~mask[..., None], float("-inf")).amax(1), [xp]),
        ("ema_scan p[T]", lambda: ema_scan(xr, p_r, cu), [xr, p_r], lambda: padded_ema(xp, p_p), [xp, p_p]),
        ("boundary_probs", lambda: boundary_probs(xr, xr, cu), [xr],
         lambda: padded_boundary_probs(xp, xp), [xp]),
        ("varlen_attention", lambda: varlen_attention(*qkv_r, cu), qkv_r,
         lambda: padded_attention(*qkv_p, mask), qkv_p),
        ("varlen_attention causal", lambda: varlen_attention(*qkv_r, cu, causal=True), qkv_r,
         lambda: padded_attention(*qkv_p, mask, causal=True), qkv_p),
    ]  # fmt: skip

    header = (
        f"{'op (forward+backward)':<26}{'packed ms':>11}{'padded ms':>11}"
        f"{'padded/packed':>15}{'packed Mtok/s':>15}"
    )
    print(header)
    print("-" * len(header))
    for name, ragged_fn, ragged_in, dense_fn, dense_in in cases:
        t_r = sum(forward_backward_seconds(ragged_fn, ragged_in, args.reps, "cpu"))
        t_p = sum(forward_backward_seconds(dense_fn, dense_in, args.reps, "cpu"))
        print(f"{name:<26}{t_r * 1e3:>11.2f}{t_p * 1e3:>11.2f}{t_p / t_r:>14.2f}x{total / t_r / 1e6:>15.2f}")

    n = args.target_tokens
    print(f"\nema_scan target: 64 sequences, {n:,} tokens, D = 256, forward+backward (goal < 1 s at 100k)")
    big_cu = Ragged.from_list(
        [torch.empty(m, 0) for m in lengths_summing_to(64, n, args.sigma, gen)]
    ).cu_seqlens
    big_x = torch.randn(n, 256, generator=gen).requires_grad_()
    for label, shape in (("p [T]", (n,)), ("p [T, D]", (n, 256))):
        rates = torch.rand(*shape, generator=gen).requires_grad_()
        seconds = sum(
            forward_backward_seconds(
                lambda r=rates: ema_scan(big_x, r, big_cu), [big_x, rates], args.reps, "cpu"
            )
        )
        print(f"  {label:<10} {seconds * 1e3:8.1f} ms")


if __name__ == "__main__":
    main()
