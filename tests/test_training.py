"""Lightning training: the recipe runs end to end through `mmchunk fit` on a tiny corpus."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from mmchunk.data.synth import synth_corpus
from mmchunk.evaluation import ValidationAccumulator, fraction_inside, merge_accumulators
from mmchunk.training import AudioTextModule, ShardDataModule, run_fit

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "audio_text" / "demo_cpu.yaml"


def test_fraction_inside_and_accumulator_scores():
    assert fraction_inside([0.5, 1.5, 2.0], [[0.0, 1.0], [1.9, 2.5]]) == (2, 3)
    assert fraction_inside([0.05, 0.5, 0.95, 1.0], [[0.0, 1.0]], margin=0.1) == (1, 4)  # edges ±1 token
    acc = ValidationAccumulator()
    emb = torch.nn.functional.normalize(torch.eye(3), dim=-1)
    acc.update(emb, emb, {}, [{"_seconds": 1.0}] * 3)
    scores = acc.compute()
    assert scores["a2t_R@1"] == 1.0 and scores["t2a_mAP@10"] == 1.0


def test_accumulator_scores_boundaries_against_words_and_phones_by_hand():
    from mmchunk.chunker import DynamicChunker
    from mmchunk.ragged import Ragged

    starts = torch.arange(50) * 0.04
    x = Ragged.from_list([torch.randn(50, 4)], t_start=[starts], t_end=[starts + 0.04])
    imposed = torch.zeros(50, dtype=torch.bool)
    imposed[[10, 20, 30]] = True  # boundaries at 0.40, 0.80 and 1.20 s
    routing = {"audio": DynamicChunker(4)(x, boundaries=imposed)}
    meta = {"_seconds": 2.0, "words": [{"start": 0.41}, {"start": 1.5}],
            "phones": [{"start": t} for t in (0.41, 0.60, 0.79, 1.5)]}  # fmt: skip
    acc = ValidationAccumulator()
    acc.update(torch.ones(1, 2), torch.ones(1, 2), routing, [meta])
    scores = acc.compute()
    assert scores["phone_boundary_precision_20ms"] == pytest.approx(2 / 3)  # 0.40↔0.41, 0.80↔0.79
    assert scores["phone_boundary_recall_20ms"] == pytest.approx(2 / 4)
    assert scores["phone_boundary_f1_20ms"] == pytest.approx(4 / 7)
    assert scores["boundary_f1_20ms"] == scores["boundary_f1_50ms"] == pytest.approx(0.4)  # P 1/3, R 1/2
    assert "phone_boundary_f1_50ms" not in scores and "stage2_boundary_f1_50ms" not in scores
    assert "fixed_boundary_f1_50ms" not in scores  # no token period: no baseline grid
    acc = ValidationAccumulator({"audio": 0.04})
    acc.update(torch.ones(1, 2), torch.ones(1, 2), routing, [meta])
    scores = acc.compute()  # 50 tokens in 4 chunks: fixed stride 12.5, boundaries at 0.52, 1.00, 1.52 s
    assert scores["fixed_boundary_precision_50ms"] == pytest.approx(1 / 3)  # 1.52 ↔ 1.5
    assert scores["fixed_boundary_f1_50ms"] == pytest.approx(0.4)
    assert 0.0 <= scores["random_boundary_f1_50ms"] <= 1.0


def test_merged_accumulators_score_as_one_pass_over_every_clip():
    """Clips scored by two ranks (shards split as `split_shards` does, batches of their own) and
    merged give one process's figures, with every clip's word starts still beside its own words."""
    from mmchunk.chunker import DynamicChunker
    from mmchunk.ragged import Ragged

    torch.manual_seed(0)
    n = 7
    emb = torch.nn.functional.normalize(torch.randn(n, 8), dim=-1)
    text = torch.nn.functional.normalize(emb + 0.8 * torch.randn(n, 8), dim=-1)
    lengths = [30 + 5 * i for i in range(n)]
    feats = [torch.randn(t, 4) for t in lengths]
    words = [[{"start": 0.2 + 0.1 * i}, {"start": 0.3 + 0.1 * i}] for i in range(n)]  # 100 ms apart per clip
    metas = [{"_seconds": t * 0.04, "_order": [i // 4, i % 4], "words": words[i], "silences": [[0.0, 0.1]]}
             for i, t in enumerate(lengths)]  # fmt: skip
    chunker = DynamicChunker(4)

    def add(acc, rows):
        starts = [torch.arange(lengths[i]) * 0.04 for i in rows]
        x = Ragged.from_list([feats[i] for i in rows], t_start=starts, t_end=[t + 0.04 for t in starts])
        with torch.no_grad():
            placed = [[w["start"] for w in words[i]] for i in rows]  # an aligner that places every word
            acc.update(emb[rows], text[rows], {"audio": chunker(x)}, [metas[i] for i in rows], None, placed)

    one = ValidationAccumulator({"audio": 0.04})
    for rows in ([0, 1, 2], [3, 4], [5, 6]):
        add(one, rows)
    ranks = [ValidationAccumulator({"audio": 0.04}) for _ in range(2)]
    for rank, batches in ((0, ([0, 1], [2, 3])), (1, ([5], [4, 6]))):  # out of order within a rank too
        for rows in batches:
            add(ranks[rank], rows)
    merged, expected = merge_accumulators(ranks).compute(), one.compute()
    assert merged.keys() == expected.keys() and expected["align_within_50ms"] == 1.0  # by hand
    assert merge_accumulators(ranks).metas == one.metas  # the clips in one process's order
    for key, value in expected.items():
        assert merged[key] == pytest.approx(value, abs=1e-6), key
    assert merge_accumulators([ValidationAccumulator(), ValidationAccumulator()]).clips == 0


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
        "--model.dim", "32", "--model.embed_dim", "16", "--model.heads", "2", "--model.backbone.depth", "1",
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


def _tiny_fit(data: Path, run: Path, steps: int, *extra: str):
    return run_fit([
        "--config", str(RECIPE),
        "--trainer.max_steps", str(steps), "--trainer.val_check_interval", "2",
        "--trainer.enable_progress_bar", "false",
        "--trainer.default_root_dir", str(run), "--trainer.logger.init_args.save_dir", str(run),
        "--model.dim", "32", "--model.embed_dim", "16", "--model.heads", "2", "--model.backbone.depth", "1",
        "--model.max_steps", "5", "--model.warmup_steps", "2",  # the schedule of a 5-step run
        "--data.train", str(data / "train"), "--data.val", str(data / "val"),
        "--data.num_workers", "0", "--data.max_samples", "2",
        "--model.aligner.clips", "1",  # the recipe's probe on a subset of each batch, as with 16 of 64
        *extra,
    ])  # fmt: skip


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    """A corpus of 6 training samples (3 batches per epoch) and the weights after 5 straight steps."""
    root = tmp_path_factory.mktemp("resume")
    synth_corpus(
        root / "data", 8, video=True, seed=2, val_fraction=0.25, shard_size=3, workers=1, progress=False
    )
    return root / "data", _tiny_fit(root / "data", root / "a", 5).lightning_module.state_dict()


@pytest.mark.parametrize("stop", [1, 3, 4])
def test_resume_at_any_step_is_exact(straight_run, tmp_path, stop):
    """Stopped after `stop` steps (inside the first epoch, at its end, inside the second) and
    resumed to 5: the weights equal the straight run's bit for bit. (A stop at `max_steps` inside
    an epoch is saved by Lightning as that epoch finished: `on_load_checkpoint` takes it back.)"""
    data, straight = straight_run
    _tiny_fit(data, tmp_path, stop)
    last = next(tmp_path.glob("logs/version_*/checkpoints/last.ckpt"))
    got = _tiny_fit(data, tmp_path, 5, "--ckpt_path", str(last)).lightning_module.state_dict()
    for name in straight:  # the routing's running peak level too (NaN for the modalities without gain)
        torch.testing.assert_close(got[name], straight[name], rtol=0, atol=0, equal_nan=True, msg=name)
    assert straight["model.chunker.routing_peak"][0].isfinite()


def test_a_ctc_probe_changes_no_weight_of_the_model(straight_run, tmp_path):
    """Five steps with the recipe's detached CTC probe (and gradient clipping, as the recipe has) and
    five without it, both without the pause loss (which trains the routing from the probe's
    alignment on purpose): every weight outside the probe is the same bit for bit, and the probe
    trained. With the recipe's pause loss the routing weights move."""
    data, recipe = straight_run
    no_pause = "--model.objectives.pause.weight", "0"
    probed = _tiny_fit(data, tmp_path / "p", 5, *no_pause).lightning_module.state_dict()
    without = "--model.objectives.ctc.weight", "0", "--model.aligner", "null"
    got = _tiny_fit(data, tmp_path, 5, *without, *no_pause).lightning_module.state_dict()
    extra = {name for name in probed if name not in got}
    assert extra and all(name.startswith(("model.ctc_head.", "model.ctc_probe.")) for name in extra)
    for name in got:
        torch.testing.assert_close(probed[name], got[name], rtol=0, atol=0, equal_nan=True, msg=name)
    assert not torch.equal(recipe["model.chunker.q_proj.weight"], probed["model.chunker.q_proj.weight"])


def test_init_from_copies_every_tensor_the_model_shares(tmp_path):
    """A 2-stage model started from a 1-stage checkpoint: before fitting (`setup("fit")`, not for
    validation) every tensor of the checkpoint is copied bit for bit, the second stage's routing keeps
    its own initial weights, and a model of another width is a one-line error naming the tensor."""
    small = {"dim": 32, "embed_dim": 16, "heads": 2, "backbone": {"depth": 1}}
    torch.manual_seed(1)
    trained = AudioTextModule(**small).state_dict()
    path = tmp_path / "one_stage.ckpt"
    torch.save({"state_dict": trained, "hyper_parameters": small}, path)
    torch.manual_seed(2)
    module = AudioTextModule(**{**small, "backbone": {"depth": 1, "stages": 2}}, init_from=str(path))
    before = {name: value.clone() for name, value in module.state_dict().items()}
    module.setup("validate")
    assert all(torch.equal(module.state_dict()[name], value) for name, value in before.items())
    module.setup("fit")
    after = module.state_dict()
    fresh = set(after) - set(trained)
    assert fresh and all(name.startswith("model.main.chunker.") for name in fresh)
    for name, value in after.items():
        expected = before[name] if name in fresh else trained[name]
        torch.testing.assert_close(value, expected, rtol=0, atol=0, equal_nan=True, msg=name)
    assert any(not torch.equal(before[name], trained[name]) for name in trained)  # something was copied
    wider = AudioTextModule(**{**small, "dim": 48}, init_from=str(path))
    with pytest.raises(ValueError, match=r"one_stage.ckpt: model\.\S+ is \(\d+"):
        wider.setup("fit")


def test_a_resumed_run_keeps_its_own_weights_over_init_from(straight_run, tmp_path):
    """A run started from another run's weights (`init_from`), stopped after 2 steps and resumed to
    5, ends as the same run straight to 5: the resume restores its checkpoint over `init_from`."""
    data, _ = straight_run
    start = str(next((data.parent / "a").glob("logs/version_*/checkpoints/last.ckpt")))
    straight = _tiny_fit(data, tmp_path / "s", 5, "--model.init_from", start).lightning_module.state_dict()
    _tiny_fit(data, tmp_path / "r", 2, "--model.init_from", start)
    last = next((tmp_path / "r").glob("logs/version_*/checkpoints/last.ckpt"))
    got = _tiny_fit(data, tmp_path / "r", 5, "--model.init_from", start, "--ckpt_path", str(last))
    for name, value in got.lightning_module.state_dict().items():
        torch.testing.assert_close(value, straight[name], rtol=0, atol=0, equal_nan=True, msg=name)


def test_resume_mid_epoch_is_exact(straight_run, tmp_path, monkeypatch):
    """5 steps straight == 2 steps, stop, resume from last.ckpt to 5 (3 batches per epoch: the stop
    is mid-epoch and the resumed run crosses into the next, reshuffled, epoch). The stopped and
    resumed runs prefetch their batches in a thread: the same batches as the straight run's."""
    data, straight = straight_run
    _tiny_fit(data, tmp_path / "b", 2, "--data.cache", "true", "--data.prefetch", "2")
    last = next((tmp_path / "b").glob("logs/version_*/checkpoints/last.ckpt"))
    resumed = _tiny_fit(
        data, tmp_path / "b", 5, "--data.cache", "true", "--data.prefetch", "2", "--ckpt_path", str(last)
    )
    assert resumed.global_step == 5
    assert resumed.datamodule.augment is not None and resumed.datamodule.augment.p_noise > 0  # the recipe's
    got = resumed.lightning_module.state_dict()
    assert straight.keys() == got.keys()
    for name in straight:
        torch.testing.assert_close(got[name], straight[name], rtol=0, atol=0, equal_nan=True, msg=name)

    # the skip matters: resuming with the epoch restarted from its first batch ends elsewhere
    def from_epoch_start(self):
        return self.trainer.fit_loop.epoch_progress.current.processed, 0

    monkeypatch.setattr(ShardDataModule, "_train_position", from_epoch_start)
    restarted = _tiny_fit(data, tmp_path / "b", 5, "--ckpt_path", str(last)).lightning_module.state_dict()
    assert any(not torch.equal(restarted[n], straight[n]) for n in straight)


@pytest.mark.parametrize("bad", ["--model.chunk_rate_hz=100"])
def test_fit_rejects_impossible_chunk_rate(tmp_path, bad):
    (tmp_path / "a.tar").write_bytes(b"")  # the data check passes; the model cannot be built
    with pytest.raises((SystemExit, ValueError), match="cannot be compressed"):
        run_fit(["--config", str(RECIPE), bad, "--data.train", str(tmp_path), "--data.val", str(tmp_path),
                 "--trainer.default_root_dir", str(tmp_path / "run")])  # fmt: skip


def test_heuristic_baselines():
    from mmchunk.evaluation import frame_difference_keep
    from mmchunk.vad import energy_vad_boundaries

    rate = 16_000
    tone = 0.3 * torch.sin(torch.arange(rate // 2) * (2 * torch.pi * 300 / rate))
    wave = torch.cat([torch.zeros(rate // 2), tone, torch.zeros(rate // 2)])
    assert energy_vad_boundaries(wave, rate) == pytest.approx([0.5, 1.0], abs=0.011)
    frame = torch.randint(0, 255, (3, 8, 8), dtype=torch.uint8)
    frames = torch.stack([frame, frame, 255 - frame, 255 - frame])
    assert frame_difference_keep(frames).tolist() == [True, False, True, False]
    assert frame_difference_keep(frames[:1]).tolist() == [True]


def test_full_pipeline_writes_reports(tmp_path):
    from mmchunk.pipeline import demo_targets, format_summary, run_pipeline

    tiny = ["--model.dim=32", "--model.embed_dim=16", "--model.heads=2", "--model.backbone.depth=1"]
    steps = ["--trainer.max_steps=2", "--trainer.val_check_interval=2"]
    quiet = ["--trainer.enable_progress_bar=false", "--data.num_workers=0", "--data.max_samples=4"]
    scores = run_pipeline(tmp_path, num=10, val=4, extra=tiny + steps + quiet)
    required = (
        "a2t_R@1", "t2a_R@1", "a2t_mAP@10", "t2a_mAP@10", "boundary_f1_20ms", "boundary_f1_50ms",
        "compression_audio", "chunk_rate_audio_hz", "silence_boundary_fraction", "silence_time_fraction",
        "compression_video", "static_boundary_fraction", "static_time_fraction", "baseline_boundary_f1_50ms",
    )  # fmt: skip
    assert json.loads((tmp_path / "metrics.json").read_text()).keys() >= set(required)
    assert (tmp_path / "model.ckpt").exists() and (tmp_path / "boundaries.png").stat().st_size > 1000
    summary = format_summary(scores)
    shown = [key for key in demo_targets(scores) if key in scores]  # one mark per target with a value
    assert "a2t_R@1" in summary and summary.count("✓") + summary.count("✗") == len(shown) >= 6
    assert "fixed_boundary_f1_50ms" in summary and "even_align_within_100ms" in summary


def test_demo_targets():
    from mmchunk.pipeline import demo_targets, format_summary

    scores = {"a2t_R@1": 0.85, "t2a_R@1": 0.84, "boundary_f1_50ms": 0.5, "baseline_boundary_f1_50ms": 0.4,
              "silero_boundary_f1_50ms": 0.5, "silence_boundary_fraction": 0.2,
              "silence_time_fraction": 0.4}  # fmt: skip
    met = {k: ok for k, (_, ok) in demo_targets(scores).items()}
    assert met == {
        "a2t_R@1": True, "t2a_R@1": False, "boundary_f1_50ms": False, "boundary_r_value_50ms": False,
        "silence_boundary_fraction": True,
    }  # fmt: skip
    scores["boundary_f1_50ms"] = 0.59  # above both VADs by 0.09 only
    assert not demo_targets(scores)["boundary_f1_50ms"][1]
    scores["boundary_f1_50ms"], scores["boundary_r_value_50ms"] = 0.61, 0.6  # ≥ 0.6 and VAD + 0.1
    assert demo_targets(scores)["boundary_f1_50ms"][1] and demo_targets(scores)["boundary_r_value_50ms"][1]
    scores["silero_boundary_f1_50ms"] = 0.52
    assert not demo_targets(scores)["boundary_f1_50ms"][1]  # 0.61 < 0.52 + 0.1
    scores.update(align_within_100ms=0.8, align_median_error_ms=51.0)
    met = demo_targets(scores)
    assert met["align_within_100ms"][1] and not met["align_median_error_ms"][1]
    scores.update(stage2_boundary_f1_50ms=0.63, stage2_boundary_r_value_50ms=0.59)  # a second stage
    met = {k: ok for k, (_, ok) in demo_targets(scores).items()}
    assert met["stage2_boundary_f1_50ms"] and not met["stage2_boundary_r_value_50ms"]
    assert "boundary_f1_50ms" not in met and "stage2_boundary_f1_50ms" in format_summary(scores)


def test_fit_checks_the_data_before_building_anything(tmp_path):
    run, shards = tmp_path / "run", tmp_path / "shards"
    shards.mkdir()
    (shards / "train-000000.tar").write_bytes(b"")
    args = ["--config", str(RECIPE), "--trainer.default_root_dir", str(run),
            "--trainer.logger.init_args.save_dir", str(run)]  # fmt: skip
    with pytest.raises(FileNotFoundError, match=r"^--data.train: no such shard or folder: .*missing$"):
        run_fit([*args, "--data.train", str(tmp_path / "missing"), "--data.val", str(shards)])
    with pytest.raises(FileNotFoundError, match=r"^--data.val: no shards match"):
        run_fit([*args, "--data.train", str(shards), "--data.val", str(tmp_path / "run*")])
    both = [*args, "--data.train", str(shards), "--data.val", str(shards)]
    with pytest.raises(FileNotFoundError, match=r"^--model.init_from: no such checkpoint: .*gone.ckpt$"):
        run_fit([*both, "--model.init_from", str(tmp_path / "gone.ckpt")])
    with pytest.raises(ValueError, match=r"^--model.init_from: .*train-000000.tar: the file is empty$"):
        run_fit([*both, "--model.init_from", str(shards / "train-000000.tar")])
    assert not run.exists()


def test_one_step_count_and_help_and_short_errors(capsys):
    from types import SimpleNamespace

    from mmchunk.training import AudioTextModule

    module = AudioTextModule(dim=32, embed_dim=16, heads=2, backbone={"depth": 1}, warmup_steps=2)
    factors = {}
    for steps in (10, -1):  # the trainer's max_steps sets the decay; none: no decay
        module._trainer = SimpleNamespace(max_steps=steps)
        schedule = module.configure_optimizers()["lr_scheduler"]["scheduler"].lr_lambdas[0]
        factors[steps] = [round(schedule(s), 4) for s in (0, 1, 2, 6, 10)]
    assert factors == {10: [0.5, 1.0, 1.0, 0.5, 0.0], -1: [0.5, 1.0, 1.0, 1.0, 1.0]}
    module._trainer = None
    with pytest.raises(SystemExit) as exit_:
        run_fit(["--config", str(RECIPE), "--model.dimm", "5"])
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        exit_.value.code == 2
        and len(err) == 1
        and err[0].endswith("(did you mean --model.dim for --model.dimm?)")
    )
    with pytest.raises(SystemExit):
        run_fit(["--help"])
    help_text = capsys.readouterr().out
    assert (
        "width of every encoder, the chunker and the main" in help_text and "--model.max_steps" in help_text
    )


def test_a_run_shorter_than_the_validation_interval_validates_at_its_end(tmp_path):
    data = tmp_path / "data"
    synth_corpus(data, 6, seed=5, val_fraction=0.34, shard_size=3, workers=1, progress=False)
    run = tmp_path / "run"
    run_fit([
        "--config", str(RECIPE), "--trainer.max_steps", "2", "--trainer.enable_progress_bar", "false",
        "--trainer.default_root_dir", str(run), "--trainer.logger.init_args.save_dir", str(run),
        "--model.dim", "32", "--model.embed_dim", "16", "--model.heads", "2", "--model.backbone.depth", "1",
        "--data.train", str(data / "train"), "--data.val", str(data / "val"), "--data.max_samples", "2",
        "--data.use_video", "false",
    ])  # fmt: skip
    rows = (run / "logs" / "version_0" / "metrics.csv").read_text().splitlines()
    assert "val/a2t_R@1" in rows[0].split(",")  # the recipe validates every 480 steps; this run at step 2
