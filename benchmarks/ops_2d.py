"""detlight.openmmlab's 2D ``mmcv._ext`` functions against torchvision's ops called directly, same inputs, same process.

Run:  python benchmarks/ops_2d.py [--device cpu|cuda] [--repeats 15] [--threads 2] [--quick]

Each row times one ``_ext`` function the way mmcv's wrapper calls it (output buffers allocated outside the timed
call, as mmcv does) and the nearest torchvision op called directly on the same inputs, interleaved call by call;
``ratio`` = detlight / torchvision (1.00: no overhead; ops that torchvision lacks show their time alone). The last rows
time ``softnms`` (sequential by nature, CPU as in mmcv) at 1k / 5k / 20k boxes next to torchvision's hard NMS on the
same boxes. Prints a markdown table (paste it, with the machine line, into benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import _bench
import torch
import torchvision

from detlight.openmmlab.ops import (
    bbox,
    carafe,
    deform_conv,
    focal_loss,
    masked_conv,
    ms_deform_attn,
    nms,
    roi_align,
    roi_pool,
)

Fn = Callable[[], object]


@dataclass
class Case:
    """One table row: what is timed, and its torchvision counterpart (None: torchvision has no such op)."""

    op: str
    size: str
    ours: Fn
    baseline: Fn | None = None
    baseline_name: str = ""


def _boxes(n: int, device: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 600
    wh = torch.rand(n, 2, generator=g) * 120 + 4
    return torch.cat([xy, xy + wh], 1).to(device), torch.rand(n, generator=g).to(device)


def _rois(n: int, batch: int, h: int, w: int, stride: float, device: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    xy = torch.rand(n, 2, generator=g) * torch.tensor([w * stride * 0.8, h * stride * 0.8])
    wh = torch.rand(n, 2, generator=g) * torch.tensor([w * stride * 0.4, h * stride * 0.4]) + 8
    b = torch.randint(0, batch, (n, 1), generator=g).float()
    return torch.cat([b, xy, xy + wh], 1).to(device)


def build_cases(device: str, quick: bool) -> list[Case]:
    """The benchmark rows (``quick``: tiny sizes, for the smoke test)."""
    s = 8 if quick else 1
    torch.manual_seed(0)
    cases: list[Case] = []
    n_nms = 4000 // s
    boxes, scores = _boxes(n_nms, device)
    cases.append(Case("nms (offset 0)", f"{n_nms} boxes", lambda: nms.nms(boxes, scores, 0.5, 0),
                      lambda: torchvision.ops.nms(boxes, scores, 0.5), "ops.nms"))
    cases.append(Case("nms (offset 1)", f"{n_nms} boxes", lambda: nms.nms(boxes, scores, 0.5, 1),
                      lambda: torchvision.ops.nms(boxes, scores, 0.5), "ops.nms (offset 0)"))
    dets = torch.cat([boxes, scores[:, None]], 1)
    n_match = 1000 // s
    cases.append(Case("nms_match", f"{n_match} boxes", lambda: nms.nms_match(dets[:n_match], 0.5),
                      lambda: torchvision.ops.nms(boxes[:n_match], scores[:n_match], 0.5), "ops.nms"))
    b1, _ = _boxes(1000 // s, device, 2)
    b2, _ = _boxes(2000 // s, device, 3)
    ious = b1.new_zeros(len(b1), len(b2))
    cases.append(Case("bbox_overlaps", f"{len(b1)}x{len(b2)}", lambda: bbox.bbox_overlaps(b1, b2, ious, 0, False, 0),
                      lambda: torchvision.ops.box_iou(b1, b2), "ops.box_iou"))

    c, h, w = 64 // s, 50, 68
    feat = torch.randn(2, c, h, w, device=device)
    rois = _rois(512 // s, 2, h, w, 8.0, device)
    out = feat.new_zeros(len(rois), c, 7, 7)
    ay, ax = torch.zeros_like(out), torch.zeros_like(out)
    empty = feat.new_zeros(0)
    size = f"{tuple(feat.shape)}, {len(rois)} RoIs, 7x7"
    cases.append(Case("roi_align avg fwd", size,
                      lambda: roi_align.roi_align_forward(feat, rois, out, empty, empty, 7, 7, 0.125, 2, 1, True),
                      lambda: torchvision.ops.roi_align(feat, rois, 7, 0.125, 2, True), "ops.roi_align"))
    grad_out = torch.randn_like(out)
    grad_in = torch.zeros_like(feat)
    cases.append(Case("roi_align avg bwd", size,
                      lambda: roi_align.roi_align_backward(grad_out, rois, empty, empty, grad_in, 7, 7, 0.125, 2, 1,
                                                           True),
                      lambda: torch.ops.torchvision._roi_align_backward(grad_out, rois, 0.125, 7, 7, 2, c, h, w, 2,
                                                                        True), "_roi_align_backward"))
    cases.append(Case("roi_align max fwd", size,
                      lambda: roi_align.roi_align_forward(feat, rois, out, ay, ax, 7, 7, 0.125, 2, 0, True),
                      lambda: torchvision.ops.roi_align(feat, rois, 7, 0.125, 2, True), "ops.roi_align (avg)"))
    roi_align.roi_align_forward(feat, rois, out, ay, ax, 7, 7, 0.125, 2, 0, True)
    cases.append(Case("roi_align max bwd", size,
                      lambda: roi_align.roi_align_backward(grad_out, rois, ay, ax, grad_in, 7, 7, 0.125, 2, 0, True),
                      lambda: torch.ops.torchvision._roi_align_backward(grad_out, rois, 0.125, 7, 7, 2, c, h, w, 2,
                                                                        True), "_roi_align_backward (avg)"))
    argmax = torch.zeros(out.shape, dtype=torch.int32, device=device)
    cases.append(Case("roi_pool fwd", size, lambda: roi_pool.roi_pool_forward(feat, rois, out, argmax, 7, 7, 0.125),
                      lambda: torchvision.ops.roi_pool(feat, rois, 7, 0.125), "ops.roi_pool (rounded bins)"))
    roi_pool.roi_pool_forward(feat, rois, out, argmax, 7, 7, 0.125)
    cases.append(Case("roi_pool bwd", size,
                      lambda: roi_pool.roi_pool_backward(grad_out, rois, argmax, grad_in, 7, 7, 0.125)))

    logits = torch.randn(20000 // s, 80, device=device)
    target = torch.randint(0, 81, (len(logits),), device=device)
    onehot = torch.nn.functional.one_hot(target, 81)[:, :80].float()
    floss = torch.zeros_like(logits)
    no_w = logits.new_zeros(0)
    cases.append(Case("sigmoid_focal_loss fwd", f"{tuple(logits.shape)}",
                      lambda: focal_loss.sigmoid_focal_loss_forward(logits, target, no_w, floss, 2.0, 0.25),
                      lambda: torchvision.ops.sigmoid_focal_loss(logits, onehot, 0.25, 2.0, "none"),
                      "ops.sigmoid_focal_loss"))
    lg = logits.clone().requires_grad_(True)

    def tv_focal_fwd_bwd() -> object:
        lg.grad = None
        with torch.enable_grad():
            torchvision.ops.sigmoid_focal_loss(lg, onehot, 0.25, 2.0, "sum").backward()
        return lg.grad

    def ours_focal_fwd_bwd() -> object:
        focal_loss.sigmoid_focal_loss_forward(logits, target, no_w, floss, 2.0, 0.25)
        focal_loss.sigmoid_focal_loss_backward(logits, target, no_w, floss, 2.0, 0.25)
        return floss

    cases.append(Case("sigmoid_focal_loss fwd+bwd", f"{tuple(logits.shape)}", ours_focal_fwd_bwd, tv_focal_fwd_bwd,
                      "ops.sigmoid_focal_loss + autograd"))

    cd = 64 // s
    x = torch.randn(2, cd, 32, 32, device=device)
    wgt = torch.randn(cd, cd, 3, 3, device=device) * 0.05
    offset = torch.randn(2, 18, 32, 32, device=device)
    mask = torch.rand(2, 9, 32, 32, device=device)
    bias = torch.zeros(cd, device=device)
    y = x.new_zeros(2, cd, 32, 32)
    g_y = torch.randn_like(y)
    dsize = f"{tuple(x.shape)}, 3x3, {cd}->{cd}"
    v1 = dict(kW=3, kH=3, dW=1, dH=1, padW=1, padH=1, dilationW=1, dilationH=1, group=1, deformable_group=1,
              im2col_step=2)
    cases.append(Case("deform_conv fwd", dsize,
                      lambda: deform_conv.deform_conv_forward(x, wgt, offset, y, empty, empty, **v1),
                      lambda: torchvision.ops.deform_conv2d(x, offset, wgt, padding=1), "ops.deform_conv2d"))
    gx, go, gw = torch.zeros_like(x), torch.zeros_like(offset), torch.zeros_like(wgt)

    def ours_dcn_bwd() -> object:
        deform_conv.deform_conv_backward_input(x, offset, g_y, gx, go, wgt, empty, **v1)
        deform_conv.deform_conv_backward_parameters(x, offset, g_y, gw, empty, empty, scale=1.0, **v1)
        return gw

    no_mask = x.new_zeros((2, 0))
    cases.append(Case("deform_conv bwd", dsize, ours_dcn_bwd,
                      lambda: torch.ops.torchvision._deform_conv2d_backward(g_y, x, wgt, offset, no_mask, bias, 1, 1,
                                                                            1, 1, 1, 1, 1, 1, False),
                      "_deform_conv2d_backward"))
    v2 = dict(kernel_h=3, kernel_w=3, stride_h=1, stride_w=1, pad_h=1, pad_w=1, dilation_h=1, dilation_w=1, group=1,
              deformable_group=1, with_bias=True)
    cases.append(Case("modulated_deform_conv fwd", dsize,
                      lambda: deform_conv.modulated_deform_conv_forward(x, wgt, bias, empty, offset, mask, y, empty,
                                                                        **v2),
                      lambda: torchvision.ops.deform_conv2d(x, offset, wgt, bias, padding=1, mask=mask),
                      "ops.deform_conv2d(mask)"))
    gm, gb = torch.zeros_like(mask), torch.zeros_like(bias)
    cases.append(Case("modulated_deform_conv bwd", dsize,
                      lambda: deform_conv.modulated_deform_conv_backward(x, wgt, bias, empty, offset, mask, empty, gx,
                                                                         gw, gb, go, gm, g_y, **v2),
                      lambda: torch.ops.torchvision._deform_conv2d_backward(g_y, x, wgt, offset, mask, bias, 1, 1, 1,
                                                                            1, 1, 1, 1, 1, True),
                      "_deform_conv2d_backward"))

    mfeat = torch.randn(1, cd, 50, 68, device=device)
    mh, mw = torch.nonzero(torch.rand(50, 68, device=device) > 0.7, as_tuple=True)
    col = mfeat.new_zeros(cd * 9, len(mh))
    cases.append(Case("masked_im2col", f"{tuple(mfeat.shape)}, {len(mh)} positions",
                      lambda: masked_conv.masked_im2col_forward(mfeat, mh, mw, col, 3, 3, 1, 1)))
    cfeat = torch.randn(2, cd, 25, 34, device=device)
    cmask = torch.rand(2, 25 * 4, 50, 68, device=device)
    cout = cfeat.new_zeros(2, cd, 50, 68)
    cg = torch.randn_like(cout)
    rf = torch.zeros_like(cfeat)
    cases.append(Case("carafe fwd", f"{tuple(cfeat.shape)}, k5 g4 x2",
                      lambda: carafe.carafe_forward(cfeat, cmask, rf, empty, empty, cout, 5, 4, 2)))
    cgf, cgm = torch.zeros_like(cfeat), torch.zeros_like(cmask)
    cases.append(Case("carafe bwd", f"{tuple(cfeat.shape)}, k5 g4 x2",
                      lambda: carafe.carafe_backward(cg, rf, cmask, empty, empty, empty, empty, cgf, cgm, 5, 4, 2)))
    shapes = torch.tensor([[32, 32], [16, 16], [8, 8], [4, 4]], device=device)
    starts = torch.cat([shapes.new_zeros(1), shapes.prod(1).cumsum(0)[:-1]])
    nkeys = int(shapes.prod(1).sum())
    value = torch.randn(2, nkeys, 8, 32, device=device)
    loc = torch.rand(2, 900 // s, 8, 4, 4, 2, device=device)
    attn = torch.rand(2, 900 // s, 8, 4, 4, device=device)
    cases.append(Case("ms_deform_attn fwd", f"{nkeys} keys, {loc.shape[1]} queries, 8 heads, 4x4 points",
                      lambda: ms_deform_attn.ms_deform_attn_forward(value, shapes, starts, loc, attn, 64)))
    return cases


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _time(fn: Fn, device: str) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return (time.perf_counter() - start) * 1e3


def run_case(case: Case, device: str, repeats: int) -> tuple[float, float | None]:
    """Median ms of ours and of the baseline, interleaved call by call after one warm-up call each."""
    case.ours()
    if case.baseline is not None:
        case.baseline()
    ours, base = [], []
    for _ in range(repeats):
        ours.append(_time(case.ours, device))
        if case.baseline is not None:
            base.append(_time(case.baseline, device))
    return statistics.median(ours), (statistics.median(base) if base else None)


def softnms_rows(sizes: list[int], repeats: int) -> list[list[str]]:
    """softnms (gaussian, mmcv's defaults) next to torchvision's hard NMS on the same boxes, CPU."""
    rows = []
    for n in sizes:
        boxes, scores = _boxes(n, "cpu", seed=n)
        dets = boxes.new_empty(n, 5)
        soft_fn = functools.partial(nms.softnms, boxes, scores, dets, 0.3, 0.5, 1e-3, 2, 0)
        hard_fn = functools.partial(torchvision.ops.nms, boxes, scores, 0.3)
        soft = [_time(soft_fn, "cpu") for _ in range(max(1, repeats if n <= 5000 else 2))]
        hard = [_time(hard_fn, "cpu") for _ in range(5)]
        rows.append(["softnms (gaussian)", f"{n} boxes", f"{statistics.median(soft):.2f}", "ops.nms (hard NMS)",
                     f"{statistics.median(hard):.2f}", f"{statistics.median(soft) / statistics.median(hard):.1f}"])
    return rows


def main(argv: list[str] | None = None) -> str:
    """Run every case and return (and print) the markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1: on a shared, oversubscribed host OpenMP regions stall)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and 2 repeats (smoke test)")
    parser.add_argument("--softnms", type=int, nargs="*", default=[1000, 5000, 20000], help="softnms box counts")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("benchmarks/ops_2d.py --device cuda needs a CUDA GPU (torch.cuda.is_available() is False)")
    torch.set_num_threads(args.threads)
    repeats = 2 if args.quick else args.repeats
    rows = []
    with torch.no_grad():
        for case in build_cases(args.device, args.quick):
            ours, base = run_case(case, args.device, repeats)
            rows.append([case.op, case.size, f"{ours:.2f}", case.baseline_name or "(none in torchvision)",
                         "" if base is None else f"{base:.2f}", "" if base is None else f"{ours / base:.2f}"])
        rows += softnms_rows([n // (20 if args.quick else 1) for n in args.softnms], repeats)
    table = _bench.markdown_table(["op (detlight _ext)", "size", "detlight ms", "torchvision", "torchvision ms",
                                   "ratio"], rows)
    text = f"{_bench.machine_info(args.device)}, {args.threads} threads, median of {repeats}\n\n{table}"
    print(text)
    return text


if __name__ == "__main__":
    main()
