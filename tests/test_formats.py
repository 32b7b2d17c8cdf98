"""Dataset formats of `data pack --format`: small fixture datasets in each real layout, with broken
items that must be skipped with a one-line reason, read back through the trainer's loader."""

from __future__ import annotations

import csv
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile
from test_video_decode import make_video

from mmchunk.cli import main
from mmchunk.data import DataConfig, make_dataset
from mmchunk.data.formats import FORMATS, pack_dataset


def tone(path: Path, seconds: float = 0.4, rate: int = 16_000, hz: float = 300.0) -> Path:
    """Write a sine of `seconds` to `path` (format from the extension)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    soundfile.write(path, (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32), rate)
    return path


def loaded(folder: Path, **config) -> dict[str, tuple[list[str], float]]:
    """{key: (captions, seconds)} of every sample the loader reads from `folder`'s shards."""
    found = {}
    for batch in make_dataset(folder, DataConfig(max_samples=64, **config)):
        assert not batch.skipped
        seconds = (batch.audio.lengths / 16_000).tolist()
        found.update({k: (c, s) for k, c, s in zip(batch.keys, batch.captions, seconds)})
    return found


def reasons(report, base: Path) -> dict[str, str]:
    return {str(Path(p).relative_to(base)) if p.startswith(str(base)) else p: r for p, r in report.skipped}


def test_librispeech(tmp_path):
    root = tmp_path / "LibriSpeech"
    chapter = root / "dev-clean" / "84" / "121123"
    for utt in ("0000", "0001", "0004"):
        tone(chapter / f"84-121123-{utt}.flac")
    (chapter / "84-121123-0005.flac").write_bytes(b"fLaC broken")
    (chapter / "84-121123.trans.txt").write_text(
        "84-121123-0000 GO DO YOU HEAR\n84-121123-0001 BUT IN LESS THAN FIVE MINUTES\n"
        "84-121123-0002 THE STAIRCASE GROANED\n84-121123-0003\n84-121123-0005 BROKEN AUDIO\n"
    )
    other = root / "train-clean-100" / "19" / "198"
    tone(other / "19-198-0000.flac", seconds=0.7)
    (other / "19-198.trans.txt").write_text("19-198-0000 NORTHANGER ABBEY\n")
    report = pack_dataset("librispeech", root, tmp_path / "out", shard_size=1)
    why = reasons(report, root)
    assert report.written == 3 and len(report.skipped) == 4 and report.textless == 0
    trans = "dev-clean/84/121123/84-121123.trans.txt"
    assert why[trans] == "no audio file 84-121123-0002.flac beside it"
    assert why[f"{trans}:4"] == "no transcript after the utterance id '84-121123-0003'"
    assert why["dev-clean/84/121123/84-121123-0004.flac"] == "no line in a .trans.txt lists this utterance"
    assert why["dev-clean/84/121123/84-121123-0005.flac"].startswith("unreadable audio: ")
    assert sorted(report.shards) == [
        "dev-clean/dev-clean-000000.tar",
        "dev-clean/dev-clean-000001.tar",
        "train-clean-100/train-clean-100-000000.tar",
    ]
    dev = loaded(tmp_path / "out" / "dev-clean")
    assert dev == {
        "84-121123-0000": (["GO DO YOU HEAR"], pytest.approx(0.4)),
        "84-121123-0001": (["BUT IN LESS THAN FIVE MINUTES"], pytest.approx(0.4)),
    }
    assert loaded(tmp_path / "out" / "train-clean-100") == {
        "19-198-0000": (["NORTHANGER ABBEY"], pytest.approx(0.7))
    }
    # one subset as the source: no split folders
    report = pack_dataset("librispeech", root / "train-clean-100", tmp_path / "one")
    assert list(report.shards) == ["data-000000.tar"]


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def test_clotho(tmp_path):
    src = tmp_path / "clotho"
    header = ["file_name"] + [f"caption_{i}" for i in range(1, 6)]
    five = ['A dog barks, "twice", then stops.', "a dog", "barking", "woof", "a dog barks"]
    write_csv(
        src / "clotho_captions_development.csv",
        header,
        [
            ["Santa Motor.wav", *five],
            ["b.wav", "rain falls", "", "rain on a roof", "", "rain"],
            ["missing.wav", *five],
            ["silent.wav", "", "", "", "", ""],
            ["corrupt.wav", *five],
        ],
    )
    with (src / "clotho_captions_development.csv").open("a") as f:
        f.write("short.wav,only one cell\n")
    write_csv(src / "clotho_captions_evaluation.csv", header, [["c.wav", *five]])
    for name in ("Santa Motor.wav", "b.wav", "silent.wav", "orphan.wav", "short.wav"):
        tone(src / "development" / name)
    (src / "development" / "corrupt.wav").write_bytes(b"RIFF....WAVE")
    tone(src / "evaluation" / "c.wav", seconds=0.6)
    report = pack_dataset("clotho", src, tmp_path / "out")
    why = reasons(report, src)
    dev = "clotho_captions_development.csv"
    assert why == {
        f"{dev}:4": f"no audio file missing.wav under {src}",
        f"{dev}:5": "no caption for silent.wav",
        "development/corrupt.wav": why["development/corrupt.wav"],
        f"{dev}:7": "a row of 2 cells",
        "development/orphan.wav": "no row of a clotho_captions_*.csv names this file",
        "development/short.wav": "no row of a clotho_captions_*.csv names this file",
        "development/silent.wav": "no row of a clotho_captions_*.csv names this file",
    }
    assert why["development/corrupt.wav"].startswith("unreadable audio")
    assert loaded(tmp_path / "out" / "development") == {
        "Santa_Motor": (five, pytest.approx(0.4)),
        "b": (["rain falls", "rain on a roof", "rain"], pytest.approx(0.4)),
    }
    assert loaded(tmp_path / "out" / "evaluation") == {"c": (five, pytest.approx(0.6))}


def test_audiocaps(tmp_path):
    src = tmp_path / "audiocaps"
    header = ["audiocap_id", "youtube_id", "start_time", "caption"]
    write_csv(
        src / "dataset" / "train.csv",
        header,
        [
            ["91139", "r1nicOVtvkQ", "130", "A woman talks nearby as water pours"],
            ["58146", "UDGBjjwyaqE", "20", "Multiple clanging and clanking sounds"],
            ["11011", "gone-video_", "30", "A clip that left YouTube"],
            ["11012", "", "30", "no video id"],
            ["11013", "abc", "later", "a bad start time"],
        ],
    )
    val = [[str(97151 + i), "vfY_TJq7n_U", "130", f"caption {i}"] for i in range(5)]
    write_csv(src / "dataset" / "val.csv", header, val)
    tone(src / "audio" / "train" / "r1nicOVtvkQ.wav")
    tone(src / "audio" / "train" / "YUDGBjjwyaqE.flac", seconds=0.5)
    tone(src / "audio" / "val" / "97153.wav", seconds=0.3)  # named by one row's audiocap_id
    tone(src / "audio" / "train" / "unlisted.wav")
    report = pack_dataset("audiocaps", src, tmp_path / "out")
    why = reasons(report, src)
    assert why == {
        "dataset/train.csv:5": "empty youtube_id",
        "dataset/train.csv:6": "start_time 'later' is not a number",
        "dataset/train.csv": "no audio file for clip gone-video_ at 30 s "
        "(tried 11011, gone-video_, Ygone-video_, gone-video__30)",
        "audio/train/unlisted.wav": "no row of an AudioCaps CSV names this file",
    }
    assert loaded(tmp_path / "out" / "train") == {
        "r1nicOVtvkQ_130": (["A woman talks nearby as water pours"], pytest.approx(0.4)),
        "UDGBjjwyaqE_20": (["Multiple clanging and clanking sounds"], pytest.approx(0.5)),
    }
    assert loaded(tmp_path / "out" / "val") == {"vfY_TJq7n_U_130": ([r[3] for r in val], pytest.approx(0.3))}


def laion_shard(path: Path, samples: dict[str, dict[str, bytes]], cut: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for key, members in samples.items():
            for ext, data in members.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    data = buffer.getvalue()
    path.write_bytes(data[:cut] if cut else data)


def test_laion(tmp_path):
    src = tmp_path / "laion"
    flac = tone(tmp_path / "x.flac").read_bytes()
    captions = ["A bird sings.", "Birdsong in a forest."]
    text = {"text": captions, "original_data": {"title": "bird"}}
    laion_shard(
        src / "train" / "0.tar",
        {
            "0": {"flac": flac, "json": json.dumps(text).encode()},
            "1": {"flac": flac, "json": json.dumps({"text": []}).encode()},
            "2": {"json": json.dumps(text).encode()},
            "3": {"flac": b"junk", "json": json.dumps(text).encode()},
        },
    )
    laion_shard(src / "train" / "1.tar", {"0": {"flac": flac, "json": json.dumps(text).encode()}}, cut=900)
    laion_shard(src / "test" / "0.tar", {"0": {"flac": flac, "json": b'{"text": "A car passes."}'}})
    report = pack_dataset("laion", src, tmp_path / "out")
    why = reasons(report, src)
    assert why["train/0.tar:1"] == ".json: no caption in 'text'"
    assert why["train/0.tar:2"] == "no audio member (.flac, .wav, .mp3, .ogg)"
    assert why["train/0.tar:3"].startswith(".flac: unreadable audio")
    assert why["train/1.tar"].startswith("shard unreadable after 0 samples")
    assert report.written == 2 and len(why) == 5
    assert loaded(tmp_path / "out" / "train") == {"0__0": (captions, pytest.approx(0.4))}
    assert loaded(tmp_path / "out" / "test") == {"0__0": (["A car passes."], pytest.approx(0.4))}
    # the loader reads the original LAION shards directly as well
    assert loaded(src / "test") == {"0": (["A car passes."], pytest.approx(0.4))}


def test_videofolder(tmp_path):
    src = tmp_path / "videos"
    src.mkdir()
    (src / "talk.mp4").write_bytes(make_video(25, tone_hz=440.0, rate=22_050))
    (src / "talk.srt").write_text("1\n00:00:00,100 --> 00:00:00,500\nhello there\n")
    (src / "mute.mp4").write_bytes(make_video(10))
    (src / "clip.mkv").write_bytes(make_video(20, tone_hz=220.0))
    (src / "clip.srt").write_text(
        "1\n00:00:00,500 --> 00:00:00,700\nsecond\n\n2\n00:00:00,100 --> 00:00:00,300\nfirst\n"
    )
    (src / "broken.webm").write_bytes(b"\x1aE\xdf\xa3 not a real webm")
    (src / "notes.txt").write_text("a transcript without its video")
    report = pack_dataset("videofolder", src, tmp_path / "out")
    why = reasons(report, src)
    assert why["mute.mp4"] == "no audio track in the video"
    assert why["clip.srt"] == f"{src / 'clip.srt'}:6: cue out of order: starts at 0.100 s, before 0.500 s"
    assert why["broken.webm"].startswith("unreadable audio")
    assert why["notes.txt"] == "no video file with this stem"
    assert report.written == 2 and report.textless == 1 and len(why) == 4
    assert loaded(tmp_path / "out", require_text=False, use_video=False) == {
        "clip": ([], pytest.approx(0.8, abs=0.05)),
        "talk": (["hello there"], pytest.approx(1.0, abs=0.05)),
    }
    (batch,) = make_dataset(tmp_path / "out", DataConfig(video_fps=10.0))
    assert batch.keys == ["talk"] and batch.video.lengths.tolist() == [10]
    assert batch.meta[0]["cues"] == [[0.1, 0.5, "hello there"]]


def test_pack_command(tmp_path, capsys):
    src = tmp_path / "clotho"
    header = ["file_name"] + [f"caption_{i}" for i in range(1, 6)]
    rows = [["a.wav", "one", "two", "three", "four", "five"], ["gone.wav", "x", "", "", "", ""]]
    write_csv(src / "clotho_captions_validation.csv", header, rows)
    tone(src / "validation" / "a.wav")
    assert main(["data", "pack", "--format", "clotho", str(src), "--out", str(tmp_path / "out")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert (
        lines[0] == f"skipped {src / 'clotho_captions_validation.csv'}:3: no audio file gone.wav under {src}"
    )
    assert lines[1] == f"validation: 1 samples under {tmp_path / 'out' / 'validation'}"
    assert lines[-1] == f"packed 1 samples into 1 shards under {tmp_path / 'out'}; 1 skipped"
    assert main(["data", "pack", "--format", "clotho", str(src), "--out", str(tmp_path / "out")]) == 2
    assert "already holds shards" in capsys.readouterr().err
    (tmp_path / "out" / "validation" / "validation-000007.tar").write_bytes(b"stale")
    argv = ["data", "pack", "--format", "clotho", str(src), "--out", str(tmp_path / "out"), "--overwrite"]
    assert main(argv) == 0 and capsys.readouterr().out.endswith("1 skipped\n")
    assert sorted(p.name for p in (tmp_path / "out").rglob("*.tar")) == ["validation-000000.tar"]
    assert main(["data", "pack", "--format", "audiocaps", str(src), "--out", str(tmp_path / "x")]) == 2
    assert "no sample could be packed" in capsys.readouterr().err


def test_format_choices_match_the_registry():
    from mmchunk.cli import build_parser

    pack = build_parser()._subparsers._group_actions[0].choices["data"]
    actions = pack._subparsers._group_actions[0].choices["pack"]._actions
    assert next(a for a in actions if a.dest == "format").choices == list(FORMATS)


def test_no_partial_output_and_a_val_split(tmp_path, capsys):
    """`data pack` of an empty folder fails without writing anything; `data synth` gives a val split
    from 2 samples on and warns when there is none."""
    (tmp_path / "empty").mkdir()
    assert main(["data", "pack", str(tmp_path / "empty"), "--out", str(tmp_path / "out")]) == 2
    assert "no sample could be packed" in capsys.readouterr().err and not (tmp_path / "out").exists()
    assert main(["data", "synth", "--out", str(tmp_path / "two"), "--num", "2", "--workers", "1"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("val: 1 samples in 1 shards")
    assert main(["data", "synth", "--out", str(tmp_path / "one"), "--num", "1", "--workers", "1"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("warning: no val split (1 samples")


def test_pack_and_check_agree_and_strict_fails_on_skips(tmp_path, capsys):
    """A video without an audio file brings its own sound, one without sound is left out; samples
    without text are counted by pack, rejected by check unless --no-text; --strict exits 1."""
    src = tmp_path / "media"
    src.mkdir()
    tone(src / "speech.wav")
    (src / "speech.txt").write_text("hello")
    tone(src / "untitled.wav")
    (src / "clip.mp4").write_bytes(make_video(10, tone_hz=330.0))
    (src / "mute.mp4").write_bytes(make_video(10))
    out = tmp_path / "out"
    assert main(["data", "pack", str(src), "--out", str(out), "--strict"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert (
        lines[0]
        == f"skipped {src / 'mute.mp4'}: no audio track in the video, and no audio file with this stem"
    )
    assert "2 samples have no text: fine for export, skipped by training" in lines
    assert lines[-1] == f"packed 3 samples into 1 shards under {out}; 1 skipped"
    assert main(["data", "check", str(out), "--strict"]) == 1
    report = capsys.readouterr().out.splitlines()
    assert report[-1] == "1 samples ok, 2 skipped" and all("no transcript" in line for line in report[:2])
    assert main(["data", "check", str(out), "--no-text", "--strict"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "3 samples ok, 0 skipped"
    assert loaded(out, require_text=False, use_video=False)["clip"][1] == pytest.approx(0.4, abs=0.05)
