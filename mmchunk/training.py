"""Lightning training of the audio-text model: the LightningModule and the shard DataModule.

Lightning lives here and in the CLI only; `ChunkFusionModel` runs in any loop without it.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import lightning as L
import torch

from mmchunk.alignment import ctc_word_onsets, ctc_word_spans
from mmchunk.builtin_recipes import resolve_config_args
from mmchunk.data import Batch, DataConfig, expand_urls, make_loader
from mmchunk.data.augment import AugmentConfig
from mmchunk.data.distributed import data_parallel_world
from mmchunk.data.loader import text_ragged
from mmchunk.evaluation import ValidationAccumulator, merge_accumulators
from mmchunk.model import ChunkFusionModel, FusionOutput
from mmchunk.objectives import Objectives


def batch_inputs(batch: Batch) -> dict:
    """The model's inputs from a loader `Batch` (video only when the batch has some)."""
    inputs = {"audio": batch.audio, "text": batch.text}
    if batch.video is not None and batch.video.num_tokens:
        inputs["video"] = batch.video
    return inputs


def validate_batch(model: ChunkFusionModel, batch: Batch, accumulator: ValidationAccumulator) -> FusionOutput:
    """Run `model` on a validation batch and add it to `accumulator`; clips with several captions
    have all of them embedded (`embed_text`), for the LAION-CLAP retrieval protocol; with a CTC
    head, the first caption's words are placed on the audio by forced alignment (`ctc_word_spans`)
    and word onsets are found without it (`ctc_word_onsets`)."""
    out = model(batch_inputs(batch))
    text, owner = out.text_embedding, None
    if any(len(c) > 1 for c in batch.captions):
        owner = torch.tensor([i for i, c in enumerate(batch.captions) for _ in c])
        texts = [caption for c in batch.captions for caption in c]
        captions = text_ragged(texts, [batch.meta[i] for i in owner.tolist()])
        text = model.embed_text(captions.to(text.device))
    aligned = onsets = None
    if out.ctc is not None:
        spans = ctc_word_spans(out.ctc, [c[0] if c else "" for c in batch.captions])
        aligned = [None if s is None else [a for a, _ in s] for s in spans]
        onsets = ctc_word_onsets(out.ctc)
    accumulator.update(out.audio_embedding, text, out.routing, batch.meta, owner, aligned, onsets)
    return out


class AudioTextModule(L.LightningModule):
    """The audio-text network (`ChunkFusionModel`), the objectives it trains with, and how it trains.

    AdamW with linear warm-up and cosine decay over the trainer's `max_steps`; validation reports
    retrieval, compression and boundaries. The network's arguments are `ChunkFusionModel`'s.

    Args:
        dim: width of every encoder, the chunker and the main network.
        embed_dim: size of the pooled audio and text embeddings.
        chunk_rate_hz: target chunks per second, shared by all modalities (sets each one's target).
        encoders: per modality, the encoder's options (e.g. {audio: {depth: 2, stem: logmel}}).
        heads: attention heads.
        backbone: the main network on the chunks: {depth, outer_depth, outer_mixer, stages, window,
            moe, tied_routing} (`ChunkBackbone`), or {kind: hrm, ...} (`HRMBackbone`).
        fusion_depth: attention blocks of the fusion stack over the merged chunks of all modalities.
        routing: the shared chunker's routing per modality: {windows: {audio: 2}, center: [video],
            gain: [audio]} (tokens averaged each side, per-clip centring, gain control).
        segmentation: per modality, a baseline rule in place of learned routing, e.g.
            {audio: {rule: fixed, frames_per_chunk: 3.7}} (fixed, random, energy_vad, silero_vad).
        aligner: a byte CTC head on the audio tokens: {probe: true (reads them detached, through its
            own block), mixer: window | recurrent, clips: N (trains on N clips per batch)}; null: none.
        video_clips: training reads the video of this many clips of each batch (null: all).
        objectives: name → options of each training objective, in order (`mmchunk.objectives`:
            contrastive, ratio, predict, match, moe, ctc, pause, anchor, onset, words, or any
            `Objective` subclass by import path); null: `DEFAULT_OBJECTIVES`. A weight of 0 turns
            one off.
        probe_decay: a detached CTC probe's learning rate decays with the network's (false: it stays
            at `lr` after the warm-up, so the probe keeps learning the features as they end up).
        lr: peak learning rate.
        weight_decay: AdamW weight decay.
        warmup_steps: steps of linear warm-up.
        max_steps: steps of the cosine decay; null (the default): the trainer's max_steps (≤ 0: no decay).
        init_from: a checkpoint of `mmchunk fit` whose tensors start this run wherever the names
            match (e.g. a second chunking stage added to a trained model: the new stage starts
            fresh); the optimizer starts fresh. A resumed run (`--ckpt_path`) restores its own.
    """

    def __init__(
        self,
        dim: int = 192,
        embed_dim: int = 128,
        chunk_rate_hz: float = 6.0,
        encoders: dict | None = None,
        heads: int = 4,
        backbone: dict[str, Any] | None = None,
        fusion_depth: int = 1,
        routing: dict[str, Any] | None = None,
        segmentation: dict[str, dict] | None = None,
        aligner: dict[str, Any] | None = None,
        video_clips: int | None = None,
        objectives: dict[str, dict[str, Any] | None] | None = None,
        probe_decay: bool = True,
        lr: float = 5e-4,
        weight_decay: float = 0.01,
        warmup_steps: int = 20,
        max_steps: int | None = None,
        init_from: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = ChunkFusionModel(
            dim=dim, embed_dim=embed_dim, chunk_rate_hz=chunk_rate_hz, encoders=encoders, heads=heads,
            backbone=backbone, fusion_depth=fusion_depth, routing=routing, segmentation=segmentation,
            aligner=aligner, video_clips=video_clips,
        )  # fmt: skip
        self.objectives = Objectives(objectives, self.model)
        if self.model.ctc_head is not None and "ctc" not in self.objectives:
            raise ValueError(
                "aligner: the CTC head needs the ctc objective to train it (objectives: {ctc: {}})"
            )
        self.validation = ValidationAccumulator(self.model.token_periods)
        self.loader_epoch_offset = 0  # Lightning's epoch count minus the loader's (see on_load_checkpoint)

    def losses(self, batch: Batch, step: int = 0) -> tuple[FusionOutput, dict[str, torch.Tensor]]:
        """The network's output on `batch` and every objective's terms (with `total`) at `step`."""
        inputs = batch_inputs(batch)
        out = self.model(inputs, self.objectives.needs_alignment if self.training else None)
        return out, self.objectives(out, inputs, step)

    def setup(self, stage: str) -> None:
        """Before fitting, copy the weights of `init_from` (a resumed run restores its checkpoint
        after this, over them)."""
        if stage != "fit" or not self.hparams.init_from:
            return
        from lightning.pytorch.utilities import rank_zero_info

        from mmchunk.checkpoint import init_from_checkpoint

        copied, fresh, unused = init_from_checkpoint(self, self.hparams.init_from)
        named = ", ".join(fresh[:4]) + (" …" if len(fresh) > 4 else "")
        rank_zero_info(
            f"init_from {self.hparams.init_from}: {copied} tensors copied, {len(fresh)} start fresh "
            f"({named or 'none'}), {len(unused)} of the checkpoint unused"
        )

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["loader_epoch_offset"] = self.loader_epoch_offset

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Keep the loader's epoch exact across a resume. A run that stops at `max_steps` inside an
        epoch saves that epoch as finished (its progress counts it processed, although its last
        batch never came); resumed, Lightning runs the rest of it as its next epoch. From then on
        Lightning's epoch count is one ahead of the loader's, which the offset takes back."""
        fit = checkpoint.get("loops", {}).get("fit_loop", {})
        epochs = fit.get("epoch_progress", {}).get("current", {})
        batches = fit.get("epoch_loop.batch_progress", {})
        cut_short = (
            batches.get("current", {}).get("completed", 0) > 0
            and not batches.get("is_last_batch", True)
            and epochs.get("processed", 0) == epochs.get("started", 0) > 0
        )
        self.loader_epoch_offset = checkpoint.get("loader_epoch_offset", 0) + int(cut_short)

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor | None:
        _, world = data_parallel_world()
        if len(batch) < 2:  # a batch that only carries skip records, or a single sample: nothing to contrast
            return self.every_parameter_zero() if world > 1 else None  # DDP: every rank all-reduces
        out, terms = self.losses(batch, self.global_step)
        logged = {f"train/{k}": v for k, v in terms.items()}
        logged.update({f"train/compression_{m}": r.compression for m, r in out.routing.items()})
        self.log_dict(logged, batch_size=len(batch))
        self.log("train/skipped", float(len(batch.skipped)), reduce_fx="sum", batch_size=len(batch))
        return terms["total"] + self.every_parameter_zero() if world > 1 else terms["total"]

    def every_parameter_zero(self) -> torch.Tensor:
        """0 that depends on every trainable parameter: added to a data-parallel loss, every rank's
        backward gives every parameter a gradient (zero where its batch did not use it: no video, a
        head without loss), so DDP's all-reduce is the same on every rank and nothing hangs."""
        return sum(p.sum() for p in self.parameters() if p.requires_grad) * 0.0

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        if len(batch) == 0:  # skip records only, or a rank's padding (`lockstep`)
            return
        out = validate_batch(self.model, batch, self.validation)
        terms = self.objectives(out, batch_inputs(batch), self.global_step)
        self.validation.add_loss(terms["total"].item(), len(batch))

    def on_validation_epoch_end(self) -> None:
        """Score the whole validation set: under data parallelism every rank's clips are gathered
        first (`merge_accumulators`), so every rank logs the figures of one process."""
        accumulator = self.validation
        if data_parallel_world()[1] > 1:
            parts = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(parts, accumulator)
            accumulator = merge_accumulators(parts)
        if accumulator.clips:
            scores = accumulator.compute()
            with warnings.catch_warnings():  # the figures are those of every rank already: no sync_dist
                warnings.filterwarnings("ignore", message=r"It is recommended to use `self.log\(")
                self.log_dict({f"val/{k}": v for k, v in scores.items()})
                self.log("val/mAP@10", (scores["a2t_mAP@10"] + scores["t2a_mAP@10"]) / 2, prog_bar=True)
        self.validation = ValidationAccumulator(self.model.token_periods)

    def configure_gradient_clipping(
        self, optimizer, gradient_clip_val: float | None = None, gradient_clip_algorithm: str | None = None
    ) -> None:
        """Lightning's clipping, with a detached CTC probe clipped on its own: its gradients then do not
        scale the network's, and a probe changes no weight of the model it reads (tested)."""
        probe = {id(p) for p in self.model.probe_parameters()}
        if not probe or gradient_clip_val is None:
            return super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
        params = [p for group in optimizer.param_groups for p in group["params"]]
        for part in ([p for p in params if id(p) not in probe], [p for p in params if id(p) in probe]):
            if gradient_clip_algorithm == "value":
                torch.nn.utils.clip_grad_value_(part, gradient_clip_val)
            else:
                torch.nn.utils.clip_grad_norm_(part, gradient_clip_val)

    def configure_optimizers(self):
        """AdamW with warm-up and cosine decay; a detached CTC probe in its own group, which with
        `probe_decay: false` keeps the peak rate after the warm-up (it tracks the final features)."""
        probe = {id(p) for p in self.model.probe_parameters()}
        groups = [{"params": [p for p in self.parameters() if id(p) not in probe]}]
        if probe:
            groups.append({"params": self.model.probe_parameters()})
        optimizer = torch.optim.AdamW(groups, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        warmup = self.hparams.warmup_steps
        total = self.hparams.max_steps if self.hparams.max_steps is not None else self.trainer.max_steps

        def schedule(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            if total <= 0:  # no step limit: no decay
                return 1.0
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(total - warmup, 1))))

        def constant(step: int) -> float:
            return min(1.0, (step + 1) / warmup) if warmup else 1.0

        decay = self.hparams.probe_decay
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, [schedule, schedule if decay else constant][: len(groups)]
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def transfer_batch_to_device(self, batch: Batch, device: torch.device, dataloader_idx: int) -> Batch:
        for name in ("audio", "text", "video"):
            value = getattr(batch, name)
            if value is not None:
                setattr(batch, name, value.to(device))
        return batch


class ShardDataModule(L.LightningDataModule):
    """Train and validation shards through `mmchunk.data.make_loader`.

    Args:
        train: training shards: a folder, glob, brace pattern or URL.
        val: validation shards, as train.
        num_workers: DataLoader worker processes (0: decode in the main process).
        max_seconds: a batch closes before its audio would pass this many seconds.
        max_samples: samples per batch at most.
        shuffle_buffer: training samples mixed in a buffer of this size (0: stream order).
        use_video: decode and train on the video of samples that have one.
        video_fps: frames per second the video is sampled at.
        sample_rate: audio is resampled to this rate (Hz).
        resampled: draw training shards with replacement (multi-GPU: every rank the same count).
        epoch_batches: with resampled, batches per epoch and worker.
        seed: seed of the shuffling, the caption draw and the augmentation.
        cache: keep decoded samples in memory after the first epoch (small corpora, num_workers 0).
        augment: training-time audio augmentation (AugmentConfig); null: off.
        prefetch: training batches a background thread makes ahead (num_workers 0).

    train / val: shard patterns; resampled: draw training shards with replacement and stop each
    epoch after `epoch_batches` batches (multi-GPU: every rank the same count); the remaining
    arguments fill `DataConfig` (`cache`: keep decoded samples in memory, with `num_workers: 0`;
    `augment`: training-time audio augmentation, `AugmentConfig`, never applied to validation);
    prefetch: training batches a background thread makes ahead while the model trains (with
    `num_workers: 0`; the same batches in the same order).
    Under data parallelism the ranks share the shards (`split_shards`: whole shards, then the samples
    of the shards left over, so fewer shards than ranks work) and stay in step (`lockstep`): a
    training epoch ends on every rank when the first one runs out, and validation pads the ranks
    that run out with empty batches, so every val sample is scored once and no collective hangs.
    The training loader resumes exactly: it takes its epoch and the batches to skip from the
    trainer's loop progress, which checkpoints restore.
    """

    def __init__(
        self,
        train: str,
        val: str,
        num_workers: int = 0,
        max_seconds: float = 300.0,
        max_samples: int = 64,
        shuffle_buffer: int = 256,
        use_video: bool = True,
        video_fps: float = 25.0,
        sample_rate: int = 16_000,
        resampled: bool = False,
        epoch_batches: int | None = None,
        seed: int = 0,
        cache: bool = False,
        augment: AugmentConfig | None = None,
        prefetch: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["augment"])  # checkpoints hold plain values only
        self.augment = augment

    def config(self, train: bool) -> DataConfig:
        """The loader settings of this module (training shuffles and augments, validation does not)."""
        h = self.hparams
        return DataConfig(
            sample_rate=h.sample_rate, video_fps=h.video_fps, max_seconds=h.max_seconds,
            max_samples=h.max_samples, use_video=h.use_video,
            shuffle_buffer=h.shuffle_buffer if train else 0, seed=h.seed, cache=h.cache,
            augment=self.augment if train else None, draw_caption=train,
        )  # fmt: skip

    def train_dataloader(self):
        h = self.hparams
        return make_loader(
            h.train, self.config(train=True), num_workers=h.num_workers, resampled=h.resampled,
            epoch_batches=h.epoch_batches, shuffle_shards=True, position=self._train_position,
            prefetch=h.prefetch, lockstep="shortest",
        )  # fmt: skip

    def _train_position(self) -> tuple[int, int]:
        """(the loader's epoch, batches already trained in it) from the trainer's fit loop."""
        loop = self.trainer.fit_loop
        epoch = loop.epoch_progress.current.processed - self.trainer.lightning_module.loader_epoch_offset
        return epoch, loop.epoch_loop.batch_progress.current.completed

    def val_dataloader(self):
        h = self.hparams
        return make_loader(h.val, self.config(train=False), num_workers=h.num_workers, lockstep="pad")


def _option_strings(parser) -> list[str]:
    """Every option string of an argparse parser and of its subcommands' parsers."""
    import argparse

    options = []
    for action in parser._actions:
        options += action.option_strings
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                options += _option_strings(child)
    return options


def _short_error_parser():
    """LightningCLI's parser class with a one-line error (and the closest option) instead of the
    whole usage text."""
    import difflib
    import re

    from lightning.pytorch.cli import LightningArgumentParser

    class ShortErrorParser(LightningArgumentParser):
        def error(self, message: str, ex: Exception | None = None):
            if not self.exit_on_error:  # jsonargparse's own parsing tries alternatives through errors
                return super().error(message, ex)
            message = " ".join(str(message).split())
            hint = ""
            options = _option_strings(self)
            typed = re.findall(r"--[\w.]+", message.lower().split("arguments:")[-1])
            for unknown in (t for t in typed if t not in options):
                if close := difflib.get_close_matches(unknown, options, n=1):
                    hint = f" (did you mean {close[0]} for {unknown}?)"
                    break
            self.exit(2, f"mmchunk fit: error: {message}{hint}\n")

    return ShortErrorParser


def run_fit(argv: list[str]) -> L.Trainer:
    """`mmchunk fit ARGS`: LightningCLI's `fit` over AudioTextModule and ShardDataModule; returns
    the trainer. `--config` takes a file or a built-in recipe's name (`demo_cpu`). The resolved
    config is saved beside the logs of every run.
    """
    from lightning.pytorch.cli import LightningCLI

    class FitCLI(LightningCLI):
        def before_instantiate_classes(self) -> None:
            """Check the data and `init_from` before anything is built or written: a missing shard,
            folder or checkpoint is a one-line error, and no run folder is left behind. A run shorter
            than the recipe's validation interval (in steps) validates at its end: a short run logs
            its metrics too."""
            trainer = self.config[self.config.subcommand].trainer
            every, steps = trainer.val_check_interval, trainer.max_steps
            if trainer.check_val_every_n_epoch is None and isinstance(every, int) and 0 < steps < every:
                trainer.val_check_interval = steps
            data = self.config[self.config.subcommand].data
            for split in ("train", "val"):
                try:
                    expand_urls(data[split])
                except FileNotFoundError as exc:
                    raise FileNotFoundError(f"--data.{split}: {exc}") from None
            if start := self.config[self.config.subcommand].model.get("init_from"):
                from mmchunk.checkpoint import read_checkpoint

                try:
                    read_checkpoint(start)
                except (ValueError, OSError) as exc:
                    raise type(exc)(f"--model.init_from: {exc}") from None

    with warnings.catch_warnings():  # `mmchunk fit|demo` passes its own argv on purpose
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
        return FitCLI(
            AudioTextModule,
            ShardDataModule,
            args=["fit", *resolve_config_args(argv)],
            save_config_kwargs={"overwrite": True},
            parser_class=_short_error_parser(),
            seed_everything_default=0,
        ).trainer
