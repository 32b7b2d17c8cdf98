"""Camera realism for synthetic video: sensor noise, brightness flicker, shake, slow zoom."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from mmchunk.data.scene import FPS

SHAKE_SMOOTH = 3.0  # frames: std of the Gaussian that low-passes the shake (hand tremor, ~1-3 Hz at 25 fps)


def draw_camera(rng: np.random.Generator) -> dict:
    """A random camera condition of plain floats/ints (JSON-serialisable, 4 decimals).

    `noise_sigma`: sensor noise std in 0-255 levels; `flicker`: relative brightness flicker
    amplitude; `shake_px`: shake std per axis in pixels; `zoom`: zoom-in over the whole clip as a
    fraction of the frame size; `crf`: x264 quality for `scene.encode_mp4`.
    """
    return {
        "noise_sigma": round(float(rng.uniform(1.0, 6.0)), 4),
        "flicker": round(float(rng.uniform(0.01, 0.05)), 4),
        "shake_px": round(float(rng.uniform(0.0, 1.5)), 4),
        "zoom": round(float(rng.uniform(0.0, 0.04)), 4),
        "crf": int(rng.integers(23, 36)),
    }


def apply_camera(
    frames: torch.Tensor, condition: dict, rng: np.random.Generator, *, fps: float = FPS
) -> torch.Tensor:
    """Frames `[F, 3, H, W]` uint8 as a camera in `condition` (see `draw_camera`) would record them.

    Brightness flicker, then shake and zoom (one bilinear warp), then sensor noise; rounded once to
    uint8 at the end. The same `rng` state gives the same bytes.
    """
    _check(frames)
    if frames.shape[0] == 0:
        return frames
    count = frames.shape[0]
    x = frames.float()
    x = _scale(x, flicker_gains(count, condition["flicker"], rng, fps=fps))
    scales = 1.0 + condition["zoom"] * torch.linspace(0.0, 1.0, count) if count > 1 else torch.ones(1)
    x = _warp(x, shake_path(count, condition["shake_px"], rng), scales)
    x = _add_noise(x, condition["noise_sigma"], rng)
    return _to_uint8(x)


def pixel_noise(frames: torch.Tensor, sigma: float, rng: np.random.Generator) -> torch.Tensor:
    """Frames `[F, 3, H, W]` uint8 plus Gaussian noise of std `sigma` levels, rounded and clamped."""
    _check(frames)
    return _to_uint8(_add_noise(frames.float(), sigma, rng))


def brightness(frames: torch.Tensor, factor: float | torch.Tensor) -> torch.Tensor:
    """Frames `[F, 3, H, W]` uint8 times `factor` (a number or one per frame `[F]`), rounded and clamped."""
    _check(frames)
    factor = torch.as_tensor(factor, dtype=torch.float32).reshape(-1)
    return _to_uint8(_scale(frames.float(), factor))


def shake(frames: torch.Tensor, px: float, rng: np.random.Generator) -> torch.Tensor:
    """Frames `[F, 3, H, W]` uint8 translated by a smooth random path of std `px` pixels per axis."""
    _check(frames)
    count = frames.shape[0]
    if count == 0:
        return frames
    return _to_uint8(_warp(frames.float(), shake_path(count, px, rng), torch.ones(count)))


def flicker_gains(
    count: int, amplitude: float, rng: np.random.Generator, *, fps: float = FPS
) -> torch.Tensor:
    """Brightness gains `[count]` around 1: a sinusoid (period 1-4 s) plus per-frame jitter.

    The sinusoid has amplitude `0.8 * amplitude`, the jitter std `0.2 * amplitude`.
    """
    period = rng.uniform(1.0, 4.0) * fps
    phase = rng.uniform(0.0, 2 * math.pi)
    jitter = rng.standard_normal(count)
    wave = np.sin(2 * math.pi * np.arange(count) / period + phase)
    return torch.from_numpy(1.0 + amplitude * (0.8 * wave + 0.2 * jitter)).float()


def shake_path(count: int, px: float, rng: np.random.Generator) -> torch.Tensor:
    """Offsets `[count, 2]` (x, y) in pixels: white noise low-passed by a Gaussian, std `px` per axis.

    The path is stationary (its spread does not grow with the clip's length) and works for count 1.
    """
    if count == 0:
        return torch.zeros(0, 2)
    radius = math.ceil(3 * SHAKE_SMOOTH)
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / SHAKE_SMOOTH) ** 2)
    taps /= np.sqrt((taps**2).sum())  # unit-variance output from unit-variance input
    white = rng.standard_normal((2, count + 2 * radius))
    path = np.stack([np.convolve(axis, taps, mode="valid") for axis in white], axis=1)
    return torch.from_numpy(px * path).float()


def _warp(x: torch.Tensor, offsets: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """Float frames `[F, 3, H, W]` shifted by `offsets [F, 2]` pixels and zoomed by `scales [F]`
    about the centre (bilinear `grid_sample`, edges repeat the border)."""
    if not offsets.any() and bool((scales == 1).all()):
        return x
    height, width = x.shape[-2:]
    theta = torch.zeros(x.shape[0], 2, 3)  # maps output to input positions in [-1, 1] coordinates
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0 / scales
    theta[:, 0, 2] = -2.0 * offsets[:, 0] / (width * scales)
    theta[:, 1, 2] = -2.0 * offsets[:, 1] / (height * scales)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _scale(x: torch.Tensor, gains: torch.Tensor) -> torch.Tensor:
    """Float frames `[F, 3, H, W]` times a gain `[F]` (or `[1]`, shared by all frames)."""
    return x * gains.reshape(-1, 1, 1, 1)


def _add_noise(x: torch.Tensor, sigma: float, rng: np.random.Generator) -> torch.Tensor:
    """Float frames `[F, 3, H, W]` plus Gaussian noise of std `sigma` (drawn even when 0: same rng use)."""
    noise = rng.standard_normal(tuple(x.shape), dtype=np.float32)
    return x + sigma * torch.from_numpy(noise)


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Float frames rounded (half to even) and clamped to uint8 `[0, 255]`."""
    return x.round().clamp(0, 255).to(torch.uint8)


def _check(frames: torch.Tensor) -> None:
    """Raise unless `frames` is uint8 `[F, 3, H, W]`."""
    if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[1] != 3:
        raise ValueError(f"expected uint8 frames [F, 3, H, W], got {frames.dtype} {tuple(frames.shape)}")
