"""The robustness report: seeded conditions, the report's format and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from mmchunk.data import Sample
from mmchunk.data.acoustics import rms_dbfs
from mmchunk.data.shards import ShardWriter
from mmchunk.eval.robustness import (
    AUDIO_CONDITIONS,
    CONDITIONS,
    VIDEO_CONDITIONS,
    condition_transform,
    format_report,
    parse_conditions,
    run_robustness,
)

BIN = Path(sys.executable).parent
RATE = 16_000


def _sample(key: str = "k") -> Sample:
    gen = torch.Generator().manual_seed(0)
    audio = torch.cat([torch.zeros(RATE // 2), 0.1 * torch.randn(RATE, generator=gen)])
    video = torch.randint(0, 255, (5, 3, 48, 64), generator=gen, dtype=torch.uint8)
    return Sample(key, "s.tar", audio, "text", video, torch.arange(5) / 10, {"_sample_rate": RATE})


def test_condition_names_cover_the_issue_and_unknown_names_fail():
    assert set(AUDIO_CONDITIONS) >= {
        "clean", "gain-20dB", "gain+10dB", "white-20dB", "white-10dB", "white-5dB", "pink-20dB",
        "pink-10dB", "pink-5dB", "babble-10dB", "reverb-0.3s", "reverb-0.8s", "telephone",
    }  # fmt: skip
    assert set(VIDEO_CONDITIONS) == {"video-noise", "video-dark", "video-shake"}
    assert parse_conditions(None) == list(CONDITIONS)
    assert parse_conditions("clean, white-10dB") == ["clean", "white-10dB"]
    with pytest.raises(ValueError, match="unknown condition 'white-11dB'"):
        parse_conditions("clean,white-11dB")


def test_conditions_do_what_they_say_and_are_seeded():
    sample = _sample()
    assert torch.equal(condition_transform("clean", 0, RATE)(sample).audio, sample.audio)
    quiet = condition_transform("gain-20dB", 0, RATE)(sample).audio
    assert rms_dbfs(quiet) == pytest.approx(rms_dbfs(sample.audio) - 20, abs=1e-4)
    noisy = condition_transform("white-10dB", 0, RATE)(sample).audio
    noise = noisy - sample.audio
    assert 10 * np.log10(float(sample.audio.pow(2).sum() / noise.pow(2).sum())) == pytest.approx(10, abs=1e-3)
    assert torch.equal(
        noisy, condition_transform("white-10dB", 0, RATE)(sample).audio
    )  # same seed, same bytes
    assert not torch.equal(noisy, condition_transform("white-10dB", 1, RATE)(sample).audio)
    assert not torch.equal(noisy, condition_transform("white-10dB", 0, RATE)(_sample("other")).audio)
    room = condition_transform("reverb-0.8s", 0, RATE)(sample).audio
    assert room.shape == sample.audio.shape and room[: RATE // 2].abs().max() < 1e-6  # causal: the pause
    dark = condition_transform("video-dark", 0, RATE)(sample)
    assert torch.equal(dark.audio, sample.audio)
    assert float(dark.video.float().mean()) == pytest.approx(
        0.6 * float(sample.video.float().mean()), rel=0.01
    )
    shaken = condition_transform("video-shake", 0, RATE)(sample).video
    assert shaken.shape == sample.video.shape and not torch.equal(shaken, sample.video)
    assert condition_transform("video-noise", 0, RATE)(sample).video.dtype == torch.uint8


def test_report_runs_and_formats(trained):
    data, ckpt = trained
    report = run_robustness(ckpt, str(data / "val"), ["clean", "gain-20dB", "pink-10dB", "video-noise"],
                            progress=False)  # fmt: skip
    assert list(report["conditions"]) == ["clean", "gain-20dB", "pink-10dB", "video-noise"]
    clean = report["conditions"]["clean"]
    keys = ("a2t_R@1", "t2a_R@1", "boundary_f1_50ms", "baseline_boundary_f1_50ms", "silero_boundary_f1_50ms",
            "silence_boundary_fraction", "silence_time_fraction", "compression_audio",
            "chunk_rate_audio_speech_hz", "static_boundary_fraction")  # fmt: skip
    for key in keys:
        assert 0.0 <= clean[key] < 1e3, key
    # the stem is level-invariant: 20 dB quieter changes no boundary and no retrieval score
    quiet = report["conditions"]["gain-20dB"]
    for key in ("a2t_R@1", "t2a_R@1", "boundary_f1_50ms", "compression_audio"):
        assert quiet[key] == pytest.approx(clean[key], abs=1e-6), key
    lines = format_report(report).splitlines()
    assert lines[0].split()[:4] == ["audio", "condition", "a2t", "R@1"]
    assert [line.split()[0] for line in lines[1:4]] == ["clean", "gain-20dB", "pink-10dB"]
    assert lines[5].split()[:2] == ["video", "condition"] and lines[6].split()[0] == "video-noise"
    assert len(lines[1].split()) == 11  # the name, nine numbers and "—" (no CTC head: no word onsets)
    interval = f"a2t {clean['a2t_R@1_low']:.3f}–{clean['a2t_R@1_high']:.3f}"
    assert clean["a2t_R@1_low"] <= clean["a2t_R@1"] <= clean["a2t_R@1_high"]
    assert any(line.startswith("R@1 clean, 95 % bootstrap") and interval in line for line in lines)


def test_report_on_data_without_annotations(trained, tmp_path):
    """A dataset as users have it (two captions per clip, no word, silence or static times): the
    report scores retrieval by the LAION-CLAP protocol and leaves the annotation columns empty."""
    data, ckpt = trained
    with ShardWriter(tmp_path / "captions", "c", 8) as writer:
        for shard in sorted((data / "val").glob("*.tar")):
            with tarfile.open(shard) as tar:
                members = {m.name: tar.extractfile(m).read() for m in tar}
            for name in sorted(n for n in members if n.endswith(".flac")):
                text = members[name.replace(".flac", ".txt")].decode()
                meta = json.dumps({"text": [text, text.upper()]}).encode()
                writer.write(name.removesuffix(".flac"), {"flac": members[name], "json": meta})
    report = run_robustness(ckpt, str(tmp_path / "captions"), ["clean"], progress=False)
    clean = report["conditions"]["clean"]
    assert clean["captions_per_clip"] == 2.0 and 0.0 <= clean["a2t_R@1"] <= 1.0
    absent = (
        "boundary_f1_50ms",
        "baseline_boundary_f1_50ms",
        "silence_boundary_fraction",
        "chunk_rate_audio_speech_hz",
    )
    assert not any(key in clean for key in absent) and clean["compression_audio"] > 1.0
    lines = format_report(report).splitlines()
    assert lines[1].split()[3] == "—" and lines[1].split()[-2] == f"{clean['compression_audio']:.3f}"
    assert lines[-2].startswith("retrieval: LAION-CLAP protocol, 2.00 captions per clip")
    assert lines[-1].startswith("—: the data has no annotation")


def test_cli_report_json_and_bad_input(trained, tmp_path):
    data, ckpt = trained

    def run(*args):
        return subprocess.run(
            [str(BIN / "mmchunk"), "eval", "robustness", *args], capture_output=True, text=True
        )

    done = run("--ckpt", str(ckpt), "--data", str(data / "val"), "--conditions", "telephone", "--json")
    assert done.returncode == 0, done.stderr
    assert (
        list(json.loads(done.stdout)["conditions"]) == ["telephone"]
        and json.loads(done.stdout)["routing_gain"]
    )
    off = run("--ckpt", str(ckpt), "--data", str(data / "val"), "--conditions", "telephone", "--json",
              "--no-routing-gain")  # fmt: skip
    assert off.returncode == 0 and json.loads(off.stdout)["routing_gain"] is False, off.stderr
    for args, message in (
        (
            ["--ckpt", str(ckpt), "--data", str(data / "val"), "--conditions", "loud"],
            "unknown condition 'loud'",
        ),
        (["--ckpt", str(tmp_path / "none.ckpt"), "--data", str(data / "val")], "no such checkpoint"),
        (["--ckpt", str(ckpt), "--data", str(tmp_path / "missing")], "no such shard or folder"),
    ):
        bad = run(*args)
        assert bad.returncode == 2 and "Traceback" not in bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1 and message in bad.stderr, bad.stderr
