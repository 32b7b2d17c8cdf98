"""The audio-text demo end to end: synthesize the corpus, train the recipe, evaluate, report.

`run_pipeline` writes `OUT/data/` (when missing), trains with LightningCLI, copies the best
checkpoint to `OUT/model.ckpt`, scores it on the validation split beside the VAD baselines and
under a few recording conditions (the short form of `mmchunk eval robustness`), and writes
`OUT/metrics.json` and `OUT/boundaries.png`.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from mmchunk.atomic import atomic_write, write_json
from mmchunk.builtin_recipes import resolve_recipe
from mmchunk.checkpoint import load_module
from mmchunk.data import DataConfig, Sample, make_dataset
from mmchunk.data.synth import synth_corpus
from mmchunk.eval.robustness import SHORT, condition_transform
from mmchunk.evaluation import ValidationAccumulator, frame_difference_keep
from mmchunk.metrics import boundary_scores
from mmchunk.training import AudioTextModule, run_fit, validate_batch
from mmchunk.vad import vad_baselines

RECIPE = "demo_cpu"  # the built-in recipe the demo trains
SUMMARY_KEYS = (
    "a2t_R@1", "t2a_R@1", "a2t_mAP@10", "t2a_mAP@10", "boundary_f1_20ms", "boundary_f1_50ms",
    "boundary_r_value_50ms", "stage2_boundary_f1_50ms", "stage2_boundary_r_value_50ms",
    "word_boundary_f1_50ms", "word_boundary_r_value_50ms",
    "baseline_boundary_f1_50ms", "silero_boundary_f1_50ms", "fixed_boundary_f1_50ms",
    "random_boundary_f1_50ms", "phone_boundary_f1_20ms", "align_within_100ms", "align_median_error_ms",
    "even_align_within_100ms", "even_align_median_error_ms", "compression_audio", "chunk_rate_audio_hz",
    "chunk_rate_audio_speech_hz", "silence_boundary_fraction", "silence_time_fraction", "compression_video",
    "baseline_compression_video", "static_boundary_fraction", "static_time_fraction", "seconds_synth",
    "seconds_train", "seconds_eval",
)  # fmt: skip


def evaluate(
    module: AudioTextModule,
    shards: str,
    config: DataConfig,
    transform: Callable[[Sample], Sample] | None = None,
    baselines: Iterable[str] = ("energy", "silero"),
) -> tuple[dict[str, float], list]:
    """Scores of `module` on `shards` (see `ValidationAccumulator.compute`) plus the heuristic
    baselines: VAD-edge audio boundaries (`baseline_boundary_f1_*` for the energy VAD,
    `silero_boundary_f1_*` for Silero VAD; F1 against word onsets) and RLT frame-difference video
    compression. `transform` changes every decoded sample first (a robustness condition). Also
    returns (waveform, meta, learned boundary times) of the first samples."""
    module.eval()
    acc = ValidationAccumulator(module.model.token_periods)
    vads = {name: fn for name, fn in vad_baselines().items() if name in baselines}
    predicted: dict[str, list[float]] = {name: [] for name in vads}
    reference, kept, frames = [], 0, 0
    examples = []
    offset = 0.0
    with torch.no_grad():
        for batch in make_dataset(shards, config, transform=transform):
            if not len(batch):
                continue
            out = validate_batch(module.model, batch, acc)
            audio_starts = out.routing["audio"].chunks.t_start
            chunk_cu = out.routing["audio"].chunks.cu_seqlens.tolist()
            waves = batch.audio.split()
            found = {name: fn(waves, config.sample_rate) for name, fn in vads.items()}
            for i, (wave, meta) in enumerate(zip(waves, batch.meta)):
                for name in vads:
                    predicted[name] += [t + offset for t in found[name][i]]
                reference += [w["start"] + offset for w in meta.get("words", [])]
                offset += meta["_seconds"] + 10.0
                if len(examples) < 3:
                    examples.append((wave, meta, audio_starts[chunk_cu[i] + 1 : chunk_cu[i + 1]].tolist()))
            if batch.video is not None:
                for clip in batch.video.split():
                    if len(clip):
                        kept += int(frame_difference_keep(clip).sum())
                        frames += len(clip)
    scores = acc.compute()
    for name, times in predicted.items() if reference else ():  # no word times: nothing to score against
        prefix = "baseline" if name == "energy" else name
        for tol in (20, 50):
            scores[f"{prefix}_boundary_f1_{tol}ms"] = boundary_scores(times, reference, tol / 1000)["f1"]
    if frames:
        scores["baseline_compression_video"] = frames / max(kept, 1)
    return scores, examples


def plot_boundaries(examples: list, path: Path, sample_rate: int = 16_000) -> None:
    """Waveforms with word onsets, silences and the learned chunk boundaries, one row per sample."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(examples), 1, figsize=(11, 2.4 * len(examples)), squeeze=False)
    for ax, (wave, meta, learned) in zip(axes[:, 0], examples):
        t = torch.arange(wave.numel()) / sample_rate
        ax.plot(t.numpy(), wave.numpy(), color="0.6", linewidth=0.5)
        for start, end in meta.get("silences", []):
            ax.axvspan(start, end, color="tab:blue", alpha=0.12)
        for w in meta.get("words", []):
            ax.axvline(w["start"], color="tab:green", linewidth=1.0, linestyle=":")
            ax.text(w["start"], 0.9 * float(wave.abs().max()), w["word"], fontsize=7, color="tab:green")
        for x in learned:
            ax.axvline(x, color="tab:red", linewidth=1.0)
        ax.set_title(f"{meta.get('key', '')}: {meta.get('text', '')}", fontsize=9)
        ax.set_xlim(0, meta["_seconds"])
    axes[-1, 0].set_xlabel("time (s) — red: learned chunk boundaries, green: word onsets, blue: silence")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110))
    plt.close(fig)


def run_pipeline(
    out: str | Path = "runs/demo",
    num: int = 1128,
    val: int = 128,
    extra: list[str] | None = None,
    data: str | Path | None = None,
) -> dict:
    """Synthesize `num` samples (`val` of them validation) into `data` (default `out/data`) unless it
    holds shards already, train the CPU recipe (`extra`: more LightningCLI arguments, e.g. a further
    `--config`), evaluate and write the reports. The scores gain `seconds_synth`, `seconds_train`,
    `seconds_eval` and `robustness` (the report of `mmchunk.eval.robustness` over its `SHORT`
    conditions)."""
    out = Path(out)
    data = Path(data) if data is not None else out / "data"
    clock = time.perf_counter()
    if list(data.glob("train/*.tar")) and list(data.glob("val/*.tar")):
        print(f"using the corpus already in {data} (delete it to synthesize a new one)")
    else:
        synth_corpus(data, num, video=True, val_fraction=val / num)
    timings = {"seconds_synth": time.perf_counter() - clock}
    clock = time.perf_counter()
    trainer = run_fit(
        [
            "--config", str(resolve_recipe(RECIPE)), "--trainer.default_root_dir", str(out),
            "--trainer.logger.init_args.save_dir", str(out),
            "--data.train", str(data / "train"), "--data.val", str(data / "val"), *(extra or []),
        ]
    )  # fmt: skip
    best = trainer.checkpoint_callback.best_model_path or trainer.checkpoint_callback.last_model_path
    atomic_write(out / "model.ckpt", lambda tmp: shutil.copyfile(best, tmp))
    timings["seconds_train"] = time.perf_counter() - clock
    clock = time.perf_counter()
    module = load_module(out / "model.ckpt")
    config = trainer.datamodule.config(train=False)
    scores, examples = evaluate(module, str(data / "val"), config)
    plot_boundaries(examples, out / "boundaries.png", config.sample_rate)
    conditions = {"clean": dict(scores)}
    for name in SHORT[1:]:
        transform = condition_transform(name, 0, config.sample_rate)
        conditions[name], _ = evaluate(module, str(data / "val"), config, transform=transform)
    scores.update(timings, seconds_eval=time.perf_counter() - clock)
    scores["robustness"] = {"checkpoint": str(out / "model.ckpt"), "data": str(data / "val"), "seed": 0,
                            "conditions": conditions}  # fmt: skip
    write_json(out / "metrics.json", scores)
    return scores


def demo_targets(scores: dict) -> dict[str, tuple[str, bool]]:
    """The demo's targets on the validation split: metric → (the target in words, met or not). The
    word-onset targets apply to a CTC head's transcript-free word onsets (`word_boundary_*`) and to
    a second stage's chunks (`stage2_boundary_*`) where the model has them, else to the chunk
    boundaries."""
    vad = max(scores.get("baseline_boundary_f1_50ms", 0.0), scores.get("silero_boundary_f1_50ms", 0.0))
    checks = {key: (f"≥ 0.85{_interval(scores, key)}", scores[key] >= 0.85) for key in ("a2t_R@1", "t2a_R@1")}
    onsets = [k for k in ("word_boundary", "stage2_boundary") if f"{k}_f1_50ms" in scores] or ["boundary"]
    for words in onsets:
        checks[f"{words}_f1_50ms"] = (
            f"≥ 0.6 and ≥ the better VAD + 0.1 ({vad + 0.1:.3f})",
            scores[f"{words}_f1_50ms"] >= max(0.6, vad + 0.1),
        )
        checks[f"{words}_r_value_50ms"] = ("≥ 0.6", scores.get(f"{words}_r_value_50ms", 0.0) >= 0.6)
    if "align_within_100ms" in scores:
        checks["align_within_100ms"] = ("≥ 0.8", scores["align_within_100ms"] >= 0.8)
        checks["align_median_error_ms"] = ("≤ 50", scores["align_median_error_ms"] <= 50)
    for name in ("silence", "static"):
        if f"{name}_boundary_fraction" in scores:
            half = scores[f"{name}_time_fraction"] / 2
            checks[f"{name}_boundary_fraction"] = (
                f"≤ {half:.3f}",
                scores[f"{name}_boundary_fraction"] <= half,
            )
    return checks


def _interval(scores: dict, key: str) -> str:
    """`key`'s 95 % bootstrap interval over the val queries, in words ("" where not scored)."""
    if f"{key}_low" not in scores:
        return ""
    return f" (95 % interval over the queries {scores[f'{key}_low']:.3f}–{scores[f'{key}_high']:.3f})"


def format_summary(scores: dict) -> str:
    """The demo's summary table: each metric, and its target with ✓ / ✗ where it has one."""
    checks = demo_targets(scores)
    lines = [f"{'metric':<30}{'value':>10}  target"]
    for key in SUMMARY_KEYS:
        if key in scores:
            target, met = checks.get(key, ("", None))
            mark = "" if met is None else (" ✓" if met else " ✗")
            lines.append(f"{key:<30}{scores[key]:>10.3f}  {target}{mark}")
    return "\n".join(lines)
