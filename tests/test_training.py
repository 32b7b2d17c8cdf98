"""Lightning training: the recipe runs end to end through `mmchunk fit` on a tiny corpus."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from mmchunk.data.synth import synth_corpus
from mmchunk.evaluation import ValidationAccumulator, fraction_inside
from mmchunk.training import run_fit

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "audio_text" / "demo_cpu.yaml"


def test_fraction_inside_and_accumulator_scores():
    assert fraction_inside([0.5, 1.5, 2.0], [[0.0, 1.0], [1.9, 2.5]]) == (2, 3)
    acc = ValidationAccumulator()
    emb = torch.nn.functional.normalize(torch.eye(3), dim=-1)
    acc.update(emb, emb, {}, [{"duration": 1.0}] * 3)
    scores = acc.compute()
    assert scores["a2t_R@1"] == 1.0 and scores["t2a_mAP@10"] == 1.0


def test_fit_recipe_runs_and_saves_config(tmp_path):
    synth_corpus(
        tmp_path / "data", 8, video=True, seed=1, val_fraction=0.5, shard_size=4, workers=1, progress=False
    )
    run = tmp_path / "run"
    run_fit([
        "--config", str(RECIPE),
        "--trainer.max_steps", "2", "--trainer.val_check_interval", "2",
        "--trainer.enable_progress_bar", "false",
        "--trainer.default_root_dir", str(run), "--trainer.logger.init_args.save_dir", str(run),
        "--model.dim", "32", "--model.embed_dim", "16", "--model.heads", "2", "--model.main_depth", "1",
        "--model.max_steps", "2",
        "--data.train", str(tmp_path / "data" / "train"), "--data.val", str(tmp_path / "data" / "val"),
        "--data.num_workers", "0", "--data.max_samples", "4",
    ])  # fmt: skip
    logs = sorted(run.glob("logs/version_*"))
    assert logs, "CSV logs written"
    assert (logs[-1] / "config.yaml").exists() or (run / "config.yaml").exists()
    with open(logs[-1] / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    val = [r for r in rows if r.get("val/a2t_R@1")]
    assert val and 0.0 <= float(val[-1]["val/a2t_R@1"]) <= 1.0
    assert float(val[-1]["val/compression_audio"]) >= 1.0
    last = logs[-1] / "checkpoints" / "last.ckpt"
    state = torch.load(last, weights_only=True, map_location="cpu")  # plain tensors and containers only
    assert state["global_step"] == 2


@pytest.mark.parametrize("bad", ["--model.chunk_rate_hz=100"])
def test_fit_rejects_impossible_chunk_rate(tmp_path, bad):
    with pytest.raises((SystemExit, ValueError)):
        run_fit(
            ["--config", str(RECIPE), bad, "--trainer.max_steps", "1", "--data.train", "x", "--data.val", "y"]
        )


def test_heuristic_baselines():
    from mmchunk.evaluation import energy_vad_boundaries, frame_difference_keep

    rate = 16_000
    tone = 0.3 * torch.sin(torch.arange(rate // 2) * (2 * torch.pi * 300 / rate))
    wave = torch.cat([torch.zeros(rate // 2), tone, torch.zeros(rate // 2)])
    assert energy_vad_boundaries(wave, rate) == pytest.approx([0.5, 1.0], abs=0.011)
    frame = torch.randint(0, 255, (3, 8, 8), dtype=torch.uint8)
    frames = torch.stack([frame, frame, 255 - frame, 255 - frame])
    assert frame_difference_keep(frames).tolist() == [True, False, True, False]
    assert frame_difference_keep(frames[:1]).tolist() == [True]


def test_full_pipeline_writes_reports(tmp_path):
    from mmchunk.pipeline import format_summary, run_pipeline

    tiny = ["--model.dim=32", "--model.embed_dim=16", "--model.heads=2", "--model.main_depth=1"]
    steps = ["--trainer.max_steps=2", "--model.max_steps=2", "--trainer.val_check_interval=2"]
    quiet = ["--trainer.enable_progress_bar=false", "--data.num_workers=0", "--data.max_samples=4"]
    scores = run_pipeline(tmp_path, num=10, val=4, extra=tiny + steps + quiet)
    for key in ("a2t_R@1", "t2a_R@1", "boundary_f1_50ms", "baseline_boundary_f1_50ms", "compression_audio",
                "silence_boundary_fraction", "silence_time_fraction", "static_time_fraction"):  # fmt: skip
        assert key in scores, key
    assert (tmp_path / "model.ckpt").exists() and (tmp_path / "boundaries.png").stat().st_size > 1000
    assert "a2t_R@1" in format_summary(scores)
