"""Streaming video decode: only the sampled frames are kept, resized as decoding goes, and the
result equals decoding every frame first; audio from the same container."""

from __future__ import annotations

import io
import itertools
from fractions import Fraction

import av
import numpy as np
import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from mmchunk.data import decode
from mmchunk.data.decode import (
    DecodeError,
    SampledFrames,
    decode_container_audio,
    decode_video,
    read_frames,
)


def make_video(frames: int, fps: int = 25, size=(40, 56), tone_hz: float | None = None, rate=16_000) -> bytes:
    """An H.264 MP4 of `frames` distinct frames (a bright column that moves), with an AAC track of a
    sine at `tone_hz` when given (mono, `rate`)."""
    height, width = size
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        video = container.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "qp": "0"})
        video.width, video.height, video.pix_fmt = width, height, "yuv444p"
        audio = container.add_stream("aac", rate=rate, layout="mono") if tone_hz else None
        for i in range(frames):
            image = np.full((height, width, 3), 30, np.uint8)
            image[:, (3 * i) % width] = 250
            for packet in video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        if audio is not None:
            t = np.arange(int(frames / fps * rate)) / rate
            wave = (0.5 * np.sin(2 * np.pi * tone_hz * t)).astype(np.float32)
            for start in range(0, len(wave), 1024):
                block = av.AudioFrame.from_ndarray(
                    wave[None, start : start + 1024], format="fltp", layout="mono"
                )
                block.sample_rate, block.pts, block.time_base = rate, start, Fraction(1, rate)
                for packet in audio.encode(block):
                    container.mux(packet)
            for packet in audio.encode(None):
                container.mux(packet)
        for packet in video.encode(None):
            container.mux(packet)
    return buffer.getvalue()


def reference(
    data: bytes, fps: float, size: tuple[int, int], backend: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every frame decoded at full size; then, one time k / fps at a time while it lies inside the
    video, the frame whose span [i, i + 1) / native holds k / fps + half a frame; then resized."""
    frames, native = read_frames(data, backend)
    picked, times, k = [], [], 0
    while Fraction(k) / Fraction(fps) < Fraction(len(frames)) / Fraction(native):
        i = min(int(Fraction(k) / Fraction(fps) * Fraction(native) + Fraction(1, 2)), len(frames) - 1)
        picked.append(frames[i])
        times.append(k / fps)
        k += 1
    out = torch.from_numpy(np.stack(picked)).permute(0, 3, 1, 2)
    if tuple(out.shape[-2:]) != tuple(size):
        out = TF.resize(out, list(size), antialias=True)
    return out.contiguous(), torch.tensor(times, dtype=torch.float64).float()


@pytest.mark.parametrize("backend", ["decord", "pyav"])
@pytest.mark.parametrize(("count", "fps"), [(70, 10.0), (70, 25.0), (9, 60.0), (1, 10.0), (37, 7.3)])
def test_streaming_decode_equals_decoding_every_frame(backend, count, fps, monkeypatch):
    if backend == "decord":
        pytest.importorskip("decord")
    data = make_video(count)
    monkeypatch.setattr(decode, "VIDEO_GROUP", 4)  # several groups, and a last partial one
    sampled = SampledFrames(data, fps, backend)
    sizes = [len(group) for group in sampled]
    want, want_times = reference(data, fps, (48, 64), backend)
    assert sampled.count == count and sum(sizes) == len(sampled.index) == len(want)
    assert max(sizes) <= 4
    frames, times, duration = decode_video(data, fps, (48, 64), backend)
    assert torch.equal(frames, want) and torch.equal(times, want_times)
    assert duration == pytest.approx(count / 25)  # make_video's 25 fps


def test_unreadable_and_empty_video_are_one_line_errors():
    with pytest.raises(DecodeError, match="unreadable video"):
        decode_video(b"not a video at all", 10.0, (48, 64))
    with pytest.raises(DecodeError, match="unreadable video"):
        decode_video(make_video(30)[:400], 10.0, (48, 64))  # truncated before any frame


def test_container_audio_matches_the_track_and_is_none_without_one():
    data = make_video(50, tone_hz=440.0)  # 2 s
    wave, native = decode_container_audio(data, 16_000)
    assert native == 16_000 and abs(wave.numel() / 16_000 - 2.0) < 0.1
    spectrum = torch.fft.rfft(wave[2000:30000]).abs()
    assert abs(int(spectrum.argmax()) * 16_000 / 28000 - 440.0) < 2.0  # the tone, at its pitch
    resampled, _ = decode_container_audio(data, 8_000)
    assert abs(resampled.numel() - wave.numel() / 2) <= 2
    assert decode_container_audio(make_video(10), 16_000) is None
    with pytest.raises(DecodeError, match="unreadable audio"):
        decode_container_audio(b"garbage", 16_000)


def test_segment_of_a_video_with_sound_chunks_both_on_one_time_axis(tmp_path):
    from mmchunk.segment import plot_segments, segment_file

    path = tmp_path / "talk.mp4"
    path.write_bytes(make_video(75, tone_hz=300.0))  # 3 s
    report = segment_file(path)
    assert report["modality"] == "video" and report["modalities"] == ["video", "audio"]
    kinds = {c["modality"] for c in report["chunks"]}
    assert kinds == {"video", "audio"} and abs(report["duration"] - 3.0) < 0.1
    starts = [(c["t0"], c["modality"]) for c in report["chunks"]]
    assert starts == sorted(starts) and all(c["t1"] <= report["duration"] + 0.05 for c in report["chunks"])
    by = report["compression_by_modality"]
    assert set(by) == {"video", "audio"} and all(v >= 1.0 for v in by.values())
    plot_segments(report, tmp_path / "talk.png")
    assert (tmp_path / "talk.png").stat().st_size > 1000
    silent = tmp_path / "silent.mp4"
    silent.write_bytes(make_video(20))
    assert segment_file(silent)["modalities"] == ["video"]


@pytest.mark.parametrize(("count", "seconds"), [(1, 0.04), (7, 0.28)])
def test_video_chunks_are_contiguous_and_end_with_the_video(tmp_path, count, seconds):
    """Issue 15, row 8: a one-frame video lasts one of its own frames (not one model frame), and
    the video chunks tile [0, duration] exactly."""
    from mmchunk.segment import segment_file

    path = tmp_path / "short.mp4"
    path.write_bytes(make_video(count))  # 25 fps; the default model samples 10 fps
    report = segment_file(path)
    chunks = report["chunks"]
    assert report["duration"] == seconds and chunks[0]["t0"] == 0.0 and chunks[-1]["t1"] == seconds
    assert all(a["t1"] == b["t0"] for a, b in itertools.pairwise(chunks))
