"""detlight.openmmlab's ``mmcv._ext`` provider against a fake mmcv package (default suite: no real mmcv needed)."""

from __future__ import annotations

import importlib
import importlib.machinery
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
import torch

import detlight.openmmlab as dom
from detlight.openmmlab import OpNotProvidedError
from detlight.openmmlab.provider import EXT_NAME

FAKE_OP = '''
import importlib

import torch

ext_module = importlib.import_module("mmcv._ext")


class FakeRoIHead(torch.nn.Module):
    def forward(self, x):
        return ext_module.some_unported_op(x, flag=1)


def nms_via_ext(boxes, scores):
    return ext_module.nms(boxes, scores, iou_threshold=0.5, offset=0)
'''


@pytest.fixture
def fake_mmcv(make_fake_mmcv: Callable[[Mapping[str, str]], Path]) -> Path:
    """A pure-Python ``mmcv`` package (``mmcv/ops/fake_op.py`` loads ``_ext``) first on sys.path; cleaned up after."""
    return make_fake_mmcv({"fake_op": FAKE_OP})


def test_compiled_ext_present_means_no_install(fake_mmcv: Path) -> None:
    (fake_mmcv / f"_ext{importlib.machinery.EXTENSION_SUFFIXES[0]}").write_bytes(b"\x7fELF not really")
    assert dom.install_ops() is False
    assert not dom.ops_installed()
    assert not any(getattr(f, "detlight_ops_provider", False) for f in sys.meta_path)
    assert EXT_NAME not in sys.modules


def test_pure_python_mmcv_is_served(fake_mmcv: Path) -> None:
    assert dom.install_ops() is True
    assert dom.install_ops() is True  # idempotent
    assert sum(getattr(f, "detlight_ops_provider", False) for f in sys.meta_path) == 1
    ext = importlib.import_module(EXT_NAME)
    assert ext.__spec__ is not None and ext.__spec__.loader is not None
    assert getattr(ext, "__detlight_ops__", False)
    for name in ("nms", "roi_align_forward", "deform_conv_forward", "sigmoid_focal_loss_forward"):
        assert hasattr(ext, name)
        assert not getattr(getattr(ext, name), "detlight_missing_op", False)
    fake_op = importlib.import_module("mmcv.ops.fake_op")
    boxes = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 2.0, 2.1], [5.0, 5.0, 6.0, 6.0]])
    assert fake_op.nms_via_ext(boxes, torch.tensor([0.9, 0.8, 0.7])).tolist() == [0, 2]


def test_unknown_op_imports_and_raises_at_call_naming_op_and_caller(fake_mmcv: Path) -> None:
    dom.install_ops()
    fake_op = importlib.import_module("mmcv.ops.fake_op")  # import never fails
    ext = importlib.import_module(EXT_NAME)
    assert hasattr(ext, "some_unported_op")  # mmcv's load_ext asserts hasattr for each name
    with pytest.raises(OpNotProvidedError) as info:
        fake_op.FakeRoIHead()(torch.zeros(1))
    msg = str(info.value)
    assert "some_unported_op" in msg
    assert "mmcv.ops.fake_op.FakeRoIHead" in msg
    assert "python -m detlight.openmmlab.ops_table" in msg
    assert isinstance(info.value, NotImplementedError)
    with pytest.raises(AttributeError):
        ext.__wrapped__  # noqa: B018  dunder names are not invented


def test_no_mmcv_installed_installs_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    saved = {k: v for k, v in sys.modules.items() if k == "mmcv" or k.startswith("mmcv.")}
    for k in saved:
        del sys.modules[k]
    dom.uninstall_ops()
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "mmcv" else real_find_spec(name, *a))
    try:
        assert dom.install_ops() is False
        assert not dom.ops_installed()
    finally:
        sys.modules.update(saved)
