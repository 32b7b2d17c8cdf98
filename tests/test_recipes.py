"""The script recipes run from a fresh clone: HashHop training (resume included) and HRM Sudoku."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parent.parent


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "recipes" / script), *args, "--threads", "1"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def test_hashhop_recipe_trains_scores_and_resumes_exactly(tmp_path):
    common = ["--model", "stage1", "--dim", "16", "--batch", "2", "--n-chars", "119", "--min-chars", "24"]
    common += ["--ramp", "2", "--hash-len", "2", "--eval-chars", "119", "249", "--eval-tasks", "2"]
    straight = _run("hashhop/train.py", *common, "--steps", "4", "--out", str(tmp_path / "a"))
    report = json.loads(straight.stdout.splitlines()[-1])
    assert set(report["accuracy"]) == {"119", "249"} and report["accuracy"]["249"].keys() == {"1"}
    _run("hashhop/train.py", *common, "--steps", "2", "--save-every", "1", "--out", str(tmp_path / "b"))
    _run("hashhop/train.py", *common, "--steps", "4", "--resume", "--out", str(tmp_path / "b"))
    a = load_file(str(tmp_path / "a" / "stage1_119.safetensors"))
    b = load_file(str(tmp_path / "b" / "stage1_119.safetensors"))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def test_hrm_sudoku_recipe_reports_accuracy_per_segment_cap(tmp_path):
    args = ["--size", "4", "--blanks", "6", "--train", "20", "--test", "10", "--steps", "2", "--batch", "4"]
    _run("hrm_sudoku/train.py", *args, "--dim", "16", "--eval-segments", "1", "3", "--out", str(tmp_path))
    report = json.loads((tmp_path / "sudoku4.json").read_text())
    rows = {(r["act"], r["max_segments"]): r for r in report["results"]}
    assert rows.keys() == {(True, 1), (True, 3), (False, 1), (False, 3)}
    assert rows[(False, 3)]["mean_segments"] == 3 and rows[(True, 3)]["mean_segments"] <= 3
    assert all(0 <= r["exact"] <= r["cells"] <= 1 for r in rows.values())


def test_recipes_refuse_bad_checkpoints_in_one_line(tmp_path):
    (tmp_path / "stage1_119.state.pt").write_bytes(b"not a checkpoint")
    cmd = [sys.executable, str(ROOT / "recipes" / "hashhop" / "train.py"), "--steps", "1", "--n-chars", "119"]
    bad = subprocess.run(
        [*cmd, "--hash-len", "2", "--resume", "--out", str(tmp_path)], capture_output=True, text=True
    )
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert (
        bad.stderr.strip().splitlines() == [bad.stderr.strip()]
        and "not a checkpoint of this run" in bad.stderr
    )
    cmd = [
        sys.executable,
        str(ROOT / "recipes" / "hrm_sudoku" / "train.py"),
        "--evaluate-only",
        "--test",
        "4",
    ]
    missing = subprocess.run([*cmd, "--out", str(tmp_path)], capture_output=True, text=True)
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert f"{tmp_path / 'sudoku4.safetensors'}: no weights of this configuration" in missing.stderr
