"""CTC objective: the transcript's bytes against the audio tokens through the CTC head (no timings)."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from mmchunk.alignment import ascii_lower
from mmchunk.losses import byte_ctc_loss
from mmchunk.objectives.base import Objective
from mmchunk.ragged import Ragged


class CTC(Objective):
    """`byte_ctc_loss` of the CTC head's byte log-probabilities `[T, 257]` against the lower-cased
    transcripts of the clips it read (`FusionOutput.ctc`, `ctc_text`): CTC sums over every monotonic
    alignment, so no timing is read. With a detached probe (`aligner.probe`) it trains the probe
    alone; otherwise its gradient reaches the network. Term: `ctc`."""

    name = "ctc"

    def __init__(self, weight: float = 0.1) -> None:
        super().__init__(weight)

    def setup(self, model) -> None:
        if model.ctc_head is None:
            raise ValueError(
                "ctc: the network has no CTC head to train (set model.aligner, e.g. {probe: true})"
            )

    def forward(self, out, inputs: Mapping[str, Ragged]) -> dict[str, Tensor]:
        if out.ctc is None or out.ctc_text is None:
            return {}
        text = out.ctc_text
        return {
            "ctc": byte_ctc_loss(
                out.ctc.values, out.ctc.cu_seqlens, ascii_lower(text.values), text.cu_seqlens
            )
        }
