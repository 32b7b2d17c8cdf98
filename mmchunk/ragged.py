"""Ragged: a packed batch of variable-length sequences (values `[T, ...]` + int32 `cu_seqlens [B+1]`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor

from mmchunk.kernels import check_cu_seqlens, segment_ids, seq_lengths

METADATA = ("t_start", "t_end", "modality")


@dataclass(eq=False)
class Ragged:
    """A packed batch: every sequence's tokens back to back in `values`, offsets in `cu_seqlens`.

    values:     `[T, ...]` all tokens of all sequences.
    cu_seqlens: `[B+1]` int32, `cu_seqlens[0] == 0`, non-decreasing, `cu_seqlens[-1] == T`.
    t_start, t_end: optional `[T]` float, each token's time span in seconds (given together).
    modality:   optional `[T]` int64, the modality id of each token.
    """

    values: Tensor
    cu_seqlens: Tensor
    t_start: Tensor | None = None
    t_end: Tensor | None = None
    modality: Tensor | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.values, Tensor) or self.values.dim() == 0:
            raise ValueError("Ragged: values must be a tensor of shape [T, ...]")
        check_cu_seqlens(self.cu_seqlens, self.values.shape[0], name="Ragged.cu_seqlens")
        if self.cu_seqlens.device != self.values.device:
            raise ValueError(
                f"Ragged: cu_seqlens is on {self.cu_seqlens.device}, values on {self.values.device}"
            )
        if (self.t_start is None) != (self.t_end is None):
            raise ValueError("Ragged: t_start and t_end must be given together")
        for name in METADATA:
            meta = getattr(self, name)
            if meta is None:
                continue
            if meta.shape != (self.num_tokens,):
                raise ValueError(
                    f"Ragged: {name} must have shape [T] = [{self.num_tokens}], got {tuple(meta.shape)}"
                )
            if meta.device != self.values.device:
                raise ValueError(f"Ragged: {name} is on {meta.device}, values on {self.values.device}")
        if self.t_start is not None and bool((self.t_end < self.t_start).any()):
            raise ValueError("Ragged: some token has t_end < t_start")

    @classmethod
    def from_list(
        cls,
        sequences: Sequence[Tensor],
        *,
        t_start: Sequence[Tensor] | None = None,
        t_end: Sequence[Tensor] | None = None,
        modality: Sequence[Tensor | int] | None = None,
    ) -> Ragged:
        """Pack `B` tensors `[L_i, ...]` (same trailing shape; `L_i` may be 0) into one batch.

        `t_start`/`t_end` hold one `[L_i]` tensor per sequence; `modality` one `[L_i]` tensor or
        one int per sequence.
        """
        if len(sequences) == 0:
            raise ValueError("Ragged.from_list: needs at least one sequence (a sequence may be empty)")
        trailing = {tuple(s.shape[1:]) for s in sequences}
        if len(trailing) != 1:
            raise ValueError(f"Ragged.from_list: sequences disagree on their trailing shape: {trailing}")
        lengths = torch.tensor([s.shape[0] for s in sequences], dtype=torch.int64)
        device = sequences[0].device
        cu = torch.zeros(len(sequences) + 1, dtype=torch.int32)
        cu[1:] = lengths.cumsum(0)
        meta = {}
        for name, given in (("t_start", t_start), ("t_end", t_end)):
            if given is not None:
                meta[name] = _cat_metadata(name, given, lengths, device)
        if modality is not None:
            per_token = [
                torch.full((int(n),), m, dtype=torch.int64) if isinstance(m, int) else m
                for m, n in zip(modality, lengths, strict=True)
            ]
            meta["modality"] = _cat_metadata("modality", per_token, lengths, device).long()
        return cls(torch.cat(list(sequences)), cu.to(device), **meta)

    @classmethod
    def from_padded(cls, padded: Tensor, lengths: Tensor | Sequence[int]) -> Ragged:
        """Pack a padded `[B, L, ...]` batch whose sequence `i` has `lengths[i] <= L` real tokens."""
        lengths = torch.as_tensor(lengths, dtype=torch.int64, device=padded.device)
        if lengths.shape != (padded.shape[0],):
            raise ValueError(
                f"Ragged.from_padded: lengths must be [B] = [{padded.shape[0]}], got {tuple(lengths.shape)}"
            )
        if bool((lengths < 0).any()) or bool((lengths > padded.shape[1]).any()):
            raise ValueError(f"Ragged.from_padded: lengths must lie in [0, {padded.shape[1]}]")
        mask = torch.arange(padded.shape[1], device=padded.device) < lengths[:, None]
        cu = torch.zeros(padded.shape[0] + 1, dtype=torch.int32, device=padded.device)
        cu[1:] = lengths.cumsum(0)
        return cls(padded[mask], cu)

    def to_padded(self, pad_value: float = 0.0) -> tuple[Tensor, Tensor]:
        """Padded copy `[B, L_max, ...]` and its mask `[B, L_max]` (True on real tokens)."""
        lengths = self.lengths
        mask = torch.arange(self.max_seqlen, device=self.values.device) < lengths[:, None]
        padded = self.values.new_full((self.batch_size, self.max_seqlen, *self.values.shape[1:]), pad_value)
        padded[mask] = self.values
        return padded, mask

    @property
    def num_tokens(self) -> int:
        """T, the number of tokens of all sequences together."""
        return self.values.shape[0]

    @property
    def batch_size(self) -> int:
        """B, the number of sequences (empty ones included)."""
        return self.cu_seqlens.numel() - 1

    @property
    def lengths(self) -> Tensor:
        """Length of every sequence: `[B]` int64."""
        return seq_lengths(self.cu_seqlens)

    @property
    def max_seqlen(self) -> int:
        """Length of the longest sequence (0 for a batch of empty sequences)."""
        return int(self.lengths.max()) if self.batch_size else 0

    @property
    def seq_ids(self) -> Tensor:
        """Sequence index of every token: `[T]` int64."""
        return segment_ids(self.cu_seqlens, self.num_tokens)

    def __len__(self) -> int:
        return self.batch_size

    def split(self) -> list[Tensor]:
        """The `B` sequences as views `[L_i, ...]` of `values`."""
        return list(torch.split(self.values, self.lengths.tolist()))

    def with_values(self, values: Tensor) -> Ragged:
        """The same sequences and metadata with new per-token `values [T, ...]`."""
        return replace(self, values=values)

    def to(self, *args, **kwargs) -> Ragged:
        """`Tensor.to` on `values`; `cu_seqlens` and metadata follow the device but keep their dtypes."""
        values = self.values.to(*args, **kwargs)
        moved = {
            f.name: getattr(self, f.name).to(values.device)
            for f in fields(self)
            if f.name != "values" and getattr(self, f.name) is not None
        }
        return Ragged(values, **moved)

    def __repr__(self) -> str:
        meta = [name for name in METADATA if getattr(self, name) is not None]
        return (
            f"Ragged(B={self.batch_size}, T={self.num_tokens}, values={tuple(self.values.shape)} "
            f"{self.values.dtype}, lengths={self.lengths.tolist()}, meta={meta})"
        )


def _cat_metadata(name: str, per_seq: Sequence[Tensor], lengths: Tensor, device: torch.device) -> Tensor:
    """Concatenate one `[L_i]` metadata tensor per sequence, checking each length."""
    if len(per_seq) != len(lengths):
        raise ValueError(f"Ragged.from_list: {name} has {len(per_seq)} entries for {len(lengths)} sequences")
    for i, (m, n) in enumerate(zip(per_seq, lengths.tolist())):
        if m.shape != (n,):
            raise ValueError(f"Ragged.from_list: {name}[{i}] must have shape [{n}], got {tuple(m.shape)}")
    return torch.cat(list(per_seq)).to(device)
