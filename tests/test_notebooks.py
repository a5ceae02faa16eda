"""The notebooks are committed without outputs and run top to bottom (small settings, fresh kernel each)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
KERNEL = "detlight-test"


def test_the_three_notebooks_exist():
    assert [p.name for p in NOTEBOOKS] == ["01-quickstart.ipynb", "02-port-an-mmdet-config.ipynb",
                                           "03-write-a-hook.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_clean_and_introduced(path):
    nb = nbformat.read(path, as_version=4)
    first = nb.cells[0]
    assert first.cell_type == "markdown"
    for heading in ("**Goal.**", "**Expected run time.**", "**Hardware.**"):
        assert heading in first.source, f"{path.name}: first cell lacks {heading}"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name} has stored outputs"


@pytest.fixture
def kernel(tmp_path_factory, monkeypatch):
    """A kernelspec for this interpreter, found first on JUPYTER_PATH (no `ipykernel install` needed)."""
    root = tmp_path_factory.mktemp("jupyter")
    spec_dir = root / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "detlight test", "language": "python"}
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    monkeypatch.setenv("JUPYTER_PATH", str(root))
    return KERNEL


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, kernel, tmp_path, monkeypatch):
    from nbclient import NotebookClient

    monkeypatch.setenv("DETLIGHT_NOTEBOOK_SMOKE", "1")
    monkeypatch.setenv("DETLIGHT_WORK_DIR", str(tmp_path / "work_dirs"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=180, kernel_name=kernel, resources={"metadata": {"path": str(path.parent)}})
    client.execute()  # the client's per-cell timeout bounds a hung notebook
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    assert list((tmp_path / "work_dirs").rglob("config.yaml")), "the notebook did not train"
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    if path.stem == "01-quickstart":
        assert len(images) == 3  # curves, predictions, DetVisualization's images
