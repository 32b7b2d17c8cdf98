"""Objectives that train the audio routing from the CTC head's own alignment of the transcript (no timings).

Each reads `FusionOutput.frames`, where the CTC head places every byte of the transcript on the audio
tokens: a model-made alignment, self-distilled, never the data's word times.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from mmchunk.alignment import anchor_loss, onset_loss, pause_loss
from mmchunk.objectives.base import Objective
from mmchunk.ragged import Ragged


class AlignedRouting(Objective):
    """Common checks: a CTC head to align with and learned audio routing to train."""

    needs_alignment = True

    def setup(self, model) -> None:
        if model.ctc_head is None or "audio" in model.segmentation or not model.chunking:
            raise ValueError(
                f"{self.name}: trains the learned audio chunker from the CTC head's alignment: it needs "
                f"model.aligner and learned audio chunks (got aligner {model.aligner}, chunking "
                f"{model.chunking}, segmentation {sorted(model.segmentation)})"
            )

    def _ready(self, out, inputs: Mapping[str, Ragged]) -> bool:
        return out.frames is not None and inputs.get("text") is not None and "audio" in out.routing

    def forward(self, out, inputs: Mapping[str, Ragged]) -> dict[str, Tensor]:
        """The objective's loss of the audio routing (`routing_loss`: frames, cu_seqlens, text, routing)."""
        if not self._ready(out, inputs):
            return {}
        cu = out.features["audio"].cu_seqlens
        return {self.name: self.routing_loss(out.frames, cu, inputs["text"], out.routing["audio"])}


class Pause(AlignedRouting):
    """`pause_loss`: the share of the audio boundary probability that falls in the pauses of the
    alignment, so other talkers or a noise floor between words open no chunks. Term: `pause`."""

    name = "pause"
    routing_loss = staticmethod(pause_loss)


class Anchor(AlignedRouting):
    """`anchor_loss`: a fine audio chunk opens at every word onset of the alignment, so a second stage
    finds one at each word. ramp: [start, full] optimizer steps; the weight is 0 before `start`
    and reaches `weight` at `full`, linearly (the anchors follow an alignment the probe has to learn
    first); None: on from the first step. Term: `anchor`."""

    name = "anchor"
    routing_loss = staticmethod(anchor_loss)

    def __init__(self, weight: float = 0.5, ramp: list[int] | None = None) -> None:
        super().__init__(weight)
        if ramp is not None and not (len(ramp) == 2 and 0 <= ramp[0] <= ramp[1]):
            raise ValueError(
                f"anchor: ramp: expected [start, full] steps with 0 <= start <= full, got {ramp}"
            )
        self.ramp = None if ramp is None else list(ramp)

    def weight_at(self, step: int) -> float:
        if self.ramp is None:
            return self.weight
        start, full = self.ramp
        if step < start:
            return 0.0
        return self.weight * (1.0 if step >= full else (step - start) / (full - start))


class Onset(AlignedRouting):
    """`onset_loss`: the second chunking stage's routing learns the word onsets of the alignment, so
    that from audio alone the coarse chunks are words. pos_weight: the onset chunks' terms ×
    pos_weight (> 1: toward recall). Needs a second stage with untied routing (`backbone.stages: 2`,
    `backbone.tied_routing: false`: tied projections only measure change between neighbours, which
    marks the chunk after an onset as much as the onset). Term: `onset`."""

    name = "onset"

    def __init__(self, weight: float = 1.0, pos_weight: float = 1.0) -> None:
        super().__init__(weight)
        if pos_weight <= 0:
            raise ValueError(f"onset: pos_weight must be > 0, got {pos_weight}")
        self.pos_weight = pos_weight

    def setup(self, model) -> None:
        if model.ctc_head is None:
            raise ValueError(
                "onset: trains the second stage from the CTC head's alignment: it needs model.aligner"
            )
        stages, tied = model.backbone_config.get("stages", 1), model.backbone_config.get("tied_routing", True)
        if model.backbone_config.get("kind", "chunk") != "chunk" or stages != 2 or tied:
            raise ValueError(
                "onset: trains a second chunking stage with untied routing: it needs backbone "
                f"{{kind: chunk, stages: 2, tied_routing: false}} (got {model.backbone_config})"
            )

    def forward(self, out, inputs: Mapping[str, Ragged]) -> dict[str, Tensor]:
        if not self._ready(out, inputs) or "audio_stage2" not in out.routing:
            return {}
        cu = out.features["audio"].cu_seqlens
        routed, inner = out.routing["audio"], out.routing["audio_stage2"]
        return {"onset": onset_loss(out.frames, cu, inputs["text"], routed, inner, self.pos_weight)}
