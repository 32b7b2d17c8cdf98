"""ChunkFusionModel: encoders → one shared dynamic chunker → chunk-level main network → embeddings.

Each modality is encoded at its native rate, chunked by the same `DynamicChunker` (modality
embeddings, per-modality targets from one chunk rate in Hz), and mixed by a shared main network
(global attention with continuous-time rotary positions). Pooled chunk outputs give the audio and
text embeddings; the chunks of a sample's modalities merged in time order (the common chunk space)
go through a fusion stack; a CTC head (the aligner) places the transcript on the audio's time axis.
The model computes no loss: `FusionOutput` holds what the objectives (`mmchunk.objectives`) read.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmchunk.alignment import aligned_byte_times, batch_byte_frames
from mmchunk.backbone import ChunkBackbone
from mmchunk.chunker import ChunkerOutput, DynamicChunker, chunk_targets
from mmchunk.chunkspace import MODALITY_IDS, merge_in_time
from mmchunk.encoders import build_encoder
from mmchunk.hrm import HRMBackbone
from mmchunk.layers import MixerStack, RMSNorm
from mmchunk.ragged import Ragged
from mmchunk.ragged_ops import mean_pool, take_sequences
from mmchunk.segmentation import BaselineSegmentation

ROUTING_KEYS = ("windows", "center", "gain")
ALIGNER_KEYS = ("probe", "mixer", "clips")


@dataclass
class FusionOutput:
    """What one forward pass gives the objectives and the evaluation.

    audio_embedding, text_embedding: `[B, E]`, L2-normalised. routing: per modality (and
    `"{m}_stage2"` with a second stage) the chunker's output. chunks: per modality the main network's
    chunk outputs `[C, D]` (text chunks on the audio's time axis where the aligner placed them).
    tokens: per modality the dechunked outputs `[T, D]`; features: the encoder tokens `[T, D]`.
    aux: per modality the backbone's expert-balance loss (mixture of experts only). ctc: the CTC
    head's byte log-probabilities `[T, 257]` with their times, ctc_text: the transcripts of the clips
    it read (training may read fewer, `aligner.clips`), frames: where it places every transcript byte
    (`batch_byte_frames`; None unless asked for). logit_scale: the contrastive temperature; targets:
    per modality with learned routing its compression target; fuse: the fusion stack
    (`ChunkFusionModel.fuse`).
    """

    audio_embedding: Tensor
    text_embedding: Tensor
    routing: dict[str, ChunkerOutput]
    chunks: dict[str, Ragged] = field(default_factory=dict)
    tokens: dict[str, Tensor] = field(default_factory=dict)
    features: dict[str, Ragged] = field(default_factory=dict)
    aux: dict[str, Tensor] = field(default_factory=dict)
    ctc: Ragged | None = None
    ctc_text: Ragged | None = None
    frames: list[Tensor | None] | None = None
    logit_scale: Tensor | None = None
    targets: dict[str, float] = field(default_factory=dict)
    fuse: Callable[[Mapping[str, Ragged]], Ragged] | None = None


def _options(name: str, given: Mapping | None, known: tuple[str, ...]) -> dict:
    """`given` as a dict, with a one-line error for a key outside `known`."""
    options = dict(given or {})
    if unknown := sorted(set(options) - set(known)):
        raise ValueError(f"{name}: unknown option {unknown[0]!r} (known: {', '.join(known)})")
    return options


def build_backbone(dim: int, heads: int, config: Mapping | None) -> nn.Module:
    """The main network on the chunks: `{kind: chunk, ...}` a `ChunkBackbone` (its keyword
    arguments: depth, outer_depth, outer_mixer, stages, window, moe, tied_routing), `{kind: hrm,
    ...}` an `HRMBackbone` (layers, h_cycles, l_cycles, segments, ...)."""
    options = dict(config or {})
    kind = options.pop("kind", "chunk")
    builders = {"chunk": ChunkBackbone, "hrm": HRMBackbone}
    if kind not in builders:
        raise ValueError(f"backbone: kind must be 'chunk' or 'hrm', got {kind!r}")
    try:
        return builders[kind](dim, heads=heads, **options)
    except TypeError as exc:
        raise ValueError(f"backbone: {exc}") from None


class ChunkFusionModel(nn.Module):
    """Audio-text(-video) network over the common chunk space; see the module docstring.

    Args:
        dim: width of every encoder, the chunker and the main network.
        embed_dim: size of the pooled audio and text embeddings.
        chunk_rate_hz: the one chunk rate shared by all modalities (sets each one's target).
        encoders: per modality, the encoder's keyword arguments (the keys choose the modalities;
            audio and text are needed), e.g. `{audio: {depth: 2, stem: logmel}, text: {}}`.
        heads: attention heads everywhere.
        backbone: the main network (`build_backbone`), e.g. `{stages: 2, tied_routing: false}` or
            `{kind: hrm, h_cycles: 2}`.
        fusion_depth: attention blocks of the fusion stack over the merged chunks.
        routing: the shared chunker's routing per modality: `windows` (tokens averaged on each side
            of a candidate boundary, e.g. `{audio: 2}`; default 1, H-Net's), `center` (modalities
            whose routing input has each clip's mean taken out), `gain` (modalities whose boundary
            probabilities get gain control at evaluation).
        segmentation: per modality a baseline rule in place of learned routing
            (`BaselineSegmentation` keywords, e.g. `{audio: {rule: fixed, frames_per_chunk: 3.7}}`).
        aligner: a byte CTC head on the dechunked audio tokens (None: none): `probe` (it reads the
            tokens detached, through its own mixer block, so it changes nothing it reads), `mixer`
            (that block: window or recurrent), `clips` (training runs it on this many clips of each
            batch; the loader shuffles).
        video_clips: in training, the video of this many clips of each batch only (every clip at
            evaluation): the video trains its own routing, retrieval reads audio and text.
        chunking: False runs the same network on every encoder token (the fixed-rate baseline).
    """

    def __init__(
        self,
        dim: int = 192,
        embed_dim: int = 128,
        chunk_rate_hz: float = 6.0,
        encoders: Mapping[str, dict] | None = None,
        heads: int = 4,
        backbone: Mapping | None = None,
        fusion_depth: int = 1,
        routing: Mapping | None = None,
        segmentation: Mapping[str, dict] | None = None,
        aligner: Mapping | None = None,
        video_clips: int | None = None,
        chunking: bool = True,
    ) -> None:
        super().__init__()
        self.dim, self.chunking = dim, chunking
        routing = _options("routing", routing, ROUTING_KEYS)
        self.aligner = None if aligner is None else _options("aligner", aligner, ALIGNER_KEYS)
        self.backbone_config = dict(backbone or {})
        encoders = dict(encoders) if encoders is not None else {"audio": {}, "text": {}, "video": {}}
        if "audio" not in encoders or "text" not in encoders:
            raise ValueError("ChunkFusionModel needs at least the audio and text encoders")
        if video_clips is not None and video_clips < 1:
            raise ValueError(f"video_clips: a number of clips ≥ 1, got {video_clips}")
        self.encoders = nn.ModuleDict({m: build_encoder(m, dim, **kw) for m, kw in encoders.items()})
        windows = dict(routing.get("windows") or {})
        center, gain = routing.get("center") or (), routing.get("gain") or ()
        for name, given in (("routing.windows", windows), ("routing.center", center), ("routing.gain", gain)):
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
        targets = chunk_targets(chunk_rate_hz, {m: e.native_rate_hz for m, e in self.encoders.items()})
        self.targets = {m: n for m, n in targets.items() if m not in self.segmentation}
        ids = sorted(MODALITY_IDS, key=MODALITY_IDS.get)
        self.chunker = DynamicChunker(
            dim, pooling="mean", num_modalities=len(MODALITY_IDS), tied_routing=True,
            every_token=not chunking, routing_windows=[windows.get(m, 1) for m in ids],
            routing_center=[m in center for m in ids], routing_gain=[m in gain for m in ids],
        )  # fmt: skip
        self.main = build_backbone(dim, heads, self.backbone_config)
        self.fusion = MixerStack(dim, fusion_depth, "attention", heads)
        self.projections = nn.ModuleDict(
            {m: nn.Sequential(RMSNorm(dim), nn.Linear(dim, embed_dim)) for m in ("audio", "text")}
        )
        self.ctc_head = self.ctc_probe = None
        self.ctc_clips, self.video_clips = None, video_clips
        if self.aligner is not None:
            probe, mixer = bool(self.aligner.get("probe", False)), self.aligner.get("mixer", "window")
            self.ctc_clips = self.aligner.get("clips")
            if mixer not in ("window", "recurrent"):
                raise ValueError(f"aligner.mixer: window or recurrent, got {mixer!r}")
            if self.ctc_clips is not None and (not probe or self.ctc_clips < 1):
                raise ValueError(
                    f"aligner.clips: a number of clips ≥ 1 for a detached probe (probe: true), got "
                    f"{self.ctc_clips} with probe {probe} (a CTC head with its gradient trains on every clip)"
                )
            # blank + 256 bytes; a probe draws its weights without moving the RNG, so the network
            # around it starts as without it
            with torch.random.fork_rng(devices=[]) if probe else contextlib.nullcontext():
                self.ctc_head = nn.Sequential(RMSNorm(dim), nn.Linear(dim, 257))
                self.ctc_probe = MixerStack(dim, 1, mixer, heads) if probe else None
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

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

    def encode(self, inputs: Mapping[str, Ragged], align: bool | None = None) -> FusionOutput:
        """Per modality present in `inputs`: encoder tokens, routing, main-network chunk outputs and
        their dechunked tokens; with a CTC head, the audio tokens' byte log-probabilities and, where
        `align` (None: outside training) and there is a transcript, the byte alignment `frames`, which
        puts the text chunks on the audio's time axis (`aligned_byte_times`: the model's own
        alignment, never the data's). The embeddings of the result are empty: see `forward`."""
        align = not self.training if align is None else align
        out = FusionOutput(torch.zeros(0), torch.zeros(0), {}, logit_scale=self.logit_scale, fuse=self.fuse)
        text = inputs.get("text")
        for m, x in inputs.items():
            if x is None or m not in self.encoders or x.num_tokens == 0:
                continue
            if m == "video" and self.training and self.video_clips and self.video_clips < x.batch_size:
                x = take_sequences(x, torch.arange(self.video_clips, device=x.values.device))
            feats = self.encoders[m](x)
            routed = self.route(m, x, feats)
            mixed, inner = self.main(routed.chunks)
            out.features[m], out.routing[m], out.chunks[m] = feats, routed, mixed
            if m in self.targets:
                out.targets[m] = self.targets[m]
            if (balance := self.main.aux_loss()) is not None:
                out.aux[m] = balance
            if inner is not None:
                out.routing[f"{m}_stage2"] = inner
            out.tokens[m] = self.chunker.dechunk(mixed, routed)
            if m == "audio" and self.ctc_head is not None:
                self._align(out, feats.with_values(out.tokens[m]), text, align)
        placed = out.frames is not None and "text" in out.chunks
        if placed and text.t_start is not None and out.ctc.t_start is not None:
            out.chunks["text"] = self.aligned_text(out.chunks["text"], out.routing["text"], out, text)
        return out

    def _align(self, out: FusionOutput, audio: Ragged, text: Ragged | None, align: bool) -> None:
        """The CTC head on the dechunked audio tokens `audio [T, D]` (a detached probe on the first
        `ctc_clips` clips in training), into `out.ctc`, `out.ctc_text` and, with `align`, `out.frames`."""
        spoken = text
        if self.ctc_probe is not None:
            if self.training and self.ctc_clips and self.ctc_clips < audio.batch_size:
                keep = torch.arange(self.ctc_clips, device=audio.values.device)  # the loader shuffles
                audio = take_sequences(audio, keep)
                spoken = None if text is None else take_sequences(text, keep)
            audio = self.ctc_probe(audio.with_values(audio.values.detach()))
        log_probs = self.ctc_head(audio.values).log_softmax(-1)
        out.ctc = Ragged(log_probs, audio.cu_seqlens, t_start=audio.t_start, t_end=audio.t_end)
        out.ctc_text = spoken
        if align and spoken is not None:
            out.frames = batch_byte_frames(log_probs, audio.cu_seqlens, spoken)  # the first clips

    @staticmethod
    def aligned_text(chunks: Ragged, routed: ChunkerOutput, out: FusionOutput, text: Ragged) -> Ragged:
        """The text chunks `[C, D]`, each spanning its bytes' `aligned_byte_times`."""
        starts, ends = aligned_byte_times(out.frames, out.ctc, text)
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
        out = self.encode({"text": text})
        return F.normalize(self.projections["text"](mean_pool(out.chunks["text"])), dim=-1)

    def fuse(self, chunks: Mapping[str, Ragged]) -> Ragged:
        """The common chunk space: per sample, the chunks of every modality in `chunks` merged in time
        order and mixed by the fusion stack, `[ΣC, D]` with time spans and modality ids."""
        merged, _ = merge_in_time(dict(chunks))
        return self.fusion(merged)

    def forward(self, inputs: Mapping[str, Ragged], align: bool | None = None) -> FusionOutput:
        """`inputs` maps "audio", "text" (and optionally "video") to the loader's Ragged batches;
        `align`: compute the CTC head's byte alignment (None: outside training; an objective that
        reads it asks for it in training). Returns `encode`'s output with the embeddings."""
        out = self.encode(inputs, align)
        emb = self.embed(out.chunks)
        out.audio_embedding, out.text_embedding = emb["audio"], emb["text"]
        return out
