"""``python -m detlight.openmmlab.ops_table`` on a fake mmcv/ops folder (default suite: no mmcv needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from detlight.exceptions import DetLightError
from detlight.openmmlab import ops_table

OPS_A = """
from ..utils import ext_loader

ext_module = ext_loader.load_ext('_ext', ['nms', 'softnms', 'not_served_op'])
other = ext_loader.load_ext('_other', ['ignored'])
"""
OPS_B = """
from mmcv.utils.ext_loader import load_ext
ext_module = load_ext('_ext', ('roi_align_forward', 'nms'))
"""


@pytest.fixture
def ops_dir(tmp_path: Path) -> Path:
    ops = tmp_path / "mmcv" / "ops"
    (ops / "sub").mkdir(parents=True)
    (ops / "a.py").write_text(OPS_A)
    (ops / "sub" / "b.py").write_text(OPS_B)
    (ops / "c.py").write_text("raise ImportError('never executed: the scan only parses')\n")
    return ops


def test_scan_collects_names_and_modules_without_executing(ops_dir: Path) -> None:
    names = ops_table.requested_ext_names(ops_dir)
    assert names == {"nms": ("mmcv.ops.a", "mmcv.ops.sub.b"), "not_served_op": ("mmcv.ops.a",),
                     "roi_align_forward": ("mmcv.ops.sub.b",), "softnms": ("mmcv.ops.a",)}


def test_table_marks_provided_and_stubs(ops_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = {r.name: r for r in ops_table.ops_table(ops_dir)}
    assert rows["nms"].status == "provided (nms, torchvision kernel)"
    assert rows["softnms"].status == "provided (nms, torch)"
    assert rows["not_served_op"].status == "stub" and not rows["not_served_op"].provided
    assert ops_table.main(["--mmcv-ops", str(ops_dir)]) == 0
    out = capsys.readouterr().out
    assert "4 _ext names requested by mmcv.ops: 3 provided, 1 stubs" in out
    assert ops_table.main(["--mmcv-ops", str(ops_dir), "--markdown"]) == 0
    md = capsys.readouterr().out
    assert "| `roi_align_forward` | provided | `roi_align` | torchvision kernel | sub.b |" in md
    assert "| `not_served_op` | stub | | | a |" in md


def test_bad_folder_and_syntax_errors_are_clear(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(DetLightError, match="is not a folder"):
        ops_table.requested_ext_names(tmp_path / "missing")
    assert ops_table.main(["--mmcv-ops", str(tmp_path / "missing")]) == 1
    assert "expected an mmcv/ops folder" in capsys.readouterr().err
    (tmp_path / "broken.py").write_text("def (:\n")
    with pytest.raises(DetLightError, match="cannot parse .*broken.py"):
        ops_table.requested_ext_names(tmp_path)
