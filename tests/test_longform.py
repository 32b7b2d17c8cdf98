"""Long recordings: block-wise reading and resampling, streamed level statistics, and windowed
chunking whose boundaries equal one pass over the whole recording."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import soundfile
import torch

from mmchunk.data.decode import DecodeError, decode_audio
from mmchunk.encoders.audio import frame_waveforms
from mmchunk.longform import (
    audio_length,
    long_audio_boundaries,
    long_audio_chunks,
    long_audio_ctc,
    read_blocks,
    streamed_level_stats,
    waveform_envelope,
)
from mmchunk.model import ChunkFusionModel
from mmchunk.ragged import Ragged
from mmchunk.segment import segment_file

RATE = 16_000
AUDIO = {"depth": 2, "stem": "logmel", "band_mean": True, "frame_ms": 40.0, "window_ms": 60.0, "context": 1}


def recording(path, seconds: float, rate: int, channels: int = 1, seed: int = 0):
    """Tone bursts (a gliding pitch) over a noise floor, with pauses: something to chunk."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    on = (np.sin(2 * np.pi * 0.7 * t + seed) > 0.2).astype(np.float32)
    tone = 0.3 * on * np.sin(2 * np.pi * (200 + 100 * np.sin(2 * np.pi * 3 * t)) * t)
    wave = tone[:, None] + 0.01 * rng.standard_normal((t.size, channels))
    soundfile.write(path, wave.astype(np.float32), rate)
    return path


def model(ctc: dict | None = None, **audio) -> ChunkFusionModel:
    torch.manual_seed(0)
    encoders = {"audio": {**AUDIO, **audio}, "text": {"depth": 1}}
    network = {"backbone": {"depth": 1}, "routing": {"windows": {"audio": 2}}, **(ctc or {})}
    return ChunkFusionModel(dim=32, embed_dim=16, heads=2, encoders=encoders, **network).eval()


@pytest.mark.parametrize(
    ("rate", "channels", "ext"),
    [(16_000, 1, "flac"), (44_100, 2, "wav"), (22_050, 1, "ogg"), (8_000, 1, "wav")],
)
def test_blocks_are_the_whole_file(tmp_path, rate, channels, ext):
    path = recording(tmp_path / f"a.{ext}", 3.3, rate, channels)
    whole, _ = decode_audio(path.read_bytes(), RATE)
    for block in (0.05, 0.37, 10.0):
        pieces = list(read_blocks(path, RATE, block))
        assert len(pieces) >= int(3.3 / block)  # really read block by block
        if rate == RATE:  # blocks of exactly the asked size, whatever the reads underneath
            assert {len(p) for p in pieces[:-1]} <= {round(block * RATE)}
        torch.testing.assert_close(torch.cat(pieces), whole, atol=2e-7, rtol=0)
    assert audio_length(path, RATE) == whole.numel()
    times, peaks = waveform_envelope(path, RATE, bins=50)
    assert len(times) == len(peaks) <= 50 and float(peaks.max()) == pytest.approx(float(whole.abs().max()))


def test_unreadable_files_name_the_file(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "junk.flac").write_bytes(b"not audio at all")
    with pytest.raises(DecodeError, match=r"empty.wav: the file is empty$"):
        audio_length(tmp_path / "empty.wav", RATE)
    with pytest.raises(DecodeError) as error:
        audio_length(tmp_path / "junk.flac", RATE)
    assert str(error.value) == f"{tmp_path / 'junk.flac'}: unreadable audio: Format not recognised."


@pytest.mark.parametrize("audio", [{}, {"band_mean": False}, {"stem": "conv"}])
def test_streamed_stats_equal_one_pass(tmp_path, audio):
    path = recording(tmp_path / "a.flac", 7.0, 44_100)
    encoder = model(**audio).encoders["audio"]
    wave, _ = decode_audio(path.read_bytes(), RATE)
    frames, cu, _ = frame_waveforms(Ragged.from_list([wave]), encoder.hop, encoder.width)
    one_pass = encoder.level_stats(encoder.frame_power(frames), cu)
    pieces = lambda: read_blocks(path, RATE, 0.9)
    streamed = streamed_level_stats(encoder, pieces, wave.numel(), window=13)
    assert one_pass.keys() == streamed.keys()
    for key in one_pass:
        torch.testing.assert_close(streamed[key], one_pass[key], rtol=1e-5, atol=1e-5)


def one_pass_starts(m: ChunkFusionModel, path) -> torch.Tensor:
    wave, _ = decode_audio(path.read_bytes(), RATE)
    with torch.no_grad():
        feats = m.encoders["audio"](Ragged.from_list([wave]))
        tagged = Ragged(
            feats.values, feats.cu_seqlens, modality=torch.zeros(feats.num_tokens, dtype=torch.long)
        )
        return m.chunker(tagged).boundary_mask.nonzero().squeeze(1)


@pytest.mark.parametrize(("window_s", "context_s"), [(3.0, 1.0), (1.3, 0.5), (100.0, 1.0)])
def test_windowed_boundaries_equal_one_pass(tmp_path, window_s, context_s):
    path = recording(tmp_path / "a.flac", 20.0, 44_100)
    m = model()
    starts, frames, length = long_audio_boundaries(
        m, path, window_s=window_s, context_s=context_s, block_s=1.1
    )
    expected = one_pass_starts(m, path)
    assert frames == -(-length // m.encoders["audio"].hop) and length == 20 * RATE
    assert 10 < expected.numel() < frames and torch.equal(starts, expected)


@pytest.mark.parametrize("pooling", ["mean", "boundary"])
def test_long_audio_chunks_equal_the_chunks_of_one_pass(tmp_path, pooling):
    path = recording(tmp_path / "a.wav", 9.0, RATE, seed=2)
    m = model()
    m.chunker.pooling = pooling
    wave, _ = decode_audio(path.read_bytes(), RATE)
    with torch.no_grad():
        feats = m.encoders["audio"](Ragged.from_list([wave]))
        modality = torch.zeros(feats.num_tokens, dtype=torch.long)
        tagged = Ragged(
            feats.values, feats.cu_seqlens, t_start=feats.t_start, t_end=feats.t_end, modality=modality
        )
        routed = m.chunker(tagged)
        expected = routed.chunks
    got, probs = long_audio_chunks(m, wave, window_s=1.7, context_s=1.0)
    assert got.cu_seqlens.tolist() == expected.cu_seqlens.tolist() and got.num_tokens > 5
    torch.testing.assert_close(got.values, expected.values, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(probs, routed.probs[routed.boundary_mask])
    for name in ("t_start", "t_end", "modality"):
        torch.testing.assert_close(getattr(got, name), getattr(expected, name))


@pytest.mark.parametrize(
    ("ctc", "window_s"),
    [({"aligner": {"probe": True}}, 1.1), ({"aligner": {"probe": True}}, 0.3),
     ({"aligner": {"probe": True, "mixer": "recurrent"}}, 0.3),
     ({"aligner": {}, "backbone": {"depth": 1, "stages": 2}}, 1.1)],
)  # fmt: skip
def test_long_audio_ctc_equals_the_ctc_of_one_pass(tmp_path, ctc, window_s):
    """The CTC head's log-probabilities window by window equal one pass's, also with windows
    shorter than the probe's reach (0.3 s: 7 frames, the probe sees 16 either side)."""
    path = recording(tmp_path / "a.wav", 7.0, RATE, seed=3)
    m = model(ctc)
    with torch.no_grad():  # dechunk's residual path starts at zero: give it weight, so it counts
        m.chunker.residual_proj.weight.normal_(0, 0.2)
    wave, _ = decode_audio(path.read_bytes(), RATE)
    with torch.no_grad():
        expected = m.encode({"audio": Ragged.from_list([wave])}).ctc
        chunks, probs = long_audio_chunks(m, wave, window_s=window_s, context_s=1.0)
        mixed, _ = m.main(chunks)
        got = long_audio_ctc(m, wave, mixed, probs, window_s=window_s, context_s=1.0)
    frames = -(-wave.numel() // 640)
    assert got.values.shape == expected.values.shape and got.cu_seqlens.tolist() == [0, frames]
    torch.testing.assert_close(got.values, expected.values, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got.t_start, expected.t_start)
    torch.testing.assert_close(got.t_end, expected.t_end)


def test_segment_of_a_long_file_is_one_pass_with_exact_contiguous_times(tmp_path):
    path = recording(tmp_path / "long.wav", 12.37, 22_050, seed=1)
    windowed = segment_file(path, None, window_s=2.0, context_s=1.0)  # the untrained default model
    single = segment_file(path, None, window_s=100.0)
    assert windowed["windows"] == 7 and single["windows"] == 1
    assert windowed["chunks"] == single["chunks"] and len(single["chunks"]) > 3
    chunks = windowed["chunks"]
    assert chunks[0]["t0"] == 0.0 and chunks[-1]["t1"] == windowed["duration"] == round(12.37, 4)
    assert all(a["t1"] == b["t0"] for a, b in itertools.pairwise(chunks))


def test_routing_center_on_audio_has_no_windowed_form(tmp_path):
    path = recording(tmp_path / "a.wav", 2.0, RATE)
    torch.manual_seed(0)
    centred = ChunkFusionModel(
        dim=32,
        embed_dim=16,
        heads=2,
        backbone={"depth": 1},
        routing={"center": ["audio"]},
        encoders={"audio": AUDIO, "text": {"depth": 1}},
    )
    with pytest.raises(ValueError, match="routing_center for audio"):
        long_audio_boundaries(centred, path, window_s=0.5)
