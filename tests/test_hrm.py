"""HRM backbone: one-step gradient, packed independence, carry and reset, ACT halting."""

from __future__ import annotations

import torch

from mmchunk.hrm import HierarchicalReasoning, act_halt, continue_target, exploration_min_steps
from mmchunk.ragged import Ragged


def graph_size(t: torch.Tensor) -> int:
    seen, stack = set(), [t.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        stack += [n for n, _ in node.next_functions]
    return len(seen)


def batch(lengths=(5, 1, 0, 7), dim=16):
    torch.manual_seed(1)
    return Ragged.from_list([torch.randn(n, dim) for n in lengths])


def test_one_step_gradient_graph_does_not_grow_with_cycles():
    x = batch()
    short = HierarchicalReasoning(16, heads=2, h_cycles=1, l_cycles=1)
    long = HierarchicalReasoning(16, heads=2, h_cycles=3, l_cycles=4)
    long.load_state_dict(short.state_dict())
    outs = [m.segment(m.initial_carry(x), x) for m in (short, long)]
    assert graph_size(outs[0].hidden.values) == graph_size(outs[1].hidden.values)
    assert not outs[1].carry.z_h.requires_grad and not outs[1].carry.z_l.requires_grad
    outs[1].hidden.values.sum().backward()
    assert all(p.grad is not None for p in long.high.parameters())
    assert long.z_h0.grad is None  # the start state is reached only through the no-grad steps


def test_states_keep_one_scale_over_many_segments():
    x = batch(lengths=(6, 3))
    hrm = HierarchicalReasoning(16, heads=2, h_cycles=2, l_cycles=3)
    carry, scales = hrm.initial_carry(x), []
    with torch.no_grad():
        for _ in range(30):
            carry = hrm.segment(carry, x).carry
            scales.append(carry.z_h.pow(2).mean(-1).sqrt())
    scales = torch.stack(scales)  # [segments, T]: the RMS of each token's high-level state
    assert torch.allclose(scales, torch.ones_like(scales), atol=1e-3)  # the unit-gain RMS norm, every step


def test_segments_keep_packed_sequences_apart_and_reset():
    x = batch()
    hrm = HierarchicalReasoning(16, heads=2, h_cycles=2, l_cycles=2)
    out = hrm.segment(hrm.initial_carry(x), x)
    again = hrm.segment(out.carry, x)
    for i, seq in enumerate(x.split()):
        alone = Ragged.from_list([seq])
        one = hrm.segment(hrm.initial_carry(alone), alone)
        two = hrm.segment(one.carry, alone)
        torch.testing.assert_close(out.hidden.split()[i], one.hidden.values, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(again.hidden.split()[i], two.hidden.values, atol=1e-5, rtol=1e-5)
    assert out.q_logits.shape == (4, 2)
    fresh = torch.tensor([True, False, False, True])
    reset = hrm.reset(again.carry, fresh, x)
    start = hrm.initial_carry(x)
    rows = fresh[x.seq_ids]
    torch.testing.assert_close(reset.z_h[rows], start.z_h[rows])
    torch.testing.assert_close(reset.z_h[~rows], again.carry.z_h[~rows])


def run_act(q_logits_per_step, max_steps, min_steps=None):
    """Segments each sequence runs before halting, given the Q logits of each step."""
    running = torch.ones(q_logits_per_step[0].shape[0], dtype=torch.bool)
    used = torch.zeros_like(running, dtype=torch.long)
    for step in range(1, max_steps + 1):
        used += running.long()
        running &= ~act_halt(q_logits_per_step[step - 1], step, max_steps, min_steps)
        if not running.any():
            break
    return used


def test_act_halts_within_max_steps_and_uses_more_when_allowed():
    halt = torch.tensor([[2.0, -2.0], [2.0, -2.0]])
    cont = torch.tensor([[-5.0, -5.0], [-1.0, 3.0]])  # untrained head (ties) and a confident "continue"
    assert run_act([halt] * 8, 4).tolist() == [1, 1]
    assert run_act([cont] * 8, 4).tolist() == [4, 4]  # the cap always halts
    assert run_act([cont] * 16, 8).tolist() == [8, 8]  # a larger cap at inference: more segments
    assert run_act([halt] * 8, 4, torch.tensor([3, 1])).tolist() == [3, 1]  # exploration's minimum
    g = torch.Generator().manual_seed(0)
    mins = exploration_min_steps(1000, 6, 0.3, g)
    assert mins.min() >= 1 and mins.max() <= 6 and 0.2 < (mins > 1).float().mean() < 0.4
    target = continue_target(torch.tensor([[0.0, 2.0]]), at_max=False)
    assert target.item() == torch.sigmoid(torch.tensor(2.0)).item()
    assert continue_target(torch.tensor([[0.0, 2.0]]), at_max=True).item() == 0.5


def test_hrm_backbone_in_the_fusion_model():
    from test_model import small_net, tiny_batch, train_terms

    hrm = {"kind": "hrm", "h_cycles": 2, "l_cycles": 3, "segments": 2}
    model, objectives = small_net(("audio", "text", "video"), backbone=hrm)
    _, terms = train_terms(model, objectives, tiny_batch())
    assert torch.isfinite(terms["total"])
    terms["total"].backward()
    assert model.main.hrm.high[0].mixer.qkv.weight.grad.abs().sum() > 0
