"""Distributed training on 2 CPU processes (gloo DDP): no hang whatever the shard layout, disjoint
training samples, equal weights, and validation figures of the whole val set equal to one process's."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from mmchunk.data.distributed import ShardPart, lockstep, split_shards
from mmchunk.data.synth import synth_corpus


def shard_keys(shard: Path) -> list[str]:
    """The sample keys of a shard, in order (by hand: the tar's member names)."""
    with tarfile.open(shard) as tar:
        return list(dict.fromkeys(m.name.split(".", 1)[0] for m in tar.getmembers()))


def test_split_shards_keeps_every_sample_once_and_balances():
    urls = [f"s{i}" for i in range(5)]
    parts = [split_shards(urls, r, 2) for r in range(2)]
    assert parts[0] == [ShardPart("s0", 0), ShardPart("s2", 2), ShardPart("s4", 4, 0, 2)]
    assert parts[1] == [ShardPart("s1", 1), ShardPart("s3", 3), ShardPart("s4", 4, 1, 2)]
    sizes = [7, 7, 7, 7, 3]  # samples per shard: each (shard, position) owned by exactly one rank
    owners = {
        (p.index, pos): r for r in range(2) for p in parts[r] for pos in range(sizes[p.index]) if p.keeps(pos)
    }
    assert len(owners) == sum(sizes)
    assert sorted(list(owners.values()).count(r) for r in range(2)) == [15, 16]
    one = [split_shards(["only"], r, 3) for r in range(3)]  # fewer shards than ranks: every rank a share
    assert [p[0].part for p in one] == [0, 1, 2] and all(p[0].parts == 3 for p in one)
    assert split_shards(urls, 0, 1) == [ShardPart(u, i) for i, u in enumerate(urls)]
    assert split_shards([], 1, 2) == []
    with pytest.raises(ValueError, match="rank 2 outside a world of 2"):
        split_shards(urls, 2, 2)


def test_lockstep_without_a_process_group_passes_batches_through():
    assert list(lockstep(iter([1, 2, 3]), pad=lambda: 0)) == [1, 2, 3]
    assert list(lockstep(iter([]))) == []


SCORED = ("a2t_R@1", "t2a_R@1", "a2t_mAP@10", "compression_audio", "boundary_f1_50ms")
SCORED += ("random_boundary_f1_50ms", "align_within_100ms", "silence_boundary_fraction")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_ranks_end_on_every_shard_layout(tmp_path):
    synth_corpus(
        tmp_path / "data", 10, video=True, seed=2, val_fraction=0.0, shard_size=4, workers=1, progress=False
    )
    shards = sorted(str(p) for p in (tmp_path / "data" / "train").glob("*.tar"))
    assert [len(shard_keys(Path(s))) for s in shards] == [4, 4, 2]
    layouts = [
        {"name": "one_shard", "train": shards[:1], "val": shards[:1], "steps": 2},  # fewer shards than ranks
        {"name": "unequal", "train": [shards[0], shards[2]], "val": [shards[0], shards[2]], "steps": 3},
        {"name": "three", "train": shards, "val": shards, "steps": 2},  # one shard left over for 2 ranks
        {"name": "equal", "train": shards[:2], "val": [], "steps": 3},
    ]
    (tmp_path / "layouts.json").write_text(json.dumps(layouts))
    out = tmp_path / "out"
    out.mkdir()
    script = Path(__file__).with_name("ddp_train.py")
    base = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "NODE_RANK")}
    base.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), WORLD_SIZE="2")
    command = [sys.executable, str(script), str(tmp_path / "layouts.json"), str(out)]
    envs = [{**base, "RANK": str(r), "LOCAL_RANK": str(r), "NODE_RANK": "0"} for r in range(2)]
    options = {"cwd": tmp_path, "stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
    procs = [subprocess.Popen(command, env=env, **options) for env in envs]
    try:
        logs = [p.communicate(timeout=420)[0] for p in procs]
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        pytest.fail("2 DDP ranks did not end within 7 minutes (a hang)")
    assert all(p.returncode == 0 for p in procs), logs[0][-3000:] + logs[1][-3000:]
    for layout in layouts:
        ranks = [json.loads((out / f"{layout['name']}.rank{r}.json").read_text()) for r in (0, 1)]
        assert ranks[0]["checksum"] == ranks[1]["checksum"] and ranks[0]["norm"] == ranks[1]["norm"]
        for epoch in ranks[0]["train"]:  # every epoch: the ranks train on disjoint samples, as many each
            keys = [ranks[r]["train"].get(epoch, []) for r in (0, 1)]
            assert keys[0] and len(keys[0]) == len(keys[1]) and not set(keys[0]) & set(keys[1])
        if not layout["val"]:
            assert len(ranks[0]["train"]["0"]) == 4  # 2 shards of 4: one per rank, 2 batches of 2
            continue
        expected = [k for s in layout["val"] for k in shard_keys(Path(s))]
        scored = ranks[0]["val"] + ranks[1]["val"]
        assert sorted(scored) == sorted(expected)  # no val sample dropped, none scored twice
        logged = [r["logged"] for r in ranks]
        assert logged[0] == logged[1]  # every rank logs the figures of the whole val set
        one = ranks[0]["one_process"]
        for name in SCORED:
            assert logged[0][f"val/{name}"] == pytest.approx(one[name], abs=1e-5), name
