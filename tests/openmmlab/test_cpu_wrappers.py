"""detlight.openmmlab.cpu_wrappers against a fake pure-Python mmcv (default suite: no real mmcv needed).

The fake ``mmcv/ops/knn.py`` and ``points_in_boxes.py`` have the layout of mmcv 1.7.0's wrappers (an autograd
``Function`` named ``KNN``, module functions) and, like them, touch CUDA before calling ``ext_module``.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import sys
import types
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
import torch

import detlight.openmmlab as dom
from detlight.openmmlab import cpu_wrappers
from detlight.openmmlab.provider import EXT_NAME

FAKE_KNN = '''
import importlib

import torch
from torch.autograd import Function

ext_module = importlib.import_module("mmcv._ext")


class KNN(Function):
    @staticmethod
    def forward(ctx, k, xyz, center_xyz=None, transposed=False):
        torch.cuda.current_device()  # what mmcv's wrapper asks first
        raise AssertionError("the original wrapper ran")

    @staticmethod
    def backward(ctx, a=None):
        return None, None, None


knn = KNN.apply
FORWARD_AT_IMPORT = KNN.forward
'''

FAKE_PIB = '''
import importlib

import torch

ext_module = importlib.import_module("mmcv._ext")


def points_in_boxes_part(points, boxes):
    torch.cuda.current_device()
    raise AssertionError("the original wrapper ran")


ORIGINAL = points_in_boxes_part
'''


@pytest.fixture
def fake_mmcv(make_fake_mmcv: Callable[[Mapping[str, str]], Path]) -> Path:
    """A pure-Python ``mmcv`` (``ops/knn.py``, ``ops/points_in_boxes.py``) first on sys.path; restored after."""
    return make_fake_mmcv({"knn": FAKE_KNN, "points_in_boxes": FAKE_PIB})


def _finders() -> int:
    return sum(getattr(f, "detlight_cpu_wrappers", False) for f in sys.meta_path)


def test_served_ext_patches_the_wrappers_on_import(fake_mmcv: Path) -> None:
    assert dom.install_ops() is True
    assert dom.install_ops() is True
    assert _finders() == 1 and getattr(sys.meta_path[0], "detlight_cpu_wrappers", False)
    knn_mod = importlib.import_module("mmcv.ops.knn")
    assert knn_mod.KNN.forward is not knn_mod.FORWARD_AT_IMPORT
    assert knn_mod.KNN.forward.__detlight_original__ is knn_mod.FORWARD_AT_IMPORT
    assert isinstance(knn_mod.__loader__, importlib.machinery.SourceFileLoader)
    assert knn_mod.__spec__.loader is knn_mod.__loader__
    xyz = torch.tensor([[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [5.0, 0.0, 0.0], [0.0, 2.0, 0.0]]])
    idx = knn_mod.knn(2, xyz, xyz[:, :1].contiguous())  # the module's own alias of KNN.apply, on CPU
    assert idx.dtype == torch.int32 and idx.tolist() == [[[0], [1]]]
    pib = importlib.import_module("mmcv.ops.points_in_boxes")
    assert pib.points_in_boxes_part is not pib.ORIGINAL  # present: replaced; points_in_boxes_all absent: skipped
    assert not hasattr(pib, "points_in_boxes_all")
    boxes = torch.tensor([[[0.5, 0.0, -1.0, 2.0, 1.0, 2.0, 0.0]]])
    assert pib.points_in_boxes_part(xyz, boxes).tolist() == [[0, 0, -1, -1]]
    assert cpu_wrappers.apply_cpu_wrappers(knn_mod) == []  # idempotent
    assert cpu_wrappers.patched_wrappers()["mmcv.ops.knn"] == ("KNN.forward",)
    dom.uninstall_ops()
    assert _finders() == 0


def test_compiled_ext_present_means_nothing_patched(fake_mmcv: Path) -> None:
    (fake_mmcv / f"_ext{importlib.machinery.EXTENSION_SUFFIXES[0]}").write_bytes(b"\x7fELF not really")
    assert dom.install_ops() is False
    assert _finders() == 0
    real_ext = types.ModuleType(EXT_NAME)  # stands in for the compiled module once Python has loaded it
    sys.modules[EXT_NAME] = real_ext
    knn_mod = importlib.import_module("mmcv.ops.knn")
    assert knn_mod.ext_module is real_ext
    assert knn_mod.KNN.forward is knn_mod.FORWARD_AT_IMPORT
    assert cpu_wrappers.apply_cpu_wrappers(knn_mod) == []  # called by hand: still not detlight's _ext
    assert knn_mod.KNN.forward is knn_mod.FORWARD_AT_IMPORT
    pib = importlib.import_module("mmcv.ops.points_in_boxes")
    assert pib.points_in_boxes_part is pib.ORIGINAL


def test_already_imported_module_is_patched_on_install(fake_mmcv: Path) -> None:
    """A listed module imported before the finder (only after an uninstall) is patched by the next install."""
    dom.install_ops()
    dom.uninstall_ops()
    sys.modules.pop("mmcv.ops.knn", None)
    ops_pkg = importlib.import_module("mmcv.ops")
    dom.install_ops()
    cpu_wrappers.uninstall_cpu_wrappers()  # the module loads without the finder
    pib = importlib.import_module("mmcv.ops.points_in_boxes")
    ops_pkg.points_in_boxes_part = pib.points_in_boxes_part  # as ``from .points_in_boxes import ...`` binds it
    assert pib.points_in_boxes_part is pib.ORIGINAL
    cpu_wrappers.install_cpu_wrappers()
    assert pib.points_in_boxes_part is not pib.ORIGINAL
    assert ops_pkg.points_in_boxes_part is pib.points_in_boxes_part
