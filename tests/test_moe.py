"""Mixture-of-experts feed-forward: routing against a per-token loop, the balance loss, the model option."""

from __future__ import annotations

import pytest
import torch
from test_model import small_model, small_net, tiny_batch, train_terms

from mmchunk.moe import MoEFeedForward, load_balance_loss


@pytest.mark.parametrize("experts, top_k, dim", [(4, 2, 8), (3, 1, 5), (5, 5, 7)])
def test_every_token_goes_to_k_experts_like_a_loop(experts, top_k, dim):
    torch.manual_seed(0)
    moe = MoEFeedForward(dim, 12, experts, top_k)
    x = torch.randn(23, dim, requires_grad=True)
    out = moe(x)
    _, chosen, weights = moe.route(x)
    assert chosen.shape == (23, top_k) and all(len(set(row.tolist())) == top_k for row in chosen)
    torch.testing.assert_close(weights.sum(-1), torch.ones(23))
    want = torch.stack([
        sum(w * moe.experts[e](x[t : t + 1])[0] for e, w in zip(chosen[t].tolist(), weights[t]))
        for t in range(23)
    ])  # fmt: skip
    torch.testing.assert_close(out, want, atol=1e-5, rtol=1e-5)
    (out.sum() + moe.aux_loss).backward()
    assert moe.router.weight.grad.abs().sum() > 0
    assert moe(torch.zeros(0, dim)).shape == (0, dim) and moe.aux_loss.item() == 0.0


def test_balance_loss_is_minimal_when_balanced():
    experts = 4
    uniform = torch.full((8, experts), 1 / experts)
    round_robin = torch.arange(8).remainder(experts)[:, None]
    assert load_balance_loss(uniform, round_robin, experts).item() == pytest.approx(1.0)
    collapsed = torch.zeros(8, experts)
    collapsed[:, 0] = 1.0
    assert load_balance_loss(collapsed, torch.zeros(8, 1, dtype=torch.long), experts).item() == pytest.approx(
        4.0
    )
    torch.manual_seed(0)
    for _ in range(20):  # confident routers: E·Σ f² ≥ 1, equal only when every expert gets the same share
        chosen = torch.randint(0, experts, (8, 1))
        loss = load_balance_loss(torch.nn.functional.one_hot(chosen[:, 0], experts).float(), chosen, experts)
        balanced = torch.bincount(chosen[:, 0], minlength=experts).unique().numel() == 1
        assert loss.item() >= 1.0 - 1e-6 and (abs(loss.item() - 1.0) < 1e-6) == balanced


def test_model_with_moe_stages_adds_balance_losses():
    moe = {"stages": ["outer", "inner"], "experts": 3, "top_k": 2}
    model, objectives = small_net(
        ("audio", "text", "video"), backbone={"moe": moe}, objectives={"moe": {"weight": 0.05}}
    )
    _, terms = train_terms(model, objectives, tiny_batch())
    assert set(terms) == {"moe_audio", "moe_text", "moe_video", "total"}
    assert all(torch.isfinite(v) and v > 0 for v in terms.values())
    torch.testing.assert_close(
        terms["total"], 0.05 * (terms["moe_audio"] + terms["moe_text"] + terms["moe_video"])
    )
    terms["total"].backward()
    assert model.main.inner[0].mlp.router.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="moe stages"):
        small_model(backbone={"moe": {"stages": ["middle"]}})
