"""Ragged: packing, padding round trips, metadata and validation."""

from __future__ import annotations

import pytest
import torch
from conftest import cu_from_lengths

from mmchunk import Ragged


def make(lengths, dim=3, meta=True):
    seqs = [torch.randn(n, dim) for n in lengths]
    if not meta:
        return Ragged.from_list(seqs), seqs
    t0 = [torch.arange(n) * 0.02 for n in lengths]
    t1 = [t + 0.025 for t in t0]
    return Ragged.from_list(seqs, t_start=t0, t_end=t1, modality=list(range(len(lengths)))), seqs


def test_from_list_packs_in_order():
    r, seqs = make([3, 0, 1, 4])
    assert r.cu_seqlens.dtype == torch.int32
    assert r.cu_seqlens.tolist() == [0, 3, 3, 4, 8]
    assert r.batch_size == len(r) == 4 and r.num_tokens == 8 and r.max_seqlen == 4
    assert r.lengths.tolist() == [3, 0, 1, 4]
    assert r.seq_ids.tolist() == [0, 0, 0, 2, 3, 3, 3, 3]
    assert r.modality.tolist() == [0, 0, 0, 2, 3, 3, 3, 3]
    for got, want in zip(r.split(), seqs):
        assert torch.equal(got, want)


def test_padded_round_trip_with_empty_and_single():
    r, seqs = make([2, 0, 1, 5], dim=7, meta=False)
    padded, mask = r.to_padded(pad_value=-9.0)
    assert padded.shape == (4, 5, 7)
    assert mask.sum(1).tolist() == [2, 0, 1, 5]
    for i, s in enumerate(seqs):
        assert torch.equal(padded[i, : len(s)], s)
        assert (padded[i, len(s) :] == -9.0).all()
    back = Ragged.from_padded(padded, r.lengths)
    assert torch.equal(back.values, r.values) and torch.equal(back.cu_seqlens, r.cu_seqlens)


def test_all_empty_batch():
    r = Ragged.from_list([torch.zeros(0, 2), torch.zeros(0, 2)])
    assert r.num_tokens == 0 and r.max_seqlen == 0
    padded, mask = r.to_padded()
    assert padded.shape == (2, 0, 2) and mask.shape == (2, 0)


def test_to_keeps_offsets_int32_and_moves_metadata():
    r, _ = make([2, 3])
    half = r.to(torch.float16)
    assert half.values.dtype == torch.float16
    assert half.cu_seqlens.dtype == torch.int32
    assert half.t_start.dtype == r.t_start.dtype and half.modality.dtype == torch.int64
    assert half.to("cpu").values.device.type == "cpu"


def test_with_values_keeps_structure():
    r, _ = make([2, 3])
    r2 = r.with_values(torch.zeros(5, 11))
    assert r2.values.shape == (5, 11) and r2.cu_seqlens is r.cu_seqlens and r2.t_end is r.t_end
    with pytest.raises(ValueError, match="= 5 must equal the number of tokens T = 4"):
        r.with_values(torch.zeros(4, 3))


@pytest.mark.parametrize(
    ("cu", "message"),
    [
        (torch.tensor([0, 2, 4]), "int32"),
        (torch.tensor([1, 2, 4], dtype=torch.int32), r"\[0\] must be 0"),
        (torch.tensor([0, 3, 1, 4], dtype=torch.int32), "non-decreasing"),
        (torch.tensor([0, 2, 5], dtype=torch.int32), "= 5 must equal the number of tokens T = 4"),
        (torch.tensor([], dtype=torch.int32), "B\\+1 >= 1"),
    ],
)
def test_invalid_offsets(cu, message):
    with pytest.raises(ValueError, match=message):
        Ragged(torch.randn(4, 2), cu)


def test_invalid_metadata():
    x, cu = torch.randn(4, 2), cu_from_lengths([1, 3])
    with pytest.raises(ValueError, match="modality must have shape"):
        Ragged(x, cu, modality=torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="t_start and t_end must be given together"):
        Ragged(x, cu, t_start=torch.zeros(4))
    with pytest.raises(ValueError, match="t_end < t_start"):
        Ragged(x, cu, t_start=torch.ones(4), t_end=torch.zeros(4))
    with pytest.raises(ValueError, match=r"t_start\[1\] must have shape \[3\]"):
        Ragged.from_list(
            [torch.randn(1, 2), torch.randn(3, 2)],
            t_start=[torch.zeros(1), torch.zeros(2)],
            t_end=[torch.ones(1), torch.ones(2)],
        )
    with pytest.raises(ValueError, match="trailing shape"):
        Ragged.from_list([torch.randn(1, 2), torch.randn(3, 4)])
    with pytest.raises(ValueError, match="at least one sequence"):
        Ragged.from_list([])
    with pytest.raises(ValueError, match="lengths must lie in"):
        Ragged.from_padded(torch.zeros(2, 3, 1), [1, 4])
