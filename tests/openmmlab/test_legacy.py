"""detlight.openmmlab.legacy: mmdet 2.28.2 / mmdet3d 1.0 code on a machine without CUDA and with numpy >= 1.24."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from detlight.openmmlab import legacy


def test_device_defaults_are_rewritten_only_where_cuda_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    def grid(sizes: list[int], device: str = "cuda", *, dtype: str = "f", where: str = "cuda") -> tuple[str, str]:
        return device, where

    class Gen:
        def valid_flags(self, size: int, device: str = "cuda") -> str:
            return device

        @staticmethod
        def priors(device: str = "cuda") -> str:
            return device

    assert [legacy._patch_defaults(f) for f in (grid, Gen.valid_flags, Gen.__dict__["priors"].__func__)] == [
        True, True, True]
    assert grid([1]) == ("cpu", "cuda")  # only the parameter named `device`; keyword-only defaults too
    assert grid([1], device="cuda:1") == ("cuda:1", "cuda")  # a value the caller passes is kept
    assert Gen().valid_flags(3) == "cpu" and Gen.priors() == "cpu"
    assert legacy._patch_defaults(grid) is False  # idempotent

    def keyword_only(*, device: str = "cuda") -> str:
        return device

    legacy._patch_defaults(keyword_only)
    assert keyword_only() == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert legacy.cpu_device_defaults() == []  # with CUDA nothing changes


@pytest.mark.openmmlab
def test_reppoints_valid_flags_and_sassd_cuda_calls_run_on_cpu() -> None:
    import detlight.openmmlab as dom

    dom.install_ops()
    import mmdet3d.models  # noqa: F401  (loads mmdet.core too)
    from mmdet.core.anchor import MlvlPointGenerator
    from mmdet3d.models.middle_encoders.sparse_encoder import SparseEncoderSASSD

    if torch.cuda.is_available():
        pytest.skip("the rewrite applies only without CUDA")
    changed = legacy.cpu_device_defaults()
    assert any(name.endswith("MlvlPointGenerator.valid_flags") for name in changed) or \
        MlvlPointGenerator.valid_flags.__defaults__[-1] == "cpu"
    flags = MlvlPointGenerator([8, 16]).valid_flags([(4, 4), (2, 2)], (24, 24))  # RepPoints' call: no device
    assert [f.device.type for f in flags] == ["cpu", "cpu"] and int(flags[0].sum()) == 9  # 3 x 3 of 4 x 4 valid
    boxes = torch.tensor([[0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 0.0]])
    points = torch.tensor([[0.5, 0.5, 1.0], [5.0, 5.0, 1.0]])
    real_cuda = torch.Tensor.cuda
    inside, offsets = SparseEncoderSASSD.calculate_pts_offsets(None, points, boxes)  # `.cuda()` inside
    assert torch.Tensor.cuda is real_cuda  # restored after the call
    assert inside.tolist() == [[1, 0]] and offsets[0].tolist() == [0.5, 0.5, 1.0] and offsets[1].abs().sum() == 0
    assert legacy.cpu_device_defaults() == []  # idempotent


@pytest.mark.openmmlab
def test_eval_recalls_with_ragged_images_is_mmdets_own_computation() -> None:
    import detlight.openmmlab as dom

    dom.install_ops()
    from mmdet.core import eval_recalls

    legacy.ragged_numpy_arrays()
    gts = [np.array([[0, 0, 10, 10]], np.float32), np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32)]
    props = [np.array([[0, 0, 10, 10, 0.9]], np.float32),
             np.array([[0, 0, 10, 10, 0.9], [50, 50, 60, 60, 0.8], [21, 21, 30, 30, 0.1]], np.float32)]
    recalls = eval_recalls(gts, props, proposal_nums=[1, 2, 3], iou_thrs=[0.5])
    # 3 ground truths: the top-1 proposals find 2, top-2 still 2 (the second is a miss), top-3 all 3
    assert np.allclose(recalls[:, 0], [2 / 3, 2 / 3, 1.0])
    assert legacy.ragged_numpy_arrays() is False  # idempotent


@pytest.mark.openmmlab
def test_removed_numpy_aliases_are_back_for_mmdet_only() -> None:
    import detlight.openmmlab as dom

    dom.install_ops()
    import mmdet.datasets  # noqa: F401
    import mmdet3d.core.bbox.box_np_ops as box_np_ops
    import mmdet3d.datasets  # noqa: F401
    from mmdet.datasets.custom import CustomDataset

    legacy.legacy_numpy()
    fake = type("Fake", (), {"data_infos": [{"ann": {"labels": np.array([1, 3])}}]})()
    assert CustomDataset.get_cat_ids(fake, 0) == [1, 3]  # `astype(np.int)`: AttributeError on numpy >= 1.24
    custom_np = __import__("mmdet.datasets.custom", fromlist=["np"]).np
    assert custom_np.int is int and custom_np.ndarray is np.ndarray and custom_np.float32 is np.float32
    assert box_np_ops.np is np  # numba compiles against the real module
    assert not hasattr(np, "int")  # numpy itself is untouched
    assert legacy.legacy_numpy() == []  # idempotent
