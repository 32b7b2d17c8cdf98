"""The benchmark scripts run end to end (tiny sizes) and print their tables."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def run(script: str, *args: str, cwd: Path | None = None) -> str:
    result = subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "TRITON_INTERPRET": "1"},
        timeout=600,
        cwd=cwd,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_ragged_ops_benchmark():
    out = run("ragged_ops.py", "--seqs", "3", "--median", "12", "--max-len", "30", "--reps", "1",
              "--target-tokens", "500")  # fmt: skip
    for op in ("segment_reduce mean", "ema_scan p[T]", "boundary_probs", "varlen_attention causal"):
        assert op in out
    assert "ema_scan target" in out


def test_kernels_benchmark_runs_triton_rows_in_the_interpreter():
    out = run("kernels.py", "--quick")
    assert "Triton rows run in the interpreter" in out
    rows = [line for line in out.splitlines() if line.startswith(("segment_reduce", "ema_scan", "varlen"))]
    assert sum(" triton " in line for line in rows) == 4


def test_data_benchmark():
    out = run("data.py", "--num", "4", "--reps", "1")
    assert "x real time" in out and "frames/s" in out


def test_chunking_cost_benchmark(tmp_path):
    out = run("chunking_cost.py", "--durations", "2", "4", "--batch", "1", "--reps", "1", cwd=tmp_path)
    assert "routing: untrained" in out
    rows = [
        line.split() for line in out.splitlines() if line.strip().endswith("x") and line.strip()[0].isdigit()
    ]
    assert [r[0] for r in rows] == ["2s", "4s"] and all(float(r[1]) >= 1.0 for r in rows)


def test_real_recordings_benchmark(tmp_path):
    """Rows and totals on a spoken file at 44.1 kHz (stand-in for a user's recording), JSON and a bad path."""
    import io
    import json

    import soundfile
    import torch
    import torchaudio

    from mmchunk.data.synth import synth_sample

    _, members = synth_sample(0, 4, realistic=False)
    wave, rate = soundfile.read(io.BytesIO(members["flac"]), dtype="float32")
    loud = torchaudio.functional.resample(torch.from_numpy(wave), rate, 44_100).numpy()
    soundfile.write(tmp_path / "speech.wav", loud, 44_100)
    out = run("real_recordings.py", str(tmp_path / "speech.wav"))
    assert "speech.wav" in out and "all 1 files" in out
    report = json.loads(run("real_recordings.py", "--json", str(tmp_path / "speech.wav")))
    row = report["rows"][0]
    assert row["sample_rate"] == 44_100 and 0 < row["speech"] < row["duration"]
    assert row["chunks"] >= 1 and report["total"]["chunks"] == row["chunks"]
    bad = subprocess.run([sys.executable, str(BENCH / "real_recordings.py"), str(tmp_path / "none.wav")],
                         capture_output=True, text=True)  # fmt: skip
    assert bad.returncode == 2 and "no such file" in bad.stderr and "Traceback" not in bad.stderr


def test_video_decode_benchmark():
    out = run("video_decode.py", "--seconds", "2", "--size", "160x96", "--fps", "10", "--prefix", "1")
    rows = [line for line in out.splitlines() if line.startswith(("mmchunk segment", "every frame"))]
    assert len(rows) == 2 and "audio" in rows[0] and "video" in rows[0]
    peaks = [re.search(r"(\d+)\s+(?:audio|-)", row) for row in rows]  # the peak MB column
    assert all(peak and int(peak.group(1)) > 0 for peak in peaks)


def test_long_audio_benchmark(trained):
    _, ckpt = trained
    out = run("long_audio.py", "--minutes", "0.4", "--clips", "4", "--window", "5", "--contexts", "2,0",
              "--ckpt", str(ckpt))  # fmt: skip
    rows = {line[:32].strip(): line[32:].split() for line in out.splitlines()[2:]}
    names = ["one pass (whole file in memory)", "windows 5 s, context 2 s", "windows 5 s, context 0 s"]
    assert list(rows) == [*names, "export, transcript 0 kB"]
    assert rows["windows 5 s, context 2 s"][-1] == "0"  # the chunk starts of one pass
    assert int(rows["one pass (whole file in memory)"][3]) > 5 and int(rows["export, transcript 0 kB"][2]) > 0


def test_formats_benchmark(tmp_path):
    """Five forms of one file, a row with a count per form, the ratio rows, JSON, a bad path."""
    import json

    import soundfile
    import torch

    t = torch.arange(24_000) / 16_000
    soundfile.write(tmp_path / "u.wav", (0.3 * torch.sin(2 * torch.pi * 300 * t)).numpy(), 16_000)
    out = run("formats.py", str(tmp_path / "u.wav"))
    row = next(line for line in out.splitlines() if line.startswith("u.wav")).split()
    assert len(row) == 2 + 5 and all(int(c) >= 1 for c in row[2:])
    assert "mean ratio to 16k flac" in out and "worst ratio to 16k flac" in out
    result = json.loads(run("formats.py", "--json", str(tmp_path / "u.wav")))
    assert result["summary"]["16k flac"] == {"mean": 1.0, "worst": 1.0}
    bad = subprocess.run([sys.executable, str(BENCH / "formats.py"), str(tmp_path / "nope.wav")],
                         capture_output=True, text=True)  # fmt: skip
    assert bad.returncode == 2 and "no such file" in bad.stderr


def test_segmentation_benchmark(trained, tmp_path):
    """Learned against fixed-stride and VAD-edge segmentations, 2 steps each; a second run trains nothing."""
    data, ckpt = trained
    tiny = ["--", "--model.dim", "32", "--model.embed_dim", "16", "--model.heads", "2",
            "--model.backbone.depth", "1", "--data.max_samples", "4",
            "--trainer.enable_progress_bar", "false"]  # fmt: skip
    args = ["--data", str(data), "--out", str(tmp_path), "--steps", "2", "--reps", "1",
            "--learned", str(ckpt), "--rules", "fixed,energy_vad", *tiny]  # fmt: skip
    out = run("segmentation.py", *args)
    rows = {
        line.split()[0]: line.split()
        for line in out.splitlines()
        if line.split()[:1] in (["learned"], ["fixed"], ["energy_vad"])
    }
    assert set(rows) == {"learned", "fixed", "energy_vad"}
    learned_k, fixed_k = float(rows["learned"][1]), float(rows["fixed"][1])
    assert abs(fixed_k - learned_k) <= 0.25 * learned_k  # fixed stride at the learned compression
    assert (tmp_path / "fixed" / "model.ckpt").is_file() and (tmp_path / "segmentation.json").is_file()
    again = run("segmentation.py", *args)
    assert "fixed: using" in again and "energy_vad: using" in again
    command = [sys.executable, str(BENCH / "segmentation.py"), "--data", str(data), "--rules", "stride"]
    bad = subprocess.run(command, capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown rule 'stride'" in bad.stderr


def test_real_alignment_benchmark(trained, tmp_path):
    """A spoken file with its transcript and a pocketsphinx-style reference alignment (silences and
    pronunciation variants included), one without a reference, and a folder with nothing to score."""
    import json

    from mmchunk.data.synth import synth_sample

    _, sample = synth_sample(0, 4)
    meta = json.loads(sample["json"])
    (tmp_path / "a.wav").write_bytes(sample["flac"])  # soundfile reads it by content
    (tmp_path / "a.txt").write_text(meta["text"])
    words = [{"t": "<sil>", "b": 0.0, "d": 0.2}]
    words += [
        {"t": w["word"] + ("(2)" if i == 1 else ""), "b": w["start"], "d": 0.1}
        for i, w in enumerate(meta["words"])
    ]
    (tmp_path / "a.json").write_text(json.dumps({"w": words}))
    (tmp_path / "b.wav").write_bytes(sample["flac"])
    (tmp_path / "c.wav").write_bytes(sample["flac"])
    (tmp_path / "c.txt").write_text(meta["text"])
    (tmp_path / "c.json").write_text("{not json")
    _, ckpt = trained  # the demo recipe's CTC probe, trained 2 steps: it places the words itself
    out = run("real_alignment.py", "--ckpt", str(ckpt), str(tmp_path))
    assert "skipped" in out and "b.wav" in out and "1 recordings scored, 2 skipped" in out
    assert "c.json is not a pocketsphinx word alignment" in out
    assert "word onsets without the transcript: F1@50" in out
    assert "stage-2 chunk starts" not in out  # one chunking stage
    row = next(line for line in out.splitlines() if line.startswith("a.wav")).split()
    assert row[2] == str(len(meta["words"])) and row[3] == "ctc"
    aligned, spread = (line.split() for line in out.splitlines() if line.startswith("all,"))
    assert aligned[2] == spread[3] == str(len(meta["words"]))
    empty = tmp_path / "empty"
    empty.mkdir()
    command = [sys.executable, str(BENCH / "real_alignment.py"), "--ckpt", str(ckpt), str(empty)]
    bad = subprocess.run(command, capture_output=True, text=True)
    assert bad.returncode == 2 and "no recording with a transcript" in bad.stderr
    import torch

    from mmchunk.training import AudioTextModule

    torch.manual_seed(0)
    small = {m: {"depth": 1} for m in ("audio", "text")}
    backbone = {"depth": 1, "stages": 2, "tied_routing": False}
    objectives = {"contrastive": {}, "ctc": {}, "onset": {}}
    words = AudioTextModule(
        dim=32, embed_dim=16, heads=2, backbone=backbone, aligner={}, objectives=objectives, encoders=small
    )
    two = tmp_path / "words.ckpt"
    torch.save({"state_dict": words.state_dict(), "hyper_parameters": dict(words.hparams)}, two)
    out = run("real_alignment.py", "--ckpt", str(two), str(tmp_path))
    line = next(x for x in out.splitlines() if x.startswith("stage-2 chunk starts (audio alone): F1@50"))
    f1, r_value = (float(x.rstrip(",")) for x in line.split()[-3::2])
    assert 0.0 <= f1 <= 1.0 and r_value <= 1.0


def test_generation_benchmark():
    """Tiny models and contexts: every (context, B, model) row with its chunking, and the batched
    against sequential table with a decode-only column."""
    out = run("generation.py", "--contexts", "48", "--batches", "1", "8", "--new", "3", "--dim", "32",
              "--depth", "1", "--train-steps", "2", "--repeats", "1", "--threads", "1")  # fmt: skip
    rows = [line.split() for line in out.splitlines() if re.match(r"\s+48\s+(1|8)\s", line)]
    assert [(r[1], r[2]) for r in rows] == [
        (b, m) for b in ("1", "8") for m in ("flat", "1-stage", "2-stage")
    ]
    assert all(r[-1] == "-" for r in rows if r[2] == "flat") and all(
        "/" in r for r in rows if r[2] == "2-stage"
    )
    batched = [
        line.split() for line in out.splitlines() if re.match(r"\s+48\s+(flat|1-stage|2-stage)\s", line)
    ]
    assert len(batched) == 3 and all(r[-1].endswith("x") and r[-2].endswith("x") for r in batched)


def test_ctc_probe_benchmark(trained, tmp_path):
    """Every probe variant gets a row of scores in range; a folder without splits is a usage error."""
    data, ckpt = trained
    out = run("ctc_probe.py", "--ckpt", str(ckpt), "--data", str(data), "--mixers", "window,recurrent",
              "--depths", "0,1", "--seeds", "0", "--steps", "3", "--clips", "2", "--limit", "4")  # fmt: skip
    assert "4 train and 4 val clips, 3 steps of 2 clips per probe" in out
    rows = [line.split() for line in out.splitlines() if line.startswith(("window ", "recurrent "))]
    assert [(r[0], r[1]) for r in rows] == [
        ("window", "0"),
        ("window", "1"),
        ("recurrent", "0"),
        ("recurrent", "1"),
    ]
    for row in rows:
        loss, f1, _, within, _ = map(float, row[3:8])
        assert loss > 0 and 0 <= f1 <= 1 and 0 <= within <= 1
    command = [sys.executable, str(BENCH / "ctc_probe.py"), "--ckpt", str(ckpt), "--data", str(tmp_path)]
    bad = subprocess.run(command, capture_output=True, text=True)
    assert bad.returncode == 2 and f"{tmp_path / 'train'}: no such folder of shards" in bad.stderr


def test_heldout_retrieval_benchmark(trained):
    data, ckpt = trained
    out = run("heldout_retrieval.py", "--data", str(data / "val"), "--gallery", "3", str(ckpt))
    row = out.splitlines()[1].split()
    assert row[:2] == [str(ckpt), "6"]  # the 6 val clips: two galleries of 3
    galleries = [float(x) for pair in row[4:6] for x in pair.split("/")]
    assert len(galleries) == 4 and all(0.0 <= x <= 1.0 for x in galleries)
    assert abs(float(row[2]) - (galleries[0] + galleries[2]) / 2) <= 1e-3  # the galleries' mean a2t
    assert row[-2:] == ["0", "skipped"]


def test_heldout_retrieval_benchmark_bad_input(trained, tmp_path):
    """A truncated shard's samples are named and counted, a missing or corrupt checkpoint is one line."""
    data, ckpt = trained
    shards = sorted((data / "val").glob("*.tar"))
    cut = tmp_path / "val"
    cut.mkdir()
    for shard in shards:
        (cut / shard.name).write_bytes(shard.read_bytes())
    last = cut / shards[-1].name
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    script = str(BENCH / "heldout_retrieval.py")
    done = subprocess.run([sys.executable, script, "--data", str(cut), "--gallery", "2", str(ckpt)],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    row = done.stdout.splitlines()[1].split()
    assert int(row[1]) < 6 and int(row[-2]) >= 1 and row[-1] == "skipped"
    assert f"skipped {last}" in done.stderr
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"junk\n")
    for name, message, code in (("nothing.ckpt", "nothing.ckpt: no such checkpoint", 2),
                                (str(junk), f"{junk}: not a PyTorch checkpoint", 1)):  # fmt: skip
        command = [sys.executable, script, "--data", str(cut), name]
        bad = subprocess.run(command, capture_output=True, text=True)
        assert bad.returncode == code and message in bad.stderr and "Traceback" not in bad.stderr


def test_gallery_recall_scores_each_gallery_alone():
    sys.path.insert(0, str(BENCH))
    from heldout_retrieval import gallery_recall

    audio = torch.eye(5)
    text = torch.eye(5)[[1, 0, 2, 3, 4]]  # the first two captions swapped
    got = gallery_recall(audio, text, 2)  # galleries {0, 1} and {2, 3}; clip 4 is left over
    assert got.tolist() == [[0.0, 0.0], [1.0, 1.0]]
