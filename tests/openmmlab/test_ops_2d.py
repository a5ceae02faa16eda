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
    x = torch.randn(2, 2, 9, 11, dtype=torch.float64)
    rois = _rois()[:5]
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
