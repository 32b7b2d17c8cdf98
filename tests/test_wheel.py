"""The package as users install it: `python -m build` makes an sdist and a wheel (from the sdist),
and the wheel, installed into a fresh virtual environment, works from outside the checkout."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SUBPACKAGES = ("mmchunk.data", "mmchunk.encoders", "mmchunk.eval", "mmchunk.kernels")


def _run(cmd: list[str], cwd: Path, env: dict | None = None) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{' '.join(cmd)}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    # --no-isolation: the build backend comes from this environment, so the test needs no network
    _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)], cwd=out)
    return out


@pytest.fixture(scope="module")
def installed(dist, tmp_path_factory) -> Path:
    """A fresh venv with the wheel installed; its dependencies come from this environment's
    site-packages through a .pth line (the editable install of the checkout is not activated: .pth
    files inside a path named by another .pth are not run). pip runs inside the new venv
    (`--python`) before that line exists, so it neither sees nor touches this environment."""
    env_dir = tmp_path_factory.mktemp("venv")
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    wheel = next(dist.glob("mmchunk-*.whl"))
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index"]
    _run([*pip, str(wheel)], env_dir)
    site = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], env_dir)
    (Path(site.strip()) / "dev_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return env_dir


def test_sdist_and_wheel_hold_every_subpackage_and_the_recipes(dist):
    import mmchunk

    wheel = next(dist.glob(f"mmchunk-{mmchunk.__version__}-*.whl"))
    assert next(dist.glob(f"mmchunk-{mmchunk.__version__}.tar.gz"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for package in ("mmchunk", *SUBPACKAGES):
        assert f"{package.replace('.', '/')}/__init__.py" in names, package
    recipes = {name for name in names if name.startswith("mmchunk/recipes/") and name.endswith(".yaml")}
    on_disk = {f"mmchunk/recipes/{p.relative_to(ROOT / 'recipes')}" for p in ROOT.glob("recipes/*/*.yaml")}
    assert recipes == on_disk and "mmchunk/recipes/audio_text/demo_cpu.yaml" in recipes


def test_installed_wheel_runs_from_outside_the_checkout(installed, tmp_path):
    bin_dir = installed / "bin"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    env.pop("PYTHONPATH", None)
    code = (
        "import importlib, mmchunk; "
        f"[importlib.import_module(m) for m in {SUBPACKAGES!r}]; "
        "import mmchunk.builtin_recipes as r; "
        "print(mmchunk.__file__); print(mmchunk.__version__); print(r.resolve_recipe('demo_cpu'))"
    )
    where, version, recipe = _run([str(bin_dir / "python"), "-c", code], tmp_path, env).split()
    assert Path(where).is_relative_to(installed) and Path(recipe).is_relative_to(installed)
    import mmchunk

    assert version == mmchunk.__version__
    mmchunk_bin = str(bin_dir / "mmchunk")
    assert _run([mmchunk_bin, "--version"], tmp_path, env).strip() == f"mmchunk {version}"
    assert "COMMAND" in _run([mmchunk_bin, "--help"], tmp_path, env)
    assert "--hops" in _run([mmchunk_bin, "eval", "hashhop", "generate", "--help"], tmp_path, env)
    assert "chunks" in _run([mmchunk_bin, "demo", "--quick", "--clips", "2"], tmp_path, env)
    printed = _run([mmchunk_bin, "fit", "--config", "demo_cpu", "--print_config"], tmp_path, env)
    assert "objectives:" in printed and "pause:" in printed  # the recipe's, from the installed package data
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written into the working folder
