"""Built-in recipes by name: `resolve_recipe` and the `--config` rewriting of `mmchunk fit`."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmchunk.builtin_recipes import builtin_recipes, resolve_config_args, resolve_recipe

RECIPES = Path(__file__).resolve().parent.parent / "recipes"


def test_every_recipe_yaml_is_built_in_by_its_name():
    found = builtin_recipes()
    assert found == {p.stem: p for p in sorted(RECIPES.glob("*/*.yaml"))}
    assert {"demo_cpu", "hrm_cpu", "ddp_multi_gpu"} <= set(found)


@pytest.mark.parametrize(
    "name", ["demo_cpu", "demo_cpu.yaml", "audio_text/demo_cpu", "audio_text/demo_cpu.yaml"]
)
def test_names_resolve_from_any_folder(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_recipe(name) == RECIPES / "audio_text" / "demo_cpu.yaml"


def test_an_existing_file_wins_over_a_built_in_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo_cpu").write_text("seed_everything: 3\n")
    assert resolve_recipe("demo_cpu") == Path("demo_cpu")


@pytest.mark.parametrize("name", ["demo_gpu", "hashhop/demo_cpu", ""])
def test_unknown_names_list_the_built_in_ones(name):
    with pytest.raises(
        ValueError, match=r"no built-in recipe of that name \(built in: align_cpu, ddp_multi_gpu, demo"
    ):
        resolve_recipe(name)


def test_config_arguments_are_rewritten_only_where_they_name_a_recipe(tmp_path):
    own = tmp_path / "mine.yaml"
    own.write_text("seed_everything: 1\n")
    demo = str(RECIPES / "audio_text" / "demo_cpu.yaml")
    hrm = str(RECIPES / "audio_text" / "hrm_cpu.yaml")
    argv = ["--config", "demo_cpu", "-c", str(own), "--config=hrm_cpu"]
    argv += ["--config", "{trainer: {max_steps: 2}}", "--model.dim", "demo_cpu", "--trainer.max_steps=3"]
    assert resolve_config_args(argv) == [
        "--config", demo, "-c", str(own), f"--config={hrm}", "--config", "{trainer: {max_steps: 2}}",
        "--model.dim", "demo_cpu", "--trainer.max_steps=3",
    ]  # fmt: skip
    assert resolve_config_args([]) == []
    with pytest.raises(ValueError, match="nope: no such recipe file"):
        resolve_config_args(["--config", "nope"])


@pytest.mark.parametrize("name", ["align_cpu", "hrm_cpu", "streaming_cpu", "words_cpu"])
def test_layered_recipes_build_their_model(name):
    import yaml

    from mmchunk.training import AudioTextModule

    base = yaml.safe_load(resolve_recipe("demo_cpu").read_text())["model"]
    layer = yaml.safe_load(resolve_recipe(name).read_text())["model"]
    module = AudioTextModule(**{**base, **layer})
    objectives = layer.get("objectives", base["objectives"])  # a layer names every objective or none
    assert list(module.objectives) == list(objectives)
    for name, options in objectives.items():
        assert module.objectives[name].weight == options.get("weight", module.objectives[name].weight)
    aligner = layer.get("aligner", base["aligner"])
    assert (module.model.ctc_probe is not None) == aligner.get("probe", False)
    assert module.model.backbone_config == layer.get("backbone", base["backbone"])
