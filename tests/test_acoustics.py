"""Recording conditions and training-time augmentation: each effect measured against its definition."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmchunk.data import DataConfig, Sample, Skipped
from mmchunk.data.acoustics import (
    add_noise,
    apply_condition,
    clip,
    coloured_noise,
    draw_condition,
    reverberate,
    rms_dbfs,
    room_impulse_response,
    set_level,
    telephone,
)
from mmchunk.data.augment import AugmentConfig, augment_samples, augment_waveform, sample_rng
from mmchunk.data.epochs import EpochSeed
from mmchunk.training import ShardDataModule

RATE = 16_000


def _band_power(x: np.ndarray, lo: float, hi: float) -> float:
    spectrum = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / RATE)
    return float(spectrum[(freqs >= lo) & (freqs < hi)].mean())


@pytest.mark.parametrize(("colour", "beta"), [("white", 0.0), ("pink", 1.0), ("brown", 2.0)])
def test_coloured_noise_has_its_spectral_slope(colour, beta):
    noise = coloured_noise(4 * RATE, colour, np.random.default_rng(0))
    assert np.sqrt(np.mean(noise**2)) == pytest.approx(1.0, rel=1e-4) and abs(noise.mean()) < 1e-3
    # power ∝ 1/f^β: one decade up, 10 dB·β down (octave bands 100–200 Hz vs 1–2 kHz)
    drop_db = 10 * np.log10(_band_power(noise, 100, 200) / _band_power(noise, 1000, 2000))
    assert drop_db == pytest.approx(10 * beta, abs=1.5)
    assert coloured_noise(0, colour, np.random.default_rng(0)).shape == (0,)


def test_add_noise_reaches_the_snr():
    rng = np.random.default_rng(1)
    speech = torch.from_numpy(rng.standard_normal(RATE)).float() * 0.1
    noise = coloured_noise(RATE, "pink", rng)
    for snr in (0.0, 10.0, 30.0):
        mixed = add_noise(speech, noise, snr)
        measured = 10 * np.log10(float(speech.pow(2).sum()) / float((mixed - speech).pow(2).sum()))
        assert measured == pytest.approx(snr, abs=1e-3)
    silent = add_noise(torch.zeros(100), np.ones(100, np.float32), 10.0)  # no power to compare: −60 dBFS
    assert rms_dbfs(silent) == pytest.approx(-60.0, abs=1e-3)


def test_room_keeps_word_times_and_reverberates():
    rir = room_impulse_response(0.5, 0)
    assert rir[0] == 1.0 and np.abs(rir).max() == 1.0  # direct path first, unit gain
    click = torch.zeros(RATE)
    click[4000] = 1.0
    wet = reverberate(click, rir)
    assert wet.shape == click.shape and int(torch.nonzero(wet.abs() > 1e-6)[0]) == 4000
    tail = wet[4000 + RATE // 10 :].pow(2).sum() / wet.pow(2).sum()  # energy 100 ms after the click
    assert tail > 0.01
    longer = room_impulse_response(0.8, 0)
    decay = [10 * np.log10(np.sum(h[RATE // 5 :] ** 2) / np.sum(h**2)) for h in (rir, longer)]
    assert decay[1] > decay[0]  # the longer RT60 keeps more energy after 200 ms
    assert reverberate(torch.zeros(0), rir).shape == (0,)


def test_telephone_band_limits():
    rng = np.random.default_rng(2)
    wide = torch.from_numpy(coloured_noise(2 * RATE, "white", rng)) * 0.1
    narrow = telephone(wide, RATE).numpy()
    assert narrow.shape == (2 * RATE,)
    x = wide.numpy()

    def gain_db(lo: float, hi: float) -> float:
        return 10 * np.log10(_band_power(narrow, lo, hi) / _band_power(x, lo, hi))

    assert gain_db(5000, 7500) < -30 and gain_db(40, 120) < -10
    assert gain_db(800, 2500) == pytest.approx(0, abs=2)


def test_clip_and_level():
    wave = torch.from_numpy(np.random.default_rng(3).standard_normal(10_000)).float()
    clipped = clip(wave, 0.02)
    limit = float(clipped.abs().max())
    assert (clipped.abs() >= limit - 1e-7).float().mean() == pytest.approx(0.02, abs=0.002)
    assert torch.equal(clip(wave, 0.0), wave)
    assert rms_dbfs(set_level(wave * 0.01, -25.0)) == pytest.approx(-25.0, abs=1e-3)
    loud = set_level(wave, -3.0)  # a crest factor of ~4: the peak limit wins
    assert float(loud.abs().max()) == pytest.approx(0.999, abs=1e-6) and rms_dbfs(loud) < -3.0
    assert torch.equal(set_level(torch.zeros(5), -20.0), torch.zeros(5))


def test_conditions_are_seeded():
    draws = [draw_condition(np.random.default_rng([5, i])) for i in range(200)]
    assert draws[7] == draw_condition(np.random.default_rng([5, 7]))
    assert all(-40 <= d["level_dbfs"] <= -10 and 0 <= d["snr_db"] <= 30 for d in draws)
    assert {d["noise"] for d in draws} == {"white", "pink", "brown", "hum", "babble"}
    assert 0.3 < np.mean([d["rt60"] is not None for d in draws]) < 0.7
    assert any(d["telephone"] for d in draws) and any(d["clip_fraction"] for d in draws)
    speech = torch.from_numpy(np.random.default_rng(4).standard_normal(RATE)).float() * 0.1
    talkers = [np.random.default_rng(9).standard_normal(3000).astype(np.float32)]
    condition = {**draws[0], "noise": "babble", "rt60": 0.3, "telephone": True}
    one = apply_condition(speech, condition, np.random.default_rng(0), RATE, talkers)
    two = apply_condition(speech, condition, np.random.default_rng(0), RATE, talkers)
    assert torch.equal(one, two) and one.shape == speech.shape
    assert rms_dbfs(one) == pytest.approx(condition["level_dbfs"], abs=0.01)


def _sample(key: str, seconds: float = 1.0, seed: int = 0) -> Sample:
    wave = torch.from_numpy(np.random.default_rng(seed).standard_normal(int(seconds * RATE))).float() * 0.05
    meta = {"duration": seconds, "words": [{"word": "a", "start": 0.2, "end": 0.5}], "silences": [[0.5, 1.0]],
            "_sample_rate": RATE}  # fmt: skip
    return Sample(key, "shard.tar", wave, "a", None, None, meta)


def test_augmentation_is_seeded_by_seed_epoch_and_key():
    config = AugmentConfig(p_noise=1.0, p_reverb=1.0, p_speed=1.0)
    sample = _sample("k1")
    one, params = augment_waveform(sample.audio, config, sample_rng(0, 3, "k1"), RATE)
    two, _ = augment_waveform(sample.audio, config, sample_rng(0, 3, "k1"), RATE)
    assert torch.equal(one, two) and set(params) >= {"speed", "rt60", "noise", "snr_db", "gain_db"}
    for other in (sample_rng(0, 4, "k1"), sample_rng(1, 3, "k1"), sample_rng(0, 3, "k2")):
        assert not torch.equal(augment_waveform(sample.audio, config, other, RATE)[0], one)
    assert float(one.abs().max()) <= 1.0  # gain clips at full scale


def test_telephone_augmentation_is_the_channel():
    """p_telephone 1 with every other part off: the output is `telephone` of the waveform; with the
    other parts on it comes after the noise (the params say so) and stays seeded."""
    sample = _sample("k1")
    only = AugmentConfig(p_gain=0.0, p_noise=0.0, p_reverb=0.0, p_speed=0.0, p_telephone=1.0)
    out, params = augment_waveform(sample.audio, only, sample_rng(0, 0, "k1"), RATE)
    assert params == {"telephone": True} and torch.equal(out, telephone(sample.audio.float(), RATE))
    full = AugmentConfig(p_noise=1.0, p_reverb=1.0, p_speed=1.0, p_telephone=1.0)
    one, params = augment_waveform(sample.audio, full, sample_rng(0, 0, "k1"), RATE)
    assert list(params)[-2:] == ["telephone", "gain_db"]
    assert torch.equal(one, augment_waveform(sample.audio, full, sample_rng(0, 0, "k1"), RATE)[0])
    with pytest.raises(ValueError, match="p_telephone"):
        AugmentConfig(p_telephone=1.5)


def test_augment_stage_scales_times_passes_skips_and_keeps_the_cache():
    config = AugmentConfig(p_speed=1.0, speed=(0.8, 0.8), p_noise=1.0, noises=("other",), p_reverb=0.0)
    first, second = _sample("a", seed=1), _sample("b", seed=2)
    before = first.audio.clone()
    skip = Skipped("bad", "shard.tar", "broken")
    out = list(augment_samples([first, skip, second], config, EpochSeed(0, 1), RATE))
    assert out[1] is skip and torch.equal(first.audio, before) and "augment" not in first.meta
    a, b = out[0], out[2]
    assert a.meta["augment"]["speed"] == 0.8 and b.meta["augment"]["noise"] == "other"
    assert a.audio.numel() == pytest.approx(RATE / 0.8, abs=2)
    assert a.meta["words"][0]["start"] == pytest.approx(0.25) and a.meta["silences"] == [[0.625, 1.25]]
    assert a.meta["duration"] == pytest.approx(1.25)
    assert a.meta["augment"]["noise"] == "white"  # the first sample has no other sample before it
    with pytest.raises(ValueError, match="unknown"):
        AugmentConfig(noises=("thunder",))


def test_datamodule_augments_training_only():
    dm = ShardDataModule("t", "v", augment=AugmentConfig())
    assert dm.config(train=True).augment is not None and dm.config(train=False).augment is None
    assert "augment" not in dm.hparams  # checkpoints keep plain values
    assert DataConfig().augment is None


def test_loader_augments_the_same_bytes_per_epoch_and_leaves_the_cache_alone(tmp_path):
    from mmchunk.data import make_dataset
    from mmchunk.data.synth import synth_corpus

    synth_corpus(tmp_path, 4, seed=5, val_fraction=0.0, shard_size=2, workers=1, progress=False)
    config = DataConfig(shuffle_buffer=4, cache=True, augment=AugmentConfig(p_noise=1.0, p_speed=1.0))
    dataset = make_dataset(tmp_path / "train", config)

    def epoch(e: int) -> dict[str, torch.Tensor]:
        dataset.epoch_seed.epoch = e
        return {k: a for b in dataset for k, a in zip(b.keys, b.audio.split())}

    first, again, second = epoch(0), epoch(0), epoch(1)
    assert first.keys() == again.keys() == second.keys() and len(first) == 4
    assert all(torch.equal(first[k], again[k]) for k in first)  # a replayed epoch: the same bytes
    assert all(not torch.equal(first[k], second[k]) for k in first)  # the next epoch: new draws
    plain = make_dataset(tmp_path / "train", DataConfig())
    clean = {k: a for b in plain for k, a in zip(b.keys, b.audio.split())}
    assert all(not torch.equal(first[k], clean[k]) for k in first)
