"""The analysis notebooks: stored without outputs, and they run headless against a real tiny sweep."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.analysis_sweeps import real_sweep  # noqa: F401 -- fixture

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "analysis").glob("*.ipynb"))


def test_both_notebooks_exist():
    assert [p.name for p in NOTEBOOKS] == ["pareto_fronts.ipynb", "scoring_ablation.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_without_outputs_and_with_parameters(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and "SWEEP_DIR =" in params[0].source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_on_a_real_sweep(path, real_sweep, tmp_path):
    nb = nbformat.read(path, as_version=4)
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    # what papermill does: a cell after the parameters cell overrides them
    injected = nbformat.v4.new_code_cell(f"SWEEP_DIR = {str(real_sweep)!r}\nOUT_DIR = {str(tmp_path)!r}",
                                         metadata={"tags": ["injected-parameters"]})
    nb.cells.insert(at + 1, injected)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    assert any(o.get("data", {}).get("image/png") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert sorted(tmp_path.glob("*.png")), "the notebook should have saved its figures to OUT_DIR"
