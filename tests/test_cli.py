"""The command line, the demo and the packaging, run as a user would."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile
import torch
import yaml

from mmchunk.demo import run_demo
from mmchunk.segment import text_chunks

BIN = Path(sys.executable).parent


def run(*args, cwd=None):
    return subprocess.run([str(BIN / "mmchunk"), *args], capture_output=True, text=True, cwd=cwd)


@pytest.mark.parametrize(
    "args",
    [["--help"], ["demo", "--help"], ["data", "--help"], ["segment", "--help"], ["generate", "--help"]]
    + [["data", cmd, "--help"] for cmd in ("synth", "pack", "check")],
)
def test_help(args):
    result = run(*args)
    assert result.returncode == 0 and "usage: mmchunk" in result.stdout


def test_demo_json_and_bad_argument():
    result = run("demo", "--quick", "--clips", "2", "--seed", "3", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["frames"] > report["chunks"] > 0 and len(report["clips"]) == 2
    bad = run("demo", "--quick", "--clips", "0")
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr and bad.stderr.strip().splitlines()[-1].startswith(
        "mmchunk demo: error"
    )
    missing = run("demo", "--config", "no/such.yaml", "--out", "unused")
    assert missing.returncode == 2 and missing.stderr.strip().splitlines() == [
        "mmchunk demo: error: no/such.yaml: no such recipe file, and no built-in recipe of that name "
        "(built in: align_cpu, ddp_multi_gpu, demo_cpu, hrm_cpu, streaming_cpu, words_cpu)"
    ]
    assert not Path("unused").exists()


def test_no_command_prints_help_and_fails():
    result = run()
    assert result.returncode == 2 and "COMMAND" in result.stdout


def test_demo_is_deterministic_and_finds_transitions():
    a, b = run_demo(seed=5, num_clips=3), run_demo(seed=5, num_clips=3)
    assert a == b
    assert a != run_demo(seed=6, num_clips=3)
    # Identity routing on standardised log-mel frames splits at spectral changes: the true
    # sound/silence transitions.
    assert a["boundary_f1_50ms"] > 0.8
    assert a["compression"] > 10


def test_only_the_mmchunk_package_is_installed(tmp_path):
    code = (
        "import importlib.util as u, mmchunk.kernels, mmchunk.encoders; "
        "print([m for m in ('kernels', 'encoders') if u.find_spec(m) is not None])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def one_line_error(result, command: str) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith(f"mmchunk {command}: error:")
    return lines[-1]


def test_data_commands(tmp_path):
    out = tmp_path / "corpus"
    args = ["--out", str(out), "--num", "3", "--shard-size", "2", "--val-fraction", "0.34", "--workers", "1"]
    made = run("data", "synth", *args)
    assert made.returncode == 0, made.stderr
    assert "train: 2 samples in 1 shards" in made.stdout and "val: 1 samples in 1 shards" in made.stdout
    assert "already holds shards" in one_line_error(run("data", "synth", *args), "data synth")
    checked = run("data", "check", str(out / "train"), "--json")
    assert checked.returncode == 0, checked.stderr
    assert json.loads(checked.stdout) == {"ok": 2, "skipped": 0, "errors": []}
    assert "no such shard" in one_line_error(run("data", "check", str(tmp_path / "nope.tar")), "data check")
    (tmp_path / "empty").mkdir()
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(b"this is not a tar file at all" * 40)
    assert "could be read" in one_line_error(run("data", "check", str(garbage)), "data check")
    packed = run("data", "pack", str(tmp_path / "empty"), "--out", str(tmp_path / "packed"))
    assert "no sample could be packed" in one_line_error(packed, "data pack")


def test_segment_command(tmp_path):
    from mmchunk.data.synth import synth_sample

    _, sample = synth_sample(0, 2, video=True)
    for ext in ("flac", "mp4", "txt"):
        (tmp_path / f"clip.{ext}").write_bytes(sample[ext])
    meta = json.loads(sample["json"])
    for ext, modality in (("flac", "audio"), ("mp4", "video"), ("txt", "text")):
        result = run(
            "segment", str(tmp_path / f"clip.{ext}"), "--json", "--plot", str(tmp_path / f"{ext}.png")
        )
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert report["modality"] == modality and report["chunks"]
        assert report["chunks"][0]["t0"] == 0.0
        starts = [c["t0"] for c in report["chunks"]]
        assert starts == sorted(starts) and report["chunks"][-1]["t1"] <= report["duration"] + 0.05
        assert (tmp_path / f"{ext}.png").stat().st_size > 1000
        if modality == "audio":
            assert abs(report["duration"] - meta["duration"]) < 0.02
    (tmp_path / "broken.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    assert "unreadable audio" in one_line_error(run("segment", str(tmp_path / "broken.wav")), "segment")
    (tmp_path / "notes.doc").write_text("hello")
    assert "unsupported file type" in one_line_error(run("segment", str(tmp_path / "notes.doc")), "segment")


def test_segment_with_a_transcript_places_its_words(tmp_path):
    from mmchunk.data.synth import synth_sample
    from mmchunk.ragged import Ragged
    from mmchunk.segment import place_words
    from tests.test_model import small_model

    _, sample = synth_sample(0, 2)
    (tmp_path / "clip.flac").write_bytes(sample["flac"])
    (tmp_path / "clip.txt").write_bytes(sample["txt"])
    meta = json.loads(sample["json"])
    result = run("segment", str(tmp_path / "clip.flac"), "--text", str(tmp_path / "clip.txt"), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["alignment"] == "even"  # the untrained default model has no CTC head
    assert [w["word"] for w in report["words"]] == meta["text"].split()
    starts = [w["start"] for w in report["words"]]
    assert starts == sorted(starts) and report["words"][-1]["end"] <= report["duration"] + 1e-3
    literal = json.loads(run("segment", str(tmp_path / "clip.flac"), "--text", "two words", "--json").stdout)
    assert [w["word"] for w in literal["words"]] == ["two", "words"]
    spaced = run("segment", str(tmp_path / "clip.flac"), "--text", "no\u00a0break here", "--json")
    assert [w["word"] for w in json.loads(spaced.stdout)["words"]] == ["no", "break", "here"]
    long = " ".join(["word"] * 100)  # far longer than a file name may be
    words = json.loads(run("segment", str(tmp_path / "clip.flac"), "--text", long, "--json").stdout)["words"]
    assert len(words) == 100
    empty = run("segment", str(tmp_path / "clip.flac"), "--text", " ")
    assert "transcript to align is empty" in one_line_error(empty, "segment")
    model = small_model(aligner={}).eval()
    wave = torch.from_numpy(soundfile.read(tmp_path / "clip.flac", dtype="float32")[0])
    with torch.no_grad():
        ctc = model.encode({"audio": Ragged.from_list([wave])}).ctc
    words, method = place_words(ctc, meta["text"], meta["duration"])
    assert method == "ctc" and [w["word"] for w in words] == meta["text"].split()
    flat = [t for w in words for t in (w["start"], w["end"])]
    assert flat == sorted(flat) and flat[0] >= 0.0 and flat[-1] <= meta["duration"] + 0.05


def test_segment_reports_the_coarse_chunks_and_word_onsets_of_a_words_model(tmp_path):
    from mmchunk.data.synth import synth_sample
    from mmchunk.training import AudioTextModule

    _, sample = synth_sample(0, 2)
    (tmp_path / "clip.flac").write_bytes(sample["flac"])
    torch.manual_seed(0)
    small = {m: {"depth": 1} for m in ("audio", "text")}
    module = AudioTextModule(
        dim=32,
        embed_dim=16,
        heads=2,
        backbone={"depth": 1, "stages": 2, "tied_routing": False},
        encoders=small,
        aligner={},
        objectives={"contrastive": {}, "ctc": {}, "onset": {}},
    )
    ckpt = tmp_path / "ctc.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, ckpt)
    result = run("segment", str(tmp_path / "clip.flac"), "--ckpt", str(ckpt), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    onsets = report["word_onsets"]  # an untrained head: whatever it emits, in order, inside the clip
    assert onsets and onsets == sorted(onsets) and all(0.0 <= t <= report["duration"] for t in onsets)
    fine = [c["t0"] for c in report["chunks"]]
    coarse = report["stage2_chunks"]  # contiguous, over the clip, each opening with a fine chunk
    assert coarse[0]["t0"] == 0.0 and coarse[-1]["t1"] == report["chunks"][-1]["t1"]
    assert all(a["t1"] == b["t0"] for a, b in itertools.pairwise(coarse)) and {
        c["t0"] for c in coarse
    } <= set(fine)
    text = run("segment", str(tmp_path / "clip.flac"), "--ckpt", str(ckpt), "--plot", str(tmp_path / "w.png"))
    assert "stage-2 chunks open at: 0.00" in text.stdout
    assert "word onsets (CTC head, no transcript):" in text.stdout and (tmp_path / "w.png").stat().st_size
    plain = json.loads(run("segment", str(tmp_path / "clip.flac"), "--json").stdout)
    assert "word_onsets" not in plain and "stage2_chunks" not in plain  # one stage, no CTC head


@pytest.mark.parametrize(
    ("base_arg", "layer_args"),
    [
        ("PATH", ["--config", "PATH/hrm_cpu.yaml"]),
        ("PATH", []),
        ("demo_cpu", ["--config=hrm_cpu"]),  # built-in recipes by name
        ("audio_text/demo_cpu.yaml", ["-c", "hrm_cpu.yaml"]),
    ],
)
def test_recipes_resolve_and_layer(base_arg, layer_args, tmp_path, monkeypatch):
    recipes = Path(__file__).resolve().parent.parent / "recipes" / "audio_text"
    monkeypatch.chdir(tmp_path)  # names resolve from any folder
    base = str(recipes / "demo_cpu.yaml") if base_arg == "PATH" else base_arg
    args = ["fit", "--config", base, *(a.replace("PATH", str(recipes)) for a in layer_args)]
    layer = bool(layer_args)
    result = run(*args, "--print_config")
    assert result.returncode == 0, result.stderr
    model = yaml.safe_load(result.stdout)["model"]
    base = yaml.safe_load((recipes / "demo_cpu.yaml").read_text())["model"]
    assert (
        model["backbone"].get("kind", "chunk") == ("hrm" if layer else "chunk")
        and model["dim"] == base["dim"]
    )
    assert model["routing"]["center"] == base["routing"]["center"] == ["video"]
    assert model["backbone"].get("segments") == (2 if layer else None)
    assert model["objectives"] == base["objectives"]  # the layer names none: the base's stay


def test_unknown_recipe_name_is_a_one_line_error():
    result = run("fit", "--config", "demo_gpu", "--print_config")
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        "mmchunk fit: error: demo_gpu: no such recipe file, and no built-in recipe of that name "
        "(built in: align_cpu, ddp_multi_gpu, demo_cpu, hrm_cpu, streaming_cpu, words_cpu)"
    ]


def test_text_chunks_are_whole_characters():
    data = "aé🙂b".encode()  # 1 + 2 + 4 + 1 bytes
    mask = torch.zeros(len(data), dtype=torch.bool)
    mask[[0, 2, 5]] = True  # byte 2 is inside "é", byte 5 inside the emoji
    times = torch.arange(len(data), dtype=torch.float32)
    chunks = text_chunks(mask, data, times, times + 1)
    assert [(c["byte0"], c["byte1"], c["char0"], c["char1"], c["text"]) for c in chunks] == [
        (0, 1, 0, 1, "a"), (1, 3, 1, 2, "é"), (3, 8, 2, 4, "🙂b")
    ]  # fmt: skip
    assert [(c["t0"], c["t1"]) for c in chunks] == [(0.0, 1.0), (1.0, 3.0), (3.0, 8.0)]


def test_segment_of_text_reports_whole_characters(tmp_path):
    from mmchunk.segment import segment_file

    text = "héllo wörld 🙂 ok — fin ∑ 漢字"
    (tmp_path / "emoji.txt").write_text(text + "\n")
    chunks = segment_file(tmp_path / "emoji.txt")["chunks"]
    assert "".join(c["text"] for c in chunks) == text and len(chunks) > 3
    for chunk in chunks:
        assert text[chunk["char0"] : chunk["char1"]] == chunk["text"]
        assert text.encode()[chunk["byte0"] : chunk["byte1"]] == chunk["text"].encode()
