"""Export of fused embeddings: the files read back, retrieval from them, resumability, ranks, safety."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

from mmchunk import load_embeddings
from mmchunk.checkpoint import load_module
from mmchunk.data import DataConfig, make_dataset
from mmchunk.evaluation import ValidationAccumulator
from mmchunk.export import export_embeddings
from mmchunk.training import batch_inputs

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "audio_text" / "demo_cpu.yaml"


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_export_reads_back_and_retrieves_like_training(trained, tmp_path):
    data, ckpt = trained
    out = tmp_path / "emb"
    result = export_embeddings(ckpt, data / "val", out, per_chunk=True, dtype="float32", progress=False)
    keys, emb, per_modality, chunks = load_embeddings(out)
    stream = [k for b in make_dataset(data / "val", DataConfig(use_video=False)) for k in b.keys]
    assert keys == stream and len(set(keys)) == 6 and result["counts"]["samples"] == 6
    assert emb.shape == (6, 32) and per_modality["audio"].shape == per_modality["text"].shape == (6, 16)
    # the pooled embedding is the mean of the sample's exported chunks
    assert chunks.batch_size == 6 and (chunks.lengths > 0).all()
    for i, rows in enumerate(chunks.split()):
        torch.testing.assert_close(rows.mean(0), emb[i], atol=1e-5, rtol=1e-5)
    assert (chunks.t_start <= chunks.t_end).all() and set(chunks.modality.tolist()) == {0, 1}
    # retrieval from the files == the validation metric computed in training
    sim = per_modality["audio"] @ per_modality["text"].T
    from_files = (sim.argmax(1) == torch.arange(6)).float().mean().item()
    module = load_module(ckpt)
    acc = ValidationAccumulator()
    with torch.no_grad():
        for batch in make_dataset(data / "val", DataConfig(use_video=False, max_samples=4)):
            out_ = module.model.eval()(batch_inputs(batch))
            acc.update(out_.audio_embedding, out_.text_embedding, out_.routing, batch.meta)
    assert from_files == pytest.approx(acc.compute()["a2t_R@1"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and manifest["dtype"] == "float32" and manifest["model"]["dim"] == 32
    assert manifest["checkpoint"]["sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()


def test_export_resumes_without_duplicates_and_reruns_change_nothing(trained, tmp_path):
    data, ckpt = trained
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    settings = dict(per_chunk=True, part_size=2, max_samples=2, progress=False)
    export_embeddings(ckpt, data / "train", whole, **settings)
    export_embeddings(ckpt, data / "train", cut, **settings)
    # an interrupted run: the last shard has one part of two and no done marker, no manifest
    (cut / "train-000002.done.json").unlink()
    (cut / "train-000002.part-0001.safetensors").unlink()
    (cut / "manifest.json").unlink()
    assert len(load_embeddings(whole).keys) == 10
    result = export_embeddings(ckpt, data / "train", cut, **settings)
    assert result["exported"] == 1  # only the missing key of the cut shard was exported again
    assert digest(cut) == digest(whole)
    keys = load_embeddings(cut).keys
    assert len(keys) == len(set(keys)) == 10
    before = digest(whole)
    assert export_embeddings(ckpt, data / "train", whole, **settings)["exported"] == 0
    assert digest(whole) == before


def test_ranks_write_disjoint_shards(trained, tmp_path, monkeypatch):
    data, ckpt = trained
    out = tmp_path / "ranks"
    written = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        before = set(out.glob("*.safetensors")) if out.exists() else set()
        result = export_embeddings(ckpt, data / "train", out, progress=False)
        written.append({p.name.split(".part")[0] for p in set(out.glob("*.safetensors")) - before})
        assert result["complete"] == (rank == 1)
    assert written == [{"train-000000", "train-000002"}, {"train-000001", "train-000003"}]
    keys = load_embeddings(out).keys
    assert len(keys) == len(set(keys)) == 10
    assert load_embeddings(out).embeddings.dtype == torch.float16


def test_tampered_checkpoint_is_refused_without_running_code(trained, tmp_path):
    _, ckpt = trained
    state = torch.load(ckpt, weights_only=True)
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (Path.touch, (marker,))

    state["hyper_parameters"]["dim"] = Exploit()
    bad = tmp_path / "bad.ckpt"
    torch.save(state, bad)
    with pytest.raises(ValueError, match="holds pickled Python objects, which mmchunk never loads"):
        load_module(bad)
    assert not marker.exists()
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "mmchunk.cli",
            "export",
            "--ckpt",
            str(bad),
            "--data",
            "x",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
    )
    assert cli.returncode == 2 and "Traceback" not in cli.stderr
    assert (
        cli.stderr.strip()
        .splitlines()[-1]
        .startswith(f"mmchunk export: error: {bad}: holds pickled Python objects")
    )
    assert not marker.exists()


def test_every_bad_checkpoint_is_one_sentence_and_nothing_is_written(trained, tmp_path):
    _, ckpt = trained
    whole = ckpt.read_bytes()
    (tmp_path / "folder.ckpt").mkdir()
    cases = {
        "folder.ckpt": f"{tmp_path / 'folder.ckpt'} is a folder, not a checkpoint file",
        "none.ckpt": f"no such checkpoint: {tmp_path / 'none.ckpt'}",
        "empty.ckpt": f"{tmp_path / 'empty.ckpt'}: the file is empty",
        "half.ckpt": f"{tmp_path / 'half.ckpt'}: the file is truncated or damaged",
        "notes.ckpt": f"{tmp_path / 'notes.ckpt'}: not a PyTorch checkpoint",
        "plain.ckpt": f"{tmp_path / 'plain.ckpt'}: not a checkpoint of `mmchunk fit` "
        "(no 'state_dict' or 'hyper_parameters')",
    }
    (tmp_path / "empty.ckpt").write_bytes(b"")
    (tmp_path / "half.ckpt").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "notes.ckpt").write_text("hello, these are my notes\n")
    torch.save({"weights": torch.ones(3)}, tmp_path / "plain.ckpt")
    state = torch.load(ckpt, weights_only=True)
    state["state_dict"]["model.extra"] = torch.ones(1)
    torch.save(state, tmp_path / "other.ckpt")
    for name, message in cases.items():
        with pytest.raises((ValueError, OSError)) as error:
            load_module(tmp_path / name)
        assert str(error.value) == message
    with pytest.raises(
        ValueError, match=r"other.ckpt: its weights do not fit the model it describes \(.*model.extra"
    ):
        load_module(tmp_path / "other.ckpt")
    for name in cases:
        done = subprocess.run(
            [str(Path(sys.executable).parent / "mmchunk"), "export", "--ckpt", str(tmp_path / name),
             "--data", "x", "--out", str(tmp_path / "out")],
            capture_output=True, text=True,
        )  # fmt: skip
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1 and "\x1b" not in lines[0], done.stderr
        assert "weights_only" not in lines[0] and lines[0].endswith(cases[name].rsplit(": ", 1)[-1])
    assert not (tmp_path / "out").exists()


def test_a_long_sample_exports_window_by_window_as_in_one_pass(trained, tmp_path):
    """A sample longer than the window: its audio chunks come window by window, and the export
    equals the one-pass export (the same chunks, times and embeddings)."""
    import numpy as np
    import soundfile

    from mmchunk.data.pack import pack_folder

    _, ckpt = trained
    src = tmp_path / "src"
    src.mkdir()
    t = np.arange(16_000 * 13) / 16_000
    wave = 0.2 * (np.sin(2 * np.pi * 0.6 * t) > 0) * np.sin(2 * np.pi * 300 * t) + 0.005 * np.sin(
        2 * np.pi * 50 * t
    )
    soundfile.write(src / "long.flac", wave.astype(np.float32), 16_000)
    (src / "long.txt").write_text("a long recording of tones and pauses")
    pack_folder(src, tmp_path / "shards")
    runs = {}
    for window in (2.0, 100.0):
        out = tmp_path / f"w{window:g}"
        export_embeddings(ckpt, tmp_path / "shards", out, per_chunk=True, dtype="float32", progress=False,
                          window_s=window)  # fmt: skip
        runs[window] = load_embeddings(out)
    windowed, single = runs[2.0], runs[100.0]
    assert windowed.keys == single.keys == ["long"] and single.chunks.num_tokens > 10
    torch.testing.assert_close(windowed.chunks.t_start, single.chunks.t_start)
    torch.testing.assert_close(windowed.chunks.values, single.chunks.values, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(windowed.embeddings, single.embeddings, atol=1e-5, rtol=1e-5)


def test_audio_only_export_takes_samples_without_text(trained, tmp_path):
    import numpy as np
    import soundfile

    from mmchunk.data.pack import pack_folder

    _, ckpt = trained
    src = tmp_path / "src"
    src.mkdir()
    soundfile.write(src / "untitled.wav", (0.1 * np.sin(np.arange(8000) / 5)).astype(np.float32), 16_000)
    pack_folder(src, tmp_path / "shards")
    audio = export_embeddings(ckpt, tmp_path / "shards", tmp_path / "a", modalities=["audio"], progress=False)
    assert audio["counts"] == {"samples": 1, "skipped": 0, "files": 1, "shards": 1}
    both = export_embeddings(ckpt, tmp_path / "shards", tmp_path / "b", progress=False)
    assert both["counts"]["samples"] == 0 and "no transcript" in both["skipped"][0]["reason"]


@pytest.mark.parametrize(("part_size", "batch", "expected"), [(4, 3, [4, 2]), (3, 2, [3, 3]), (5, 8, [5, 1])])
def test_parts_have_the_requested_size(trained, tmp_path, part_size, batch, expected):
    from mmchunk.export import shard_sample_counts

    data, ckpt = trained
    shard = sorted((data / "val").glob("*.tar"))[0]
    assert shard_sample_counts([str(shard)]) == 3 and shard_sample_counts(["http://x/a.tar"]) is None
    urls = [str(p) for p in sorted((data / "val").glob("*.tar"))]
    assert shard_sample_counts(urls) == 6
    whole = tmp_path / "whole"
    export_embeddings(ckpt, urls, whole, per_chunk=True, dtype="float32", progress=False)
    out = tmp_path / "parts"
    merged = [str(tmp_path / "val.tar")]
    with tarfile.open(merged[0], "w") as dst:  # the 6 val samples in one shard
        for url in urls:
            with tarfile.open(url) as src:
                for member in src:
                    dst.addfile(member, src.extractfile(member))
    result = export_embeddings(ckpt, merged, out, per_chunk=True, dtype="float32", progress=False,
                               part_size=part_size, max_samples=batch)  # fmt: skip
    assert [f["samples"] for f in result["files"]] == expected
    got, ref = load_embeddings(out), load_embeddings(whole)
    assert got.keys == ref.keys
    torch.testing.assert_close(got.embeddings, ref.embeddings, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.chunks.values, ref.chunks.values, atol=1e-5, rtol=1e-5)
    assert got.chunks.cu_seqlens.tolist() == ref.chunks.cu_seqlens.tolist()
