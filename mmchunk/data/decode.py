"""Safe decoders for shard members: audio (soundfile), video (decord, PyAV fallback), text, JSON.

Only whitelisted extensions are ever decoded; anything else (pickles above all) is left untouched.
Every failure is a `DecodeError` whose message is one line naming what is wrong.
"""

from __future__ import annotations

import io
import json

import numpy as np
import soundfile
import torch
import torchaudio
from torchvision.transforms.v2 import functional as TF

AUDIO_EXTS = ("flac", "wav", "mp3", "ogg")
VIDEO_EXTS = ("mp4", "mkv", "webm")
TEXT_EXTS = ("txt",)
META_EXTS = ("json",)
ALLOWED_EXTS = AUDIO_EXTS + VIDEO_EXTS + TEXT_EXTS + META_EXTS


class DecodeError(ValueError):
    """A member that cannot be decoded; the message is one line."""


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def decode_audio(data: bytes, sample_rate: int) -> tuple[torch.Tensor, int]:
    """Mono float32 waveform `[N]` resampled to `sample_rate`, and the file's own rate."""
    try:
        wave, native = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception as exc:  # libsndfile raises several types for corrupt input
        raise DecodeError(f"unreadable audio: {_one_line(exc)}") from None
    if wave.shape[0] == 0:
        raise DecodeError("audio has no samples")
    mono = torch.from_numpy(np.ascontiguousarray(wave.mean(axis=1)))
    if not torch.isfinite(mono).all():
        raise DecodeError("audio contains NaN or infinite samples")
    if native != sample_rate:
        mono = torchaudio.functional.resample(mono, native, sample_rate)
    return mono, native


def decode_text(data: bytes) -> str:
    """UTF-8 text, stripped; empty or invalid UTF-8 is an error."""
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError as exc:
        raise DecodeError(f"text is not valid UTF-8 (byte {exc.start})") from None
    if not text:
        raise DecodeError("text is empty")
    return text


def decode_json(data: bytes) -> dict:
    """A JSON object."""
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DecodeError(f"invalid JSON: {_one_line(exc)}") from None
    if not isinstance(value, dict):
        raise DecodeError(f"JSON must be an object, got {type(value).__name__}")
    return value


def decode_video(data: bytes, fps: float, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames `[F, 3, H, W]` uint8 sampled at `fps` and resized to `size` (H, W), and their times `[F]`.

    decord reads the file when it is installed and can; PyAV is the fallback (`read_frames`).
    """
    try:
        frames, native_fps = read_frames(data)
    except Exception as exc:
        raise DecodeError(f"unreadable video: {_one_line(exc)}") from None
    if len(frames) == 0:
        raise DecodeError("video has no frames")
    duration = len(frames) / native_fps
    times = torch.arange(0.0, duration - 1e-9, 1.0 / fps, dtype=torch.float64)
    index = (times * native_fps).round().long().clamp(max=len(frames) - 1)
    picked = torch.from_numpy(np.ascontiguousarray(frames[index.numpy()])).permute(0, 3, 1, 2)
    if tuple(picked.shape[-2:]) != tuple(size):
        picked = TF.resize(picked, list(size), antialias=True)
    return picked.contiguous(), times.float()


def read_frames(data: bytes, backend: str = "auto") -> tuple[np.ndarray, float]:
    """All frames `[F, H, W, 3]` uint8 of a video file and its frame rate.

    "auto" tries decord and falls back to PyAV when decord is missing or cannot read the file.
    """
    if backend == "pyav":
        return _read_pyav(data)
    try:
        return _read_decord(data)
    except Exception:  # decord missing, or it cannot read this file
        if backend == "decord":
            raise
        return _read_pyav(data)


def _read_decord(data: bytes) -> tuple[np.ndarray, float]:
    import decord

    reader = decord.VideoReader(io.BytesIO(data), num_threads=1)
    return reader.get_batch(list(range(len(reader)))).asnumpy(), float(reader.get_avg_fps())


def _read_pyav(data: bytes) -> tuple[np.ndarray, float]:
    import av

    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
        rate = float(stream.average_rate or stream.guessed_rate or 25)
    return np.stack(frames) if frames else np.zeros((0, 1, 1, 3), np.uint8), rate
