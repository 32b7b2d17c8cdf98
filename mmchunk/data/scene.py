"""Synthetic video for the built-in corpus: a coloured shape that moves while speech is active."""

from __future__ import annotations

import io
import math

import av
import numpy as np

FPS = 25
WIDTH, HEIGHT = 64, 48
BACKGROUND = (48, 48, 56)
SIZE = 10
RGB = {
    "red": (220, 40, 40), "green": (40, 180, 60), "blue": (50, 80, 220), "yellow": (230, 210, 40),
    "purple": (140, 60, 180), "orange": (240, 140, 30), "black": (10, 10, 10), "white": (245, 245, 245),
    "pink": (240, 130, 180), "brown": (120, 80, 40), "grey": (128, 128, 128), "silver": (190, 190, 200),
}  # fmt: skip
VELOCITY = {
    "left": (-2, 0), "right": (2, 0), "up": (0, -2), "down": (0, 2),
    "forward": (2, 1), "backward": (-2, -1), "away": (1, -2),
}  # fmt: skip


def render_scene(
    scene: dict[str, str], duration: float, silences: list[list[float]]
) -> tuple[np.ndarray, list[list[float]]]:
    """Frames `[F, H, W, 3]` uint8 at 25 fps and the intervals in which the picture is frozen.

    The shape advances by whole pixels on every frame whose centre lies outside the silences and
    stays put (the frame repeats exactly) inside them; "around" circles the centre.
    """
    count = max(1, math.ceil(duration * FPS))
    frames = np.empty((count, HEIGHT, WIDTH, 3), np.uint8)
    colour = np.array(RGB[scene["colour"]], np.uint8)
    x, y, step = (WIDTH - SIZE) // 2, (HEIGHT - SIZE) // 2, 0
    moving = np.ones(count, bool)
    for start, end in silences:
        centres = (np.arange(count) + 0.5) / FPS
        moving &= ~((centres >= start) & (centres < end))
    for i in range(count):
        if moving[i] and i:
            step += 1
            if scene["direction"] == "around":
                x = round((WIDTH - SIZE) / 2 + 14 * math.cos(step / 4))
                y = round((HEIGHT - SIZE) / 2 + 12 * math.sin(step / 4))
            else:
                dx, dy = VELOCITY[scene["direction"]]
                x, y = (x + dx) % (WIDTH - SIZE), (y + dy) % (HEIGHT - SIZE)
        frame = frames[i]
        frame[:] = BACKGROUND
        if scene["shape"] in ("circle", "ring"):
            yy, xx = np.ogrid[:SIZE, :SIZE]
            disc = (xx - SIZE / 2 + 0.5) ** 2 + (yy - SIZE / 2 + 0.5) ** 2 <= (SIZE / 2) ** 2
            frame[y : y + SIZE, x : x + SIZE][disc] = colour
        else:
            frame[y : y + SIZE, x : x + SIZE] = colour
    return frames, frozen_intervals(moving)


def frozen_intervals(moving: np.ndarray) -> list[list[float]]:
    """Time spans `[start, end]` in s of runs of two or more frames that repeat the one before."""
    spans, run_start = [], None
    for i in range(1, len(moving) + 1):
        still = i < len(moving) and not moving[i]
        if still and run_start is None:
            run_start = i
        elif not still and run_start is not None:
            if i - run_start >= 2:
                spans.append([round(run_start / FPS, 4), round(i / FPS, 4)])
            run_start = None
    return spans


def encode_mp4(frames: np.ndarray, fps: int = FPS, *, crf: int = 18) -> bytes:
    """H.264 MP4 bytes of RGB frames `[F, H, W, 3]` (single-threaded C x264: the same bytes every time).

    `crf` is x264's constant rate factor: 0 is lossless, higher is smaller and blurrier (max 51).
    `no-fast-pskip`/`no-dct-decimate` keep sensor noise on static blocks. `asm=0`: with its SIMD
    paths this x264 build gave 4 different streams for the same 64x48 frames in 60 encodes (one
    block off by up to 92 levels); the C path gave one, at ~24 ms instead of ~8 ms per clip.
    """
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {
            "crf": str(int(crf)), "preset": "veryfast", "threads": "1",
            "x264-params": "no-fast-pskip=1:no-dct-decimate=1:asm=0",
        }  # fmt: skip
        stream.codec_context.thread_count = 1
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return buffer.getvalue()
