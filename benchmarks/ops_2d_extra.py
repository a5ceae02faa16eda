"""detlight.openmmlab's torch-restated 2D ``mmcv._ext`` families, timed next to the nearest compiled baseline.

Run:  python benchmarks/ops_2d_extra.py [--device cpu|cuda] [--repeats 7] [--threads 1] [--quick]

Families that torchvision lacks (``deform_roi_pool``, ``roi_align_rotated``, ``chamfer_distance``, ``border_align``,
``psamask``, ``tin_shift``, ``correlation``, ``assign_score_withk``) are timed the way mmcv's wrapper calls them
(buffers allocated outside the timed call). Where the same work has a compiled counterpart it runs interleaved call by
call on the same inputs: torchvision's ``roi_align`` (aligned, same bins and sampling grid) for ``deform_roi_pool``
with zero offsets and ``roi_align_rotated``; ``torch.cdist`` + ``min`` for ``chamfer_distance``; a plain torch
``roll`` for ``tin_shift``. ``ratio`` = detlight / baseline. Prints a markdown table for benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import math

import _bench
import torch
import torchvision
from ops_2d import Case, run_case

from detlight.openmmlab.ops import (
    assign_score_withk,
    border_align,
    chamfer_distance,
    correlation,
    deform_roi_pool,
    psamask,
    roi_align_rotated,
    tin_shift,
)


def _rois(n: int, h: int, w: int, device: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.8, h * 0.8])
    wh = torch.rand(n, 2, generator=g) * 20 + 4
    return torch.cat([torch.zeros(n, 1), xy, xy + wh], 1).to(device)


def build_cases(device: str, quick: bool) -> list[Case]:
    """The table rows (sizes shrink with ``quick``)."""
    n_rois, c, hw = (32, 16, 24) if quick else (512, 256, 64)
    feat = torch.rand(1, c, hw, hw, device=device)
    rois = _rois(n_rois, hw, hw, device)
    out = feat.new_zeros(n_rois, c, 7, 7)
    zero_off = feat.new_zeros(n_rois, 2, 7, 7)
    off = (torch.rand(n_rois, 2, 7, 7, device=device) - 0.5) * 0.2
    grad = torch.rand_like(out)
    gin, goff = torch.zeros_like(feat), torch.zeros_like(off)
    size = f"{n_rois} RoIs, C={c}, {hw}x{hw}, 7x7, ratio 2"
    cases = [
        Case("deform_roi_pool_forward (zero offset)", size,
             lambda: deform_roi_pool.deform_roi_pool_forward(feat, rois, zero_off, out, pooled_height=7,
                                                             pooled_width=7, sampling_ratio=2),
             lambda: torchvision.ops.roi_align(feat, rois, (7, 7), 1.0, 2, True), "ops.roi_align (aligned)"),
        Case("deform_roi_pool_forward (offsets)", size,
             lambda: deform_roi_pool.deform_roi_pool_forward(feat, rois, off, out, pooled_height=7, pooled_width=7,
                                                             sampling_ratio=2)),
        Case("deform_roi_pool_backward (offsets)", size,
             lambda: deform_roi_pool.deform_roi_pool_backward(grad, feat, rois, off, gin, goff, pooled_height=7,
                                                              pooled_width=7, sampling_ratio=2),
             lambda: torch.ops.torchvision._roi_align_backward(grad, rois, 1.0, 7, 7, 1, c, hw, hw, 2, True),
             "_roi_align_backward (input only)"),
    ]
    centre = (rois[:, 1:3] + rois[:, 3:5]) / 2
    rrois = torch.cat([rois[:, :1], centre, rois[:, 3:5] - rois[:, 1:3],
                       (torch.rand(n_rois, 1, device=device) - 0.5) * math.pi], 1)
    cases += [
        Case("roi_align_rotated_forward", size,
             lambda: roi_align_rotated.roi_align_rotated_forward(feat, rrois, out, pooled_height=7, pooled_width=7,
                                                                 sampling_ratio=2),
             lambda: torchvision.ops.roi_align(feat, rois, (7, 7), 1.0, 2, True), "ops.roi_align (axis-aligned)"),
        Case("roi_align_rotated_backward", size,
             lambda: roi_align_rotated.roi_align_rotated_backward(grad, rrois, gin, pooled_height=7, pooled_width=7,
                                                                  sampling_ratio=2),
             lambda: torch.ops.torchvision._roi_align_backward(grad, rois, 1.0, 7, 7, 1, c, hw, hw, 2, True),
             "_roi_align_backward"),
    ]
    b, npts = (2, 256) if quick else (8, 2048)
    p1, p2 = torch.rand(b, npts, 2, device=device), torch.rand(b, npts, 2, device=device)
    d1, d2 = p1.new_zeros(b, npts), p1.new_zeros(b, npts)
    i1, i2 = torch.zeros(b, npts, dtype=torch.int32, device=device), torch.zeros(b, npts, dtype=torch.int32,
                                                                                 device=device)
    cases.append(Case("chamfer_distance_forward", f"B={b}, {npts} x {npts} points",
                      lambda: chamfer_distance.chamfer_distance_forward(p1, p2, d1, d2, i1, i2),
                      lambda: (torch.cdist(p1, p2).min(2), torch.cdist(p2, p1).min(2)), "cdist + min (both ways)"))
    bc, bh = (16, 16) if quick else (64, 48)
    bfeat = torch.rand(2, 4 * bc, bh, bh, device=device)
    bxy = torch.rand(2, bh * bh, 2, device=device) * bh * 0.7
    boxes = torch.cat([bxy, bxy + torch.rand(2, bh * bh, 2, device=device) * 10], -1)
    bout = bfeat.new_zeros(2, bc, bh * bh, 4)
    barg = torch.zeros(2, bc, bh * bh, 4, dtype=torch.int32, device=device)
    cases.append(Case("border_align_forward", f"N=2, C={bc}, {bh * bh} boxes, pool 10",
                      lambda: border_align.border_align_forward(bfeat, boxes, bout, barg, pool_size=10)))
    ph = 16 if quick else 32
    pin = torch.rand(2, 81, ph, ph, device=device)
    pout = pin.new_zeros(2, ph * ph, ph, ph)
    cases.append(Case("psamask_forward (collect)", f"N=2, 9x9 mask, {ph}x{ph}",
                      lambda: psamask.psamask_forward(pin, pout, psa_type=0, num_=2, h_feature=ph, w_feature=ph,
                                                      h_mask=9, w_mask=9, half_h_mask=4, half_w_mask=4)))
    tn, tt, tc, thw = (2, 8, 32, 64) if quick else (8, 8, 256, 196)
    tin = torch.rand(tn, tt, tc, thw, device=device)
    tout = torch.zeros_like(tin)
    shift = torch.randint(-3, 4, (tn, 4), device=device, dtype=torch.int32)
    cases.append(Case("tin_shift_forward", f"N={tn}, T={tt}, C={tc}, HW={thw}, 4 groups",
                      lambda: tin_shift.tin_shift_forward(tin, shift, tout),
                      lambda: torch.roll(tin, 1, 1), "torch.roll (one shift)"))
    cc, chw = (16, 24) if quick else (64, 64)
    ca, cb = torch.rand(2, cc, chw, chw, device=device), torch.rand(2, cc, chw, chw, device=device)
    cout = ca.new_zeros(2, 9, 9, chw, chw)
    cases.append(Case("correlation_forward", f"N=2, C={cc}, {chw}x{chw}, max displacement 4",
                      lambda: correlation.correlation_forward(ca, cb, cout, kH=1, kW=1, patchH=9, patchW=9, padH=0,
                                                              padW=0, dilationH=1, dilationW=1, dilation_patchH=1,
                                                              dilation_patchW=1, dH=1, dW=1)))
    ab, an0, an1, ak, am, ao = (2, 256, 64, 16, 8, 16) if quick else (8, 4096, 1024, 32, 8, 64)
    pts, ctr = torch.rand(ab, an0, am, ao, device=device), torch.rand(ab, an0, am, ao, device=device)
    scores = torch.rand(ab, an1, ak, am, device=device)
    knn = torch.randint(0, an0, (ab, an1, ak), device=device)
    aout = pts.new_zeros(ab, ao, an1, ak)
    cases.append(Case("assign_score_withk_forward", f"B={ab}, N0={an0}, N1={an1}, K={ak}, M={am}, O={ao}",
                      lambda: assign_score_withk.assign_score_withk_forward(pts, ctr, scores, knn, aout, B=ab, N0=an0,
                                                                            N1=an1, M=am, K=ak, O=ao)))
    return cases


def main(argv: list[str] | None = None) -> str:
    """Run every case and return (and print) the markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and 2 repeats (smoke test)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("benchmarks/ops_2d_extra.py --device cuda needs a CUDA GPU")
    torch.set_num_threads(args.threads)
    repeats = 2 if args.quick else args.repeats
    rows = []
    with torch.no_grad():
        for case in build_cases(args.device, args.quick):
            ours, base = run_case(case, args.device, repeats)
            rows.append([case.op, case.size, f"{ours:.2f}", case.baseline_name or "(none)",
                         "" if base is None else f"{base:.2f}", "" if base is None else f"{ours / base:.2f}"])
    table = _bench.markdown_table(["op (detlight _ext)", "size", "detlight ms", "baseline", "baseline ms", "ratio"],
                                  rows)
    text = f"{_bench.machine_info(args.device)}, {args.threads} threads, median of {repeats}\n\n{table}"
    print(text)
    return text


if __name__ == "__main__":
    main()
