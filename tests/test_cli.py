"""The command line, the demo and the packaging, run as a user would."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mmchunk.demo import run_demo

BIN = Path(sys.executable).parent


def run(*args, cwd=None):
    return subprocess.run([str(BIN / "mmchunk"), *args], capture_output=True, text=True, cwd=cwd)


@pytest.mark.parametrize("args", [["--help"], ["demo", "--help"]])
def test_help(args):
    result = run(*args)
    assert result.returncode == 0 and "usage: mmchunk" in result.stdout


def test_demo_json_and_bad_argument():
    result = run("demo", "--clips", "2", "--seed", "3", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["frames"] > report["chunks"] > 0 and len(report["clips"]) == 2
    bad = run("demo", "--clips", "0")
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr and bad.stderr.strip().splitlines()[-1].startswith(
        "mmchunk demo: error"
    )


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
