"""mmcv's own 2D op tests (open-mmlab/mmcv v1.7.2 ``tests/test_ops``), ported as numbers, run through mmcv.ops.

Every case goes through mmcv's Python wrappers (``mmcv.ops.nms``, ``RoIAlign``, ``DeformConv2dPack``...) with
``mmcv._ext`` served by detlight. Cases that upstream gates on CUDA run on CPU against the same expected values. The
binary fixtures of three upstream tests (batched NMS boxes, CARAFE and masked-conv tensors) are in
``data/mmcv_v1.7.2_op_fixtures.npz`` (see ``data/README.md``).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.autograd import gradcheck

pytestmark = pytest.mark.openmmlab

FIXTURES = Path(__file__).parent / "data" / "mmcv_v1.7.2_op_fixtures.npz"


@pytest.fixture(scope="module")
def ops() -> Any:
    pytest.importorskip("mmcv")
    import detlight.openmmlab

    assert detlight.openmmlab.install_ops()
    import mmcv.ops

    return mmcv.ops


@pytest.fixture(scope="module")
def fixtures() -> Any:
    return np.load(FIXTURES)


# ================================================================================================= test_nms.py
NMS_BOXES = np.array([[6.0, 3.0, 8.0, 7.0], [3.0, 6.0, 9.0, 11.0], [3.0, 7.0, 10.0, 12.0], [1.0, 4.0, 13.0, 7.0]],
                     dtype=np.float32)
NMS_SCORES = np.array([0.6, 0.9, 0.7, 0.2], dtype=np.float32)


def test_nms_allclose(ops: Any) -> None:
    dets, inds = ops.nms(torch.from_numpy(NMS_BOXES), torch.from_numpy(NMS_SCORES), iou_threshold=0.3, offset=0)
    assert np.allclose(dets, [[3.0, 6.0, 9.0, 11.0, 0.9], [6.0, 3.0, 8.0, 7.0, 0.6], [1.0, 4.0, 13.0, 7.0, 0.2]])
    assert np.allclose(inds, [1, 0, 3])


SOFTNMS_EXPECTED = {
    "linear": ([[3., 6., 9., 11., 0.9], [6., 3., 8., 7., 0.6], [3., 7., 10., 12., 0.29024392],
                [1., 4., 13., 7., 0.2]], [1, 0, 2, 3]),
    "gaussian": ([[3., 6., 9., 11., 0.9], [6., 3., 8., 7., 0.59630775], [3., 7., 10., 12., 0.35275510],
                  [1., 4., 13., 7., 0.18650459]], [1, 0, 2, 3]),
    "naive": ([[3., 6., 9., 11., 0.9], [6., 3., 8., 7., 0.6], [1., 4., 13., 7., 0.2]], [1, 0, 3]),
}


@pytest.mark.parametrize("method", ["linear", "gaussian", "naive"])
def test_softnms_allclose(ops: Any, method: str) -> None:
    dets, inds = ops.soft_nms(torch.from_numpy(NMS_BOXES), torch.from_numpy(NMS_SCORES), iou_threshold=0.3,
                              sigma=0.5, min_score=0.01, method=method)
    exp_dets, exp_inds = SOFTNMS_EXPECTED[method]
    assert np.allclose(dets.numpy(), exp_dets)
    assert np.allclose(inds.numpy(), exp_inds)


def test_nms_match(ops: Any) -> None:
    iou_thr = 0.6
    assert len(ops.nms_match(np.array([]), iou_thr)) == 0
    np_dets = np.array([[49.1, 32.4, 51.0, 35.9, 0.9], [49.3, 32.9, 51.0, 35.3, 0.9],
                        [35.3, 11.5, 39.9, 14.5, 0.4], [35.2, 11.7, 39.7, 15.7, 0.3]], dtype=np.float32)
    np_groups = ops.nms_match(np_dets, iou_thr)
    assert isinstance(np_groups[0], np.ndarray)
    assert len(np_groups) == 2
    tensor_dets = torch.from_numpy(np_dets)
    keep = ops.nms(tensor_dets[:, :4].contiguous(), tensor_dets[:, 4].contiguous(), iou_thr)[1]
    assert {g[0].item() for g in np_groups} == set(keep.tolist())
    tensor_groups = ops.nms_match(tensor_dets, iou_thr)
    assert isinstance(tensor_groups[0], torch.Tensor)
    for t, n in zip(tensor_groups, np_groups, strict=True):
        assert np.equal(t.numpy(), n).all()
    with pytest.raises(AssertionError):
        ops.nms_match(np.zeros((2, 3)), iou_thr)


def test_batched_nms(ops: Any, fixtures: Any) -> None:
    boxes = torch.from_numpy(fixtures["batched_nms_boxes"])
    scores = torch.from_numpy(fixtures["batched_nms_scores"])
    idxs = torch.from_numpy(fixtures["batched_nms_idxs"])
    cfg: dict[str, Any] = dict(type="nms", iou_threshold=0.7, score_threshold=0.5, max_num=100)
    dets, keep = ops.batched_nms(boxes, scores, idxs, cfg, class_agnostic=False)
    seq_dets, seq_keep = ops.batched_nms(boxes, scores, idxs, {**cfg, "split_thr": 100}, class_agnostic=False)
    assert torch.equal(keep, seq_keep)
    assert torch.equal(dets, seq_dets)
    assert torch.equal(keep, torch.from_numpy(fixtures["batched_nms_keep"][:100]))
    soft = dict(type="soft_nms", iou_threshold=0.7)
    dets, keep = ops.batched_nms(boxes, scores, idxs, soft, class_agnostic=False)
    seq_dets, seq_keep = ops.batched_nms(boxes, scores, idxs, {**soft, "split_thr": 100}, class_agnostic=False)
    assert torch.equal(keep, seq_keep)
    assert torch.equal(dets, seq_dets)
    seq_dets, seq_keep = ops.batched_nms(boxes, scores, idxs, None, class_agnostic=False)
    assert len(seq_keep) == len(boxes)
    assert ((seq_dets[:, -1][1:] - seq_dets[:, -1][:-1]) < 0).all()


# ======================================================================================== test_roi_align.py
ROI_INPUTS = [
    ([[[[1., 2.], [3., 4.]]]], [[0., 0., 0., 1., 1.]]),
    ([[[[1., 2.], [3., 4.]], [[4., 3.], [2., 1.]]]], [[0., 0., 0., 1., 1.]]),
    ([[[[1., 2., 5., 6.], [3., 4., 7., 8.], [9., 10., 13., 14.], [11., 12., 15., 16.]]]], [[0., 0., 0., 3., 3.]]),
]
ROI_ALIGN_OUTPUTS = [
    ([[[[1.0, 1.25], [1.5, 1.75]]]], [[[[3.0625, 0.4375], [0.4375, 0.0625]]]]),
    ([[[[1.0, 1.25], [1.5, 1.75]], [[4.0, 3.75], [3.5, 3.25]]]],
     [[[[3.0625, 0.4375], [0.4375, 0.0625]], [[3.0625, 0.4375], [0.4375, 0.0625]]]]),
    ([[[[1.9375, 4.75], [7.5625, 10.375]]]],
     [[[[0.47265625, 0.42968750, 0.42968750, 0.04296875], [0.42968750, 0.39062500, 0.39062500, 0.03906250],
        [0.42968750, 0.39062500, 0.39062500, 0.03906250], [0.04296875, 0.03906250, 0.03906250, 0.00390625]]]]),
]


@pytest.mark.parametrize("dtype", [torch.float, torch.double, torch.half])
@pytest.mark.parametrize("case", range(3))
def test_roi_align_allclose(ops: Any, case: int, dtype: torch.dtype) -> None:
    (inp, rois), (out_exp, grad_exp) = ROI_INPUTS[case], ROI_ALIGN_OUTPUTS[case]
    x = torch.tensor(inp, dtype=dtype, requires_grad=True)
    out = ops.roi_align(x, torch.tensor(rois, dtype=dtype), (2, 2), 1.0, 2, "avg", True)
    out.backward(torch.ones_like(out))
    assert np.allclose(out.data.float().numpy(), out_exp, atol=1e-3)
    assert np.allclose(x.grad.float().numpy(), grad_exp, atol=1e-3)


@pytest.mark.parametrize("case", range(3))
def test_roi_align_gradcheck(ops: Any, case: int) -> None:
    inp, rois = ROI_INPUTS[case]
    x = torch.tensor(inp, dtype=torch.double, requires_grad=True)
    gradcheck(ops.RoIAlign((2, 2), 1.0, 2), (x, torch.tensor(rois, dtype=torch.double)), eps=1e-5, atol=1e-5)


# ========================================================================================= test_roi_pool.py
ROI_POOL_OUTPUTS = [
    ([[[[1., 2.], [3., 4.]]]], [[[[1., 1.], [1., 1.]]]]),
    ([[[[1., 2.], [3., 4.]], [[4., 3.], [2., 1.]]]], [[[[1., 1.], [1., 1.]], [[1., 1.], [1., 1.]]]]),
    ([[[[4., 8.], [12., 16.]]]], [[[[0., 0., 0., 0.], [0., 1., 0., 1.], [0., 0., 0., 0.], [0., 1., 0., 1.]]]]),
]


@pytest.mark.parametrize("dtype", [torch.float, torch.double, torch.half])
@pytest.mark.parametrize("case", range(3))
def test_roi_pool_allclose(ops: Any, case: int, dtype: torch.dtype) -> None:
    (inp, rois), (out_exp, grad_exp) = ROI_INPUTS[case], ROI_POOL_OUTPUTS[case]
    x = torch.tensor(inp, dtype=dtype, requires_grad=True)
    out = ops.roi_pool(x, torch.tensor(rois, dtype=dtype), (2, 2), 1.0)
    out.backward(torch.ones_like(out))
    assert np.allclose(out.data.float().numpy(), out_exp, 1e-3)
    assert np.allclose(x.grad.float().numpy(), grad_exp, 1e-3)


@pytest.mark.parametrize("case", range(3))
def test_roi_pool_gradcheck(ops: Any, case: int) -> None:
    inp, rois = ROI_INPUTS[case]
    x = torch.tensor(inp, dtype=torch.double, requires_grad=True)
    gradcheck(ops.RoIPool((2, 2), 1.0), (x, torch.tensor(rois, dtype=torch.double)), eps=1e-2, atol=1e-2)


# ======================================================================================= test_focal_loss.py
FOCAL_INPUTS = [
    ([[1., 0], [0, 1.]], [0, 1]),
    ([[1., 0, -1.], [0, 1., 2.]], [2, 1]),
    ([[1e-6, 2e-6, 3e-6], [4e-6, 5e-5, 6e-4], [7e-3, 8e-2, 9e-1]], [1, 2, 0]),
]
SOFTMAX_OUTPUTS = [
    (0.00566451, [[-0.00657264, 0.00657264], [0.00657264, -0.00657264]]),
    (0.34956908, [[0.10165970, 0.03739851, -0.13905823], [0.01227554, -0.10298023, 0.09070466]]),
    (0.15754992, [[0.02590877, -0.05181759, 0.02590882], [0.02589641, 0.02589760, -0.05179400],
                  [-0.07307514, 0.02234372, 0.05073142]]),
]
SIGMOID_OUTPUTS = [
    (0.13562961, [[-0.00657264, 0.11185755], [0.11185755, -0.00657264]]),
    (1.10251057, [[0.28808805, 0.11185755, -0.09602935], [0.11185755, -0.00657264, 0.40376765]]),
    (0.42287254, [[0.07457182, -0.02485716, 0.07457201], [0.07457211, 0.07457669, -0.02483728],
                  [-0.02462499, 0.08277918, 0.18050370]]),
]


@pytest.mark.parametrize("dtype", [torch.float, torch.half])
@pytest.mark.parametrize("case", range(3))
def test_softmax_focal_loss(ops: Any, case: int, dtype: torch.dtype) -> None:
    (xs, ys), (loss_exp, grad_exp) = FOCAL_INPUTS[case], SOFTMAX_OUTPUTS[case]
    x = torch.tensor(xs).to(dtype).requires_grad_()
    loss = ops.softmax_focal_loss(x, torch.tensor(ys).long(), 2.0, 0.25, None, "mean")
    loss.backward()
    assert np.allclose(loss.data.float().numpy(), loss_exp, 1e-2)
    assert np.allclose(x.grad.float().numpy(), grad_exp, 1e-2)


@pytest.mark.parametrize("dtype", [torch.float, torch.half])
@pytest.mark.parametrize("case", range(3))
def test_sigmoid_focal_loss(ops: Any, case: int, dtype: torch.dtype) -> None:
    (xs, ys), (loss_exp, grad_exp) = FOCAL_INPUTS[case], SIGMOID_OUTPUTS[case]
    x = torch.tensor(xs).to(dtype).requires_grad_()
    loss = ops.sigmoid_focal_loss(x, torch.tensor(ys).long(), 2.0, 0.25, None, "mean")
    loss.backward()
    assert np.allclose(loss.data.float().numpy(), loss_exp, 1e-2)
    assert np.allclose(x.grad.float().numpy(), grad_exp, 1e-2)


@pytest.mark.parametrize("kind", ["SoftmaxFocalLoss", "SigmoidFocalLoss"])
@pytest.mark.parametrize("case", range(3))
def test_focal_loss_gradcheck(ops: Any, kind: str, case: int) -> None:
    xs, ys = FOCAL_INPUTS[case]
    x = torch.tensor(xs).float().requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # upstream checks float32 inputs with a coarse eps
        gradcheck(getattr(ops, kind)(2.0, 0.25), (x, torch.tensor(ys).long()), eps=1e-2, atol=1e-2)


# ====================================================================================== test_deform_conv.py
DC_INPUT = [[[[1., 2., 3.], [0., 1., 2.], [3., 5., 2.]]]]
DC_OFFSET_WEIGHT = [[[0.1, 0.4, 0.6, 0.1]], [[0.3, 0.2, 0.1, 0.3]], [[0.5, 0.5, 0.2, 0.8]], [[0.8, 0.3, 0.9, 0.1]],
                    [[0.3, 0.1, 0.2, 0.5]], [[0.3, 0.7, 0.5, 0.3]], [[0.6, 0.2, 0.5, 0.3]], [[0.4, 0.1, 0.8, 0.4]]]
DC_OFFSET_BIAS = [0.7, 0.1, 0.8, 0.5, 0.6, 0.5, 0.4, 0.7]
DC_WEIGHT = [[[0.4, 0.2, 0.1, 0.9]]]
DC_GT_OUT = [[[[1.650, 0.], [0.000, 0.]]]]
DC_GT_X_GRAD = [[[[-0.666, 0.204, 0.000], [0.030, -0.416, 0.012], [0.000, 0.252, 0.129]]]]
DC_GT_OFFSET_WEIGHT_GRAD = [[[[1.44, 2.88], [0.00, 1.44]]], [[[-0.72, -1.44], [0.00, -0.72]]],
                            [[[0.00, 0.00], [0.00, 0.00]]], [[[0.00, 0.00], [0.00, 0.00]]],
                            [[[-0.10, -0.20], [0.00, -0.10]]], [[[-0.08, -0.16], [0.00, -0.08]]],
                            [[[-0.54, -1.08], [0.00, -0.54]]], [[[-0.54, -1.08], [0.00, -0.54]]]]
DC_GT_OFFSET_BIAS_GRAD = [1.44, -0.72, 0., 0., -0.10, -0.08, -0.54, -0.54]
DC_GT_WEIGHT_GRAD = [[[[3.62, 0.], [0.40, 0.18]]]]


def _run_deform_conv(ops: Any, dtype: torch.dtype, threshold: float, im2col_step: int = 2) -> None:
    batch = 10
    x = torch.tensor(np.repeat(DC_INPUT, batch, axis=0), dtype=dtype, requires_grad=True)
    model = ops.DeformConv2dPack(in_channels=1, out_channels=1, kernel_size=2, stride=1, padding=0,
                                 im2col_step=im2col_step)
    model.conv_offset.weight.data = torch.Tensor(DC_OFFSET_WEIGHT).reshape(8, 1, 2, 2)
    model.conv_offset.bias.data = torch.Tensor(DC_OFFSET_BIAS).reshape(8)
    model.weight.data = torch.Tensor(DC_WEIGHT).reshape(1, 1, 2, 2)
    model.type(dtype)
    out = model(x)
    out.backward(torch.ones_like(out))
    assert np.allclose(out.detach().float().numpy(), np.repeat(DC_GT_OUT, batch, axis=0), threshold)
    assert np.allclose(x.grad.float().numpy(), np.repeat(DC_GT_X_GRAD, batch, axis=0), threshold)
    assert np.allclose(model.conv_offset.weight.grad.float().numpy() / batch, DC_GT_OFFSET_WEIGHT_GRAD, threshold)
    assert np.allclose(model.conv_offset.bias.grad.float().numpy() / batch, DC_GT_OFFSET_BIAS_GRAD, threshold)
    assert np.allclose(model.weight.grad.float().numpy() / batch, DC_GT_WEIGHT_GRAD, threshold)


@pytest.mark.parametrize(("dtype", "threshold"),
                         [(torch.double, 1e-3), (torch.float, 1e-1), (torch.float, 1e-3), (torch.half, 1e-1)],
                         ids=["double-cpu", "float-cpu", "float-cuda-values", "half-cuda-values"])
def test_deform_conv(ops: Any, dtype: torch.dtype, threshold: float) -> None:
    _run_deform_conv(ops, dtype, threshold)


def test_deform_conv_constructor_and_im2col_checks(ops: Any) -> None:
    assert not hasattr(ops.DeformConv2d(1, 1, 2, stride=1, padding=0), "bias")
    with pytest.raises(AssertionError):
        ops.DeformConv2d(1, 1, 2, stride=1, padding=0, bias=True)
    with pytest.raises(AssertionError):
        ops.DeformConv2d(3, 2, 3, groups=2)
    with pytest.raises(AssertionError):
        ops.DeformConv2d(3, 4, 3, groups=3)
    with pytest.raises(AssertionError, match="batch size must be divisible by im2col_step"):
        _run_deform_conv(ops, torch.float, 1e-3, im2col_step=3)


# ============================================================================ test_modulated_deform_conv.py
MDC_INPUT = [[[[1., 2., 3.], [1., 2., 3.], [1., 2., 3.]]]]
MDC_OUTPUT = [[[[0.5, 1.5, 2.5, 1.5], [1.0, 3.0, 5.0, 3.0], [1.0, 3.0, 5.0, 3.0], [0.5, 1.5, 2.5, 1.5]]]]
MDC_INPUT_GRAD = [[[[2., 2., 2.], [2., 2., 2.], [2., 2., 2.]]]]
MDC_W_GRAD = [[[[9., 9.], [9., 9.]]]]
MDC_OFFSET_W_GRAD = [[[[-7.0, -4.0], [0.0, 0.0]]], [[[-9.0, 7.5], [-6.0, 5.0]]], [[[-4.0, -7.0], [0.0, 0.0]]],
                     [[[-7.5, -9.0], [-5.0, -6.0]]], [[[-7.0, -4.0], [-7.0, -4.0]]], [[[-6.0, 5.0], [-9.0, 7.5]]],
                     [[[-4.0, -7.0], [-4.0, -7.0]]], [[[-5.0, -6.0], [-7.5, -9.0]]], [[[10.5, 6.0], [7.0, 4.0]]],
                     [[[6.0, 10.5], [4.0, 7.0]]], [[[7.0, 4.0], [10.5, 6.0]]], [[[4.0, 7.0], [6.0, 10.5]]]]
MDC_OFFSET_B_GRAD = [-3.0, -1.5, -3.0, -1.5, -3.0, -1.5, -3.0, -1.5, 4.5, 4.5, 4.5, 4.5]


@pytest.mark.parametrize("dtype", [torch.double, torch.float, torch.half])
def test_modulated_deform_conv(ops: Any, dtype: torch.dtype) -> None:
    x = torch.tensor(MDC_INPUT, dtype=dtype, requires_grad=True)
    dcn = ops.ModulatedDeformConv2dPack(1, 1, kernel_size=(2, 2), stride=1, padding=1, deform_groups=1, bias=False)
    dcn.weight.data.fill_(1.0)
    dcn.type(dtype)
    out = dcn(x)
    out.sum().backward()
    assert np.allclose(out.detach().float().numpy(), MDC_OUTPUT, 1e-2)
    assert np.allclose(x.grad.float().numpy(), MDC_INPUT_GRAD, 1e-2)
    assert np.allclose(dcn.weight.grad.float().numpy(), MDC_W_GRAD, 1e-2)
    # zero-initialised offsets sample exactly on y/x = -1 and = H here: mmcv's zero offset gradient there
    assert np.allclose(dcn.conv_offset.weight.grad.float().numpy(), MDC_OFFSET_W_GRAD, 1e-2)
    assert np.allclose(dcn.conv_offset.bias.grad.float().numpy(), MDC_OFFSET_B_GRAD, 1e-2)


# ==================================================================================== test_masked_conv2d.py
def test_masked_conv2d_allclose(ops: Any, fixtures: Any) -> None:
    conv = ops.MaskedConv2d(3, 3, 3, 1, 1)
    conv.weight = torch.nn.Parameter(torch.tensor(fixtures["masked_conv2d_weight"]))
    conv.bias = torch.nn.Parameter(torch.tensor(fixtures["masked_conv2d_bias"]))
    out = conv(torch.tensor(fixtures["masked_conv2d_input"]), torch.tensor(fixtures["masked_conv2d_mask"]))
    assert np.allclose(out.data.numpy(), fixtures["masked_conv2d_output"], 1e-3)


# ========================================================================================= test_carafe.py
def _carafe_inputs(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    feat = torch.randn(2, 64, 3, 3, generator=g).double().requires_grad_(True)
    mask = torch.randn(2, 100, 6, 6, generator=g).sigmoid().double().requires_grad_(True)
    return feat, mask


def test_carafe_naive_gradcheck(ops: Any) -> None:
    # mmcv's CARAFENaiveFunction.backward asserts CUDA tensors; detlight.openmmlab.cpu_wrappers replaces that
    # backward, so the gradients are checked through mmcv.ops on CPU as upstream checks them on CUDA.
    feat, mask = _carafe_inputs(0)
    gradcheck(ops.CARAFENaive(5, 4, 2), (feat, mask), atol=1e-4, eps=1e-4, fast_mode=True)
    torch.testing.assert_close(ops.CARAFENaive(5, 4, 2)(feat, mask), ops.CARAFE(5, 4, 2)(feat, mask))


def test_carafe_gradcheck(ops: Any) -> None:
    feat, mask = _carafe_inputs(1)
    gradcheck(ops.CARAFE(5, 4, 2), (feat, mask), atol=1e-4, eps=1e-4, fast_mode=True)  # 8352 inputs


def test_carafe_allclose(ops: Any, fixtures: Any) -> None:
    feat = torch.tensor(fixtures["carafe_feat"], requires_grad=True)
    mask = torch.tensor(fixtures["carafe_mask"], requires_grad=True)
    out = ops.CARAFE(5, 4, 2)(feat, mask)
    out.backward(torch.ones_like(out))
    assert np.allclose(out.data.numpy(), fixtures["carafe_output"], atol=1e-3)
    assert np.allclose(feat.grad.numpy(), fixtures["carafe_feat_grad"], atol=1e-3)
    assert np.allclose(mask.grad.numpy(), fixtures["carafe_mask_grad"], atol=1e-3)


# ============================================================================== test_ms_deformable_attn.py
def _msda_inputs(shapes: list[tuple[int, int]], channels: int = 2) -> tuple[torch.Tensor, ...]:
    n, m, lq, lvl, p = 1, 2, 2, 2, 2
    spatial = torch.as_tensor(shapes, dtype=torch.long)
    start = torch.cat((spatial.new_zeros((1,)), spatial.prod(1).cumsum(0)[:-1]))
    s = int(sum(h * w for h, w in shapes))
    torch.manual_seed(3)
    value = torch.rand(n, s, m, channels) * 0.01
    loc = torch.rand(n, lq, m, lvl, p, 2)
    attn = torch.rand(n, lq, m, lvl, p) + 1e-5
    attn /= attn.sum(-1, keepdim=True).sum(-2, keepdim=True)
    return value, spatial, start, loc, attn


def test_multiscale_deformable_attention_module(ops: Any) -> None:
    from mmcv.ops.multi_scale_deform_attn import MultiScaleDeformableAttention

    with pytest.raises(ValueError):
        MultiScaleDeformableAttention(embed_dims=256, num_heads=7)
    msda = MultiScaleDeformableAttention(embed_dims=3, num_levels=2, num_heads=3)
    msda.init_weights()
    query, key = torch.rand(5, 1, 3), torch.rand(5, 1, 3)
    out = msda(query, key, key, reference_points=torch.rand(1, 5, 2, 2),
               spatial_shapes=torch.tensor([[2, 2], [1, 1]]), level_start_index=torch.tensor([0, 4]))
    assert out.shape == (5, 1, 3)


@pytest.mark.parametrize("dtype", [torch.double, torch.float])
def test_ms_deform_attn_forward_equal_with_pytorch(ops: Any, dtype: torch.dtype) -> None:
    from mmcv.ops.multi_scale_deform_attn import MultiScaleDeformableAttnFunction, multi_scale_deformable_attn_pytorch

    value, shapes, start, loc, attn = _msda_inputs([(6, 4), (3, 2)])
    ref = multi_scale_deformable_attn_pytorch(value.to(dtype), shapes, loc.to(dtype), attn.to(dtype)).detach()
    got = MultiScaleDeformableAttnFunction.apply(value.to(dtype), shapes, start, loc.to(dtype), attn.to(dtype),
                                                 2).detach()
    rel = ((got - ref).abs() / ref.abs()).max()
    if dtype is torch.double:
        assert torch.allclose(got, ref)
        assert (got - ref).abs().max() < 1e-18
        assert rel < 1e-15
    else:
        assert torch.allclose(got, ref, rtol=1e-2, atol=1e-3)
        assert (got - ref).abs().max() < 1e-9
        assert rel < 1e-6


@pytest.mark.parametrize("channels", [4, 30, 32, 64, 71, 1025])
def test_ms_deform_attn_gradient_numerical(ops: Any, channels: int) -> None:
    from mmcv.ops.multi_scale_deform_attn import MultiScaleDeformableAttnFunction

    value, shapes, start, loc, attn = _msda_inputs([(3, 2), (2, 1)], channels)
    args = (value.double().requires_grad_(), shapes, start, loc.double().requires_grad_(),
            attn.double().requires_grad_(), 2)
    # full Jacobian for the small cases; a random projection of it (gradcheck's fast mode) for 64+ channels
    assert gradcheck(MultiScaleDeformableAttnFunction.apply, args, eps=1e-6, atol=1e-2, fast_mode=channels >= 64)


# =========================================================================================== test_bbox.py
BBOX_CASES = [
    ([[1.0, 1.0, 3.0, 4.0], [2.0, 2.0, 3.0, 4.0], [7.0, 7.0, 8.0, 8.0]], [[0.0, 2.0, 2.0, 5.0], [2.0, 1.0, 3.0, 3.0]],
     dict(offset=1), [[0.33333334, 0.5], [0.2, 0.5], [0.0, 0.0]]),
    ([[1.0, 1.0, 3.0, 4.0], [2.0, 2.0, 3.0, 4.0]], [[0.0, 2.0, 2.0, 5.0], [2.0, 1.0, 3.0, 3.0]],
     dict(aligned=True, offset=1), [0.33333334, 0.5]),
    ([[0.0, 0.0, 3.0, 3.0]], [[4.0, 0.0, 5.0, 3.0], [3.0, 0.0, 4.0, 3.0], [2.0, 0.0, 3.0, 3.0], [1.0, 0.0, 2.0, 3.0]],
     dict(offset=1), [[0, 0.2, 0.5, 0.5]]),
    ([[10.0 + i, 10.0 + i, 30.0 + i, 30.0 + i] for i in range(1000)],
     [[20.0 + i, 20.0 + i, 40.0 + i, 40.0 + i] for i in range(1000)], dict(aligned=True), [1 / 7] * 1000),
]


@pytest.mark.parametrize("dtype", [torch.float, torch.half])
@pytest.mark.parametrize("case", range(4))
def test_bbox_overlaps(ops: Any, case: int, dtype: torch.dtype) -> None:
    b1, b2, kwargs, expected = BBOX_CASES[case]
    t1, t2 = torch.tensor(b1).to(dtype), torch.tensor(b2).to(dtype)
    if dtype is torch.float:  # mmcv computes CPU tensors in Python: check that path too
        assert np.allclose(ops.bbox_overlaps(t1, t2, **kwargs).numpy(), expected, 1e-2)
    # the device path: mmcv's wrapper hands non-CPU tensors to ext_module.bbox_overlaps with these arguments
    import mmcv._ext as ext

    aligned = kwargs.get("aligned", False)
    ious = t1.new_zeros(len(b1)) if aligned else t1.new_zeros((len(b1), len(b2)))
    ext.bbox_overlaps(t1, t2, ious, mode=0, aligned=aligned, offset=kwargs.get("offset", 0))
    assert np.allclose(ious.float().numpy(), expected, 1e-2)
