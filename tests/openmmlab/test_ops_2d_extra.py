"""detlight.openmmlab's later 2D / point ``mmcv._ext`` families against naive loop-by-loop references (no mmcv).

Covers ``info``, ``deform_roi_pool`` and ``assign_score_withk``: forward against a scalar re-statement of mmcv's
kernel, backward against the same reference's hand-written gradient and :func:`torch.autograd.gradcheck`.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torchvision
from torch.autograd import gradcheck

from detlight.openmmlab.ops import assign_score_withk as assign_ops
from detlight.openmmlab.ops import border_align as border_ops
from detlight.openmmlab.ops import chamfer_distance as chamfer_ops
from detlight.openmmlab.ops import correlation as corr_ops
from detlight.openmmlab.ops import deform_roi_pool as drp
from detlight.openmmlab.ops import info
from detlight.openmmlab.ops import psamask as psa_ops
from detlight.openmmlab.ops import roi_align_rotated as rar
from detlight.openmmlab.ops import tin_shift as tin_ops


# ---------------------------------------------------------------------------------------------------------- info
def test_info_strings_name_detlight_and_torch_build() -> None:
    compiler = info.get_compiler_version()
    cuda = info.get_compiling_cuda_version()
    assert "detlight.openmmlab" in compiler and torch.__version__ in compiler
    assert "detlight.openmmlab" in cuda
    if torch.version.cuda:
        assert cuda.startswith(torch.version.cuda)
    elif not getattr(torch.version, "hip", None):
        assert cuda.startswith("not available")


# ------------------------------------------------------------------------------------------------ deform_roi_pool
def _bilinear(img: list[list[float]], y: float, x: float) -> float:
    h, w = len(img), len(img[0])
    if y < -1.0 or y > h or x < -1.0 or x > w:
        return 0.0
    y, x = max(y, 0.0), max(x, 0.0)
    yl, xl = int(y), int(x)
    if yl >= h - 1:
        yl = yh = h - 1
        y = float(yl)
    else:
        yh = yl + 1
    if xl >= w - 1:
        xl = xh = w - 1
        x = float(xl)
    else:
        xh = xl + 1
    ly, lx = y - yl, x - xl
    hy, hx = 1 - ly, 1 - lx
    return hy * hx * img[yl][xl] + hy * lx * img[yl][xh] + ly * hx * img[yh][xl] + ly * lx * img[yh][xh]


def _naive_deform_roi_pool(x: torch.Tensor, rois: torch.Tensor, offset: torch.Tensor | None, ph: int, pw: int,
                           scale: float, ratio: int, gamma: float) -> torch.Tensor:
    xs = x.tolist()
    out = torch.zeros(rois.shape[0], x.shape[1], ph, pw, dtype=torch.float64)
    for n, roi in enumerate(rois.tolist()):
        b = int(roi[0])
        sw, sh = roi[1] * scale - 0.5, roi[2] * scale - 0.5
        rw, rh = roi[3] * scale - 0.5 - sw, roi[4] * scale - 0.5 - sh
        bh, bw = rh / ph, rw / pw
        gh = ratio if ratio > 0 else math.ceil(rh / ph)
        gw = ratio if ratio > 0 else math.ceil(rw / pw)
        count = max(gh * gw, 1)
        for c in range(x.shape[1]):
            for i in range(ph):
                for j in range(pw):
                    oy = ox = 0.0
                    if offset is not None:
                        ox = gamma * rw * float(offset[n, 0, i, j])
                        oy = gamma * rh * float(offset[n, 1, i, j])
                    acc = 0.0
                    for iy in range(gh):
                        yy = sh + oy + i * bh + (iy + 0.5) * bh / gh
                        for ix in range(gw):
                            xx = sw + ox + j * bw + (ix + 0.5) * bw / gw
                            acc += _bilinear(xs[b][c], yy, xx)
                    out[n, c, i, j] = acc / count
    return out


class _DeformRoIPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, offset: torch.Tensor, rois: torch.Tensor, ph: int, pw: int, scale: float,
                ratio: int, gamma: float) -> torch.Tensor:
        out = x.new_zeros(rois.shape[0], x.shape[1], ph, pw)
        drp.deform_roi_pool_forward(x, rois, offset, out, pooled_height=ph, pooled_width=pw, spatial_scale=scale,
                                    sampling_ratio=ratio, gamma=gamma)
        ctx.save_for_backward(x, offset, rois)
        ctx.args = (ph, pw, scale, ratio, gamma)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
        x, offset, rois = ctx.saved_tensors
        ph, pw, scale, ratio, gamma = ctx.args
        gx, goff = torch.zeros_like(x), torch.zeros_like(offset)
        drp.deform_roi_pool_backward(grad.contiguous(), x, rois, offset, gx, goff, pooled_height=ph, pooled_width=pw,
                                     spatial_scale=scale, sampling_ratio=ratio, gamma=gamma)
        return gx, goff, None, None, None, None, None, None


def _pool_case(seed: int, n_rois: int = 6) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 3, 9, 11, generator=g, dtype=torch.float64)
    xy = torch.rand(n_rois, 2, generator=g, dtype=torch.float64) * 14 - 2
    wh = torch.rand(n_rois, 2, generator=g, dtype=torch.float64) * 10 + 0.3
    batch = torch.randint(0, 2, (n_rois, 1), generator=g).to(torch.float64)
    rois = torch.cat([batch, xy, xy + wh], 1)
    offset = (torch.rand(n_rois, 2, 3, 2, generator=g, dtype=torch.float64) - 0.5) * 0.6
    return x, rois, offset


@pytest.mark.parametrize(("ratio", "scale", "with_offset"), [(0, 1.0, True), (2, 0.5, True), (0, 0.75, False),
                                                             (3, 1.0, True)])
def test_deform_roi_pool_forward_matches_naive(ratio: int, scale: float, with_offset: bool) -> None:
    x, rois, offset = _pool_case(ratio * 7 + int(scale * 4))
    off = offset if with_offset else x.new_zeros(0)
    out = x.new_full((rois.shape[0], 3, 3, 2), 123.0)
    drp.deform_roi_pool_forward(x, rois, off, out, pooled_height=3, pooled_width=2, spatial_scale=scale,
                                sampling_ratio=ratio, gamma=0.1)
    ref = _naive_deform_roi_pool(x, rois, offset if with_offset else None, 3, 2, scale, ratio, 0.1)
    torch.testing.assert_close(out, ref)


def test_deform_roi_pool_empty_grid_and_no_rois() -> None:
    x = torch.rand(1, 2, 5, 5)
    rois = torch.tensor([[0.0, 3.0, 3.0, 1.0, 1.0]])  # negative size: no samples, pools to 0 as mmcv
    out = torch.full((1, 2, 2, 2), 7.0)
    drp.deform_roi_pool_forward(x, rois, x.new_zeros(0), out, pooled_height=2, pooled_width=2)
    assert torch.equal(out, torch.zeros_like(out))
    drp.deform_roi_pool_forward(x, x.new_zeros(0, 5), x.new_zeros(0), x.new_zeros(0, 2, 2, 2), pooled_height=2,
                                pooled_width=2)


@pytest.mark.parametrize("ratio", [0, 2])
def test_deform_roi_pool_gradcheck_input_and_offset(ratio: int) -> None:
    x, rois, offset = _pool_case(11 + ratio, n_rois=3)
    # interior samples (mmcv's offset gradient is the true derivative away from the clamped borders)
    g = torch.Generator().manual_seed(3 + ratio)
    xy = 1.2 + torch.rand(3, 2, generator=g, dtype=torch.float64) * 2
    rois = torch.cat([rois[:, :1], xy, xy + 1.3 + torch.rand(3, 2, generator=g, dtype=torch.float64) * 3], 1)
    x.requires_grad_(True)
    offset = (offset * 0.2).requires_grad_(True)
    assert gradcheck(lambda a, o: _DeformRoIPool.apply(a, o, rois, 3, 2, 1.0, ratio, 0.1), (x, offset),
                     eps=1e-6, atol=1e-6, fast_mode=True)


def test_deform_roi_pool_backward_matches_autograd_through_naive_sampling() -> None:
    # the input gradient everywhere (also past the borders) equals autograd through grid_sample-free torch sampling
    x, rois, offset = _pool_case(5)
    x.requires_grad_(True)
    out = _DeformRoIPool.apply(x, offset, rois, 3, 2, 0.5, 0, 0.1)
    g = torch.rand_like(out)
    (gx,) = torch.autograd.grad(out, x, g)
    # adjoint identity: <g, pool(e)> = <grad, e> for random inputs e
    e = torch.rand_like(x)
    pooled = _naive_deform_roi_pool(e.detach(), rois, offset, 3, 2, 0.5, 0, 0.1)
    torch.testing.assert_close((g * pooled).sum(), (gx * e).sum())


# --------------------------------------------------------------------------------------------- assign_score_withk
def _naive_assign(points: torch.Tensor, centers: torch.Tensor, scores: torch.Tensor, knn: torch.Tensor,
                  ) -> torch.Tensor:
    b_n, n0, m_n, o_n = points.shape
    _, n1, k_n, _ = scores.shape
    out = torch.zeros(b_n, o_n, n1, k_n, dtype=points.dtype)
    for b in range(b_n):
        for n in range(n1):
            cn = int(knn[b, n, 0])
            for k in range(k_n):
                kn = int(knn[b, n, k])
                if not 0 <= kn < n0:
                    continue
                for o in range(o_n):
                    out[b, o, n, k] = sum(float((points[b, kn, m, o] - centers[b, cn, m, o]) * scores[b, n, k, m])
                                          for m in range(m_n))
    return out


def _assign_case(seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    points = torch.rand(2, 7, 3, 4, generator=g, dtype=torch.float64)
    centers = torch.rand(2, 7, 3, 4, generator=g, dtype=torch.float64)
    scores = torch.rand(2, 5, 4, 3, generator=g, dtype=torch.float64)
    knn = torch.randint(0, 7, (2, 5, 4), generator=g)
    knn[0, 1, 2] = 7  # out of range: an empty slot
    knn[1, 3, 1] = -1
    return points, centers, scores, knn


def _assign_call(points: torch.Tensor, centers: torch.Tensor, scores: torch.Tensor, knn: torch.Tensor,
                 ) -> torch.Tensor:
    b_n, n0, m_n, o_n = points.shape
    out = points.new_zeros(b_n, o_n, scores.shape[1], scores.shape[2])
    assign_ops.assign_score_withk_forward(points, centers, scores, knn, out, B=b_n, N0=n0, N1=scores.shape[1], M=m_n,
                                          K=scores.shape[2], O=o_n, aggregate=0)
    return out


def test_assign_score_withk_forward_matches_naive() -> None:
    points, centers, scores, knn = _assign_case(0)
    torch.testing.assert_close(_assign_call(points, centers, scores, knn), _naive_assign(points, centers, scores, knn))


class _Assign(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, scores: torch.Tensor, points: torch.Tensor, centers: torch.Tensor, knn: torch.Tensor,
                ) -> torch.Tensor:
        ctx.save_for_backward(points, centers, scores, knn)
        return _assign_call(points, centers, scores, knn)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
        points, centers, scores, knn = ctx.saved_tensors
        gp, gc, gs = torch.zeros_like(points), torch.zeros_like(centers), torch.zeros_like(scores)
        b_n, n0, m_n, o_n = points.shape
        assign_ops.assign_score_withk_backward(grad.contiguous(), points, centers, scores, knn, gp, gc, gs, B=b_n,
                                               N0=n0, N1=scores.shape[1], M=m_n, K=scores.shape[2], O=o_n)
        return gs, gp, gc, None


def test_assign_score_withk_gradcheck() -> None:
    points, centers, scores, knn = _assign_case(1)
    inputs = tuple(t.requires_grad_(True) for t in (scores, points, centers))
    assert gradcheck(lambda s, p, c: _Assign.apply(s, p, c, knn), inputs, eps=1e-6, atol=1e-6)


def test_assign_score_withk_rejects_bad_centre() -> None:
    points, centers, scores, knn = _assign_case(2)
    knn[0, 0, 0] = 9
    with pytest.raises(ValueError, match="centre"):
        _assign_call(points, centers, scores, knn)


# ---------------------------------------------------------------------------------------------- roi_align_rotated
def _naive_roi_align_rotated(x: torch.Tensor, rois: torch.Tensor, ph: int, pw: int, scale: float, ratio: int,
                             aligned: bool, clockwise: bool) -> torch.Tensor:
    xs = x.tolist()
    out = torch.zeros(rois.shape[0], x.shape[1], ph, pw, dtype=torch.float64)
    for n, (b, cx, cy, rw, rh, theta) in enumerate(rois.tolist()):
        shift = 0.5 if aligned else 0.0
        cx, cy, rw, rh = cx * scale - shift, cy * scale - shift, rw * scale, rh * scale
        if not aligned:
            rw, rh = max(rw, 1.0), max(rh, 1.0)
        theta = -theta if clockwise else theta
        bh, bw = rh / ph, rw / pw
        gh = ratio if ratio > 0 else math.ceil(rh / ph)
        gw = ratio if ratio > 0 else math.ceil(rw / pw)
        cos, sin = math.cos(theta), math.sin(theta)
        for c in range(x.shape[1]):
            for i in range(ph):
                for j in range(pw):
                    acc = 0.0
                    for iy in range(gh):
                        yy = -rh / 2 + i * bh + (iy + 0.5) * bh / gh
                        for ix in range(gw):
                            xx = -rw / 2 + j * bw + (ix + 0.5) * bw / gw
                            acc += _bilinear(xs[int(b)][c], yy * cos - xx * sin + cy, yy * sin + xx * cos + cx)
                    out[n, c, i, j] = acc / max(gh * gw, 1)
    return out


def _rotated_case(seed: int, n: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 2, 8, 10, generator=g, dtype=torch.float64)
    ctr = torch.rand(n, 2, generator=g, dtype=torch.float64) * 12 - 1
    wh = torch.rand(n, 2, generator=g, dtype=torch.float64) * 8 + 0.2
    ang = (torch.rand(n, 1, generator=g, dtype=torch.float64) - 0.5) * 2 * math.pi
    batch = torch.randint(0, 2, (n, 1), generator=g).to(torch.float64)
    return x, torch.cat([batch, ctr, wh, ang], 1)


@pytest.mark.parametrize(("ratio", "scale", "aligned", "clockwise"),
                         [(0, 1.0, True, False), (2, 0.5, True, True), (0, 0.75, False, False), (3, 1.0, False, True)])
def test_roi_align_rotated_forward_matches_naive(ratio: int, scale: float, aligned: bool, clockwise: bool) -> None:
    x, rois = _rotated_case(ratio + int(aligned) * 5)
    out = x.new_full((rois.shape[0], 2, 3, 2), 9.0)
    rar.roi_align_rotated_forward(x, rois, out, pooled_height=3, pooled_width=2, spatial_scale=scale,
                                  sampling_ratio=ratio, aligned=aligned, clockwise=clockwise)
    torch.testing.assert_close(out, _naive_roi_align_rotated(x, rois, 3, 2, scale, ratio, aligned, clockwise))


@pytest.mark.parametrize("aligned", [True, False])
def test_roi_align_rotated_at_angle_zero_is_torchvision_roi_align(aligned: bool) -> None:
    x, rois = _rotated_case(21, n=6)
    rois[:, 5] = 0.0
    rois[:, 3:5] += 2.0  # at least one feature pixel: mmcv clamps about the centre, torchvision from the corner
    boxes = torch.cat([rois[:, :1], rois[:, 1:3] - rois[:, 3:5] / 2, rois[:, 1:3] + rois[:, 3:5] / 2], 1)
    out = x.new_zeros(6, 2, 4, 3)
    rar.roi_align_rotated_forward(x, rois, out, pooled_height=4, pooled_width=3, spatial_scale=0.5, sampling_ratio=0,
                                  aligned=aligned)
    ref = torchvision.ops.roi_align(x, boxes, (4, 3), spatial_scale=0.5, sampling_ratio=0, aligned=aligned)
    torch.testing.assert_close(out, ref)


class _RoIAlignRotated(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        out = x.new_zeros(rois.shape[0], x.shape[1], 3, 2)
        rar.roi_align_rotated_forward(x, rois, out, pooled_height=3, pooled_width=2, spatial_scale=0.5,
                                      sampling_ratio=0, aligned=True, clockwise=False)
        ctx.save_for_backward(rois)
        ctx.shape = x.shape
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
        (rois,) = ctx.saved_tensors
        gx = grad.new_zeros(ctx.shape)
        rar.roi_align_rotated_backward(grad.contiguous(), rois, gx, pooled_height=3, pooled_width=2,
                                       spatial_scale=0.5, sampling_ratio=0, aligned=True, clockwise=False)
        return gx, None


def test_roi_align_rotated_gradcheck() -> None:
    x, rois = _rotated_case(4)
    x.requires_grad_(True)
    assert gradcheck(lambda a: _RoIAlignRotated.apply(a, rois), (x,), eps=1e-6, atol=1e-6, fast_mode=True)


def test_roi_align_rotated_rejects_axis_aligned_rois() -> None:
    with pytest.raises(ValueError, match=r"\(R, 6\)"):
        rar.roi_align_rotated_forward(torch.rand(1, 1, 4, 4), torch.zeros(2, 5), torch.zeros(2, 1, 2, 2))


# ----------------------------------------------------------------------------------------------- chamfer_distance
def _chamfer(p1: torch.Tensor, p2: torch.Tensor) -> tuple[torch.Tensor, ...]:
    b, n, _ = p1.shape
    m = p2.shape[1]
    d1, d2 = p1.new_zeros(b, n), p1.new_zeros(b, m)
    i1, i2 = torch.zeros(b, n, dtype=torch.int32), torch.zeros(b, m, dtype=torch.int32)
    chamfer_ops.chamfer_distance_forward(p1, p2, d1, d2, i1, i2)
    return d1, d2, i1, i2


def test_chamfer_distance_matches_naive_with_first_index_on_ties() -> None:
    g = torch.Generator().manual_seed(0)
    p1 = torch.randint(0, 4, (2, 9, 2), generator=g).to(torch.float64)  # integer grid: many exact ties
    p2 = torch.randint(0, 4, (2, 6, 2), generator=g).to(torch.float64)
    d1, d2, i1, i2 = _chamfer(p1, p2)
    for src, dst, dist, idx in ((p1, p2, d1, i1), (p2, p1, d2, i2)):
        for b in range(2):
            for j in range(src.shape[1]):
                ds = [float(((src[b, j] - dst[b, k]) ** 2).sum()) for k in range(dst.shape[1])]
                assert float(dist[b, j]) == min(ds)
                assert int(idx[b, j]) == ds.index(min(ds))


class _Chamfer(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, p1: torch.Tensor, p2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        d1, d2, i1, i2 = _chamfer(p1, p2)
        ctx.save_for_backward(p1, p2, i1, i2)
        return d1, d2

    @staticmethod
    def backward(ctx: Any, g1: torch.Tensor, g2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p1, p2, i1, i2 = ctx.saved_tensors
        gp1, gp2 = torch.zeros_like(p1), torch.zeros_like(p2)
        chamfer_ops.chamfer_distance_backward(p1, p2, i1, i2, g1.contiguous(), g2.contiguous(), gp1, gp2)
        return gp1, gp2


def test_chamfer_distance_gradcheck() -> None:
    g = torch.Generator().manual_seed(1)
    p1 = torch.rand(2, 7, 2, generator=g, dtype=torch.float64, requires_grad=True)
    p2 = torch.rand(2, 5, 2, generator=g, dtype=torch.float64, requires_grad=True)
    assert gradcheck(_Chamfer.apply, (p1, p2), eps=1e-6, atol=1e-6)


def test_chamfer_distance_rejects_3d_points() -> None:
    with pytest.raises(ValueError, match=r"\(B, N, 2\)"):
        _chamfer(torch.rand(1, 4, 3), torch.rand(1, 4, 3))


# -------------------------------------------------------------------------------------------------------- psamask
def _naive_psamask(x: torch.Tensor, psa_type: int, hm: int, wm: int) -> torch.Tensor:
    n, _, h, w = x.shape
    out = torch.zeros(n, h * w, h, w, dtype=x.dtype)
    hh, hw_ = (hm - 1) // 2, (wm - 1) // 2
    for b in range(n):
        for y in range(h):
            for xx in range(w):
                for i in range(hm):
                    for j in range(wm):
                        ty, tx = y + i - hh, xx + j - hw_
                        if 0 <= ty < h and 0 <= tx < w:
                            if psa_type == 0:
                                out[b, ty * w + tx, y, xx] = x[b, i * wm + j, y, xx]
                            else:
                                out[b, y * w + xx, ty, tx] = x[b, i * wm + j, y, xx]
    return out


def _psamask(x: torch.Tensor, psa_type: int, hm: int, wm: int) -> torch.Tensor:
    n, _, h, w = x.shape
    out = x.new_zeros(n, h * w, h, w)
    psa_ops.psamask_forward(x, out, psa_type=psa_type, num_=n, h_feature=h, w_feature=w, h_mask=hm, w_mask=wm,
                            half_h_mask=(hm - 1) // 2, half_w_mask=(wm - 1) // 2)
    return out


@pytest.mark.parametrize(("psa_type", "hm", "wm"), [(0, 3, 5), (1, 3, 5), (0, 4, 4), (1, 9, 11)])
def test_psamask_forward_matches_naive_and_backward_is_adjoint(psa_type: int, hm: int, wm: int) -> None:
    g = torch.Generator().manual_seed(hm * wm + psa_type)
    x = torch.rand(2, hm * wm, 5, 6, generator=g, dtype=torch.float64)
    out = _psamask(x, psa_type, hm, wm)
    torch.testing.assert_close(out, _naive_psamask(x, psa_type, hm, wm))
    gout = torch.rand(out.shape, generator=g, dtype=torch.float64)
    gin = torch.zeros_like(x)
    psa_ops.psamask_backward(gout, gin, psa_type=psa_type, num_=2, h_feature=5, w_feature=6, h_mask=hm, w_mask=wm,
                             half_h_mask=(hm - 1) // 2, half_w_mask=(wm - 1) // 2)
    # a linear scatter's gradient is its adjoint: <gout, scatter(x)> = <gather(gout), x>
    torch.testing.assert_close((gout * out).sum(), (gin * x).sum())


def test_psamask_rejects_wrong_channel_count() -> None:
    with pytest.raises(ValueError, match="h_mask \\* w_mask"):
        _psamask(torch.rand(1, 8, 4, 4), 0, 3, 3)


# ------------------------------------------------------------------------------------------------------ tin_shift
def _naive_tin_shift(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    n, t, c, _ = x.shape
    gc = c // shift.shape[1]
    out = torch.zeros_like(x)
    for b in range(n):
        for ch in range(c):
            s = int(shift[b, ch // gc])
            for i in range(t):
                if 0 <= i + s < t:
                    out[b, i + s, ch] = x[b, i, ch]
    return out


def test_tin_shift_forward_and_backward_match_mmcv_rule() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 5, 6, 4, generator=g)
    shift = torch.tensor([[1, -2, 0], [4, -5, 2], [-1, 3, 7]], dtype=torch.int32)
    out = torch.zeros_like(x)
    tin_ops.tin_shift_forward(x, shift, out)
    torch.testing.assert_close(out, _naive_tin_shift(x, shift))
    # mmcv's backward kernel moves the gradient by the same +shift (not the adjoint -shift): reproduced on purpose
    gout = torch.rand(x.shape, generator=g)
    gin = torch.zeros_like(x)
    tin_ops.tin_shift_backward(gout, shift, gin)
    torch.testing.assert_close(gin, _naive_tin_shift(gout, shift))
    assert not torch.allclose(gin, _naive_tin_shift(gout, -shift))


def test_tin_shift_rejects_bad_groups() -> None:
    with pytest.raises(ValueError, match="multiple of G"):
        tin_ops.tin_shift_forward(torch.rand(2, 3, 4, 2), torch.zeros(2, 3, dtype=torch.int32),
                                  torch.zeros(2, 3, 4, 2))


# --------------------------------------------------------------------------------------------------- border_align
def _naive_border_align(x: torch.Tensor, boxes: torch.Tensor, pool: int) -> tuple[torch.Tensor, torch.Tensor]:
    n, c4, _, _ = x.shape
    c = c4 // 4
    out = torch.zeros(n, c, boxes.shape[1], 4, dtype=x.dtype)
    arg = torch.zeros(n, c, boxes.shape[1], 4, dtype=torch.int32)
    for b in range(n):
        for k, (x1, y1, x2, y2) in enumerate(boxes[b].tolist()):
            starts = [(x1, y1, (x2 - x1) / pool, 0.0), (x1, y1, 0.0, (y2 - y1) / pool),
                      (x2, y2, -(x2 - x1) / pool, 0.0), (x2, y2, 0.0, -(y2 - y1) / pool)]
            for e, (sx, sy, dx, dy) in enumerate(starts):
                for ch in range(c):
                    img = x[b, e * c + ch].tolist()
                    vals = [_bilinear(img, sy + i * dy, sx + i * dx) for i in range(pool + 1)]
                    best = max(vals)
                    out[b, ch, k, e] = best
                    arg[b, ch, k, e] = vals.index(best)
    return out, arg


def _border_case(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 8, 6, 7, generator=g, dtype=torch.float64)
    xy = torch.rand(2, 9, 2, generator=g, dtype=torch.float64) * 8 - 1.5
    wh = torch.rand(2, 9, 2, generator=g, dtype=torch.float64) * 5
    return x, torch.cat([xy, xy + wh], -1)


@pytest.mark.parametrize("pool", [1, 3, 10])
def test_border_align_forward_matches_naive(pool: int) -> None:
    x, boxes = _border_case(pool)
    out = x.new_zeros(2, 2, 9, 4)
    arg = torch.zeros(2, 2, 9, 4, dtype=torch.int32)
    border_ops.border_align_forward(x, boxes, out, arg, pool_size=pool)
    ref_out, ref_arg = _naive_border_align(x, boxes, pool)
    torch.testing.assert_close(out, ref_out)
    assert torch.equal(arg, ref_arg)


class _BorderAlign(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        out = x.new_zeros(x.shape[0], x.shape[1] // 4, boxes.shape[1], 4)
        arg = torch.zeros(out.shape, dtype=torch.int32)
        border_ops.border_align_forward(x, boxes, out, arg, pool_size=4)
        ctx.save_for_backward(boxes, arg)
        ctx.shape = x.shape
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
        boxes, arg = ctx.saved_tensors
        gx = grad.new_zeros(ctx.shape)
        border_ops.border_align_backward(grad.contiguous(), boxes, arg, gx, pool_size=4)
        return gx, None


def test_border_align_gradcheck() -> None:
    x, boxes = _border_case(7)
    x.requires_grad_(True)
    assert gradcheck(lambda a: _BorderAlign.apply(a, boxes), (x,), eps=1e-6, atol=1e-6, fast_mode=True)


def test_border_align_rejects_bad_channels() -> None:
    with pytest.raises(ValueError, match="4 \\* C"):
        border_ops.border_align_forward(torch.rand(1, 6, 4, 4), torch.rand(1, 3, 4), torch.zeros(1, 1, 3, 4),
                                        torch.zeros(1, 1, 3, 4, dtype=torch.int32), pool_size=2)


# ---------------------------------------------------------------------------------------------------- correlation
def _naive_correlation(a: torch.Tensor, b: torch.Tensor, k: int, patch: int, pad: int, dil: int, dp: int,
                       stride: int) -> torch.Tensor:
    n, c, h, w = a.shape
    oh = (h + 2 * pad - ((k - 1) * dil + 1)) // stride + 1
    ow = (w + 2 * pad - ((k - 1) * dil + 1)) // stride + 1
    rad = dp * (patch - 1) // 2
    out = torch.zeros(n, patch, patch, oh, ow, dtype=a.dtype)
    for bi in range(n):
        for ph in range(patch):
            for pw in range(patch):
                for y in range(oh):
                    for x in range(ow):
                        acc = 0.0
                        for i in range(k):
                            for j in range(k):
                                y1, x1 = -pad + y * stride + i * dil, -pad + x * stride + j * dil
                                y2, x2 = y1 + ph * dp - rad, x1 + pw * dp - rad
                                if 0 <= y1 < h and 0 <= x1 < w and 0 <= y2 < h and 0 <= x2 < w:
                                    acc += float((a[bi, :, y1, x1] * b[bi, :, y2, x2]).sum())
                        out[bi, ph, pw, y, x] = acc
    return out


CORR_CASES = [(1, 3, 0, 1, 1, 1), (3, 5, 1, 1, 2, 2), (2, 3, 2, 2, 1, 1)]  # kernel, patch, pad, dil, dil_patch, stride


def _corr(a: torch.Tensor, b: torch.Tensor, case: tuple[int, ...]) -> torch.Tensor:
    k, patch, pad, dil, dp, stride = case
    h, w = a.shape[-2:]
    oh = (h + 2 * pad - ((k - 1) * dil + 1)) // stride + 1
    ow = (w + 2 * pad - ((k - 1) * dil + 1)) // stride + 1
    out = a.new_zeros(a.shape[0], patch, patch, oh, ow)
    corr_ops.correlation_forward(a, b, out, kH=k, kW=k, patchH=patch, patchW=patch, padH=pad, padW=pad,
                                 dilationH=dil, dilationW=dil, dilation_patchH=dp, dilation_patchW=dp, dH=stride,
                                 dW=stride)
    return out


@pytest.mark.parametrize("case", CORR_CASES)
def test_correlation_forward_matches_naive_and_backward_is_adjoint(case: tuple[int, ...]) -> None:
    g = torch.Generator().manual_seed(sum(case))
    a = torch.rand(2, 3, 6, 7, generator=g, dtype=torch.float64)
    b = torch.rand(2, 3, 6, 7, generator=g, dtype=torch.float64)
    out = _corr(a, b, case)
    torch.testing.assert_close(out, _naive_correlation(a, b, *case))
    k, patch, pad, dil, dp, stride = case
    gout = torch.rand(out.shape, generator=g, dtype=torch.float64)
    ga, gb = torch.zeros_like(a), torch.zeros_like(b)
    corr_ops.correlation_backward(gout, a, b, ga, gb, kH=k, kW=k, patchH=patch, patchW=patch, padH=pad, padW=pad,
                                  dilationH=dil, dilationW=dil, dilation_patchH=dp, dilation_patchW=dp, dH=stride,
                                  dW=stride)
    # bilinear in (a, b): <gout, corr(a, e)> = <grad_b, e> and <gout, corr(e, b)> = <grad_a, e>
    e = torch.rand(a.shape, generator=g, dtype=torch.float64)
    torch.testing.assert_close((gout * _corr(a, e, case)).sum(), (gb * e).sum())
    torch.testing.assert_close((gout * _corr(e, b, case)).sum(), (ga * e).sum())
