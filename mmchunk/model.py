"""ChunkFusionModel: encoders → one shared dynamic chunker → chunk-level main network → heads.

Each modality is encoded at its native rate, chunked by the same `DynamicChunker` (modality
embeddings, per-modality targets from one chunk rate in Hz), and mixed by a shared main network
(global attention with continuous-time rotary positions). Pooled chunk outputs give the audio and
text embeddings of the contrastive loss; the chunks of a sample's modalities merged in time order
(the common chunk space) go through a fusion stack for audio-text matching; dechunked main outputs
predict each next token's encoder feature, which (as in H-Net) trains the routing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmchunk.alignment import (
    aligned_byte_times,
    anchor_loss,
    ascii_lower,
    batch_byte_frames,
    onset_loss,
    pause_loss,
)
from mmchunk.backbone import ChunkBackbone
from mmchunk.chunker import ChunkerOutput, DynamicChunker, chunk_targets, ratio_loss
from mmchunk.chunkspace import MODALITY_IDS, merge_in_time
from mmchunk.encoders import build_encoder
from mmchunk.hrm import HRMBackbone
from mmchunk.kernels import sequence_starts
from mmchunk.layers import MixerStack, RMSNorm
from mmchunk.losses import (
    bag_of_words_loss,
    byte_ctc_loss,
    hardest_negatives,
    info_nce,
    matching_loss,
    word_buckets,
    word_hash_table,
)
from mmchunk.ragged import Ragged
from mmchunk.ragged_ops import mean_pool, select_rows, take_sequences
from mmchunk.segmentation import BaselineSegmentation


@dataclass
class FusionOutput:
    """Embeddings `[B, E]` (L2-normalised), routing per modality, every loss term (scalars) and, with
    a CTC head, the audio tokens' byte log-probabilities `[T, 257]` with their times (for alignment)."""

    audio_embedding: Tensor
    text_embedding: Tensor
    routing: dict[str, ChunkerOutput]
    losses: dict[str, Tensor] = field(default_factory=dict)
    ctc: Ragged | None = None

    @property
    def loss(self) -> Tensor:
        """The weighted total the optimiser minimises."""
        return self.losses["total"]


class ChunkFusionModel(nn.Module):
    """Audio-text(-video) model over the common chunk space; see the module docstring.

    dim: width everywhere; embed_dim: contrastive embedding size; chunk_rate_hz: the one chunk rate
    shared by all modalities; encoders: per-modality keyword arguments (the keys choose which
    modalities exist); main_depth / fusion_depth: global attention blocks on chunks / on merged
    chunks; outer_depth, outer_mixer: local mixing blocks on the fine chunks before them; stages=2
    adds a second chunking stage with target `inner_ratio` fine chunks per coarse chunk (see
    `ChunkBackbone`); moe: mixture-of-experts feed-forwards in the backbone stages it names
    (`{"stages": [...], "experts": E, "top_k": k, "weight": w}`, balance loss weighted by w);
    backbone="hrm" replaces that backbone by `HRMBackbone(**hrm)` (two-timescale recurrence);
    ratio_weight (H-Net's α), predict_weight, match_weight: loss weights; ratio_per_sequence: hold
    every sequence to the compression target (True) rather than the batch on average;
    routing_windows: tokens averaged on each side of a candidate boundary per modality (e.g.
    `{"audio": 3}`; default 1, H-Net's single-token comparison); routing_center: modalities whose
    routing input is centred per sequence (`DynamicChunker`'s `routing_center`, e.g. `["video"]`);
    routing_gain: modalities whose routing gets gain control (`DynamicChunker`'s `routing_gain`);
    ctc_weight > 0 adds a byte CTC loss of the dechunked audio tokens against the paired transcript
    in lower case (`byte_ctc_loss`: no timings; `ascii_lower`); ctc_probe=True detaches the tokens
    the CTC head reads and gives it its own block (`ctc_probe_mixer`: "window", sliding-window
    attention, or "recurrent", a gated recurrence): the aligner then sends no gradient into the
    network retrieval uses, and with `ctc_clips` it trains on that many clips of each batch only
    (the loader shuffles; a cheaper probe, all clips at evaluation); onset_weight > 0 (with stages=2 and
    the CTC head) trains the second stage's routing toward word onsets: binary cross-entropy against
    the fine chunks nearest the words' openings on the CTC head's own alignment of the transcript
    (`onset_chunk_targets`: self-distilled, no timings), so at inference, audio alone, the coarse
    chunks are words (`onset_pos_weight` weights the onset chunks' terms); that stage routes with
    untied projections (H-Net's own rule: tied ones only measure change between neighbours, which
    marks the chunk after an onset as much as the onset);
    anchor_weight > 0 (with the CTC head) pulls the fine audio routing up at the tokens where that
    alignment opens a word (`anchor_loss`), so a second stage finds a fine chunk at every onset;
    pause_weight > 0 (with the CTC head) trains the audio routing away from boundaries in the pauses
    of that same alignment (`pause_token_mask`: the share of the boundary probability that falls
    there), so other talkers or a noise floor between the words open no chunks;
    video_clips: in training, the video of that many clips of each batch only (the loader shuffles;
    every clip at evaluation): the video trains nothing but its own routing and the shared network's
    next-feature loss, and retrieval reads audio and text, so a subset keeps that cheaper;
    word_weight > 0 adds a bag-of-words loss: the pooled audio chunks predict which of `word_buckets`
    hashed words the paired transcript holds (`bag_of_words_loss`: no timings, no word order);
    chunking=False runs the same network on every encoder token (the fixed-rate baseline);
    segmentation: per modality, a baseline rule in place of the learned routing
    (`BaselineSegmentation` keywords, e.g. `{"audio": {"rule": "fixed", "frames_per_chunk": 3.7}}`):
    the same network at a chosen compression, for comparison.
    """

    def __init__(
        self,
        dim: int = 192,
        embed_dim: int = 128,
        chunk_rate_hz: float = 6.0,
        encoders: Mapping[str, dict] | None = None,
        main_depth: int = 2,
        fusion_depth: int = 1,
        heads: int = 4,
        ratio_weight: float = 0.03,
        predict_weight: float = 0.1,
        match_weight: float = 0.5,
        chunking: bool = True,
        outer_depth: int = 1,
        outer_mixer: str = "recurrent",
        stages: int = 1,
        inner_ratio: float = 3.0,
        moe: dict | None = None,
        backbone: str = "chunk",
        hrm: dict | None = None,
        ratio_per_sequence: bool = True,
        routing_windows: Mapping[str, int] | None = None,
        routing_center: Sequence[str] = (),
        routing_gain: Sequence[str] = (),
        ctc_weight: float = 0.0,
        onset_weight: float = 0.0,
        onset_pos_weight: float = 1.0,
        anchor_weight: float = 0.0,
        pause_weight: float = 0.0,
        ctc_probe: bool = False,
        ctc_clips: int | None = None,
        ctc_probe_mixer: str = "window",
        video_clips: int | None = None,
        word_weight: float = 0.0,
        word_buckets: int = 4096,
        segmentation: Mapping[str, dict] | None = None,
    ) -> None:
        super().__init__()
        self.ratio_per_sequence = ratio_per_sequence
        if (ctc_probe or ctc_clips is not None) and ctc_weight <= 0:
            raise ValueError("ctc_probe and ctc_clips shape the CTC head: they need ctc_weight > 0")
        for name, weight in (("pause_weight", pause_weight), ("anchor_weight", anchor_weight)):
            if weight > 0 and (ctc_weight <= 0 or "audio" in (segmentation or {}) or not chunking):
                raise ValueError(
                    f"{name}: trains the learned audio chunker from the CTC head's alignment: it needs "
                    f"ctc_weight > 0 and learned audio chunks (got ctc_weight {ctc_weight}, "
                    f"chunking {chunking}, segmentation {dict(segmentation or {})})"
                )
        if ctc_probe_mixer not in ("window", "recurrent"):
            raise ValueError(f"ctc_probe_mixer: window or recurrent, got {ctc_probe_mixer!r}")
        if ctc_clips is not None and (not ctc_probe or ctc_clips < 1):
            raise ValueError(
                f"ctc_clips: a number of clips ≥ 1 for the detached probe (ctc_probe: true), got {ctc_clips} "
                f"with ctc_probe {ctc_probe} (the CTC loss with its gradient trains on every clip)"
            )
        if video_clips is not None and (video_clips < 1 or match_weight > 0):
            raise ValueError(
                f"video_clips: a number of clips ≥ 1 without the matching loss (it fuses every clip's "
                f"video), got {video_clips} with match_weight {match_weight}"
            )
        if onset_pos_weight <= 0:
            raise ValueError(f"onset_pos_weight: must be > 0, got {onset_pos_weight}")
        if onset_weight > 0 and (stages != 2 or ctc_weight <= 0 or backbone != "chunk"):
            raise ValueError(
                "onset_weight: word-onset routing trains a second chunking stage from the CTC head's "
                f"alignment: it needs stages: 2 and ctc_weight > 0 (got stages {stages}, ctc_weight "
                f"{ctc_weight}, backbone {backbone!r})"
            )
        encoders = dict(encoders) if encoders is not None else {"audio": {}, "text": {}, "video": {}}
        if "audio" not in encoders or "text" not in encoders:
            raise ValueError("ChunkFusionModel needs at least the audio and text encoders")
        self.encoders = nn.ModuleDict({m: build_encoder(m, dim, **kw) for m, kw in encoders.items()})
        self.targets = chunk_targets(chunk_rate_hz, {m: e.native_rate_hz for m, e in self.encoders.items()})
        windows = dict(routing_windows or {})
        for name, given in (("routing_windows", windows), ("routing_center", routing_center),
                            ("routing_gain", routing_gain)):  # fmt: skip
            if isinstance(given, str):
                raise ValueError(f"{name}: a list of modality names, got the string {given!r}")
            if unknown := sorted(set(given) - set(MODALITY_IDS)):
                raise ValueError(
                    f"{name}: unknown modality {unknown[0]!r} (known: {', '.join(MODALITY_IDS)})"
                )
        self.segmentation = {m: BaselineSegmentation(**kw) for m, kw in (segmentation or {}).items()}
        for m, rule in self.segmentation.items():
            if m not in self.encoders:
                raise ValueError(f"segmentation: no {m!r} encoder (encoders: {', '.join(self.encoders)})")
            if rule.rule.endswith("_vad") and m != "audio":
                raise ValueError(f"segmentation: the {rule.rule} rule reads a waveform: audio only")
        ids = sorted(MODALITY_IDS, key=MODALITY_IDS.get)
        self.chunker = DynamicChunker(
            dim, pooling="mean", num_modalities=len(MODALITY_IDS), tied_routing=True,
            every_token=not chunking, routing_windows=[windows.get(m, 1) for m in ids],
            routing_center=[m in routing_center for m in ids],
            routing_gain=[m in routing_gain for m in ids],
        )  # fmt: skip
        moe = dict(moe or {})
        moe_weight = moe.pop("weight", 0.01)
        if backbone == "chunk":
            self.main = ChunkBackbone(
                dim, main_depth, heads, outer_depth, outer_mixer, stages, moe=moe or None,
                tied_routing=onset_weight == 0,  # the onset stage routes untied (see above)
            )  # fmt: skip
        elif backbone == "hrm":
            self.main = HRMBackbone(dim, heads, **(hrm or {}))
        else:
            raise ValueError(f"ChunkFusionModel: backbone must be 'chunk' or 'hrm', got {backbone!r}")
        self.inner_ratio = inner_ratio
        self.fusion = MixerStack(dim, fusion_depth, "attention", heads)
        self.predictors = nn.ModuleDict({m: nn.Linear(dim, dim) for m in encoders})
        self.projections = nn.ModuleDict(
            {m: nn.Sequential(RMSNorm(dim), nn.Linear(dim, embed_dim)) for m in ("audio", "text")}
        )
        self.match_head = nn.Sequential(RMSNorm(dim), nn.Linear(dim, 1))
        # byte CTC of the dechunked audio tokens against the paired transcript (blank + 256 bytes);
        # a probe draws its weights without moving the RNG, so the network around it starts as without it
        with torch.random.fork_rng(devices=[]) if ctc_probe else contextlib.nullcontext():
            self.ctc_head = nn.Sequential(RMSNorm(dim), nn.Linear(dim, 257)) if ctc_weight > 0 else None
            self.ctc_probe = (
                MixerStack(dim, 1, ctc_probe_mixer, heads) if ctc_weight > 0 and ctc_probe else None
            )
        self.ctc_clips = ctc_clips
        self.video_clips = video_clips
        self.onset_pos_weight = onset_pos_weight
        # hashed bag of words of the paired transcript, predicted from the pooled audio chunks
        self.word_head = None
        if word_weight > 0:
            self.word_head = nn.Sequential(RMSNorm(dim), nn.Linear(dim, word_buckets))
        self.register_buffer("word_table", word_hash_table(), persistent=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.weights = {
            "ratio": ratio_weight,
            "predict": predict_weight,
            "match": match_weight,
            "moe": moe_weight,
            "ctc": ctc_weight,
            "onset": onset_weight,
            "anchor": anchor_weight,
            "pause": pause_weight,
            "words": word_weight,
        }

    def probe_parameters(self) -> list[nn.Parameter]:
        """The detached CTC probe's parameters (its block and the CTC head; empty without a probe):
        nothing else depends on them, so they are clipped on their own (`AudioTextModule`)."""
        if self.ctc_probe is None:
            return []
        return [*self.ctc_probe.parameters(), *self.ctc_head.parameters()]

    @property
    def token_periods(self) -> dict[str, float]:
        """Seconds per encoder token of each modality."""
        return {m: 1.0 / e.native_rate_hz for m, e in self.encoders.items()}

    def encode(
        self, inputs: Mapping[str, Ragged]
    ) -> tuple[dict[str, Ragged], dict[str, ChunkerOutput], dict[str, Tensor], Ragged | None]:
        """Per modality present in `inputs`: main-network chunk outputs, routing (with two stages also
        `"{m}_stage2"`), and the routing losses (ratio loss against the modality's target and the
        second stage's, next-feature prediction through dechunk; CTC and word onsets with a
        transcript); and with a CTC head, the audio tokens' byte log-probabilities `[T, 257]` (None
        without). With a CTC head and a transcript the text chunks carry the times of their bytes on
        the audio's axis (`aligned_byte_times`: the model's own alignment, never the data's), not the
        text's own: the common chunk space of `fuse`. Training skips that alignment where no loss
        reads it (no matching or onset loss)."""
        chunks, routing, losses, ctc, frames = {}, {}, {}, None, None
        text = inputs.get("text")
        for m, x in inputs.items():
            if x is None or m not in self.encoders or x.num_tokens == 0:
                continue
            if m == "video" and self.training and self.video_clips and self.video_clips < x.batch_size:
                x = take_sequences(x, torch.arange(self.video_clips, device=x.values.device))
            feats = self.encoders[m](x)
            routed = self.route(m, x, feats)
            mixed, inner = self.main(routed.chunks)
            chunks[m], routing[m] = mixed, routed
            if (balance := self.main.aux_loss()) is not None:
                losses[f"moe_{m}"] = balance
            cu = feats.cu_seqlens if self.ratio_per_sequence else None
            if m not in self.segmentation:
                losses[f"ratio_{m}"] = ratio_loss(routed.boundary_mask, routed.probs, self.targets[m], cu)
            if inner is not None:
                routing[f"{m}_stage2"] = inner
                inner_cu = routed.chunks.cu_seqlens if self.ratio_per_sequence else None
                losses[f"ratio_{m}_stage2"] = ratio_loss(
                    inner.boundary_mask, inner.probs, self.inner_ratio, inner_cu
                )
            tokens = self.chunker.dechunk(mixed, routed)
            losses[f"predict_{m}"] = self._next_feature_loss(m, tokens, feats)
            if m != "audio" or self.ctc_head is None:
                continue
            audio, spoken = feats.with_values(tokens), text
            if self.ctc_probe is not None:
                if self.training and self.ctc_clips and self.ctc_clips < audio.batch_size:
                    keep = torch.arange(self.ctc_clips, device=tokens.device)  # the loader shuffles
                    audio = take_sequences(audio, keep)
                    spoken = None if text is None else take_sequences(text, keep)
                audio = self.ctc_probe(audio.with_values(audio.values.detach()))
            log_probs = self.ctc_head(audio.values).log_softmax(-1)
            ctc = Ragged(log_probs, audio.cu_seqlens, t_start=audio.t_start, t_end=audio.t_end)
            if text is None:
                continue
            losses["ctc"] = byte_ctc_loss(
                log_probs, audio.cu_seqlens, ascii_lower(spoken.values), spoken.cu_seqlens
            )
            if not self.training or any(self.weights[k] > 0 for k in ("match", "onset", "anchor", "pause")):
                frames = batch_byte_frames(log_probs, audio.cu_seqlens, spoken)  # the first clips
            if self.weights["anchor"] > 0:
                losses["anchor"] = anchor_loss(frames, feats.cu_seqlens, text, routed)
            if self.weights["pause"] > 0:
                losses["pause"] = pause_loss(frames, feats.cu_seqlens, text, routed)
            if inner is not None and self.weights["onset"] > 0:
                losses["onset"] = onset_loss(
                    frames, feats.cu_seqlens, text, routed, inner, self.onset_pos_weight
                )
        if frames is not None and "text" in chunks and text.t_start is not None and ctc.t_start is not None:
            chunks["text"] = self.aligned_text(chunks["text"], routing["text"], frames, ctc, text)
        return chunks, routing, losses, ctc

    @staticmethod
    def aligned_text(
        chunks: Ragged, routed: ChunkerOutput, frames: list[Tensor | None], ctc: Ragged, text: Ragged
    ) -> Ragged:
        """The text chunks `[C, D]`, each spanning its bytes' `aligned_byte_times`."""
        starts, ends = aligned_byte_times(frames, ctc, text)
        first = routed.boundary_mask.nonzero().squeeze(1)
        last = F.pad(first[1:], (0, 1), value=routed.boundary_mask.numel()) - 1
        return dataclasses.replace(chunks, t_start=starts[first], t_end=ends[last])

    def route(self, m: str, raw: Ragged, feats: Ragged) -> ChunkerOutput:
        """Modality `m`'s encoder tokens `feats [T, D]` (from the input `raw`) through the shared
        chunker, tagged with the modality; the boundaries are the baseline rule's where `m` has one
        (`segmentation`; the VAD rules read the waveforms in `raw`)."""
        tagged = Ragged(
            feats.values,
            feats.cu_seqlens,
            t_start=feats.t_start,
            t_end=feats.t_end,
            modality=torch.full((feats.num_tokens,), MODALITY_IDS[m], device=feats.values.device),
        )
        imposed = None
        if m in self.segmentation:
            rate = getattr(self.encoders[m], "sample_rate", None)
            imposed = self.segmentation[m].boundaries(feats, raw, rate).to(feats.values.device)
        return self.chunker(tagged, imposed)

    def _next_feature_loss(self, m: str, tokens: Tensor, feats: Ragged) -> Tensor:
        """Cosine loss of predicting token t+1's encoder feature from the dechunked output `tokens
        [T, D]` at t."""
        keep = ~sequence_starts(feats.cu_seqlens, feats.num_tokens)[1:]
        if not keep.any():
            return tokens.sum() * 0.0
        pred = self.predictors[m](tokens[:-1][keep])
        target = feats.values[1:][keep].detach()
        return (1.0 - F.cosine_similarity(pred, target, dim=-1)).mean()

    def embed(self, chunks: Mapping[str, Ragged]) -> dict[str, Tensor]:
        """L2-normalised pooled embeddings `[B, E]` of the audio and text chunk outputs (those present)."""
        return {
            m: F.normalize(self.projections[m](mean_pool(chunks[m])), dim=-1)
            for m in ("audio", "text")
            if m in chunks
        }

    def embed_text(self, text: Ragged) -> Tensor:
        """L2-normalised embeddings `[B, E]` of texts alone (UTF-8 bytes `[T]`, `cu_seqlens [B+1]`):
        the text half of `embed`, for the extra captions of a clip."""
        chunks, *_ = self.encode({"text": text})
        return F.normalize(self.projections["text"](mean_pool(chunks["text"])), dim=-1)

    def fuse(self, chunks: Mapping[str, Ragged]) -> Ragged:
        """The common chunk space: per sample, the chunks of every modality in `chunks` merged in time
        order and mixed by the fusion stack, `[ΣC, D]` with time spans and modality ids."""
        merged, _ = merge_in_time(dict(chunks))
        return self.fusion(merged)

    def match_logits(self, chunks: Mapping[str, Ragged], text_index: Tensor) -> Tensor:
        """Match logit `[B]` of each sample's audio (and video) with the text of sample `text_index[b]`:
        the fused text chunks and the fused other chunks are pooled apart and the head scores their
        elementwise product."""
        parts = {m: c for m, c in chunks.items() if m != "text"}
        parts["text"] = take_sequences(chunks["text"], text_index)
        fused = self.fuse(parts)
        is_text = fused.modality == MODALITY_IDS["text"]
        text = mean_pool(select_rows(fused, is_text))
        other = mean_pool(select_rows(fused, ~is_text))
        return self.match_head(text * other).squeeze(-1)

    def forward(
        self, inputs: Mapping[str, Ragged], scales: Mapping[str, float] | None = None
    ) -> FusionOutput:
        """`inputs` maps "audio", "text" (and optionally "video") to the loader's Ragged batches;
        `scales` multiplies the weights of the named loss kinds in the total (a schedule's factor)."""
        chunks, routing, losses, ctc = self.encode(inputs)
        emb = self.embed(chunks)
        batch = emb["audio"].shape[0]
        losses["contrastive"] = info_nce(emb["audio"], emb["text"], self.logit_scale)
        if self.word_head is not None:
            logits = self.word_head(mean_pool(chunks["audio"]))
            text = inputs["text"]
            bucket, sequence = word_buckets(text.values, text.cu_seqlens, self.word_table, logits.shape[1])
            losses["words"] = bag_of_words_loss(logits, bucket, sequence)
        total = losses["contrastive"]
        weights = {k: w * (scales or {}).get(k, 1.0) for k, w in self.weights.items()}
        if batch >= 2 and self.weights["match"] > 0:  # weight 0: no fusion pass in training
            negatives = hardest_negatives(emb["audio"] @ emb["text"].T)
            own = torch.arange(batch, device=negatives.device)
            # the first B pairs are true, the next B pair each audio with its hardest wrong text
            pairs = {m: take_sequences(c, own.repeat(2)) for m, c in chunks.items() if m != "text"}
            pairs["text"] = chunks["text"]
            logits = self.match_logits(pairs, torch.cat([own, negatives]))
            labels = torch.cat([torch.ones(batch), torch.zeros(batch)]).to(logits.device)
            losses["match"] = matching_loss(logits, labels)
            total = total + weights["match"] * losses["match"]
        for name, value in list(losses.items()):
            kind = name.split("_")[0]
            if kind in ("ratio", "predict", "moe", "ctc", "onset", "anchor", "pause", "words"):
                total = total + weights[kind] * value
        losses["total"] = total
        return FusionOutput(emb["audio"], emb["text"], routing, losses, ctc)
