"""Data: corpus synthesis, shards, the loader's decoding, batching, fault handling and node splits."""

from __future__ import annotations

import io
import itertools
import json
import math
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import torchaudio.functional as AF

from mmchunk.data import DataConfig, expand_urls, make_dataset, make_loader, synth
from mmchunk.data.check import check_shards
from mmchunk.data.decode import DecodeError, decode_audio, decode_video
from mmchunk.data.energy import frame_rms
from mmchunk.data.loader import text_byte_times
from mmchunk.data.pack import pack_folder
from mmchunk.data.scene import encode_mp4
from mmchunk.data.shards import ShardWriter
from mmchunk.data.synth import synth_corpus, synth_sample


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """12 samples with video, 3 per shard: 4 train shards, no validation split."""
    out = tmp_path_factory.mktemp("corpus")
    synth_corpus(out, 12, video=True, seed=7, val_fraction=0.0, shard_size=3, workers=1, progress=False)
    return out


def members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}


def test_synthesis_is_deterministic_across_processes(tmp_path):
    key, first = synth_sample(3, 5, video=True)
    _, again = synth_sample(3, 5, video=True)
    assert key == "sample-000005"
    for ext in ("txt", "json", "flac"):
        assert first[ext] == again[ext], ext
    assert synth_sample(4, 5)[1]["json"] != first["json"]
    common = {"seed": 3, "shard_size": 4, "val_fraction": 0.34, "video": True, "progress": False}
    synth_corpus(tmp_path / "a", 6, workers=1, **common)
    synth_corpus(tmp_path / "b", 6, workers=2, **common)
    for split in ("train", "val"):
        shards_a = sorted((tmp_path / "a" / split).glob("*.tar"))
        assert [p.name for p in shards_a] == [p.name for p in sorted((tmp_path / "b" / split).glob("*.tar"))]
        for shard in shards_a:
            a, b = members(shard), members(tmp_path / "b" / split / shard.name)
            assert a.keys() == b.keys()
            for name in a:  # text, timings, audio and video: the same bytes
                assert a[name] == b[name], name
    sizes = json.loads((tmp_path / "a" / "val" / "sizes.json").read_text())
    assert sizes == {"val-000000.tar": 2}


def test_video_encoding_gives_the_same_bytes_every_time(monkeypatch):
    """x264's SIMD paths gave 4-5 streams for these frames in 60 encodes while torch threads ran between."""
    shots = []
    monkeypatch.setattr(synth, "encode_mp4", lambda frames, crf: shots.append((frames, crf)) or b"")
    synth_sample(3, 5, video=True)
    (frames, crf), threads = shots[0], torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        streams = set()
        for _ in range(60):
            torch.randn(300, 300) @ torch.randn(300, 300)
            streams.add(encode_mp4(frames, crf=crf))
    finally:
        torch.set_num_threads(threads)
    assert len(streams) == 1


def test_ground_truth_matches_the_signal():
    """The dry corpus (--clean): silences are digital silence, static video is frozen."""
    _, sample = synth_sample(0, 11, video=True, realistic=False)
    meta = json.loads(sample["json"])
    wave, rate = soundfile.read(io.BytesIO(sample["flac"]), dtype="float32")
    assert rate == 16_000 and wave.ndim == 1
    assert abs(len(wave) / rate - meta["duration"]) < 1e-3
    assert [w["word"] for w in meta["words"]] == meta["text"].split()
    starts = [w["start"] for w in meta["words"]]
    assert starts == sorted(starts) and all(w["end"] > w["start"] for w in meta["words"])
    for start, end in meta["silences"]:  # silences are silent: every 10 ms frame under −50 dBFS
        assert end - start >= 0.1
        seg = wave[round(start * rate) : round(end * rate)]
        assert frame_rms(seg, rate).max() < 10 ** (-50 / 20)
    assert meta["silences"][0][0] == 0.0 and meta["silences"][-1][1] == meta["duration"]
    first = meta["words"][0]["start"]
    assert abs(first - meta["silences"][0][1]) < 0.05  # speech starts when the lead silence ends
    phones = meta["phones"]  # espeak's phoneme events: contiguous within speech, pauses left out
    assert len(phones) > 2 * len(meta["words"]) and all(
        p["phone"] and not p["phone"].startswith("_") for p in phones
    )
    assert all(0 < p["start"] < p["end"] <= meta["duration"] for p in phones)
    assert all(a["end"] <= b["start"] for a, b in itertools.pairwise(phones))
    assert {w["start"] for w in meta["words"]} <= {
        p["start"] for p in phones
    }  # a word opens with its first phone
    for start, end in meta["silences"]:  # no phone inside a silence
        assert not any(start + 0.03 < p["start"] < end - 0.03 for p in phones)
    speech = wave[round(first * rate) : round(meta["words"][-1]["end"] * rate)]
    assert frame_rms(speech, rate).mean() > 10 ** (-30 / 20)
    frames, times, _ = decode_video(sample["mp4"], 25.0, (48, 64))
    change = (frames[1:].int() - frames[:-1].int()).abs().flatten(1)
    for start, end in meta["static"]:  # frozen picture: consecutive frames differ by codec noise only
        first, stop = round(start * 25), round(end * 25)
        inside = torch.tensor([first <= round(t * 25) < stop for t in times[1:].tolist()])
        assert change[inside].float().mean(1).max() < 1.0  # mean |difference| under one grey level
    assert change.amax(1).max() > 50  # the shape does move while speech is active


@pytest.mark.parametrize("index", [3, 11])
def test_realistic_sample_keeps_exact_ground_truth(index):
    """The default corpus plays the same utterance under a recorded condition: the ground truth is the
    dry corpus' own, pauses hold a noise floor, the level is the recorded one, static video moves a
    little (sensor noise, shake) but far less than the shape does."""
    _, dry = synth_sample(0, index, video=True, realistic=False)
    _, real = synth_sample(0, index, video=True)
    dry_meta, meta = json.loads(dry["json"]), json.loads(real["json"])
    for key in ("text", "words", "silences", "static", "duration"):
        assert meta[key] == dry_meta[key]
    condition = meta["condition"]
    assert set(condition) >= {"level_dbfs", "noise", "snr_db", "rt60", "telephone", "clip_fraction"}
    assert -40.0 <= condition["measured_dbfs"] <= condition["level_dbfs"] + 0.01 <= -9.99
    assert set(meta["camera"]) == {"noise_sigma", "flicker", "shake_px", "zoom", "crf"}
    wave, rate = soundfile.read(io.BytesIO(real["flac"]), dtype="float64")
    assert 20 * np.log10(np.sqrt(np.mean(wave**2))) == pytest.approx(condition["measured_dbfs"], abs=0.05)
    for start, end in meta["silences"]:  # a noise floor, not digital zero
        assert frame_rms(wave[round(start * rate) : round(end * rate)], rate).min() > 0
    frames, times, _ = decode_video(real["mp4"], 25.0, (48, 64))
    change = (frames[1:].int() - frames[:-1].int()).abs().flatten(1).float().mean(1)
    frame_index = [round(t * 25) for t in times[1:].tolist()]
    still = torch.tensor([any(a * 25 < i < b * 25 - 1 for a, b in meta["static"]) for i in frame_index])
    assert still.any() and (change[still] > 0).float().mean() > 0.9  # no longer bit-identical
    assert change[still].mean() < change[~still].mean()


def test_loader_round_trip(corpus):
    batches = list(make_loader(corpus / "train", DataConfig(max_seconds=12.0)))
    keys = [k for b in batches for k in b.keys]
    assert sorted(keys) == [f"sample-{i:06d}" for i in range(12)]
    for batch in batches:
        assert not batch.skipped
        seconds = batch.audio.lengths.sum().item() / 16_000
        assert seconds <= 12.0 or len(batch) == 1
        assert batch.audio.batch_size == batch.text.batch_size == batch.video.batch_size == len(batch)
        for i, meta in enumerate(batch.meta):
            assert bytes(batch.text.split()[i].tolist()).decode() == meta["text"]
            assert abs(batch.audio.lengths[i].item() - meta["duration"] * 16_000) <= 1
            assert abs(batch.video.lengths[i].item() - math.ceil(meta["duration"] * 25)) <= 1
        assert batch.text.t_end.max() <= max(m["duration"] for m in batch.meta) + 1e-4
        assert batch.video.values.dtype == torch.uint8 and batch.video.values.shape[1:] == (3, 48, 64)


def test_budget_and_sample_cap(corpus):
    for batch in make_dataset(corpus / "train", DataConfig(max_seconds=1e9, max_samples=5)):
        assert len(batch) <= 5
    sizes = [len(b) for b in make_dataset(corpus / "train", DataConfig(max_seconds=0.5))]
    assert sizes == [1] * 12  # every sample is longer than the budget: one per batch


def test_text_byte_times_rule():
    words = [{"word": "ab", "start": 1.0, "end": 1.5}, {"word": "c", "start": 2.0, "end": 2.25}]
    start, end = text_byte_times("ab c", words, 3.0)
    assert start.tolist() == [1.0, 1.0, 1.5, 2.0] and end.tolist() == [1.5, 1.5, 2.0, 2.25]
    start, end = text_byte_times("xyz", None, 3.0)  # no timings: bytes share the duration evenly
    assert start.tolist() == [0.0, 1.0, 2.0] and end.tolist() == [1.0, 2.0, 3.0]


def wav_bytes(wave: np.ndarray, rate: int, subtype: str = "PCM_16") -> bytes:
    buf = io.BytesIO()
    soundfile.write(buf, wave, rate, format="WAV", subtype=subtype)
    return buf.getvalue()


@pytest.mark.parametrize(("rate", "channels"), [(8000, 1), (22050, 1), (44100, 2), (48000, 2)])
def test_sample_rates_are_resampled(rate, channels):
    t = np.arange(int(0.5 * rate)) / rate
    tone = 0.5 * np.sin(2 * np.pi * 440.0 * t)
    wave = np.stack([tone] * channels, axis=1) if channels > 1 else tone
    audio, native = decode_audio(wav_bytes(wave.astype(np.float32), rate), 16_000)
    assert native == rate
    assert abs(audio.numel() - 8000) <= 1
    spectrum = torch.fft.rfft(audio).abs()
    assert abs(spectrum.argmax().item() * 16_000 / audio.numel() - 440.0) < 4.0
    assert abs(audio.abs().max().item() - 0.5) < 0.02


@pytest.mark.parametrize(
    ("rate", "channels", "fmt", "subtype"),
    [(8000, 1, "WAV", "PCM_16"), (16_000, 1, "OGG", "VORBIS"), (16_000, 1, "MP3", "MPEG_LAYER_III"),
     (44_100, 2, "FLAC", "PCM_16")],
)  # fmt: skip
def test_every_format_decodes_to_the_same_waveform(tmp_path, rate, channels, fmt, subtype):
    """Issue 15, row 7: one utterance stored at another rate, channel count or codec decodes to
    the same 16 kHz mono samples (no shift, no extra length, the same level), so chunk counts can
    only differ by what the codec really changed."""
    gen = torch.Generator().manual_seed(0)
    t = torch.arange(32_000) / 16_000
    envelope = (torch.sin(2 * torch.pi * 3.0 * t) > 0).float()  # syllable-like bursts
    wave = (
        0.3
        * envelope
        * sum(
            torch.sin(2 * torch.pi * f * t + float(torch.rand(1, generator=gen) * 6)) for f in (220, 450, 900)
        )
    )
    stored = AF.resample(wave, 16_000, rate) if rate != 16_000 else wave
    data = torch.stack([stored, 0.5 * stored], 1) if channels == 2 else stored
    soundfile.write(tmp_path / "u", data.numpy(), rate, format=fmt, subtype=subtype)
    decoded, native = decode_audio((tmp_path / "u").read_bytes(), 16_000)
    assert native == rate and abs(decoded.numel() - wave.numel()) <= 1
    n = min(decoded.numel(), wave.numel())
    level = 0.75 if channels == 2 else 1.0  # channels are averaged
    lags = range(-40, 41)
    best = max(lags, key=lambda k: float((torch.roll(decoded[:n], k) * wave[:n]).sum()))
    assert best == 0
    assert torch.corrcoef(torch.stack([decoded[:n], wave[:n]]))[0, 1] > 0.99
    assert decoded.pow(2).mean().sqrt() / wave.pow(2).mean().sqrt() == pytest.approx(level, rel=0.05)


class _WritesAFile:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_every_planted_fault_is_reported_by_key(corpus, tmp_path):
    good = members(sorted((corpus / "train").glob("*.tar"))[0])
    key = "sample-000000"
    base = {ext: good[f"{key}.{ext}"] for ext in ("flac", "txt", "json")}
    canary = tmp_path / "unpickled"
    faults = {
        "truncated-flac": {**base, "flac": base["flac"][: len(base["flac"]) // 3]},
        "zero-length": {**base, "flac": b"", "wav": wav_bytes(np.zeros(0, np.float32), 16_000)},
        "bad-utf8": {**base, "txt": b"\xff\xfe broken \xc3"},
        "no-audio": {"txt": base["txt"], "json": base["json"]},
        "bad-mp4": {**base, "mp4": b"\x00\x00\x00\x18ftypmp42 not really a video"},
        "nan-audio": {
            **base,
            "flac": b"",
            "wav": wav_bytes(np.array([0.1, np.nan, 0.2], np.float32), 16_000, "FLOAT"),
        },
    }
    faults["zero-length"].pop("flac")
    faults["nan-audio"].pop("flac")
    shards = tmp_path / "shards"
    with ShardWriter(shards, "bad", shard_size=100) as writer:
        writer.write("ok-first", base)
        for name, sample in faults.items():
            writer.write(name, sample)
        writer.write("pickled", {**base, "pyd": pickle.dumps(_WritesAFile(canary))})
        writer.write("ok-last", base)
    with ShardWriter(shards, "cut", shard_size=100) as writer:
        for i in range(3):
            writer.write(f"cut-{i}", base)
    cut = shards / "cut-000000.tar"
    data = cut.read_bytes()
    cut.write_bytes(data[: data.index(b"cut-2.json") + 900])  # ends inside cut-2's flac member
    report = check_shards(str(shards))
    reasons = {e["key"]: e["reason"] for e in report["errors"]}
    assert report["ok"] == 5  # ok-first, pickled (pickle ignored), ok-last, cut-0, cut-1
    assert not canary.exists()
    assert "unreadable audio" in reasons["truncated-flac"]
    assert "no samples" in reasons["zero-length"]
    assert "UTF-8" in reasons["bad-utf8"]
    assert "no audio member" in reasons["no-audio"]
    assert "unreadable video" in reasons["bad-mp4"]
    assert "NaN" in reasons["nan-audio"]
    assert "cut off" in reasons["cut-2"]
    assert "shard unreadable after 2 samples" in reasons[None]
    assert report["skipped"] == len(faults) + 1
    for error in report["errors"]:
        assert "\n" not in error["reason"] and error["shard"].endswith(".tar")


def test_expand_urls(corpus):
    train = corpus / "train"
    assert expand_urls(str(train)) == [str(p) for p in sorted(train.glob("*.tar"))]
    assert expand_urls(f"{train}/train-{{000001..000002}}.tar") == [
        f"{train}/train-000001.tar",
        f"{train}/train-000002.tar",
    ]
    assert expand_urls("pipe:cat x.tar") == ["pipe:cat x.tar"]
    with pytest.raises(FileNotFoundError, match="no such shard"):
        expand_urls(str(train / "nope.tar"))


def test_streams_from_pipes_and_object_stores(corpus):
    import fsspec

    shard = sorted((corpus / "train").glob("*.tar"))[0]
    with fsspec.open("memory://bucket/train-000000.tar", "wb") as f:
        f.write(shard.read_bytes())
    local = [k for b in make_dataset(str(shard)) for k in b.keys]
    assert [k for b in make_dataset(f"pipe:cat {shard}") for k in b.keys] == local
    assert [k for b in make_dataset("memory://bucket/train-000000.tar") for k in b.keys] == local


def test_nodes_and_workers_read_disjoint_shards(corpus, monkeypatch):
    seen = []
    for rank in range(2):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        loader = make_loader(corpus / "train", DataConfig(max_samples=2), num_workers=2)
        seen.append({k for batch in loader for k in batch.keys})
    assert not seen[0] & seen[1]
    assert sorted(seen[0] | seen[1]) == [f"sample-{i:06d}" for i in range(12)]
    assert len(seen[0]) == len(seen[1]) == 6


def test_resampled_mode_gives_every_rank_the_same_number_of_batches(corpus, monkeypatch):
    counts = []
    for rank in range(2):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        loader = make_loader(corpus / "train", DataConfig(max_samples=2), resampled=True, epoch_batches=5)
        counts.append(sum(1 for _ in loader))
    assert counts == [5, 5]


def test_pack_folder_reports_every_skip(corpus, tmp_path):
    src = tmp_path / "media"
    (src / "sub").mkdir(parents=True)
    good = members(sorted((corpus / "train").glob("*.tar"))[0])
    (src / "a.flac").write_bytes(good["sample-000000.flac"])
    (src / "a.txt").write_bytes(good["sample-000000.txt"])
    (src / "sub" / "b.wav").write_bytes(wav_bytes(np.zeros(800, np.float32) + 0.1, 8000))
    (src / "sub" / "b.txt").write_text("hello")
    (src / "sub" / "b.flac").write_bytes(good["sample-000001.flac"])
    (src / "c.wav").write_bytes(b"RIFF garbage")
    (src / "c.txt").write_text("orphan")
    (src / "model.pth").write_bytes(b"\x80\x04pickle")
    report = pack_folder(src, tmp_path / "out", name="media")
    reasons = {Path(p).name: r for p, r in report.skipped}
    assert report.written == 2
    assert "second audio" in reasons["b.wav"]
    assert "unreadable audio" in reasons["c.wav"]
    assert "no audio or video" in reasons["c.txt"]
    assert "extension .pth" in reasons["model.pth"]
    result = check_shards(str(tmp_path / "out"))
    assert result["ok"] == 2 and result["skipped"] == 0
    loaded = next(iter(make_dataset(tmp_path / "out")))
    assert sorted(loaded.keys) == ["a", "sub__b"]


def test_decode_errors_are_one_line():
    with pytest.raises(DecodeError, match="unreadable audio") as info:
        decode_audio(b"not audio at all", 16_000)
    assert "\n" not in str(info.value)


def test_model_inputs_never_read_the_true_timings(corpus, tmp_path):
    """Corrupt every word, phone, silence and static time in the shards' JSON: the batches, and the
    model's outputs on them (the aligner's CTC posteriors too), stay bit-identical (the ground truth
    is for scoring only)."""
    from mmchunk.model import ChunkFusionModel
    from mmchunk.training import batch_inputs

    def shifted(spans: list) -> list:
        return [[s + 0.37, e + 0.91] for s, e in spans]

    def shifted_words(words: list[dict]) -> list[dict]:
        return [{**w, "start": w["start"] + 0.37, "end": w["end"] + 0.91} for w in words]

    for shard in sorted((corpus / "train").glob("*.tar")):
        with tarfile.open(shard) as src, tarfile.open(tmp_path / shard.name, "w") as dst:
            for member in src:
                data = src.extractfile(member).read()
                if member.name.endswith(".json"):
                    meta = json.loads(data)
                    meta["words"], meta["phones"] = (
                        shifted_words(meta["words"]),
                        shifted_words(meta["phones"]),
                    )
                    meta["silences"], meta["static"] = shifted(meta["silences"]), shifted(meta["static"])
                    data = json.dumps(meta).encode()
                member.size = len(data)
                dst.addfile(member, io.BytesIO(data))
    config = DataConfig(max_samples=6, video_fps=10.0)
    torch.manual_seed(0)
    encoders = {"audio": {}, "text": {}, "video": {}}
    model = ChunkFusionModel(dim=32, embed_dim=16, heads=2, encoders=encoders, aligner={}).eval()
    pairs = zip(make_dataset(corpus / "train", config), make_dataset(tmp_path, config), strict=True)
    for true, corrupt in pairs:
        assert true.meta != corrupt.meta
        for m in ("audio", "text", "video"):
            a, b = getattr(true, m), getattr(corrupt, m)
            names = ("values", "cu_seqlens") if m == "audio" else ("values", "cu_seqlens", "t_start", "t_end")
            for name in names:
                assert torch.equal(getattr(a, name), getattr(b, name)), (m, name)
        assert true.audio.t_start is None  # an audio sample's time is its index / the sample rate
        with torch.no_grad():
            out_true, out_corrupt = model(batch_inputs(true)), model(batch_inputs(corrupt))
        for name in ("audio_embedding", "text_embedding"):
            assert torch.equal(getattr(out_true, name), getattr(out_corrupt, name)), name
        assert all(
            torch.equal(out_true.chunks[m].values, out_corrupt.chunks[m].values) for m in out_true.chunks
        )
        assert torch.equal(out_true.ctc.values, out_corrupt.ctc.values)


def test_prefetched_keeps_order_raises_and_stops():
    import threading

    from mmchunk.data.epochs import prefetched

    assert list(prefetched(iter(range(50)), 1)) == list(range(50))
    assert list(prefetched(iter([]), 3)) == []

    def failing():
        yield 1
        raise ValueError("bad shard x.tar")

    got = prefetched(failing(), 2)
    assert next(got) == 1
    with pytest.raises(ValueError, match="bad shard"):
        next(got)

    produced = []

    def endless():
        while True:
            produced.append(len(produced))
            yield produced[-1]

    early = prefetched(endless(), 2)
    assert [next(early) for _ in range(3)] == [0, 1, 2]
    early.close()
    assert not any(t.name == "mmchunk-prefetch" for t in threading.enumerate())
    assert len(produced) <= 3 + 2 + 1  # at most the buffer and one item in hand beyond what was taken


def test_prefetching_loader_gives_the_same_batches(tmp_path):
    synth_corpus(tmp_path, 6, seed=4, val_fraction=0.0, shard_size=2, workers=1, progress=False)
    config = DataConfig(max_samples=2, shuffle_buffer=4, cache=True)
    for epoch in range(2):
        keys = [
            [b.keys for b in make_loader(tmp_path / "train", config, shuffle_shards=True, prefetch=p,
                                         position=lambda e=epoch: (e, 1))]
            for p in (0, 2)
        ]  # fmt: skip
        assert keys[0] == keys[1] and len(keys[0]) == 2


@pytest.mark.parametrize(("prefetch", "workers", "message"), [(-1, 0, "≥ 0"), (2, 1, "num_workers=0")])
def test_prefetch_rejects_what_it_cannot_do(tmp_path, prefetch, workers, message):
    synth_corpus(tmp_path, 2, seed=4, val_fraction=0.0, workers=1, progress=False)
    with pytest.raises(ValueError, match=message):
        make_loader(tmp_path / "train", DataConfig(), num_workers=workers, prefetch=prefetch)
