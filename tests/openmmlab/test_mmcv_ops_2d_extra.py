"""mmcv's own tests (open-mmlab/mmcv v1.7.2 ``tests/test_ops``) for the later families, ported as numbers.

Every case goes through mmcv's Python wrappers (``DeformRoIPoolPack``, ``assign_score_withk``, ``mmcv.ops.info``...)
with ``mmcv._ext`` served by detlight; cases upstream gates on CUDA run on CPU against the same expected values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import _mmcv_values_2d as V
import numpy as np
import pytest
import torch
from torch.autograd import gradcheck

pytestmark = pytest.mark.openmmlab


@pytest.fixture(scope="module")
def ops() -> Any:
    pytest.importorskip("mmcv")
    import detlight.openmmlab

    assert detlight.openmmlab.install_ops()
    import mmcv.ops

    return mmcv.ops


# ================================================================================================= info.py
def test_info_and_collect_env(ops: Any) -> None:
    from mmcv.utils import collect_env

    assert "detlight.openmmlab" in ops.get_compiler_version()
    assert "detlight.openmmlab" in ops.get_compiling_cuda_version()
    env = collect_env()
    assert env["MMCV Compiler"] == ops.get_compiler_version()
    assert env["MMCV CUDA Compiler"] == ops.get_compiling_cuda_version()


# ================================================================================== test_deform_roi_pool.py
DRP_INPUTS = [([[[[1., 2.], [3., 4.]]]], [[0., 0., 0., 1., 1.]]),
              ([[[[1., 2.], [3., 4.]], [[4., 3.], [2., 1.]]]], [[0., 0., 0., 1., 1.]]),
              ([[[[1., 2., 5., 6.], [3., 4., 7., 8.], [9., 10., 13., 14.], [11., 12., 15., 16.]]]],
               [[0., 0., 0., 3., 3.]])]
DRP_OUTPUTS = [([[[[1, 1.25], [1.5, 1.75]]]], [[[[3.0625, 0.4375], [0.4375, 0.0625]]]]),
               ([[[[1., 1.25], [1.5, 1.75]], [[4, 3.75], [3.5, 3.25]]]],
                [[[[3.0625, 0.4375], [0.4375, 0.0625]], [[3.0625, 0.4375], [0.4375, 0.0625]]]]),
               ([[[[1.9375, 4.75], [7.5625, 10.375]]]],
                [[[[0.47265625, 0.4296875, 0.4296875, 0.04296875], [0.4296875, 0.390625, 0.390625, 0.0390625],
                   [0.4296875, 0.390625, 0.390625, 0.0390625], [0.04296875, 0.0390625, 0.0390625, 0.00390625]]]])]


@pytest.mark.parametrize("dtype", [torch.float, torch.double])
@pytest.mark.parametrize("case", range(3))
def test_deform_roi_pool_allclose(ops: Any, case: int, dtype: torch.dtype) -> None:
    (np_input, np_rois), (np_output, np_grad) = DRP_INPUTS[case], DRP_OUTPUTS[case]
    x = torch.tensor(np_input, dtype=dtype, requires_grad=True)
    rois = torch.tensor(np_rois, dtype=dtype)
    pool = ops.DeformRoIPoolPack((2, 2), x.size(1), spatial_scale=1.0, sampling_ratio=2).to(dtype)
    out = pool(x, rois)
    out.backward(torch.ones_like(out))
    assert np.allclose(out.detach().numpy(), np_output, 1e-3)
    assert x.grad is not None and np.allclose(x.grad.numpy(), np_grad, 1e-3)


@pytest.mark.filterwarnings("ignore:Input #0 requires gradient and is not a double")  # upstream checks in float32
@pytest.mark.parametrize("modulated", [False, True])
@pytest.mark.parametrize("case", range(3))
def test_deform_roi_pool_gradcheck(ops: Any, case: int, modulated: bool) -> None:
    np_input, np_rois = DRP_INPUTS[case]
    x = torch.tensor(np_input, dtype=torch.float, requires_grad=True)
    rois = torch.tensor(np_rois, dtype=torch.float)
    cls = ops.ModulatedDeformRoIPoolPack if modulated else ops.DeformRoIPoolPack
    pool = cls((2, 2), x.size(1), spatial_scale=1.0, sampling_ratio=2)
    assert gradcheck(pool, (x, rois), eps=1e-2, atol=1e-2)


def test_deform_roi_pool_learned_offset_gets_gradient(ops: Any) -> None:
    # beyond upstream: a non-zero learned offset moves the bins and receives a gradient through mmcv's Function
    torch.manual_seed(0)
    x = torch.rand(1, 2, 8, 8, dtype=torch.double, requires_grad=True)
    rois = torch.tensor([[0.0, 1.0, 1.5, 5.0, 6.0]], dtype=torch.double)
    offset = (torch.rand(1, 2, 2, 2, dtype=torch.double) * 0.4 - 0.2).requires_grad_(True)
    assert gradcheck(lambda a, o: ops.deform_roi_pool(a, rois, o, (2, 2), 1.0, 2, 0.1), (x, offset))


# ================================================================================ test_assign_score_withk.py
def test_paconv_assign_scores(ops: Any) -> None:
    scores = torch.tensor(V.ASW_SCORES, requires_grad=True)
    points = torch.tensor(V.ASW_POINTS, requires_grad=True)
    centers = torch.tensor(V.ASW_CENTERS, requires_grad=True)
    knn_idx = torch.tensor(V.ASW_KNN).long()
    output = ops.assign_score_withk(scores, points, centers, knn_idx, "sum")
    assert torch.allclose(output.detach(), torch.tensor(V.ASW_EXPECT_OUT), atol=1e-6)
    output.sum().backward()
    assert torch.allclose(scores.grad, torch.tensor(V.ASW_EXPECT_GRAD_SCORES), atol=1e-6)
    assert torch.allclose(points.grad, torch.tensor(V.ASW_EXPECT_GRAD_POINTS), atol=1e-6)
    assert torch.allclose(centers.grad, torch.tensor(V.ASW_EXPECT_GRAD_CENTERS), atol=1e-6)


# ============================================================================== test_roi_align_rotated.py
RAR_INPUTS = [([[[[1., 2.], [3., 4.]]]], [[0., 0.5, 0.5, 1., 1., 0]]),
              ([[[[1., 2.], [3., 4.]]]], [[0., 0.5, 0.5, 1., 1., np.pi / 2]]),
              ([[[[1., 2.], [3., 4.]], [[4., 3.], [2., 1.]]]], [[0., 0.5, 0.5, 1., 1., 0]]),
              ([[[[1., 2., 5., 6.], [3., 4., 7., 8.], [9., 10., 13., 14.], [11., 12., 15., 16.]]]],
               [[0., 1.5, 1.5, 3., 3., 0]]),
              ([[[[1., 2., 5., 6.], [3., 4., 7., 8.], [9., 10., 13., 14.], [11., 12., 15., 16.]]]],
               [[0., 1.5, 1.5, 3., 3., np.pi / 2]])]
_RAR_GRAD4 = [[[[0.47265625, 0.42968750, 0.42968750, 0.04296875], [0.42968750, 0.39062500, 0.39062500, 0.03906250],
                [0.42968750, 0.39062500, 0.39062500, 0.03906250], [0.04296875, 0.03906250, 0.03906250, 0.00390625]]]]
RAR_OUTPUTS = [([[[[1.0, 1.25], [1.5, 1.75]]]], [[[[3.0625, 0.4375], [0.4375, 0.0625]]]]),
               ([[[[1.5, 1], [1.75, 1.25]]]], [[[[3.0625, 0.4375], [0.4375, 0.0625]]]]),
               ([[[[1.0, 1.25], [1.5, 1.75]], [[4.0, 3.75], [3.5, 3.25]]]],
                [[[[3.0625, 0.4375], [0.4375, 0.0625]], [[3.0625, 0.4375], [0.4375, 0.0625]]]]),
               ([[[[1.9375, 4.75], [7.5625, 10.375]]]], _RAR_GRAD4),
               ([[[[7.5625, 1.9375], [10.375, 4.75]]]], _RAR_GRAD4)]


@pytest.mark.filterwarnings("ignore:\"(out_size|sample_num)\" is deprecated")  # upstream checks the old names too
@pytest.mark.parametrize("dtype", [torch.float, torch.double, torch.half])
def test_roialign_rotated(ops: Any, dtype: torch.dtype) -> None:
    if dtype is torch.double:
        for np_input, np_rois in RAR_INPUTS:
            x = torch.tensor(np_input, dtype=dtype, requires_grad=True)
            rois = torch.tensor(np_rois, dtype=dtype)
            assert gradcheck(ops.RoIAlignRotated((2, 2), 1.0, 2), (x, rois), eps=1e-5, atol=1e-5)
    for (np_input, np_rois), (np_output, np_grad) in zip(RAR_INPUTS, RAR_OUTPUTS, strict=True):
        x = torch.tensor(np_input, dtype=dtype, requires_grad=True)
        rois = torch.tensor(np_rois, dtype=dtype)
        output = ops.roi_align_rotated(x, rois, (2, 2), 1.0, 2, True)
        output.backward(torch.ones_like(output))
        assert np.allclose(output.detach().float().numpy(), np_output, atol=1e-3)
        assert x.grad is not None and np.allclose(x.grad.float().numpy(), np_grad, atol=1e-3)
    deprecated = ops.RoIAlignRotated(out_size=(2, 2), spatial_scale=1.0, sample_num=2)(x, rois)
    current = ops.RoIAlignRotated(output_size=(2, 2), spatial_scale=1.0, sampling_ratio=2)(x, rois)
    assert np.allclose(deprecated.detach().float().numpy(), current.detach().float().numpy())


# =============================================================================== test_chamfer_distance.py
def test_chamfer_distance(ops: Any) -> None:
    pointset1 = torch.tensor([[[1.3, 9.39], [2.3, 9.39], [2.3, 10.39], [1.3, 10.39]],
                              [[1.0, 9.39], [3.0, 9.39], [3.0, 10.39], [1.0, 10.39]],
                              [[1.6, 9.99], [2.3, 9.99], [2.3, 10.39], [1.6, 10.39]]], requires_grad=True)
    pointset2 = torch.tensor([[[1.0, 9.39], [3.0, 9.39], [3.0, 10.39], [1.0, 10.39]],
                              [[1.3, 9.39], [2.3, 9.39], [2.3, 10.39], [1.3, 10.39]],
                              [[1.0, 9.39], [3.0, 9.39], [3.0, 10.39], [1.0, 10.39]]], requires_grad=True)
    expected_dist1 = torch.tensor([[0.0900, 0.4900, 0.4900, 0.0900], [0.0900, 0.4900, 0.4900, 0.0900],
                                   [0.5200, 0.6500, 0.4900, 0.3600]])
    expected_dist2 = torch.tensor([[0.0900, 0.4900, 0.4900, 0.0900], [0.0900, 0.4900, 0.4900, 0.0900],
                                   [0.7200, 0.8500, 0.4900, 0.3600]])
    expected_grad1 = torch.tensor([[[0.6000, 0.0000], [-1.4000, 0.0000], [-1.4000, 0.0000], [0.6000, 0.0000]],
                                   [[-0.6000, 0.0000], [1.4000, 0.0000], [1.4000, 0.0000], [-0.6000, 0.0000]],
                                   [[1.2000, -0.8000], [-1.4000, -0.8000], [-1.4000, 0.0000], [1.2000, 0.0000]]])
    expected_grad2 = torch.tensor([[[-0.6000, 0.0000], [1.4000, 0.0000], [1.4000, 0.0000], [-0.6000, 0.0000]],
                                   [[0.6000, 0.0000], [-1.4000, 0.0000], [-1.4000, 0.0000], [0.6000, 0.0000]],
                                   [[0.0000, 0.0000], [0.0000, 0.0000], [2.8000, 0.8000], [-2.4000, 0.8000]]])
    dist1, dist2, idx1, idx2 = ops.chamfer_distance(pointset1, pointset2)
    dist1.backward(torch.ones_like(dist1))
    assert torch.allclose(dist1, expected_dist1, 1e-2)
    assert torch.allclose(dist2, expected_dist2, 1e-2)
    assert pointset1.grad is not None and torch.allclose(pointset1.grad, expected_grad1, 1e-2)
    assert pointset2.grad is not None and torch.allclose(pointset2.grad, expected_grad2, 1e-2)


# ======================================================================================= test_psa_mask.py
@pytest.mark.parametrize("psa_type", ["collect", "distribute"])
def test_psa_mask(ops: Any, psa_type: str) -> None:
    data = np.load(Path(__file__).parent / "data" / "mmcv_v1.7.2_psamask.npz")
    x = torch.tensor(data["psamask_input"], requires_grad=True)
    expected = data[f"psamask_output_{psa_type}"]
    out = ops.PSAMask(psa_type, (4, 4))(x)
    torch.mean(out.view(-1) - torch.ones(4, 64, 8, 8).view(-1)).backward()
    assert out.shape == expected.shape
    assert np.allclose(out.detach().numpy(), expected)
    # beyond upstream (which only runs the backward): an input entry (mask cell i, j at y, x) gets 1 / numel when
    # its covered position (y + i - 1, x + j - 1) lies on the 8 x 8 map (half mask = (4 - 1) // 2 = 1), else 0
    i, j, y, xx = np.meshgrid(np.arange(4), np.arange(4), np.arange(8), np.arange(8), indexing="ij")
    lands = ((y + i - 1 >= 0) & (y + i - 1 < 8) & (xx + j - 1 >= 0) & (xx + j - 1 < 8)).reshape(1, 16, 8, 8)
    assert x.grad is not None
    assert np.allclose(x.grad.numpy(), np.broadcast_to(lands / out.numel(), (4, 16, 8, 8)))


# ======================================================================================= test_tin_shift.py
@pytest.mark.filterwarnings("ignore:Input #0 requires gradient and is not a double")  # upstream checks in float32
@pytest.mark.parametrize("dtype", [torch.float, torch.double, torch.half])
def test_tinshift(ops: Any, dtype: torch.dtype) -> None:
    for shift, output, grad in zip(V.TIN_SHIFTS, V.TIN_OUTPUTS, V.TIN_GRADS, strict=True):
        x = torch.tensor(V.TIN_INPUTS, dtype=dtype, requires_grad=True)
        out = ops.tin_shift(x, torch.tensor(shift).int())
        out.backward(torch.ones_like(out))
        assert np.allclose(out.detach().float().numpy(), np.array(output), 1e-3)
        assert x.grad is not None and np.allclose(x.grad.float().numpy(), np.array(grad), 1e-3)
    if dtype != torch.half:  # upstream's (lenient: atol=1) gradcheck
        for shift in V.TIN_SHIFTS:
            x = torch.tensor(V.TIN_INPUTS, dtype=dtype, requires_grad=True)
            assert gradcheck(ops.tin_shift, (x, torch.tensor(shift).int()), atol=1, rtol=0.1)
    bad_inputs = [torch.rand(2, 3, 4, 2), torch.rand(2, 3, 4, 2), torch.rand(1, 3, 4, 2)]
    for x, bad in zip(bad_inputs, [torch.rand(2, 3), torch.rand(2, 5)], strict=False):
        with pytest.raises(ValueError):
            ops.tin_shift(x.to(dtype), bad.to(dtype))


# ==================================================================================== test_border_align.py
@pytest.mark.parametrize("pool_size", [1, 2])
@pytest.mark.parametrize("dtype", [torch.float, torch.half, torch.double])
def test_border_align(ops: Any, dtype: torch.dtype, pool_size: int) -> None:
    expected_out, expected_grad = np.array(V.BA_OUTPUT[pool_size]), np.array(V.BA_INPUT_GRAD[pool_size])
    boxes = torch.tensor(V.BA_BOXES, dtype=dtype)
    for layer in (lambda a: ops.border_align(a, boxes, pool_size), lambda a: ops.BorderAlign(pool_size)(a, boxes)):
        x = torch.tensor(V.BA_INPUT, dtype=dtype, requires_grad=True)
        out = layer(x)
        out.backward(torch.ones_like(out))
        assert np.allclose(out.detach().numpy(), expected_out, atol=1e-5)
        assert x.grad is not None and np.allclose(x.grad.numpy(), expected_grad, atol=1e-5)


# ===================================================================================== test_correlation.py
@pytest.mark.parametrize("dtype", [torch.float, torch.double, torch.half])
def test_correlation(ops: Any, dtype: torch.dtype) -> None:
    input1 = torch.tensor([[[[1., 2., 3.], [0., 1., 2.], [3., 5., 2.]]]], dtype=dtype, requires_grad=True)
    input2 = torch.tensor([[[[1., 2., 3.], [3., 1., 2.], [8., 5., 2.]]]], dtype=dtype, requires_grad=True)
    out = ops.Correlation(max_displacement=0)(input1, input2)
    out.backward(torch.ones_like(out))
    assert out.shape == (1, 1, 1, 3, 3)
    assert out.eq(torch.tensor([[[[[1., 4., 9.], [0., 1., 4.], [24., 25., 4.]]]]], dtype=dtype)).all()
    assert input1.grad is not None and input1.grad.eq(input2.detach()).all()
    assert input2.grad is not None and input2.grad.eq(input1.detach()).all()


# ================================================================== the layers that call these families
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("layer", ["DeformRoIPoolPack", "ModulatedDeformRoIPoolPack"])
def test_mmdet_deform_roi_pool_extractor_trains(ops: Any, layer: str) -> None:
    from mmdet.models.roi_heads.roi_extractors import SingleRoIExtractor

    torch.manual_seed(0)
    ext = SingleRoIExtractor(roi_layer=dict(type=layer, output_size=7, output_channels=8), out_channels=8,
                             featmap_strides=[4, 8])
    feats = [torch.rand(2, 8, 32, 32, requires_grad=True), torch.rand(2, 8, 16, 16, requires_grad=True)]
    rois = torch.tensor([[0, 4., 4., 60., 50.], [1, 10., 20., 100., 120.], [0, 0., 0., 127., 127.]])
    out = ext(feats, rois)
    assert out.shape == (3, 8, 7, 7)
    out.square().sum().backward()
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in feats)
    # the zero-initialised last offset layer learns: the offset gradient reaches it
    last = ext.roi_layers[0].offset_fc[-1]
    assert last.weight.grad is not None and last.weight.grad.abs().sum() > 0


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_mmdet3d_paconv_cuda_layer_trains(ops: Any) -> None:
    from mmdet3d.ops import PAConvCUDA

    torch.manual_seed(0)
    layer = PAConvCUDA(in_channels=6, out_channels=16, num_kernels=4)
    features = torch.rand(2, 6, 32, requires_grad=True)
    points_xyz = torch.rand(2, 3, 8, 5)
    points_idx = torch.randint(0, 32, (2, 8, 5))
    new_features, _, _ = layer((features, points_xyz, points_idx))
    assert new_features.shape == (2, 16, 8, 5)
    new_features.sum().backward()
    assert features.grad is not None and features.grad.abs().sum() > 0
    assert layer.weight_bank.grad is not None and layer.weight_bank.grad.abs().sum() > 0
