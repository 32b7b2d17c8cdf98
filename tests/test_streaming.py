"""Streaming segmentation (issue 16): the chunks of audio fed block by block equal the chunks of the
whole recording in one pass, for any block size; the causal encoder option; bad configurations."""

from __future__ import annotations

import itertools
import json

import pytest
import soundfile
import torch

import mmchunk.segment as segment
from mmchunk.cli import main
from mmchunk.encoders.audio import causal_means
from mmchunk.model import ChunkFusionModel
from mmchunk.ragged import Ragged
from mmchunk.streaming import StreamingSegmenter

RATE = 16_000
AUDIO = {"depth": 2, "stem": "logmel", "band_mean": True, "frame_ms": 40.0, "window_ms": 60.0,
         "context": 1, "level": "causal"}  # fmt: skip


def causal_model(window: int = 2, **audio) -> ChunkFusionModel:
    """A causal audio path whose routing cuts often: a random (tied) routing projection."""
    torch.manual_seed(0)
    model = ChunkFusionModel(dim=64, embed_dim=32, heads=2, backbone={"depth": 1},
                             encoders={"audio": {**AUDIO, **audio}, "text": {"depth": 1}},
                             routing={"windows": {"audio": window}}).eval()  # fmt: skip
    with torch.no_grad():
        model.chunker.q_proj.weight.copy_(torch.randn(64, 64))
    return model


def patchy_audio(seconds: float = 6.0, seed: int = 1) -> torch.Tensor:
    """Noise, drifts and tones of random lengths and levels, one after another."""
    gen = torch.Generator().manual_seed(seed)
    pieces, total = [], 0
    while total < seconds * RATE:
        n = int(torch.randint(800, 4000, (1,), generator=gen))
        level = float(torch.rand(1, generator=gen)) * 0.3
        kind = len(pieces) % 3
        x = torch.randn(n, generator=gen) * level
        if kind == 1:
            x = torch.cumsum(x, 0) * 0.02
        if kind == 2:
            x = level * torch.sin(torch.arange(n) * float(torch.rand(1, generator=gen)) * 0.5)
        pieces.append(x)
        total += n
    return torch.cat(pieces)[: int(seconds * RATE) - 77]  # not a whole number of frames


def offline(model, wave, tmp_path, monkeypatch) -> list[dict]:
    path = tmp_path / "whole.wav"
    soundfile.write(path, wave.numpy(), RATE, subtype="FLOAT")
    monkeypatch.setattr(segment, "load_model", lambda checkpoint: (model, "test"))
    return segment.segment_file(path)["chunks"]


def streamed(model, wave, sizes) -> list[dict]:
    segmenter, chunks, start = StreamingSegmenter(model), [], 0
    for size in sizes:
        chunks += segmenter.feed(wave[start : start + size])
        start += size
    assert start >= wave.numel()
    return chunks + segmenter.flush()


@pytest.mark.parametrize("block", [320, round(0.37 * RATE), RATE])
def test_streaming_equals_one_pass(block, tmp_path, monkeypatch):
    model, wave = causal_model(), patchy_audio()
    want = offline(model, wave, tmp_path, monkeypatch)
    assert len(want) > 20  # the routing really cuts
    got = streamed(model, wave, [block] * (wave.numel() // block + 1))
    assert got == want
    assert all(a["t1"] == b["t0"] for a, b in itertools.pairwise(got))
    assert got[-1]["t1"] == round(wave.numel() / RATE, 4)


def test_blocks_of_one_sample_and_of_random_sizes(tmp_path, monkeypatch):
    model, wave = causal_model(), patchy_audio(1.2, seed=3)
    want = offline(model, wave, tmp_path, monkeypatch)
    assert streamed(model, wave, [1] * wave.numel()) == want
    gen = torch.Generator().manual_seed(0)
    sizes = torch.randint(0, 3000, (wave.numel() // 1000 + 10,), generator=gen).tolist()
    assert streamed(model, wave, [*sizes, wave.numel()]) == want


@pytest.mark.parametrize(("context", "window"), [(0, 1), (2, 3)])
def test_other_context_and_routing_windows(context, window, tmp_path, monkeypatch):
    """The stream's inner frames read slices and its ends gather: both agree with one pass for
    other context and routing-window widths."""
    model, wave = causal_model(window, context=context), patchy_audio(2.0, seed=5)
    want = offline(model, wave, tmp_path, monkeypatch)
    assert len(want) > 5
    assert streamed(model, wave, [320] * (wave.numel() // 320 + 1)) == want
    assert streamed(model, wave, [7_777] * (wave.numel() // 7_777 + 1)) == want


def test_chunks_come_out_while_the_stream_goes_on(tmp_path, monkeypatch):
    """Every chunk is emitted at most `latency_s` of audio after its end."""
    model, wave = causal_model(), patchy_audio()
    segmenter, fed = StreamingSegmenter(model), 0
    for start in range(0, wave.numel(), 160):
        fed += wave[start : start + 160].numel()
        for chunk in segmenter.feed(wave[start : start + 160]):
            assert fed / RATE - chunk["t1"] <= segmenter.latency_s + 0.01
    assert segmenter.latency_s == pytest.approx(0.13)


def test_a_long_file_with_a_causal_model_is_streamed(tmp_path, monkeypatch):
    model, wave = causal_model(), patchy_audio(3.0)
    want = offline(model, wave, tmp_path, monkeypatch)
    report = segment.segment_file(tmp_path / "whole.wav", window_s=1.0)  # "long": over the window
    assert report["chunks"] == want and report["windows"] == 1


def test_edge_streams(tmp_path, monkeypatch):
    model = causal_model()
    assert StreamingSegmenter(model).flush() == []  # nothing fed
    short = torch.full((100,), 0.1)  # shorter than one frame
    assert streamed(model, short, [100]) == [{"modality": "audio", "t0": 0.0, "t1": 0.0063}]
    silence = torch.zeros(RATE)
    assert streamed(model, silence, [320] * 50) == offline(model, silence, tmp_path, monkeypatch)
    with pytest.raises(ValueError, match="mono samples"):
        StreamingSegmenter(model).feed(torch.zeros(2, 10))


def test_causal_level_depends_on_the_past_only_and_not_on_the_gain():
    encoder = causal_model().encoders["audio"]
    wave = patchy_audio(2.0)
    with torch.no_grad():
        whole = encoder(Ragged.from_list([wave])).values
        prefix = encoder(Ragged.from_list([wave[:16_000]])).values
        quiet = encoder(Ragged.from_list([0.1 * wave])).values
    left = (encoder.width - encoder.hop) // 2
    complete = (16_000 + left - encoder.width) // encoder.hop + 1  # frames whose window is all in
    frames = complete - encoder.context  # the context frames look ahead
    torch.testing.assert_close(prefix[:frames], whole[:frames], atol=1e-5, rtol=0)
    torch.testing.assert_close(quiet, whole, atol=1e-4, rtol=0)
    values = torch.tensor([[1.0], [3.0], [5.0], [2.0], [4.0]])
    means = causal_means(values, torch.tensor([0, 3, 5], dtype=torch.int32))
    assert means.squeeze(1).tolist() == [1.0, 2.0, 3.0, 2.0, 3.0]  # per sequence, restarting


def test_non_causal_configurations_are_refused():
    with pytest.raises(ValueError, match="level: causal"):
        StreamingSegmenter(causal_model(level="recording"))
    with pytest.raises(ValueError, match="recurrent audio mixer"):
        StreamingSegmenter(causal_model(mixer="attention"))
    torch.manual_seed(0)
    encoders = {"audio": AUDIO, "text": {"depth": 1}}
    centred = ChunkFusionModel(
        dim=32, embed_dim=16, heads=2, backbone={"depth": 1}, encoders=encoders, routing={"center": ["audio"]}
    )
    with pytest.raises(ValueError, match="centre"):
        StreamingSegmenter(centred)
    gained = ChunkFusionModel(
        dim=32, embed_dim=16, heads=2, backbone={"depth": 1}, encoders=encoders, routing={"gain": ["audio"]}
    )
    with pytest.raises(ValueError, match="cannot scale the audio routing"):
        StreamingSegmenter(gained)
    with pytest.raises(ValueError, match="level must be one of"):
        causal_model(stem="conv")


def test_segment_stream_command(tmp_path, monkeypatch, capsys):
    model, wave = causal_model(), patchy_audio(2.0)
    want = offline(model, wave, tmp_path, monkeypatch)
    import mmchunk.checkpoint

    monkeypatch.setattr(mmchunk.checkpoint, "load_model", lambda checkpoint: (model, "test"))
    path = tmp_path / "whole.wav"
    assert main(["segment", str(path), "--stream", "--json", "--block-ms", "37"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line) for line in lines] == want
    monkeypatch.undo()
    assert main(["segment", str(path), "--stream"]) == 2  # the untrained default is not causal
    assert "level: causal" in capsys.readouterr().err
    assert main(["segment", str(path), "--stream", "--plot", str(tmp_path / "p.png")]) == 2
    assert "leave out --stream" in capsys.readouterr().err
    monkeypatch.setattr(mmchunk.checkpoint, "load_model", lambda checkpoint: (model, "test"))
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "broken.wav").write_bytes(b"RIFF\x10\x00\x00\x00garbage")
    bad = wave.clone()
    bad[5000] = float("nan")
    soundfile.write(tmp_path / "nan.wav", bad.numpy(), RATE, subtype="FLOAT")
    for name, reason in [("empty", "the file is empty"), ("broken", "unreadable audio"),
                         ("nan", "NaN or infinite samples")]:  # fmt: skip
        for stream in (["--stream"], []):  # streamed and in one pass: the same one line
            assert main(["segment", str(tmp_path / f"{name}.wav"), *stream]) == 2
            err = capsys.readouterr().err
            assert f"{tmp_path / name}.wav: " in err and reason in err and err.count("\n") == 1
