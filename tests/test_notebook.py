"""The exploration notebook runs top to bottom on CPU and is committed without outputs."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "learned_boundaries.ipynb"


def test_learned_boundaries_notebook_executes(tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code), "commit without outputs"
    # run in an empty folder: no runs/demo there, so the notebook trains its tiny model in place
    where = {"metadata": {"path": str(tmp_path)}}
    NotebookClient(nb, timeout=300, kernel_name="python3", resources=where).execute()
    images = [o for c in code for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 5, "one figure per section"
    printed = "".join(o.get("text", "") for c in code for o in c.outputs if o.get("output_type") == "stream")
    assert "learned @ 50 ms" in printed and "energy VAD @ 50 ms" in printed
