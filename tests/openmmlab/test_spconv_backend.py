"""install_ops() chooses mmdet3d's sparse layers: spconv 2.x only where it can train, mmcv's (detlight's kernels) else.

A stand-in ``spconv`` package (version 2.3.8, the layer classes mmdet3d imports) is put on the path of a fresh
interpreter, which imports mmdet3d after ``install_ops()`` and reports what mmdet3d picked.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.openmmlab
_FAKE_SPCONV = '''
import torch
__version__ = "2.3.8"
'''
_FAKE_SPCONV_PYTORCH = '''
from torch import nn
class SparseModule(nn.Module):
    pass
class SparseSequential(nn.Sequential):
    pass
class SparseConvTensor:
    pass
''' + "".join(f"class {n}(SparseModule):\n    pass\n" for n in (
    "SparseConv2d", "SparseConv3d", "SparseConv4d", "SparseConvTranspose2d", "SparseConvTranspose3d",
    "SparseInverseConv2d", "SparseInverseConv3d", "SubMConv2d", "SubMConv3d", "SubMConv4d", "SparseMaxPool3d"))

_PROBE = '''
import detlight.openmmlab
detlight.openmmlab.install_ops()
from mmcv.cnn.bricks.registry import CONV_LAYERS
import mmdet3d.ops.spconv as flag
from mmdet3d.ops import sparse_block  # imported spconv's or mmcv's classes by the flag, as SparseEncoder does
print(flag.IS_SPCONV2_AVAILABLE, CONV_LAYERS.get("SubMConv3d").__module__, sparse_block.SparseSequential.__module__)
'''


@pytest.mark.parametrize(("choice", "expected"), [
    ("auto", "False mmcv.ops.sparse_conv mmcv.ops.sparse_modules"),  # no GPU here: spconv's layers cannot train
    ("spconv", "True spconv.pytorch spconv.pytorch"),
])
def test_installed_spconv_is_bypassed_unless_it_can_train(tmp_path: Path, choice: str, expected: str) -> None:
    if torch.cuda.is_available():
        pytest.skip("the auto rule differs on a CUDA machine")
    (tmp_path / "spconv" / "pytorch").mkdir(parents=True)
    (tmp_path / "spconv" / "__init__.py").write_text(_FAKE_SPCONV)
    (tmp_path / "spconv" / "pytorch" / "__init__.py").write_text(_FAKE_SPCONV_PYTORCH)
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(root)]), DETLIGHT_SPARSE_CONV=choice,
               OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == expected
