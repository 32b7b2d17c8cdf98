"""Whole-or-absent output: a failed write, synthesis or pack leaves the old files as they were and
nothing new behind (issue 15, rows 1 and 14)."""

from __future__ import annotations

import pytest

from mmchunk.atomic import atomic_write, replacing_shards
from mmchunk.cli import main
from mmchunk.data import synth
from mmchunk.data.formats import pack_dataset
from mmchunk.data.pack import PackItem, PackReport, write_items


def snapshot(root):
    """Every file under `root` (hidden ones included) → its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_atomic_write_is_whole_or_absent(tmp_path):
    path = tmp_path / "plot.png"
    atomic_write(path, lambda tmp: tmp.write_bytes(b"new"))
    assert path.read_bytes() == b"new"

    def fail(tmp):
        assert tmp.suffix == ".png" and tmp.parent == tmp_path  # writers infer the format from it
        tmp.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, fail)
    assert snapshot(tmp_path) == {"plot.png": b"new"}


def test_replacing_shards_swaps_only_on_success(tmp_path):
    out = tmp_path / "out"
    (out / "train").mkdir(parents=True)
    (out / "train" / "old-000000.tar").write_bytes(b"old")
    (out / "train" / "sizes.json").write_text("{}")
    (out / "README").write_text("the user's own file")
    before = snapshot(tmp_path)
    refused = pytest.raises(ValueError, match=r"already holds shards .*pass --overwrite")
    with refused, replacing_shards(out, overwrite=False):
        pass
    for failure in (RuntimeError("boom"), KeyboardInterrupt()):
        with pytest.raises(type(failure)), replacing_shards(out) as stage:
            (stage / "train").mkdir()
            (stage / "train" / "new-000000.tar").write_bytes(b"new")
            raise failure
        assert snapshot(tmp_path) == before
    with replacing_shards(out):
        pass  # nothing staged: nothing replaced
    assert snapshot(tmp_path) == before
    with replacing_shards(out) as stage:
        (stage / "val").mkdir()
        (stage / "val" / "val-000000.tar").write_bytes(b"new")
    assert snapshot(tmp_path) == {"out/README": b"the user's own file", "out/val/val-000000.tar": b"new"}


def test_missing_output_is_not_created_on_failure(tmp_path):
    with pytest.raises(RuntimeError), replacing_shards(tmp_path / "a" / "b") as stage:
        (stage / "x.tar").write_bytes(b"")
        raise RuntimeError
    assert snapshot(tmp_path) == {} and [p.name for p in tmp_path.iterdir()] == ["a"]


def test_a_file_in_the_way_is_refused_before_any_work(tmp_path):
    (tmp_path / "out").write_text("not a folder")
    with pytest.raises(NotADirectoryError, match="is a file"), replacing_shards(tmp_path / "out"):
        pytest.fail("the block must not run")
    assert snapshot(tmp_path) == {"out": b"not a folder"}


def test_failed_synthesis_keeps_the_old_corpus(tmp_path, monkeypatch):
    """The issue's row 1 for `data synth`: a run that dies midway changes no byte of the corpus."""
    out = tmp_path / "corpus"
    synth.synth_corpus(out, 4, seed=1, val_fraction=0.25, shard_size=1, workers=1, progress=False)
    before = snapshot(tmp_path)
    real = synth.synth_sample

    def dies_at_the_third(seed, index, *args):
        if index == 2:
            raise RuntimeError("espeak died")
        return real(seed, index, *args)

    monkeypatch.setattr(synth, "synth_sample", dies_at_the_third)
    with pytest.raises(RuntimeError, match="espeak died"):
        synth.synth_corpus(out, 3, seed=2, val_fraction=0.0, shard_size=1, workers=1, progress=False)
    assert snapshot(tmp_path) == before


def test_failed_pack_keeps_the_old_shards(tmp_path):
    def items(fail: bool):
        yield PackItem("", "a", {"txt": b"one"})
        if fail:
            raise KeyboardInterrupt
        yield PackItem("", "b", {"txt": b"two"})

    out = tmp_path / "out"
    write_items(items(False), out, PackReport(), shard_size=1)
    before = snapshot(tmp_path)
    assert sorted(before) == ["out/data-000000.tar", "out/data-000001.tar", "out/sizes.json"]
    with pytest.raises(KeyboardInterrupt):
        write_items(items(True), out, PackReport(), shard_size=1)
    assert snapshot(tmp_path) == before
    with pytest.raises(ValueError, match="already holds shards"):
        pack_dataset("folder", tmp_path, out, overwrite=False)
    assert snapshot(tmp_path) == before


def test_repacking_with_another_shard_size_leaves_no_stale_shard(tmp_path, capsys):
    """The issue's row 1: pack with --shard-size 2, then again with the default: one shard, no
    duplicate keys in what the loader reads."""
    import soundfile
    import torch

    src = tmp_path / "src"
    src.mkdir()
    for i in range(5):
        soundfile.write(src / f"s{i}.wav", torch.zeros(1600).numpy(), 16_000)
        (src / f"s{i}.txt").write_text(f"sample {i}")
    out = tmp_path / "out"
    assert main(["data", "pack", str(src), "--out", str(out), "--shard-size", "2"]) == 0
    assert len(list(out.glob("*.tar"))) == 3
    assert main(["data", "pack", str(src), "--out", str(out), "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["data-000000.tar", "sizes.json"]
    capsys.readouterr()
    assert main(["data", "check", str(out)]) == 0
    assert capsys.readouterr().out == "5 samples ok, 0 skipped\n"
