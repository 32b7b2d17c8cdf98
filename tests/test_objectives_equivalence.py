"""Objectives as parts compute what the flat model computed: with each shipped recipe, the first
training step's every loss term, the total (also at step 20, inside words_cpu's anchor ramp) and
every gradient equal those recorded from the model before the move (`tests/fixtures/objectives.json`,
recorded on `fixed_batch()` by `tests/fixtures/record_objectives.py` of commit a480732, the last
of the flat model).

Each recipe is checked twice: built from today's recipe YAML, and from the flat arguments of then
through `legacy_hparams` (which loads checkpoints written before the move).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from equivalence_batch import RECIPES, fingerprint, fixed_batch, recipe_model_args, set_weights

from mmchunk.checkpoint import LEGACY_TENSORS, legacy_hparams
from mmchunk.training import AudioTextModule

FIXTURE = json.loads((Path(__file__).with_name("fixtures") / "objectives.json").read_text())


def old_name(name: str) -> str:
    """A tensor's name in the flat model (`LEGACY_TENSORS` backwards)."""
    for old, new in LEGACY_TENSORS.items():
        if name.startswith(new):
            return old + name[len(new) :]
    return name


def first_step(module: AudioTextModule) -> tuple[dict, float, dict]:
    set_weights(module, old_name)
    module.train()
    batch = fixed_batch()
    torch.manual_seed(1)
    _, terms = module.losses(batch, step=0)
    terms["total"].backward()
    with torch.no_grad():
        torch.manual_seed(1)
        later = float(module.losses(batch, step=20)[1]["total"])
    grads = {old_name(k): p.grad for k, p in module.named_parameters() if p.grad is not None}
    return {k: float(v.detach()) for k, v in terms.items()}, later, grads


@pytest.mark.parametrize("source", ["recipe", "legacy"])
@pytest.mark.parametrize("name", RECIPES)
def test_first_step_equals_the_flat_model(name, source):
    recorded = FIXTURE[name]
    args = recipe_model_args(name, yaml.safe_load) if source == "recipe" else legacy_hparams(recorded["args"])
    losses, later, grads = first_step(AudioTextModule(**args))
    assert losses.keys() == recorded["losses"].keys()
    for key, value in recorded["losses"].items():
        assert losses[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    assert later == pytest.approx(recorded["total_step20"], rel=1e-5, abs=1e-6)
    assert grads.keys() == recorded["grads"].keys()
    for key, expected in recorded["grads"].items():
        got = fingerprint(key, grads[key])
        scale = max(expected["sq"] ** 0.5, 1e-6)
        assert got["sum"] == pytest.approx(expected["sum"], abs=1e-4 * scale * grads[key].numel() ** 0.5), key
        assert got["sq"] == pytest.approx(expected["sq"], rel=1e-4, abs=1e-12), key
        assert got["picks"] == pytest.approx(expected["picks"], rel=1e-4, abs=1e-5 * scale), key


def test_a_checkpoint_of_the_flat_model_loads(tmp_path):
    """A checkpoint written before the move (flat arguments, the heads under `model.`, and the
    matching head the flat model built even at weight 0) loads into today's module, every tensor in
    its new place."""
    from mmchunk.checkpoint import load_module

    flat = FIXTURE["words_cpu"]["args"]
    module = AudioTextModule(**legacy_hparams(flat))
    set_weights(module, old_name)
    state = {old_name(k): v for k, v in module.state_dict().items()}
    assert any(k.startswith("model.predictors.") for k in state) and any("word_head" in k for k in state)
    state["model.match_head.1.weight"] = torch.zeros(1, 32)  # trained by no objective of this recipe
    path = tmp_path / "flat.ckpt"
    torch.save({"state_dict": state, "hyper_parameters": flat}, path)
    loaded = load_module(path)
    assert list(loaded.objectives) == ["contrastive", "ratio", "predict", "ctc", "anchor", "onset", "words"]
    for name, value in module.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], value, rtol=0, atol=0, equal_nan=True, msg=name)
