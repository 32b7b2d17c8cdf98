"""Shared pieces of the benchmark scripts: machine names, length draws, timing, padded baselines."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from einops import rearrange

from mmchunk.kernels import ema_scan


def machine_name(device: torch.device | str = "cpu") -> str:
    """The GPU name for a CUDA device, else the CPU model (from /proc/cpuinfo) or the architecture."""
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(device)
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


def lengths_summing_to(n: int, total: int, sigma: float, gen: torch.Generator) -> list[int]:
    """`n` log-normal lengths (log-std `sigma`) scaled to add up to exactly `total`."""
    weights = (torch.randn(n, generator=gen, dtype=torch.float64) * sigma).exp()
    lengths = (weights / weights.sum() * total).floor().long()
    lengths[lengths.argmax()] += total - int(lengths.sum())
    return lengths.tolist()


def median_seconds(fn: Callable[[], object], reps: int, device: torch.device | str) -> float:
    """Median wall time of `fn()` over `reps` runs after one warm-up, synchronising CUDA around each."""
    cuda = torch.device(device).type == "cuda"
    times = []
    for i in range(reps + 1):
        if cuda:
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize(device)
        if i:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def forward_backward_seconds(
    fn: Callable[[], torch.Tensor], inputs: list[torch.Tensor], reps: int, device: torch.device | str
) -> tuple[float, float]:
    """Median seconds of the forward `fn()` and of the backward of its output (gradient of ones)."""

    def forward() -> None:
        with torch.no_grad():
            fn()

    out = fn()
    grad = torch.ones_like(out)

    def backward() -> None:
        for t in inputs:
            t.grad = None
        out.backward(grad, retain_graph=True)

    return median_seconds(forward, reps, device), median_seconds(backward, reps, device)


def padded_ema(x: torch.Tensor, p: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """EMA over padded `x [B, L, D]` with rates `p [B, L]`: the same scan on all B·L slots."""
    b, length, _ = x.shape
    cu = torch.arange(0, (b + 1) * length, length, dtype=torch.int32, device=x.device)
    return ema_scan(rearrange(x, "b l d -> (b l) d"), rearrange(p, "b l -> (b l)"), cu, backend=backend)


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
        allowed = (
            allowed & torch.ones(mask.shape[1], mask.shape[1], dtype=torch.bool, device=mask.device).tril()
        )
    q, k, v = (rearrange(t, "b l h d -> b h l d") for t in (q, k, v))
    return rearrange(F.scaled_dot_product_attention(q, k, v, attn_mask=allowed), "b h l d -> b l h d")


def padded_copy(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A zero-padded `[B, L, ...]` leaf copy of packed `values [T, ...]` laid out by `mask [B, L]`."""
    dense = values.new_zeros((*mask.shape, *values.shape[1:]))
    dense[mask] = values.detach()
    return dense.requires_grad_()
