"""Triton kernels vs the torch reference vs padded-dense baselines on a ragged length distribution.

Per op and implementation: forward and backward time, achieved GB/s (memory-bound ops) or TFLOP/s
(attention), and the fraction of the goal's yardstick: the device's peak HBM bandwidth for the
memory-bound ops, the TFLOP/s of SDPA's flash backend on the padded batch for attention. Without a
GPU it runs the torch side and says so (set TRITON_INTERPRET=1 to smoke-test the Triton rows in
the interpreter: its timings mean nothing). Run: `python benchmarks/kernels.py --help`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
import torch.nn.functional as F
from common import (
    forward_backward_seconds,
    lognormal_lengths,
    machine_name,
    padded_attention,
    padded_boundary_probs,
    padded_copy,
    padded_ema,
)
from einops import rearrange

from mmchunk import Ragged
from mmchunk.kernels import _common, boundary_probs, ema_scan, segment_reduce, varlen_attention

# Peak HBM bandwidth in bytes/s by device-name fragment (vendor datasheets).
PEAK_BANDWIDTH = {"H200": 4.8e12, "H100 NVL": 3.9e12, "H100 PCIe": 2.0e12, "H100": 3.35e12, "A100": 2.0e12}
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seqs", type=int, help="sequences per batch (default 64 on GPU, 32 on CPU)")
    parser.add_argument(
        "--median", type=float, help="median sequence length (default 512 on GPU, 256 on CPU)"
    )
    parser.add_argument("--sigma", type=float, default=0.8, help="log-std of the lengths (default 0.8)")
    parser.add_argument(
        "--max-len", type=int, help="longest allowed sequence (default 4096 on GPU, 1024 on CPU)"
    )
    parser.add_argument("--dim", type=int, help="feature size of the memory-bound ops (default 1024 / 256)")
    parser.add_argument("--heads", type=int, help="attention heads (default 16 on GPU, 4 on CPU)")
    parser.add_argument("--head-dim", type=int, default=64, help="attention head size (default 64)")
    parser.add_argument(
        "--dtype", choices=sorted(DTYPES), default="bf16", help="GPU input dtype (default bf16)"
    )
    parser.add_argument(
        "--reps", type=int, help="timed repetitions, median reported (default 20 on GPU, 5 on CPU)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of lengths and data (default 0)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 2 repetitions: a smoke test")
    args = parser.parse_args()
    gpu = torch.cuda.is_available()
    sizes = {"seqs": 64, "median": 512, "max_len": 4096, "dim": 1024, "heads": 16, "reps": 20}
    if not gpu:
        sizes = {"seqs": 32, "median": 256, "max_len": 1024, "dim": 256, "heads": 4, "reps": 5}
    if args.quick:
        sizes = {"seqs": 3, "median": 20, "max_len": 40, "dim": 24, "heads": 2, "reps": 2}
        args.head_dim = 16
    for key, value in sizes.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def peak_bandwidth(name: str) -> float | None:
    """Datasheet HBM bandwidth of a device whose name contains a known fragment."""
    return next((bw for key, bw in PEAK_BANDWIDTH.items() if key in name), None)


def attention_pairs(lengths: list[int], causal: bool) -> int:
    """Query-key pairs that attention really computes over the batch."""
    return sum(n * (n + 1) // 2 if causal else n * n for n in lengths)


def flex_document_attention(q: torch.Tensor, seq_ids: torch.Tensor, causal: bool) -> Callable:
    """FlexAttention over the packed batch with a document mask (compiled); raises if unavailable."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    def mask_mod(b, h, q_idx, kv_idx):
        same = seq_ids[q_idx] == seq_ids[kv_idx]
        return same & (q_idx >= kv_idx) if causal else same

    total = q.shape[0]
    block_mask = create_block_mask(mask_mod, 1, 1, total, total, device=q.device)
    flex = torch.compile(flex_attention)

    def run(q, k, v):
        q, k, v = (rearrange(t, "t h d -> 1 h t d") for t in (q, k, v))
        return rearrange(flex(q, k, v, block_mask=block_mask), "1 h t d -> t h d")

    return run


def main() -> None:
    args = parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = DTYPES[args.dtype] if device.type == "cuda" else torch.float32
    triton_ok = _common.HAS_TRITON and (device.type == "cuda" or _common.TRITON_INTERPRET)
    gen = torch.Generator().manual_seed(args.seed)
    lengths = lognormal_lengths(args.seqs, args.median, args.sigma, args.max_len, gen)
    d, h, hd = args.dim, args.heads, args.head_dim
    x = Ragged.from_list([torch.randn(n, d, generator=gen) for n in lengths]).to(device=device, dtype=dtype)
    _, mask = x.to_padded()
    cu, total, elt = x.cu_seqlens, x.num_tokens, x.values.element_size()
    name = machine_name(device)
    peak = peak_bandwidth(name) if device.type == "cuda" else None
    print(f"device: {name}; torch {torch.__version__}; dtype {str(dtype).removeprefix('torch.')}")
    print(
        f"batch: {args.seqs} sequences, lengths log-normal(median {args.median:g}, sigma {args.sigma:g}) "
        f"clipped to {args.max_len}: T = {total}, padded {mask.numel()} "
        f"({1 - total / mask.numel():.0%} padding), D = {d}, heads {h} x {hd}"
    )
    if not triton_ok:
        print("no GPU: Triton rows not measured (torch reference and padded baselines only)")
    elif device.type == "cpu":
        print("Triton rows run in the interpreter: a smoke test, their timings mean nothing")
    print(f"peak HBM bandwidth: {f'{peak / 1e12:.2f} TB/s' if peak else 'unknown for this device'}")

    xr = x.values.clone().requires_grad_()
    xp = padded_copy(xr, mask)
    p_r = torch.rand(total, generator=gen).to(device, dtype).requires_grad_()
    p_p = padded_copy(p_r, mask)
    qkv_r = [torch.randn(total, h, hd, generator=gen).to(device, dtype).requires_grad_() for _ in range(3)]
    qkv_p = [padded_copy(t, mask) for t in qkv_r]
    lengths_p = mask.sum(1, keepdim=True).clamp(min=1)
    td = total * d * elt
    # (op, implementation, function, leaf inputs, forward work, backward work); work in bytes or FLOPs.
    rows: list[tuple[str, str, Callable[[], torch.Tensor], list[torch.Tensor], float, float]] = []
    backends = ["triton", "torch"] if triton_ok else ["torch"]
    seg_bytes = td + len(lengths) * d * elt
    ema_bytes = (2 * td + total * elt, td * (4 + 4 / elt) + 2 * total * elt)
    bp_bytes = (2 * td + total * elt, 4 * td + total * elt)
    for be in backends:
        rows.append(
            (
                "segment_reduce mean",
                be,
                lambda be=be: segment_reduce(xr, cu, "mean", backend=be),
                [xr],
                seg_bytes,
                seg_bytes,
            )
        )
        rows.append(
            ("ema_scan p[T]", be, lambda be=be: ema_scan(xr, p_r, cu, backend=be), [xr, p_r], *ema_bytes)
        )
        rows.append(
            ("boundary_probs", be, lambda be=be: boundary_probs(xr, xr, cu, backend=be), [xr], *bp_bytes)
        )
    rows.append(
        (
            "segment_reduce mean",
            "padded",
            lambda: (xp * mask[..., None]).sum(1) / lengths_p,
            [xp],
            seg_bytes,
            seg_bytes,
        )
    )
    rows.append(
        ("ema_scan p[T]", "padded", lambda: padded_ema(xp, p_p, backend=backends[0]), [xp, p_p], *ema_bytes)
    )
    rows.append(("boundary_probs", "padded", lambda: padded_boundary_probs(xp, xp), [xp], *bp_bytes))
    for causal in (False, True):
        op = "varlen_attention" + (" causal" if causal else "")
        flops = 4 * h * hd * attention_pairs(lengths, causal)
        for be in backends:
            rows.append(
                (
                    op,
                    be,
                    lambda be=be, c=causal: varlen_attention(*qkv_r, cu, causal=c, backend=be),
                    qkv_r,
                    flops,
                    2.5 * flops,
                )
            )
        rows.append(
            (
                op,
                "padded SDPA+mask",
                lambda c=causal: padded_attention(*qkv_p, mask, causal=c),
                qkv_p,
                flops,
                2.5 * flops,
            )
        )
        if device.type == "cuda":
            dense = 4 * h * hd * attention_pairs([mask.shape[1]] * len(lengths), causal)
            rows.append(
                (op, "padded SDPA flash", lambda c=causal: sdpa_flash(*qkv_p, c), qkv_p, dense, 2.5 * dense)
            )
            try:
                flex = flex_document_attention(qkv_r[0], x.seq_ids, causal)
                rows.append((op, "flex doc mask", lambda f=flex: f(*qkv_r), qkv_r, flops, 2.5 * flops))
            except Exception as exc:  # a baseline that cannot run here is reported, not fatal
                print(f"{op}: FlexAttention unavailable: {type(exc).__name__}: {exc}".splitlines()[0])

    header = (
        f"{'op':<24}{'impl':<19}{'fwd ms':>9}{'bwd ms':>9}{'fwd rate':>15}{'bwd rate':>15}"
        f"{'fwd %goal':>10}{'bwd %goal':>10}"
    )
    print(header)
    print("-" * len(header))
    yardstick: dict[str, tuple[float, float]] = {}
    for op, impl, fn, inputs, work_f, work_b in rows:
        fwd, bwd = forward_backward_seconds(fn, inputs, args.reps, device)
        attention = op.startswith("varlen")
        unit, scale = ("TF/s", 1e12) if attention else ("GB/s", 1e9)
        rate_f, rate_b = work_f / fwd / scale, work_b / max(bwd, 1e-12) / scale
        if impl == "padded SDPA flash":
            yardstick[op] = (rate_f, rate_b)
        if attention and op in yardstick:
            goal = (rate_f / yardstick[op][0], rate_b / yardstick[op][1])
        elif not attention and peak:
            goal = (rate_f * scale / peak, rate_b * scale / peak)
        else:
            goal = None
        goal_text = f"{goal[0]:>10.0%}{goal[1]:>10.0%}" if goal else f"{'n/a':>10}{'n/a':>10}"
        print(
            f"{op:<24}{impl:<19}{fwd * 1e3:>9.3f}{bwd * 1e3:>9.3f} {rate_f:>9.3g} {unit:<4}"
            f" {rate_b:>9.3g} {unit:<4}{goal_text}"
        )
    print("memory-bound %goal: achieved over peak HBM bandwidth (bytes an op must move, not bytes it moved)")
    print(
        "attention %goal: TF/s over SDPA flash's on the padded batch (its rows count the dense FLOPs it ran)"
    )


def sdpa_flash(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
    """SDPA's flash backend on the padded batch `[B, L, H, Dh]`, no padding mask (its best case)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        out = F.scaled_dot_product_attention(
            *(rearrange(t, "b l h d -> b h l d") for t in (q, k, v)), is_causal=causal
        )
    return rearrange(out, "b h l d -> b l h d")


if __name__ == "__main__":
    main()
