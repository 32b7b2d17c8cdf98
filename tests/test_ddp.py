"""Distributed training: 2 CPU processes (gloo DDP) read disjoint samples and end with equal weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from mmchunk.data.synth import synth_corpus


def test_two_process_ddp(tmp_path):
    synth_corpus(tmp_path / "data", 16, seed=2, val_fraction=0.0, shard_size=4, workers=1, progress=False)
    out = tmp_path / "out"
    out.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    script = Path(__file__).with_name("ddp_train.py")
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "data" / "train"), str(out)],
        capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    keys = [set(r["keys"]) for r in ranks]
    assert keys[0] and keys[1] and not keys[0] & keys[1]
    assert len(ranks[0]["keys"]) == len(ranks[1]["keys"]) == 6  # 3 steps of 2 samples each
    assert ranks[0]["checksum"] == ranks[1]["checksum"] and ranks[0]["norm"] == ranks[1]["norm"]
