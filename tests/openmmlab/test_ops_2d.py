"""detlight.openmmlab's 2D ``mmcv._ext`` functions against torchvision and naive, loop-by-loop references (no mmcv)."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision

from detlight.openmmlab.ops import bbox as bbox_ops
from detlight.openmmlab.ops import nms as nms_ops
from detlight.openmmlab.ops import roi_align as ra


def _boxes(n: int, seed: int, scale: float = 20.0, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * scale
    wh = torch.rand(n, 2, generator=g) * scale / 2
    return torch.cat([xy, xy + wh], 1).to(dtype), torch.rand(n, generator=g).to(dtype)


def _iou(a: list[float], b: list[float], offset: float) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]) + offset)
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]) + offset)
    inter = w * h
    area_a = (a[2] - a[0] + offset) * (a[3] - a[1] + offset)
    area_b = (b[2] - b[0] + offset) * (b[3] - b[1] + offset)
    return inter / (area_a + area_b - inter)


def _naive_nms(boxes: torch.Tensor, scores: torch.Tensor, thr: float, offset: int) -> list[int]:
    order = scores.sort(0, descending=True)[1].tolist()
    bl = boxes.tolist()
    keep, dead = [], set()
    for pos, i in enumerate(order):
        if i in dead:
            continue
        keep.append(i)
        for j in order[pos + 1:]:
            if j not in dead and _iou(bl[i], bl[j], offset) > thr:
                dead.add(j)
    return keep


# ----------------------------------------------------------------------------------------------------------- nms
@pytest.mark.parametrize("offset", [0, 1])
@pytest.mark.parametrize("thr", [0.1, 0.5])
def test_nms_matches_naive_greedy_nms(offset: int, thr: float) -> None:
    boxes, scores = _boxes(80, seed=offset * 10 + int(thr * 10), dtype=torch.float64)
    assert nms_ops.nms(boxes, scores, iou_threshold=thr, offset=offset).tolist() == \
        _naive_nms(boxes, scores, thr, offset)


def test_nms_offset0_is_torchvision_and_offset1_differs_on_small_boxes() -> None:
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [1.0, 1.0, 2.0, 2.0]])
    scores = torch.tensor([0.9, 0.8])
    assert nms_ops.nms(boxes, scores, iou_threshold=0.1, offset=0).tolist() == \
        torchvision.ops.nms(boxes, scores, 0.1).tolist() == [0, 1]
    # with +1 widths the two boxes share a pixel: IoU 1/7 > 0.1
    assert nms_ops.nms(boxes, scores, iou_threshold=0.1, offset=1).tolist() == [0]
    assert nms_ops.nms(boxes[:0], scores[:0], iou_threshold=0.5).shape == (0,)
    with pytest.raises(ValueError, match="offset must be 0 or 1"):
        nms_ops.nms(boxes, scores, iou_threshold=0.5, offset=2)


def _naive_softnms(boxes: torch.Tensor, scores: torch.Tensor, thr: float, sigma: float, min_score: float,
                   method: int, offset: int) -> tuple[list[list[float]], list[int]]:
    b = boxes.tolist()
    sc = scores.tolist()
    inds = list(range(len(b)))
    n = len(b)
    dets = []
    i = 0
    while i < n:
        m = max(range(i, n), key=lambda k: (sc[k], -k))
        for arr in (b, sc, inds):
            arr[i], arr[m] = arr[m], arr[i]
        dets.append([*b[i], sc[i]])
        pos = i + 1
        while pos < n:
            ovr = _iou(b[i], b[pos], offset)
            weight = 1.0
            if method == 0 and ovr >= thr:
                weight = 0.0
            elif method == 1 and ovr >= thr:
                weight = 1.0 - ovr
            elif method == 2:
                weight = math.exp(-(ovr * ovr) / sigma)
            sc[pos] *= weight
            if sc[pos] < min_score:
                for arr in (b, sc, inds):
                    arr[pos] = arr[n - 1]
                n -= 1
                pos -= 1
            pos += 1
        i += 1
    return dets, inds[:n]


@pytest.mark.parametrize("method", [0, 1, 2])
@pytest.mark.parametrize("offset", [0, 1])
def test_softnms_matches_the_sequential_algorithm(method: int, offset: int) -> None:
    boxes, scores = _boxes(60, seed=method + 3 * offset)
    min_score = 0.3 if method != 2 else 0.2
    dets = torch.zeros(60, 5)
    inds = nms_ops.softnms(boxes, scores, dets, iou_threshold=0.3, sigma=0.5, min_score=min_score, method=method,
                           offset=offset)
    ref_dets, ref_inds = _naive_softnms(boxes, scores, 0.3, 0.5, min_score, method, offset)
    assert inds.tolist() == ref_inds
    assert 0 < len(ref_inds) < 60  # some boxes were dropped, some kept
    torch.testing.assert_close(dets[:len(ref_inds)], torch.tensor(ref_dets), rtol=1e-5, atol=1e-6)


def test_softnms_rejects_unknown_method() -> None:
    boxes, scores = _boxes(3, seed=0)
    with pytest.raises(ValueError, match="method must be 0"):
        nms_ops.softnms(boxes, scores, torch.zeros(3, 5), 0.3, 0.5, 0.0, 3, 0)


def test_nms_match_groups_as_the_sequential_algorithm() -> None:
    boxes, scores = _boxes(70, seed=5)
    thr = 0.2
    order = scores.sort(0, descending=True)[1].tolist()
    bl = boxes.tolist()
    dead: set[int] = set()
    ref = []
    for pos, i in enumerate(order):
        if i in dead:
            continue
        group = [i]
        for j in order[pos + 1:]:
            if j not in dead and _iou(bl[i], bl[j], 0) >= thr:
                dead.add(j)
                group.append(j)
        ref.append(group)
    got = nms_ops.nms_match(torch.cat([boxes, scores[:, None]], 1), iou_threshold=thr)
    assert got == ref
    assert any(len(g) > 1 for g in ref)
    assert nms_ops.nms_match(torch.zeros(0, 5), 0.5) == []


def test_nms_match_threshold_is_inclusive() -> None:
    # IoU exactly 0.5: nms_match groups them (>=), nms keeps both (>)
    boxes = torch.tensor([[0.0, 0.0, 2.0, 1.0], [0.0, 0.0, 1.0, 1.0]])
    scores = torch.tensor([0.9, 0.8])
    assert nms_ops.nms_match(torch.cat([boxes, scores[:, None]], 1), 0.5) == [[0, 1]]
    assert nms_ops.nms(boxes, scores, 0.5).tolist() == [0, 1]


# --------------------------------------------------------------------------------------------------- bbox overlaps
@pytest.mark.parametrize("offset", [0, 1])
@pytest.mark.parametrize("mode", [0, 1])
def test_bbox_overlaps_all_modes(mode: int, offset: int) -> None:
    a, _ = _boxes(7, seed=1, dtype=torch.float64)
    b, _ = _boxes(5, seed=2, dtype=torch.float64)
    ious = torch.zeros(7, 5, dtype=torch.float64)
    bbox_ops.bbox_overlaps(a, b, ious, mode=mode, aligned=False, offset=offset)
    for i in range(7):
        for j in range(5):
            al, bl = a[i].tolist(), b[j].tolist()
            if mode == 0:
                ref = _iou(al, bl, offset)
            else:
                inter = (max(0.0, min(al[2], bl[2]) - max(al[0], bl[0]) + offset)
                         * max(0.0, min(al[3], bl[3]) - max(al[1], bl[1]) + offset))
                ref = inter / ((al[2] - al[0] + offset) * (al[3] - al[1] + offset))
            assert ious[i, j].item() == pytest.approx(ref, rel=1e-12, abs=1e-12)
    aligned = torch.zeros(5, dtype=torch.float64)
    bbox_ops.bbox_overlaps(a[:5], b, aligned, mode=mode, aligned=True, offset=offset)
    full = torch.zeros(5, 5, dtype=torch.float64)
    bbox_ops.bbox_overlaps(a[:5], b, full, mode=mode, aligned=False, offset=offset)
    torch.testing.assert_close(aligned, full.diagonal())
    if mode == 0 and offset == 0:
        torch.testing.assert_close(ious, torchvision.ops.box_iou(a, b))


def test_bbox_overlaps_rejects_bad_mode() -> None:
    with pytest.raises(ValueError, match="mode must be 0"):
        bbox_ops.bbox_overlaps(torch.zeros(1, 4), torch.zeros(1, 4), torch.zeros(1, 1), mode=2)


# ------------------------------------------------------------------------------------------------------ roi align
def _rois(dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.tensor([[0, 1.0, 1.0, 8.0, 7.0], [1, 0.0, 0.0, 11.0, 9.0], [0, 2.5, 3.3, 4.1, 9.0],
                         [1, -2.0, -1.5, 3.0, 2.0], [0, 9.0, 7.0, 14.0, 13.0], [0, 3.0, 3.0, 3.2, 3.1]], dtype=dtype)


def _naive_bilinear(img: list[list[float]], y: float, x: float, h: int, w: int) -> float:
    if y < -1 or y > h or x < -1 or x > w:
        return 0.0
    y, x = max(y, 0.0), max(x, 0.0)
    yl, xl = int(y), int(x)
    if yl >= h - 1:
        yh = yl = h - 1
        y = float(yl)
    else:
        yh = yl + 1
    if xl >= w - 1:
        xh = xl = w - 1
        x = float(xl)
    else:
        xh = xl + 1
    ly, lx = y - yl, x - xl
    hy, hx = 1 - ly, 1 - lx
    return hy * hx * img[yl][xl] + hy * lx * img[yl][xh] + ly * hx * img[yh][xl] + ly * lx * img[yh][xh]


def _naive_roi_align_max(x: torch.Tensor, rois: torch.Tensor, ph: int, pw: int, scale: float, sr: int,
                         aligned: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n, c, h, w = x.shape
    out = torch.zeros(len(rois), c, ph, pw, dtype=x.dtype)
    ay, ax = torch.zeros_like(out), torch.zeros_like(out)
    for r, roi in enumerate(rois.tolist()):
        b = int(roi[0])
        off = 0.5 if aligned else 0.0
        sw, sh, ew, eh = (v * scale - off for v in roi[1:])
        rw, rh = ew - sw, eh - sh
        if not aligned:
            rw, rh = max(rw, 1.0), max(rh, 1.0)
        bh, bw = rh / ph, rw / pw
        gh = sr if sr > 0 else math.ceil(rh / ph)
        gw = sr if sr > 0 else math.ceil(rw / pw)
        for ch in range(c):
            img = x[b, ch].tolist()
            for i in range(ph):
                for j in range(pw):
                    best, by, bx = -10000.0, -1.0, -1.0
                    for iy in range(gh):
                        yy = sh + i * bh + (iy + 0.5) * bh / gh
                        for ix in range(gw):
                            xx = sw + j * bw + (ix + 0.5) * bw / gw
                            v = _naive_bilinear(img, yy, xx, h, w)
                            if v > best:
                                best, by, bx = v, yy, xx
                    out[r, ch, i, j], ay[r, ch, i, j], ax[r, ch, i, j] = best, by, bx
    return out, ay, ax


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_roi_align_avg_is_torchvision(aligned: bool, sampling_ratio: int) -> None:
    x = torch.rand(2, 3, 10, 12, dtype=torch.float64)
    rois = _rois()
    out = torch.zeros(len(rois), 3, 3, 2, dtype=torch.float64)
    ra.roi_align_forward(x, rois, out, x.new_zeros(0), x.new_zeros(0), aligned_height=3, aligned_width=2,
                         spatial_scale=0.8, sampling_ratio=sampling_ratio, pool_mode=1, aligned=aligned)
    ref = torchvision.ops.roi_align(x, rois, (3, 2), 0.8, sampling_ratio, aligned)
    torch.testing.assert_close(out, ref)

    xr = x.clone().requires_grad_(True)
    torchvision.ops.roi_align(xr, rois, (3, 2), 0.8, sampling_ratio, aligned).sum().backward()
    grad = torch.zeros_like(x)
    ra.roi_align_backward(torch.ones_like(out), rois, x.new_zeros(0), x.new_zeros(0), grad, aligned_height=3,
                          aligned_width=2, spatial_scale=0.8, sampling_ratio=sampling_ratio, pool_mode=1,
                          aligned=aligned)
    torch.testing.assert_close(grad, xr.grad)


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_roi_align_max_matches_naive_and_fills_argmax(aligned: bool, sampling_ratio: int) -> None:
    x = torch.randn(2, 2, 10, 12, dtype=torch.float64)
    rois = _rois()
    out = torch.zeros(len(rois), 2, 3, 2, dtype=torch.float64)
    ay, ax = torch.zeros_like(out), torch.zeros_like(out)
    ra.roi_align_forward(x, rois, out, ay, ax, aligned_height=3, aligned_width=2, spatial_scale=0.8,
                         sampling_ratio=sampling_ratio, pool_mode=0, aligned=aligned)
    ref, ref_y, ref_x = _naive_roi_align_max(x, rois, 3, 2, 0.8, sampling_ratio, aligned)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(ay, ref_y)
    torch.testing.assert_close(ax, ref_x)


def test_roi_align_max_backward_is_the_gradient_of_the_winning_point() -> None:
    x = torch.randn(2, 2, 6, 7, dtype=torch.float64)
    rois = _rois()[[0, 2, 3, 5]]
    kw = dict(aligned_height=2, aligned_width=3, spatial_scale=0.9, sampling_ratio=2, pool_mode=0, aligned=True)

    def fwd(inp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = inp.new_zeros(len(rois), 2, 2, 3)
        ay, ax = torch.zeros_like(out), torch.zeros_like(out)
        ra.roi_align_forward(inp, rois, out, ay, ax, **kw)
        return out, ay, ax

    out, ay, ax = fwd(x)
    g_out = torch.randn_like(out)
    grad = torch.zeros_like(x)
    ra.roi_align_backward(g_out, rois, ay, ax, grad, **kw)
    # finite differences: the max is piecewise linear in x, so a small step keeps the winners
    eps = 1e-6
    num = torch.zeros_like(x)
    flat, nflat = x.view(-1), num.view(-1)
    for k in range(flat.numel()):
        orig = flat[k].item()
        flat[k] = orig + eps
        plus = (fwd(x)[0] * g_out).sum()
        flat[k] = orig - eps
        minus = (fwd(x)[0] * g_out).sum()
        flat[k] = orig
        nflat[k] = (plus - minus) / (2 * eps)
    torch.testing.assert_close(grad, num, rtol=1e-5, atol=1e-5)
    assert grad.abs().sum() > 0


def test_roi_align_rejects_bad_mode_and_negative_aligned_rois() -> None:
    x = torch.rand(1, 1, 4, 4)
    out = torch.zeros(1, 1, 2, 2)
    with pytest.raises(ValueError, match="pool_mode must be 0"):
        ra.roi_align_forward(x, torch.tensor([[0, 0.0, 0, 2, 2]]), out, out, out, 2, 2, 1.0, 0, 3, True)
    with pytest.raises(ValueError, match="non-negative"):
        ra.roi_align_forward(x, torch.tensor([[0, 3.0, 0, 1, 2]]), out, out.clone(), out.clone(), 2, 2, 1.0, 0, 0,
                             True)


# ------------------------------------------------------------------------------------------------------- roi pool
def _naive_roi_pool(x: torch.Tensor, rois: torch.Tensor, ph: int, pw: int, scale: float,
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    n, c, h, w = x.shape
    out = torch.zeros(len(rois), c, ph, pw, dtype=x.dtype)
    arg = torch.zeros(len(rois), c, ph, pw, dtype=torch.int32)
    for r, roi in enumerate(rois.tolist()):
        b = int(roi[0])
        x1, y1 = roi[1] * scale, roi[2] * scale
        rw, rh = (roi[3] + 1) * scale - x1, (roi[4] + 1) * scale - y1
        if rw <= 0 or rh <= 0:
            continue
        for ch in range(c):
            for i in range(ph):
                for j in range(pw):
                    ys = min(max(math.floor(i * rh / ph + y1), 0), h)
                    ye = min(max(math.ceil((i + 1) * rh / ph + y1), 0), h)
                    xs = min(max(math.floor(j * rw / pw + x1), 0), w)
                    xe = min(max(math.ceil((j + 1) * rw / pw + x1), 0), w)
                    best, idx = (0.0, -1) if (ye <= ys or xe <= xs) else (-math.inf, -1)
                    for yy in range(ys, ye):
                        for xx in range(xs, xe):
                            if x[b, ch, yy, xx] > best:
                                best, idx = x[b, ch, yy, xx].item(), yy * w + xx
                    out[r, ch, i, j], arg[r, ch, i, j] = best, idx
    return out, arg


def test_roi_pool_matches_naive_mmcv_bins_and_backward_follows_argmax() -> None:
    from detlight.openmmlab.ops import roi_pool as rp

    x = torch.randn(2, 3, 9, 11, dtype=torch.float64)
    rois = torch.tensor([[0, 1.3, 0.7, 6.2, 5.9], [1, 0.0, 0.0, 10.0, 8.0], [0, 7.5, 6.5, 30.0, 20.0],
                         [1, -3.0, -2.0, 2.0, 1.5], [0, 4.0, 4.0, 3.0, 6.0]], dtype=torch.float64)
    out = torch.zeros(5, 3, 3, 2, dtype=torch.float64)
    arg = torch.zeros(5, 3, 3, 2, dtype=torch.int32)
    rp.roi_pool_forward(x, rois, out, arg, pooled_height=3, pooled_width=2, spatial_scale=0.75)
    ref, ref_arg = _naive_roi_pool(x, rois, 3, 2, 0.75)
    torch.testing.assert_close(out, ref)
    assert torch.equal(arg, ref_arg)
    g_out = torch.randn_like(out)
    grad = torch.zeros_like(x)
    rp.roi_pool_backward(g_out, rois, arg, grad, pooled_height=3, pooled_width=2, spatial_scale=0.75)
    ref_grad = torch.zeros_like(x)
    for r, b in enumerate(rois[:, 0].long().tolist()):
        for ch in range(3):
            for k, a in enumerate(arg[r, ch].flatten().tolist()):
                if a != -1:
                    ref_grad[b, ch].view(-1)[a] += g_out[r, ch].flatten()[k]
    torch.testing.assert_close(grad, ref_grad)


def test_roi_pool_uses_mmcv_bins_not_torchvisions() -> None:
    from detlight.openmmlab.ops import roi_pool as rp

    x = torch.arange(64, dtype=torch.float32).view(1, 1, 8, 8)
    rois = torch.tensor([[0, 0.6, 0.6, 3.4, 3.4]])
    out = torch.zeros(1, 1, 2, 2)
    rp.roi_pool_forward(x, rois, out, torch.zeros(1, 1, 2, 2, dtype=torch.int32), 2, 2, 1.0)
    # mmcv: float corners 0.6 .. 4.4, bins [0, 3) and [2, 5) per axis -> maxima at rows/cols 2 and 4
    assert out.flatten().tolist() == [18.0, 20.0, 34.0, 36.0]
    # torchvision rounds the corners first (1 .. 3, bins [1, 3) / [2, 4)): different maxima
    assert torchvision.ops.roi_pool(x, rois, (2, 2), 1.0).flatten().tolist() == [18.0, 19.0, 26.0, 27.0]


# ----------------------------------------------------------------------------------------------------- focal loss
def test_sigmoid_focal_loss_matches_autograd_of_the_formula() -> None:
    from detlight.openmmlab.ops import focal_loss as fl

    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 4, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 3, 4, 1, 4, 2])  # 4 == num_classes: background
    weight = torch.tensor([1.0, 2.0, 0.5, 3.0], dtype=torch.float64)
    for w in (x.new_empty(0), weight):
        xr = x.clone().requires_grad_(True)
        p = xr.sigmoid()
        onehot = torch.nn.functional.one_hot(t, 5)[:, :4].to(x.dtype)
        pt = (1 - p) * onehot + p * (1 - onehot)
        ref = torch.nn.functional.binary_cross_entropy_with_logits(xr, onehot, reduction="none") \
            * (0.25 * onehot + 0.75 * (1 - onehot)) * pt.pow(2.0)
        if w.numel():
            rw = torch.where(t < 4, w[t.clamp(max=3)], torch.ones(()).to(x.dtype))
            ref = ref * rw[:, None]
        out = torch.zeros_like(x)
        fl.sigmoid_focal_loss_forward(x, t, w, out, gamma=2.0, alpha=0.25)
        torch.testing.assert_close(out, ref.detach())
        ref.sum().backward()
        grad = torch.zeros_like(x)
        fl.sigmoid_focal_loss_backward(x, t, w, grad, gamma=2.0, alpha=0.25)
        torch.testing.assert_close(grad, xr.grad)


def test_softmax_focal_loss_matches_autograd_of_the_formula() -> None:
    from detlight.openmmlab.ops import focal_loss as fl

    g = torch.Generator().manual_seed(1)
    x = torch.randn(5, 4, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 3, 2, 1, 1])
    weight = torch.tensor([1.0, 2.0, 0.5, 3.0], dtype=torch.float64)
    for w in (x.new_empty(0), weight):
        xr = x.clone().requires_grad_(True)
        p = xr.softmax(1).gather(1, t[:, None])[:, 0]
        ref = -0.25 * (1 - p).pow(2.0) * p.log()
        if w.numel():
            ref = ref * w[t]
        out = torch.zeros(5, dtype=torch.float64)
        sm = x.softmax(1)
        fl.softmax_focal_loss_forward(sm, t, w, out, gamma=2.0, alpha=0.25)
        torch.testing.assert_close(out, ref.detach())
        ref.sum().backward()
        grad, buff = torch.zeros_like(x), torch.zeros(5, dtype=torch.float64)
        fl.softmax_focal_loss_backward(sm, t, w, buff, grad, gamma=2.0, alpha=0.25)
        torch.testing.assert_close(grad, xr.grad)


# ---------------------------------------------------------------------------------------------- deformable conv
def _ref_dcn(x: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor | None, weight: torch.Tensor,
             bias: torch.Tensor | None, stride: int, pad: int, dil: int, groups: int, dg: int) -> torch.Tensor:
    """DCN with mmcv's sampling rules, in differentiable torch (autograd gives mmcv's gradients)."""
    n, c, h, w = x.shape
    co, cg, kh, kw = weight.shape
    ho, wo = offset.shape[2:]
    k = kh * kw
    off = offset.view(n, dg, k, 2, ho, wo)
    ki = torch.arange(kh, dtype=x.dtype).repeat_interleave(kw)
    kj = torch.arange(kw, dtype=x.dtype).repeat(kh)
    y = (torch.arange(ho, dtype=x.dtype) * stride - pad)[None, :, None] + (ki * dil)[:, None, None] + off[:, :, :, 0]
    xx = (torch.arange(wo, dtype=x.dtype) * stride - pad)[None, None, :] + (kj * dil)[:, None, None] + off[:, :, :, 1]
    inside = ((y > -1) & (y < h) & (xx > -1) & (xx < w)).to(x.dtype)
    y0, x0 = y.floor(), xx.floor()
    ly, lx = y - y0, xx - x0
    feat = x.view(n, dg, c // dg, h * w)
    val = 0
    for dy, wy in ((0, 1 - ly), (1, ly)):
        for dx, wx in ((0, 1 - lx), (1, lx)):
            yc, xc = (y0 + dy).long(), (x0 + dx).long()
            ok = ((yc >= 0) & (yc < h) & (xc >= 0) & (xc < w)).to(x.dtype)
            idx = (yc.clamp(0, h - 1) * w + xc.clamp(0, w - 1)).view(n, dg, 1, -1).expand(n, dg, c // dg, -1)
            v = feat.gather(3, idx).view(n, dg, c // dg, k, ho, wo)
            val = val + (wy * wx * ok)[:, :, None] * v
    val = val * inside[:, :, None]
    if mask is not None:
        val = val * mask.view(n, dg, 1, k, ho, wo)
    cols = val.reshape(n, groups, (c // groups) * k, ho * wo)
    out = torch.einsum("gok,ngkp->ngop", weight.view(groups, co // groups, cg * k), cols).reshape(n, co, ho, wo)
    return out if bias is None else out + bias[None, :, None, None]


def _dcn_case(seed: int, boundary: bool) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 4, 5, 6, generator=g, dtype=torch.float64)
    offset = torch.randn(2, 2 * 2 * 9, 5, 6, generator=g, dtype=torch.float64) * 1.5
    if boundary:
        offset[:, ::3] = 0.0  # padding taps exactly on y = -1 / x = -1 / y = H / x = W
        offset[0, 1, 2, 3] = -3.0  # tap (0, 0) at column 3 sits at x = 3 - 1 = 2: moved exactly onto x = -1
    mask = torch.rand(2, 2 * 9, 5, 6, generator=g, dtype=torch.float64)
    weight = torch.randn(6, 2, 3, 3, generator=g, dtype=torch.float64)
    bias = torch.randn(6, generator=g, dtype=torch.float64)
    return x, offset, mask, weight, bias


@pytest.mark.parametrize("boundary", [False, True])
def test_deform_conv_v1_matches_mmcv_rules(boundary: bool) -> None:
    from detlight.openmmlab.ops import deform_conv as dc

    x, offset, _, weight, _ = _dcn_case(0, boundary)
    kw = dict(kW=3, kH=3, dW=1, dH=1, padW=1, padH=1, dilationW=1, dilationH=1, group=2, deformable_group=2,
              im2col_step=2)
    out = torch.zeros(2, 6, 5, 6, dtype=torch.float64)
    dc.deform_conv_forward(x, weight, offset, out, x.new_empty(0), x.new_empty(0), **kw)
    xr, orr, wr = (t.clone().requires_grad_(True) for t in (x, offset, weight))
    ref = _ref_dcn(xr, orr, None, wr, None, 1, 1, 1, 2, 2)
    torch.testing.assert_close(out, ref.detach())
    g_out = torch.randn_like(out)
    ref.backward(g_out)
    gi, go, gw = torch.zeros_like(x), torch.zeros_like(offset), torch.zeros_like(weight)
    dc.deform_conv_backward_input(x, offset, g_out, gi, go, weight, x.new_empty(0), **kw)
    dc.deform_conv_backward_parameters(x, offset, g_out, gw, x.new_empty(0), x.new_empty(0), scale=0.5,
                                       **{k: v for k, v in kw.items()})
    torch.testing.assert_close(gi, xr.grad)
    torch.testing.assert_close(go, orr.grad)
    torch.testing.assert_close(gw, 0.5 * wr.grad)
    gw_alone = torch.ones_like(weight)  # a _parameters call without the _input call before it: computed, accumulated
    dc.deform_conv_backward_parameters(x, offset, g_out, gw_alone, x.new_empty(0), x.new_empty(0), scale=1.0, **kw)
    torch.testing.assert_close(gw_alone, 1.0 + wr.grad)


@pytest.mark.parametrize("boundary", [False, True])
def test_modulated_deform_conv_matches_mmcv_rules_where_torchvision_does_not(boundary: bool) -> None:
    from detlight.openmmlab.ops import deform_conv as dc

    x, offset, mask, weight, bias = _dcn_case(1, boundary)
    kw = dict(kernel_h=3, kernel_w=3, stride_h=1, stride_w=1, pad_h=1, pad_w=1, dilation_h=1, dilation_w=1,
              group=2, deformable_group=2, with_bias=True)
    out = torch.zeros(2, 6, 5, 6, dtype=torch.float64)
    dc.modulated_deform_conv_forward(x, weight, bias, x.new_empty(0), offset, mask, out, x.new_empty(0), **kw)
    leaves = [t.clone().requires_grad_(True) for t in (x, offset, mask, weight, bias)]
    ref = _ref_dcn(leaves[0], leaves[1], leaves[2], leaves[3], leaves[4], 1, 1, 1, 2, 2)
    torch.testing.assert_close(out, ref.detach())
    g_out = torch.randn_like(out)
    ref.backward(g_out)
    grads = [torch.zeros_like(t) for t in (x, weight, bias, offset, mask)]
    dc.modulated_deform_conv_backward(x, weight, bias, x.new_empty(0), offset, mask, x.new_empty(0), *grads, g_out,
                                      **kw)
    gi, gw, gb, go, gm = grads
    for got, leaf in ((gi, leaves[0]), (go, leaves[1]), (gm, leaves[2]), (gw, leaves[3]), (gb, leaves[4])):
        torch.testing.assert_close(got, leaf.grad)
    tv = [t.clone().requires_grad_(True) for t in (x, offset, mask)]
    torchvision.ops.deform_conv2d(tv[0], tv[1], weight, bias, padding=1, mask=tv[2]).backward(g_out)
    torch.testing.assert_close(gi, tv[0].grad)
    torch.testing.assert_close(gm, tv[2].grad)
    if boundary:  # torchvision's offset gradient is not zero on the -1 border; mmcv's (and ours) is
        assert not torch.allclose(tv[1].grad, go)
    else:
        torch.testing.assert_close(go, tv[1].grad)


# -------------------------------------------------------------------------------------------------- masked conv
def test_masked_conv_im2col_col2im_equal_a_dense_conv_at_the_mask() -> None:
    from detlight.openmmlab.ops import masked_conv as mc

    g = torch.Generator().manual_seed(0)
    feat = torch.randn(1, 3, 7, 8, generator=g, dtype=torch.float64)
    weight = torch.randn(4, 3, 3, 3, generator=g, dtype=torch.float64)
    bias = torch.randn(4, generator=g, dtype=torch.float64)
    mask = torch.rand(7, 8, generator=g) > 0.5
    mask[0, 0] = mask[6, 7] = True  # corners: the patch leaves the image
    hi, wi = torch.nonzero(mask, as_tuple=True)
    col = torch.zeros(3 * 9, hi.numel(), dtype=torch.float64)
    mc.masked_im2col_forward(feat, hi, wi, col, kernel_h=3, kernel_w=3, pad_h=1, pad_w=1)
    res = bias[:, None] + weight.view(4, -1) @ col
    out = torch.zeros(1, 4, 7, 8, dtype=torch.float64)
    mc.masked_col2im_forward(res, hi, wi, out, height=7, width=8, channels=4)
    dense = torch.nn.functional.conv2d(feat, weight, bias, padding=1)
    torch.testing.assert_close(out[0][:, mask], dense[0][:, mask])
    assert (out[0][:, ~mask] == 0).all()


# ------------------------------------------------------------------------------------------------------- carafe
def _naive_carafe(feat: torch.Tensor, masks: torch.Tensor, k: int, g: int, s: int) -> torch.Tensor:
    n, c, h, w = feat.shape
    out = feat.new_zeros(n, c, h * s, w * s)
    r = (k - 1) // 2
    for ch in range(c):
        grp = ch // (c // g)
        for i in range(k):
            for j in range(k):
                shifted = torch.nn.functional.pad(feat[:, ch], (r, r, r, r))[:, i:i + h, j:j + w]
                up = shifted.repeat_interleave(s, 1).repeat_interleave(s, 2)
                out[:, ch] += up * masks[:, (grp * k + i) * k + j]
    return out


@pytest.mark.parametrize("fast", [True, False])
def test_carafe_matches_naive_and_its_gradients(fast: bool) -> None:
    from detlight.openmmlab.ops import carafe as cf

    gen = torch.Generator().manual_seed(0)
    feat = torch.randn(2, 8, 4, 5, generator=gen, dtype=torch.float64)
    masks = torch.rand(2, 9 * 2, 8, 10, generator=gen, dtype=torch.float64)
    out = torch.zeros(2, 8, 8, 10, dtype=torch.float64)
    fr, mr = feat.clone().requires_grad_(True), masks.clone().requires_grad_(True)
    ref = _naive_carafe(fr, mr, 3, 2, 2)
    g_out = torch.randn_like(out)
    ref.backward(g_out)
    gf, gm = torch.zeros_like(feat), torch.zeros_like(masks)
    if fast:
        rfeat = torch.zeros_like(feat)
        cf.carafe_forward(feat, masks, rfeat, torch.zeros_like(out), torch.zeros_like(masks), out, kernel_size=3,
                          group_size=2, scale_factor=2)
        cf.carafe_backward(g_out, rfeat, masks, *(torch.zeros(0),) * 4, gf, gm, kernel_size=3, group_size=2,
                           scale_factor=2)
    else:
        cf.carafe_naive_forward(feat, masks, out, kernel_size=3, group_size=2, scale_factor=2)
        cf.carafe_naive_backward(g_out, feat, masks, gf, gm, kernel_size=3, group_size=2, scale_factor=2)
    torch.testing.assert_close(out, ref.detach())
    torch.testing.assert_close(gf, fr.grad)
    torch.testing.assert_close(gm, mr.grad)


# ---------------------------------------------------------------------------------------- ms deformable attention
def test_ms_deform_attn_matches_per_point_bilinear_and_its_gradients() -> None:
    from detlight.openmmlab.ops import ms_deform_attn as md

    gen = torch.Generator().manual_seed(0)
    shapes = torch.tensor([[4, 5], [2, 3]])
    starts = torch.tensor([0, 20])
    bs, nq, heads, dims, levels, points = 2, 3, 2, 4, 2, 2
    value = torch.randn(bs, 26, heads, dims, generator=gen, dtype=torch.float64)
    loc = torch.rand(bs, nq, heads, levels, points, 2, generator=gen, dtype=torch.float64) * 1.2 - 0.1
    attn = torch.rand(bs, nq, heads, levels, points, generator=gen, dtype=torch.float64)
    leaves = [t.clone().requires_grad_(True) for t in (value, loc, attn)]
    ref = torch.zeros(bs, nq, heads, dims, dtype=torch.float64)
    for lvl, ((h, w), st) in enumerate(zip(shapes.tolist(), starts.tolist(), strict=True)):
        v = leaves[0][:, st:st + h * w].view(bs, h, w, heads, dims)
        px = leaves[1][..., lvl, :, 0] * w - 0.5  # (bs, nq, heads, points)
        py = leaves[1][..., lvl, :, 1] * h - 0.5
        x0, y0 = px.floor(), py.floor()
        for dy, wy in ((0, 1 - (py - y0)), (1, py - y0)):
            for dx, wx in ((0, 1 - (px - x0)), (1, px - x0)):
                yc, xc = (y0 + dy).long(), (x0 + dx).long()
                ok = ((yc >= 0) & (yc < h) & (xc >= 0) & (xc < w)).to(value.dtype)
                b = torch.arange(bs)[:, None, None, None]
                hd = torch.arange(heads)[None, None, :, None]
                sample = v[b, yc.clamp(0, h - 1), xc.clamp(0, w - 1), hd]  # (bs, nq, heads, points, dims)
                contrib = (wy * wx * ok * leaves[2][..., lvl, :])[..., None] * sample
                ref = ref + contrib.sum(3)
    ref = ref.flatten(2)
    got = md.ms_deform_attn_forward(value, shapes, starts, loc, attn, im2col_step=2)
    torch.testing.assert_close(got, ref.detach())
    g_out = torch.randn_like(ref)
    ref.backward(g_out)
    grads = [torch.zeros_like(t) for t in (value, loc, attn)]
    md.ms_deform_attn_backward(value, shapes, starts, loc, attn, g_out, *grads, im2col_step=2)
    for got_g, leaf in zip(grads, leaves, strict=True):
        torch.testing.assert_close(got_g, leaf.grad)


def test_deform_conv_nan_offsets_read_zero_instead_of_crashing() -> None:
    """mmcv's kernels read 0 at a NaN sampling point (its bounds test is false); torchvision's CPU kernel indexed the
    input with floor(NaN) and crashed the process (a diverged ResNeXt-DCN run). Grouped, as ResNeXt's DCN is."""
    from detlight.openmmlab.ops import deform_conv as dc

    x, offset, mask, weight, bias = _dcn_case(2, False)
    far = offset.clone()
    far[0, :, 1:3] = -100.0  # every tap of these output rows far outside: reads 0, as a NaN does in mmcv
    bad = offset.clone()
    bad[0, :, 1:3] = float("nan")
    kw = dict(kW=3, kH=3, dW=1, dH=1, padW=1, padH=1, dilationW=1, dilationH=1, group=2, deformable_group=2,
              im2col_step=2)
    out_far, out_bad = torch.zeros(2, 6, 5, 6, dtype=torch.float64), torch.zeros(2, 6, 5, 6, dtype=torch.float64)
    dc.deform_conv_forward(x, weight, far, out_far, x.new_empty(0), x.new_empty(0), **kw)
    dc.deform_conv_forward(x, weight, bad, out_bad, x.new_empty(0), x.new_empty(0), **kw)
    torch.testing.assert_close(out_bad, out_far)
    gi, go = torch.zeros_like(x), torch.zeros_like(offset)
    dc.deform_conv_backward_input(x, bad, torch.ones_like(out_bad), gi, go, weight, x.new_empty(0), **kw)
    assert bool(torch.isfinite(gi).all()) and bool((go[0, :, 1:3] == 0).all()) and bool(torch.isfinite(go).all())
    kw2 = dict(kernel_h=3, kernel_w=3, stride_h=1, stride_w=1, pad_h=1, pad_w=1, dilation_h=1, dilation_w=1,
               group=2, deformable_group=2, with_bias=True)
    out2 = torch.zeros(2, 6, 5, 6, dtype=torch.float64)
    dc.modulated_deform_conv_forward(x, weight, bias, x.new_empty(0), bad, mask, out2, x.new_empty(0), **kw2)
    ref2 = torch.zeros_like(out2)
    dc.modulated_deform_conv_forward(x, weight, bias, x.new_empty(0), far, mask, ref2, x.new_empty(0), **kw2)
    torch.testing.assert_close(out2, ref2)
    grads = [torch.zeros_like(t) for t in (x, weight, bias, offset, mask)]
    dc.modulated_deform_conv_backward(x, weight, bias, x.new_empty(0), bad, mask, x.new_empty(0), *grads,
                                      torch.ones_like(out2), **kw2)
    assert all(bool(torch.isfinite(g).all()) for g in grads) and bool((grads[3][0, :, 1:3] == 0).all())
