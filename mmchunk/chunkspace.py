"""The common chunk space: chunks of every modality of a sample merged on one time axis."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mmchunk.ragged import Ragged

MODALITY_IDS = {"audio": 0, "text": 1, "video": 2}


def merge_in_time(parts: dict[str, Ragged]) -> tuple[Ragged, Tensor]:
    """Interleave the chunks of several modalities of the same B samples, ordered by start time.

    `parts` maps a modality name to its Ragged `[C_m, D]` over the same B samples (a sample may
    have no chunk of a modality), each with time spans. Within a sample, chunks are sorted by
    `t_start`, ties broken by modality id (audio, text, video), then by their order. Returns the
    merged Ragged `[ΣC_m, D]` (time spans and modality ids set) and `order [ΣC_m]`: merged row `i`
    is row `order[i]` of the modalities' values concatenated in `parts` order.
    """
    names = list(parts)
    sizes = {n: parts[n].batch_size for n in names}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"merge_in_time: modalities disagree on the batch size: {sizes}")
    for n in names:
        if parts[n].t_start is None:
            raise ValueError(f"merge_in_time: {n} chunks carry no time spans")
    values = torch.cat([parts[n].values for n in names])
    t_start = torch.cat([parts[n].t_start for n in names])
    t_end = torch.cat([parts[n].t_end for n in names])
    modality = torch.cat(
        [
            torch.full((parts[n].num_tokens,), MODALITY_IDS[n], dtype=torch.long, device=values.device)
            for n in names
        ]
    )
    seq = torch.cat([parts[n].seq_ids for n in names])
    order = torch.arange(values.shape[0], device=values.device)
    for key in (modality, t_start, seq):  # stable sorts, least significant key first
        order = order[torch.sort(key[order], stable=True).indices]
    lengths = sum(parts[n].lengths for n in names)
    cu = F.pad(lengths.cumsum(0), (1, 0)).to(torch.int32)
    merged = Ragged(values[order], cu, t_start=t_start[order], t_end=t_end[order], modality=modality[order])
    return merged, order
