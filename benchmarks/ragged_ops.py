"""Ragged (packed) torch ops against padded-dense equivalents on a log-normal length distribution.

Prints one table: forward+backward time of each op on the packed batch and on the same batch padded
to its longest sequence, their ratio, and packed throughput; then the ema_scan target case
(64 sequences, 100k tokens, D=256). Run: `python benchmarks/ragged_ops.py --help`.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from einops import rearrange

from mmchunk import Ragged
from mmchunk.kernels import boundary_probs, ema_scan, segment_reduce, varlen_attention


def machine_name() -> str:
    """The CPU model (from /proc/cpuinfo where there is one) or the architecture."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def lognormal_lengths(n: int, median: float, sigma: float, max_len: int, gen: torch.Generator) -> list[int]:
    """`n` lengths from a log-normal with the given median and log-std, clipped to [1, max_len]."""
    draws = torch.randn(n, generator=gen, dtype=torch.float64) * sigma + torch.log(torch.tensor(median))
    return draws.exp().round().clamp(1, max_len).long().tolist()


def time_fwd_bwd(fn: Callable[[], torch.Tensor], inputs: list[torch.Tensor], reps: int) -> float:
    """Median seconds of `fn()` forward plus backward of its sum (one warm-up run first)."""
    times = []
    for i in range(reps + 1):
        for t in inputs:
            t.grad = None
        start = time.perf_counter()
        fn().float().sum().backward()
        if i:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def padded_ema(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """EMA over padded `x [B, L, D]` with rates `p [B, L]`: the same scan on all B·L slots."""
    b, length, _ = x.shape
    cu = torch.arange(0, (b + 1) * length, length, dtype=torch.int32)
    return ema_scan(rearrange(x, "b l d -> (b l) d"), rearrange(p, "b l -> (b l)"), cu)


def padded_boundary_probs(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Dense routing probabilities over padded `q, k [B, L, D]` → `[B, L]`."""
    cos = F.cosine_similarity(q[:, 1:], k[:, :-1], dim=-1)
    return F.pad(((1 - cos) / 2).clamp(0, 1), (1, 0), value=1.0)


def padded_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, causal: bool = False
) -> torch.Tensor:
    """Dense SDPA over padded `[B, L, H, Dh]` with a key-padding mask `[B, L]` (and causal mask)."""
    allowed = mask[:, None, None, :]
    if causal:
        allowed = allowed & torch.ones(mask.shape[1], mask.shape[1], dtype=torch.bool).tril()
    q, k, v = (rearrange(t, "b l h d -> b h l d") for t in (q, k, v))
    return rearrange(F.scaled_dot_product_attention(q, k, v, attn_mask=allowed), "b h l d -> b l h d")


def lengths_summing_to(n: int, total: int, sigma: float, gen: torch.Generator) -> list[int]:
    """`n` log-normal lengths (log-std `sigma`) scaled to add up to exactly `total`."""
    weights = (torch.randn(n, generator=gen, dtype=torch.float64) * sigma).exp()
    lengths = (weights / weights.sum() * total).floor().long()
    lengths[lengths.argmax()] += total - int(lengths.sum())
    return lengths.tolist()


def main() -> None:
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
    parser.add_argument("--seed", type=int, default=0, help="seed of lengths and data (default 0)")
    args = parser.parse_args()

    gen = torch.Generator().manual_seed(args.seed)
    lengths = lognormal_lengths(args.seqs, args.median, args.sigma, args.max_len, gen)
    d, h = args.dim, args.heads
    x = Ragged.from_list([torch.randn(n, d, generator=gen) for n in lengths])
    padded, mask = x.to_padded()
    cu, total, slots = x.cu_seqlens, x.num_tokens, padded.shape[0] * padded.shape[1]
    print(f"machine: {machine_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(
        f"batch: {args.seqs} sequences, lengths log-normal(median {args.median:g}, sigma {args.sigma:g}) "
        f"clipped to {args.max_len}: T = {total} tokens, padded B x L_max = {slots} "
        f"({1 - total / slots:.0%} padding), D = {d}, heads = {h}"
    )
    print("packed = the mmchunk op on the packed batch; padded = the same job written on the padded batch")

    xr = x.values.clone().requires_grad_()
    xp = padded.clone().requires_grad_()
    p_r = torch.rand(total, generator=gen).requires_grad_()
    p_p = torch.zeros(padded.shape[:2])
    p_p[mask] = p_r.detach()
    p_p.requires_grad_()
    dh = d // h
    qkv_r = [torch.randn(total, h, dh, generator=gen).requires_grad_() for _ in range(3)]
    qkv_p = []
    for t in qkv_r:
        dense = torch.zeros(*padded.shape[:2], h, dh)
        dense[mask] = t.detach()
        qkv_p.append(dense.requires_grad_())
    lengths_p = mask.sum(1, keepdim=True).clamp(min=1)

    cases = [
        (
            "segment_reduce mean",
            lambda: segment_reduce(xr, cu, "mean"),
            [xr],
            lambda: (xp * mask[..., None]).sum(1) / lengths_p,
            [xp],
        ),
        (
            "segment_reduce max",
            lambda: segment_reduce(xr, cu, "max"),
            [xr],
            lambda: xp.masked_fill(~mask[..., None], float("-inf")).amax(1),
            [xp],
        ),
        ("ema_scan p[T]", lambda: ema_scan(xr, p_r, cu), [xr, p_r], lambda: padded_ema(xp, p_p), [xp, p_p]),
        (
            "boundary_probs",
            lambda: boundary_probs(xr, xr, cu),
            [xr],
            lambda: padded_boundary_probs(xp, xp),
            [xp],
        ),
        (
            "varlen_attention",
            lambda: varlen_attention(*qkv_r, cu),
            qkv_r,
            lambda: padded_attention(*qkv_p, mask),
            qkv_p,
        ),
        (
            "varlen_attention causal",
            lambda: varlen_attention(*qkv_r, cu, causal=True),
            qkv_r,
            lambda: padded_attention(*qkv_p, mask, causal=True),
            qkv_p,
        ),
    ]

    header = (
        f"{'op (forward+backward)':<26}{'packed ms':>11}{'padded ms':>11}"
        f"{'padded/packed':>15}{'packed Mtok/s':>15}"
    )
    print(header)
    print("-" * len(header))
    for name, ragged_fn, ragged_in, dense_fn, dense_in in cases:
        t_r = time_fwd_bwd(ragged_fn, ragged_in, args.reps)
        t_p = time_fwd_bwd(dense_fn, dense_in, args.reps)
        print(f"{name:<26}{t_r * 1e3:>11.2f}{t_p * 1e3:>11.2f}{t_p / t_r:>14.2f}x{total / t_r / 1e6:>15.2f}")

    print("\nema_scan target: 64 sequences, 100,000 tokens, D = 256, forward+backward (goal < 1 s)")
    lengths = lengths_summing_to(64, 100_000, args.sigma, gen)
    big_cu = Ragged.from_list([torch.empty(n, 0) for n in lengths]).cu_seqlens
    big_x = torch.randn(100_000, 256, generator=gen).requires_grad_()
    for label, shape in (("p [T]", (100_000,)), ("p [T, D]", (100_000, 256))):
        rates = torch.rand(*shape, generator=gen).requires_grad_()
        t = time_fwd_bwd(lambda r=rates: ema_scan(big_x, r, big_cu), [big_x, rates], args.reps)
        print(f"  {label:<10} {t * 1e3:8.1f} ms")


if __name__ == "__main__":
    main()
