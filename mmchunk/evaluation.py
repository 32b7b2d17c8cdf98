"""Validation metrics of the audio-text model: retrieval, compression and boundary quality."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from mmchunk.alignment import alignment_scores, even_word_spans
from mmchunk.chunker import ChunkerOutput
from mmchunk.metrics import boundary_scores, caption_retrieval_metrics
from mmchunk.segmentation import fixed_stride_boundaries, random_boundaries


def chunk_start_times(routing: ChunkerOutput) -> list[list[float]]:
    """Per sample, the start times (s) of its chunks except the first (forced) one."""
    starts = routing.chunks.t_start
    return [
        starts[s + 1 : e].tolist()
        for s, e in zip(routing.chunks.cu_seqlens[:-1].tolist(), routing.chunks.cu_seqlens[1:].tolist())
    ]


def fraction_inside(
    times: Iterable[float], spans: Iterable[Iterable[float]], margin: float = 0.0
) -> tuple[int, int]:
    """(how many `times` fall inside one of `spans` by more than `margin` from both of its edges,
    how many times there are). A chunk boundary marks where its token starts, so a boundary less
    than one token period past a span's edge is that edge itself (tokens quantise time): pass the
    token period as `margin`."""
    times = list(times)
    inside = sum(any(a + margin < t < b - margin for a, b in spans) for t in times)
    return inside, len(times)


BOUNDARY_SCORES = (
    ("audio", "words", "boundary", (20, 50)),
    ("audio", "phones", "phone_boundary", (20,)),
    ("audio_stage2", "words", "stage2_boundary", (20, 50)),
    ("audio_words", "words", "word_boundary", (20, 50)),
    ("audio_fixed", "words", "fixed_boundary", (20, 50)),
    ("audio_random", "words", "random_boundary", (20, 50)),
)
"""(routing scored, the JSON's reference spans, score prefix, tolerances in ms); `audio_fixed` and
`audio_random` are the baseline segmentations at the learned audio compression (`_baselines`),
`audio_words` the word onsets of a CTC head without the transcript (`ctc_word_onsets`)."""


class ValidationAccumulator:
    """Collects embeddings and chunk boundaries over validation batches; `compute()` scores them.

    token_periods: seconds per encoder token of each modality, the margin of `fraction_inside`.
    """

    def __init__(self, token_periods: dict[str, float] | None = None) -> None:
        self.token_periods = dict(token_periods or {})
        self.audio: list[Tensor] = []
        self.text: list[Tensor] = []
        self.owner: list[Tensor] = []
        self.clips = 0
        self.predicted: dict[str, dict[int, list[float]]] = {}
        self.tokens: dict[str, int] = {}
        self.chunks: dict[str, int] = {}
        self.seconds = 0.0
        self.speech_seconds = 0.0
        self.metas: list[dict] = []
        self.word_starts: list[list[float] | None] = []
        self.loss_sum = 0.0
        self.loss_clips = 0

    def update(
        self,
        audio_emb: Tensor,
        text_emb: Tensor,
        routing: dict[str, ChunkerOutput],
        metas: list[dict],
        owner: Tensor | None = None,
        word_starts: list[list[float] | None] | None = None,
        word_onsets: list[list[float]] | None = None,
    ) -> None:
        """Add one batch: audio embeddings `[B, E]`, caption embeddings `[M, E]` with the batch index
        of each caption's clip `owner [M]` (None: one caption per clip, in order), the transcript
        words' predicted start times per clip (None: no aligner; a clip's None: not placed), and the
        word onsets found without the transcript per clip (None: no CTC head)."""
        self.audio.append(audio_emb.detach().float().cpu())
        self.text.append(text_emb.detach().float().cpu())
        owner = torch.arange(audio_emb.shape[0]) if owner is None else owner.detach().cpu().long()
        self.owner.append(owner + self.clips)
        first, self.clips = self.clips, self.clips + audio_emb.shape[0]
        for m, r in routing.items():
            self.predicted.setdefault(m, {}).update(enumerate(chunk_start_times(r), first))
            self.tokens[m] = self.tokens.get(m, 0) + r.residual.shape[0]
            self.chunks[m] = self.chunks.get(m, 0) + r.chunks.num_tokens
        for meta in metas:
            duration = float(meta["_seconds"])
            self.seconds += duration
            self.speech_seconds += duration - sum(e - s for s, e in meta.get("silences", []))
        self.metas.extend(metas)
        if word_starts is not None:
            self.word_starts.extend(word_starts)
        if word_onsets is not None:
            self.predicted.setdefault("audio_words", {}).update(enumerate(word_onsets, first))

    def add_loss(self, loss: float, clips: int) -> None:
        """Add a batch's mean loss over its `clips` clips (`compute` reports the mean over clips)."""
        self.loss_sum += float(loss) * clips
        self.loss_clips += clips

    def times(self, routing: str) -> list[list[float]]:
        """Chunk start times per clip (in clip order) of `routing`, a clip without it having none;
        no clips at all where no batch had it."""
        if routing not in self.predicted:
            return []
        found = self.predicted[routing]
        return [found.get(i, []) for i in range(self.clips)]

    def _on_one_axis(self, boundaries: list[list[float]], key: str) -> tuple[list[float], list[float]]:
        """The `boundaries` of every clip and the starts of the JSON's `key` spans (words, phones), the
        clips laid end to end 10 s apart (a match never crosses clips)."""
        offset, predicted, reference = 0.0, [], []
        for times, meta in zip(boundaries, self.metas):
            predicted += [t + offset for t in times]
            reference += [w["start"] + offset for w in meta.get(key, [])]
            offset += float(meta["_seconds"]) + 10.0
        return predicted, reference

    def _alignment_scores(self) -> dict[str, float]:
        """Word placement against the true word starts, where the data has them: the aligner's
        (`align_*`, with a CTC head) and the evenly-spread rule's (`even_align_*`)."""
        reference = [[w["start"] for w in meta.get("words", [])] for meta in self.metas]
        if not any(reference):
            return {}
        even = [
            [a for a, _ in even_word_spans(str(meta.get("text", "")), float(meta["_seconds"]))]
            for meta in self.metas
        ]
        scores = {f"even_{k}": v for k, v in alignment_scores(even, reference).items()}
        if self.word_starts:
            scores.update(alignment_scores(self.word_starts, reference))
        return scores

    def _baselines(self) -> dict[str, list[list[float]]]:
        """Boundary times per clip of fixed-stride pooling and of random boundaries (seed 0) at the
        learned audio compression (`mmchunk.segmentation`), on each clip's grid of audio tokens."""
        period = self.token_periods.get("audio")
        if period is None or not self.chunks.get("audio"):
            return {}
        k = self.tokens["audio"] / self.chunks["audio"]
        frames = [max(1, math.ceil(float(meta["_seconds"]) / period - 1e-6)) for meta in self.metas]
        cu = torch.tensor([0, *itertools.accumulate(frames)], dtype=torch.int32)
        masks = {"fixed": fixed_stride_boundaries(cu, sum(frames), k),
                 "random": random_boundaries(cu, sum(frames), k, seed=0)}  # fmt: skip
        return {
            f"audio_{name}": [
                ((m[1:].nonzero().squeeze(1) + 1) * period).tolist() for m in mask.split(frames)
            ]
            for name, mask in masks.items()
        }

    def compute(self) -> dict[str, float]:
        """Retrieval (a2t/t2a R@1/5/10, mAP@10; by the LAION-CLAP protocol when clips have several
        captions, `caption_retrieval_metrics`, with `captions_per_clip`), compression and chunk
        rate per modality, and where the data has the annotations (the built-in corpus; real
        datasets have none): the audio chunk rate per second of speech (outside the silences),
        boundary P/R/F1/R-value at 20 and 50 ms against word onsets and at 20 ms against phone
        onsets (`BOUNDARY_SCORES`; a second stage's, fixed-stride pooling's and random boundaries'
        at the learned compression, and a CTC head's transcript-free word onsets against word
        onsets), word placement
        (`alignment_scores` of the aligner and of the evenly-spread rule), and the share of audio boundaries
        inside silences (video: inside static spans, more than a token period from their edges)
        beside the share of time those spans take."""
        scores = caption_retrieval_metrics(torch.cat(self.audio), torch.cat(self.text), torch.cat(self.owner))
        for m in self.tokens:
            scores[f"compression_{m}"] = self.tokens[m] / max(self.chunks[m], 1)
            scores[f"chunk_rate_{m}_hz"] = self.chunks[m] / max(self.seconds, 1e-9)
        if "audio" in self.chunks and any("silences" in meta for meta in self.metas):
            scores["chunk_rate_audio_speech_hz"] = self.chunks["audio"] / max(self.speech_seconds, 1e-9)
        baselines = self._baselines()
        for routing, key, prefix, tolerances in BOUNDARY_SCORES:
            predicted, reference = self._on_one_axis(baselines.get(routing) or self.times(routing), key)
            for tol in tolerances if reference else ():
                s = boundary_scores(predicted, reference, tol / 1000)
                for k in ("precision", "recall", "f1", "r_value"):
                    scores[f"{prefix}_{k}_{tol}ms"] = s[k]
        scores.update(self._alignment_scores())
        if self.loss_clips:
            scores["loss"] = self.loss_sum / self.loss_clips
        for m, key, name in (("audio", "silences", "silence"), ("video", "static", "static")):
            if m not in self.predicted or not any(key in meta for meta in self.metas):
                continue
            inside = total = 0
            span_time = 0.0
            for times, meta in zip(self.times(m), self.metas):
                spans = meta.get(key, [])
                a, b = fraction_inside(times, spans, self.token_periods.get(m, 0.0))
                inside, total = inside + a, total + b
                span_time += sum(e - s for s, e in spans)
            scores[f"{name}_boundary_fraction"] = inside / max(total, 1)
            scores[f"{name}_time_fraction"] = span_time / max(self.seconds, 1e-9)
        return scores


def merge_accumulators(parts: Sequence[ValidationAccumulator]) -> ValidationAccumulator:
    """One accumulator with the clips of all `parts` (e.g. one per rank), in the order a single
    process reads them: by the loader's `_order` (shard, position) where every clip has one, else
    part after part. `compute()` of the result scores the whole set."""
    out = ValidationAccumulator(parts[0].token_periods)
    clips = [(k, i) for k, part in enumerate(parts) for i in range(part.clips)]
    if all("_order" in parts[k].metas[i] for k, i in clips):
        clips.sort(key=lambda c: tuple(parts[c[0]].metas[c[1]]["_order"]))
    new = {clip: j for j, clip in enumerate(clips)}
    if clips:
        audio = [torch.cat(part.audio) if part.audio else None for part in parts]
        texts = [torch.cat(part.text) if part.text else None for part in parts]
        rows = sorted(
            (new[(k, owner)], k, row)
            for k, part in enumerate(parts)
            for row, owner in enumerate(torch.cat(part.owner).tolist() if part.owner else [])
        )
        out.audio = [torch.stack([audio[k][i] for k, i in clips])]
        out.text = [torch.stack([texts[k][row] for _, k, row in rows])]
        out.owner = [torch.tensor([j for j, _, _ in rows], dtype=torch.long)]
    out.clips = len(clips)
    out.metas = [parts[k].metas[i] for k, i in clips]
    if any(part.word_starts for part in parts):
        out.word_starts = [parts[k].word_starts[i] for k, i in clips]
    for k, part in enumerate(parts):
        for m, found in part.predicted.items():
            out.predicted.setdefault(m, {}).update((new[(k, i)], t) for i, t in found.items())
        for m in part.tokens:
            out.tokens[m] = out.tokens.get(m, 0) + part.tokens[m]
            out.chunks[m] = out.chunks.get(m, 0) + part.chunks[m]
        out.seconds += part.seconds
        out.speech_seconds += part.speech_seconds
        out.loss_sum += part.loss_sum
        out.loss_clips += part.loss_clips
    return out


def frame_difference_keep(frames: Tensor, tau: float = 0.1) -> Tensor:
    """Heuristic baseline for video (RLT): keep frame `i` when the mean absolute difference of its
    pixels in [0, 1] to frame `i−1` reaches `tau`; the first frame is always kept. `[F]` bool."""
    pixels = frames.float() / 255.0
    change = (pixels[1:] - pixels[:-1]).abs().flatten(1).mean(1)
    return torch.cat([torch.ones(min(len(frames), 1), dtype=torch.bool), change >= tau])
