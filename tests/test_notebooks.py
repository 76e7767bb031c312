"""The analysis notebooks: stored without outputs, default to where sweeps are written, and run headless against a
real tiny sweep with every figure shown."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
import yaml
from nbclient import NotebookClient

from tests.analysis_sweeps import real_sweep  # noqa: F401 -- fixture

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "analysis").glob("*.ipynb"))
#: a cell draws a figure when it calls one of analysis.figures' plot functions
DRAWS = re.compile(r"\b(frontier_plot|heatmap_plot|ablation_plot)\(")


def figure_cells(nb) -> list:
    return [c for c in nb.cells if c.cell_type == "code" and DRAWS.search(c.source)]


def test_both_notebooks_exist():
    assert [p.name for p in NOTEBOOKS] == ["pareto_fronts.ipynb", "scoring_ablation.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_without_outputs_and_with_parameters(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and "SWEEP_DIR =" in params[0].source
    # every figure cell is tagged, so a reader (and papermill's --report-mode) can find them
    assert figure_cells(nb) and all("figure" in c.metadata.get("tags", []) for c in figure_cells(nb))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_default_sweep_dir_is_where_illada_sweep_writes(path, monkeypatch):
    """The default is runs/sweeps/<name of an ablation> (sweeps/conf/config.yaml: sweep_dir), relative to the
    notebook's folder, and follows ILLADA_SWEEP_ROOT."""
    nb = nbformat.read(path, as_version=4)
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    names = {yaml.safe_load(p.read_text()).get("name") for p in (ROOT / "ablations").glob("*.yaml")}
    monkeypatch.delenv("ILLADA_SWEEP_ROOT", raising=False)
    scope: dict = {}
    exec(params.source, scope)
    default = (path.parent / scope["SWEEP_DIR"]).resolve()
    assert default.parent == ROOT / "runs" / "sweeps" and default.name in names
    assert "${oc.env:ILLADA_SWEEP_ROOT,runs/sweeps}/${name}" in (ROOT / "sweeps/conf/config.yaml").read_text()
    monkeypatch.setenv("ILLADA_SWEEP_ROOT", "/data/sweeps")
    exec(params.source, scope)
    assert scope["SWEEP_DIR"] == f"/data/sweeps/{default.name}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_on_a_real_sweep_and_shows_every_figure(path, real_sweep, tmp_path):
    nb = nbformat.read(path, as_version=4)
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    # what papermill does: a cell after the parameters cell overrides them
    injected = nbformat.v4.new_code_cell(f"SWEEP_DIR = {str(real_sweep)!r}\nOUT_DIR = {str(tmp_path)!r}",
                                         metadata={"tags": ["injected-parameters"]})
    nb.cells.insert(at + 1, injected)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    # the paper style draws inside plt.rc_context: every figure after the first must be shown too, once
    for cell in figure_cells(nb):
        images = [o for o in cell.outputs if o.get("data", {}).get("image/png")]
        assert len(images) == 1, f"no figure shown by the cell:\n{cell.source}"
    saved = sorted(p.stem for p in tmp_path.glob("*.png"))
    assert len(saved) == len(figure_cells(nb)), saved
