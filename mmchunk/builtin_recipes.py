"""Built-in recipes: the LightningCLI YAMLs shipped with the package, found by name or by path.

A wheel installs them as `mmchunk/recipes/<group>/<name>.yaml` (package data); a source checkout
keeps them in `recipes/` beside the package. `resolve_recipe("demo_cpu")` finds
`audio_text/demo_cpu.yaml` in either.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

_HERE = Path(__file__).resolve().parent
LOCATIONS = (_HERE / "recipes", _HERE.parent / "recipes")  # installed wheel, then source checkout


def recipes_root() -> Path:
    """The folder that holds the built-in recipes (installed package data, else the checkout's)."""
    for folder in LOCATIONS:
        if any(folder.glob("*/*.yaml")):
            return folder
    raise FileNotFoundError(f"no built-in recipes in {' or '.join(map(str, LOCATIONS))}")


def builtin_recipes() -> dict[str, Path]:
    """Every built-in recipe by name ("demo_cpu", ...) → its YAML file."""
    return {path.stem: path for path in sorted(recipes_root().glob("*/*.yaml"))}


def resolve_recipe(name: str | Path) -> Path:
    """A recipe given as a path to an existing file, or as a built-in name with or without its group
    and suffix ("demo_cpu", "audio_text/demo_cpu", "demo_cpu.yaml") → its file. Anything else is a
    `ValueError` that lists the built-in names."""
    path = Path(name)
    if path.is_file():
        return path
    known = builtin_recipes()
    key = path.name.removesuffix(".yaml").removesuffix(".yml")
    if key in known and (len(path.parts) == 1 or known[key].parent.name == path.parent.name):
        return known[key]
    names = ", ".join(known)
    raise ValueError(f"{name}: no such recipe file, and no built-in recipe of that name (built in: {names})")


def resolve_config_args(argv: Sequence[str]) -> list[str]:
    """LightningCLI arguments with the value of every `--config NAME` / `--config=NAME` (`-c` too)
    that names a built-in recipe instead of a file replaced by that recipe's path."""
    out, args = [], list(argv)
    for i, arg in enumerate(args):
        if arg.startswith(("--config=", "-c=")):
            flag, value = arg.split("=", 1)
            out.append(f"{flag}={_resolve_value(value)}")
        elif i and args[i - 1] in ("--config", "-c"):
            out.append(_resolve_value(arg))
        else:
            out.append(arg)
    return out


def _resolve_value(value: str) -> str:
    """A `--config` value: an existing file, or an inline YAML/JSON mapping, stays as it is; a
    built-in name becomes its path."""
    if Path(value).is_file() or value.lstrip().startswith("{") or ":" in value:
        return value
    return str(resolve_recipe(value))
