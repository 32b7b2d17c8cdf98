"""Frame energy of a waveform, and the silent intervals it implies (an energy VAD)."""

from __future__ import annotations

import numpy as np

FRAME_S = 0.010
SILENCE_DB = -50.0


def frame_rms(wave: np.ndarray, sample_rate: int, frame_s: float = FRAME_S) -> np.ndarray:
    """RMS of consecutive non-overlapping frames `[ceil(N / frame)]` (the last one zero-padded)."""
    frame = max(1, round(frame_s * sample_rate))
    padded = np.pad(wave.astype(np.float64), (0, -len(wave) % frame))
    return np.sqrt((padded.reshape(-1, frame) ** 2).mean(axis=1))


def silent_intervals(
    wave: np.ndarray,
    sample_rate: int,
    threshold_db: float = SILENCE_DB,
    min_duration: float = 0.1,
    frame_s: float = FRAME_S,
) -> list[list[float]]:
    """`[start, end]` spans in s, at least `min_duration` long, whose frames all stay below `threshold_db`.

    Levels are dBFS of the frame RMS (full scale = 1.0).
    """
    quiet = frame_rms(wave, sample_rate, frame_s) < 10 ** (threshold_db / 20)
    spans, start = [], None
    for i, q in enumerate([*quiet, False]):
        if q and start is None:
            start = i
        elif not q and start is not None:
            if (i - start) * frame_s >= min_duration - 1e-9:
                end = min(i * frame_s, len(wave) / sample_rate)
                spans.append([round(start * frame_s, 4), round(end, 4)])
            start = None
    return spans
