"""Package layout for setuptools (the metadata is in pyproject.toml).

The `mmchunk` package is assembled from three source folders, `mmchunk/`, `encoders/`
(`mmchunk.encoders`) and `kernels/` (`mmchunk.kernels`); every subpackage under them is found
automatically. The recipes in `recipes/` ship as package data under `mmchunk/recipes/`.
"""

from setuptools import find_namespace_packages, find_packages, setup

SOURCES = {"mmchunk": "mmchunk", "mmchunk.encoders": "encoders", "mmchunk.kernels": "kernels"}
RECIPES = "mmchunk.recipes"


def source_packages() -> list[str]:
    """Every package of the source folders."""
    found = []
    for name, folder in SOURCES.items():
        found += [name, *(f"{name}.{sub}" for sub in find_packages(where=folder))]
    return found


RECIPE_PACKAGES = [RECIPES, *(f"{RECIPES}.{sub}" for sub in find_namespace_packages(where="recipes"))]

setup(
    package_dir={**SOURCES, RECIPES: "recipes"},
    packages=source_packages() + RECIPE_PACKAGES,
    package_data={name: ["*.yaml", "*.md"] for name in RECIPE_PACKAGES},
)
