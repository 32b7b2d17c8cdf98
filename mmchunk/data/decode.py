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
VIDEO_GROUP = 8  # sampled frames held at full size until they are resized: bounds decode memory


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


def decode_container_audio(data: bytes, sample_rate: int | None) -> tuple[torch.Tensor, int] | None:
    """The first audio stream of a video container (PyAV): mono float32 `[N]` resampled to
    `sample_rate` as `decode_audio` does (channels averaged, then torchaudio's resampler; None:
    kept at the stream's rate), and the stream's own rate; None when the container has no audio
    stream."""
    import av

    try:
        with av.open(io.BytesIO(data)) as container:
            if not container.streams.audio:
                return None
            stream = container.streams.audio[0]
            native = stream.rate
            to_float = av.AudioResampler(format="fltp", layout=stream.layout.name, rate=native)
            blocks = [
                out.to_ndarray() for frame in container.decode(stream) for out in to_float.resample(frame)
            ]
            blocks += [out.to_ndarray() for out in to_float.resample(None)]
    except Exception as exc:
        raise DecodeError(f"unreadable audio: {_one_line(exc)}") from None
    if not blocks or sum(b.shape[1] for b in blocks) == 0:
        raise DecodeError("audio has no samples")
    mono = torch.from_numpy(np.concatenate(blocks, axis=1).mean(axis=0).astype(np.float32))
    if not torch.isfinite(mono).all():
        raise DecodeError("audio contains NaN or infinite samples")
    if sample_rate is not None and native != sample_rate:
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


def decode_video(
    data: bytes, fps: float, size: tuple[int, int], backend: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Frames `[F, 3, H, W]` uint8 sampled at `fps` and resized to `size` (H, W), their times `[F]`,
    and the video's duration in s (its frame count over its own frame rate).

    Frame k is the file's frame nearest to time k / fps (`sample_index`), for every k / fps before
    the video's end. Only those frames are kept, and they are resized
    `VIDEO_GROUP` at a time as decoding goes on, so memory does not grow with the video's length
    or resolution beyond the sampled, resized frames. PyAV decodes ("auto"; decord when PyAV cannot
    open the file; `backend` "decord" or "pyav" forces one): it streams in bounded memory, where
    decord's `get_batch` grew with the video's length (1.4 GB over the process for 60 s of 720p).
    """
    resized = []
    try:
        sampled = SampledFrames(data, fps, backend)
        for group in sampled:
            picked = torch.from_numpy(group).permute(0, 3, 1, 2)
            if tuple(picked.shape[-2:]) != tuple(size):
                picked = TF.resize(picked, list(size), antialias=True)
            resized.append(picked.contiguous())
    except Exception as exc:
        raise DecodeError(f"unreadable video: {_one_line(exc)}") from None
    if sampled.count == 0:
        raise DecodeError("video has no frames")
    times = torch.arange(len(sampled.index), dtype=torch.float64) / fps
    return torch.cat(resized), times.float(), sampled.duration


def nearest_frame(k: np.ndarray | int, native_fps: float, fps: float) -> np.ndarray:
    """Index of the frame (at `native_fps`) nearest to time k / fps; a tie goes to the later frame."""
    return np.floor(np.asarray(k) * native_fps / fps + 0.5).astype(np.int64)


def sample_index(count: int, native_fps: float, fps: float) -> np.ndarray:
    """Indices `[K]` of the frames of a `count`-frame video at `native_fps` nearest to the times
    k / fps before its end (clamped to the last frame)."""
    duration = count / native_fps - 1e-9
    k = np.arange(int(np.ceil(max(duration, 0.0) * fps)) + 1)
    return np.minimum(nearest_frame(k[k / fps < duration], native_fps, fps), count - 1)


class SampledFrames:
    """Iterates over groups `[G, H, W, 3]` uint8 of the frames `sample_index` picks at `fps`,
    decoding the file once, in order; afterwards `count` is the file's number of frames, `duration`
    its length in s (`count` over its own frame rate) and `index` the indices picked."""

    def __init__(self, data: bytes, fps: float, backend: str = "auto") -> None:
        self.data, self.fps, self.backend = data, fps, backend
        self.count, self.duration, self.index = 0, 0.0, np.zeros(0, np.int64)

    def __iter__(self):
        if self.backend != "decord":
            import av

            try:
                container = av.open(io.BytesIO(self.data))
            except Exception:  # PyAV cannot open this file: decord may
                if self.backend == "pyav":
                    raise
            else:
                with container:
                    yield from self._pyav(container)
                return
        import decord

        yield from self._decord(decord.VideoReader(io.BytesIO(self.data), num_threads=1))

    def _decord(self, reader):
        self.count, native = len(reader), float(reader.get_avg_fps())
        self.duration = self.count / native
        self.index = sample_index(self.count, native, self.fps) if self.count else self.index
        for start in range(0, len(self.index), VIDEO_GROUP):
            yield reader.get_batch(self.index[start : start + VIDEO_GROUP].tolist()).asnumpy()

    def _pyav(self, container):
        from av.video.reformatter import VideoReformatter

        to_rgb = VideoReformatter()  # one for the whole file: ~4x faster than a new one per frame
        stream = container.streams.video[0]
        native = float(stream.average_rate or stream.guessed_rate or 25)
        pending, taken = [], 0
        for i, frame in enumerate(container.decode(stream)):
            image = None
            while nearest_frame(taken, native, self.fps) == i:
                image = to_rgb.reformat(frame, format="rgb24").to_ndarray() if image is None else image
                pending.append(image)
                taken += 1
                if len(pending) == VIDEO_GROUP:
                    yield np.stack(pending)
                    pending = []
            self.count, last = i + 1, frame
        self.duration = self.count / native
        if self.count:
            self.index = sample_index(self.count, native, self.fps)
            tail = to_rgb.reformat(last, format="rgb24").to_ndarray()  # times past the last frame's centre
            pending += [tail] * (len(self.index) - taken)
        for start in range(0, len(pending), VIDEO_GROUP):
            yield np.stack(pending[start : start + VIDEO_GROUP])


def read_frames(data: bytes, backend: str = "auto") -> tuple[np.ndarray, float]:
    """All frames `[F, H, W, 3]` uint8 of a video file at full size, and its frame rate: memory grows
    with length × resolution, so this is for short clips (the camera tests, and the reference that
    `decode_video`'s streaming path is tested against); `decode_video` is what the loader and
    `segment` use. "auto" tries decord and falls back to PyAV."""
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
