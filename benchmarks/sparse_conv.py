"""SECOND's sparse middle encoder (mmdet3d ``SparseEncoder``) on CPU: detlight's torch kernels vs spconv vs dense.

Run with the OpenMMLab venv:

    .venv-openmmlab/bin/python benchmarks/sparse_conv.py [--voxels 5000] [--grid 41,160,140] [--repeats 5]
        [--threads 1] [--spconv-path DIR] [--no-dense]

Variants (same voxel set, same layer configuration: hv_second_secfpn_kitti.py's ``middle_encoder`` on ``--grid``):

- ``detlight (mmcv ops)``: mmcv's ``SubMConv3d`` / ``SparseConv3d`` with ``mmcv._ext`` served by
  ``detlight.openmmlab.ops.sparse_conv``; forward and forward + backward.
- ``spconv CPU``: mmdet3d's spconv 2.x path, in a child interpreter with ``DETLIGHT_SPARSE_CONV=spconv`` (spconv from
  the environment or ``--spconv-path``); forward, and the backward attempt (its CPU build raises without a GPU driver).
- ``dense conv3d``: the same stack as ``nn.Conv3d`` + ``BatchNorm3d`` + ReLU over the whole grid (what the sparse
  layers avoid computing).

The voxel set looks like a LiDAR sweep (a ground plane plus the walls of a few boxes), deduplicated. Times are the
median [min-max] of ``--repeats`` runs after one warm-up, in one process per variant, with ``--threads`` intra-op
threads (1 by default: on a shared CPU, OpenMP waits otherwise dominate small ops).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import _bench

ROOT = Path(__file__).resolve().parents[1]


def lidar_like_voxels(n: int, grid: tuple[int, int, int], seed: int = 0) -> Any:
    """``[M <= n, 4]`` int32 (batch 0, z, y, x): ground-plane cells and the walls of boxes, unique, shuffled."""
    import torch

    g = torch.Generator().manual_seed(seed)
    d, h, w = grid
    k = 4 * n
    ground = torch.stack([torch.randint(d // 4, d // 4 + 2, (k,), generator=g), torch.randint(0, h, (k,), generator=g),
                          torch.randint(0, w, (k,), generator=g)], dim=1)
    walls = []
    for _ in range(12):
        y0, x0 = int(torch.randint(0, h - 12, (1,), generator=g)), int(torch.randint(0, w - 24, (1,), generator=g))
        zz = torch.randint(d // 4, min(d, d // 4 + 16), (k // 12,), generator=g)
        along = torch.randint(0, 24, (k // 12,), generator=g)
        side = torch.randint(0, 2, (k // 12,), generator=g)
        walls.append(torch.stack([zz, y0 + side * 11, x0 + along], dim=1))
    cells = torch.unique(torch.cat([ground, *walls]), dim=0)
    cells = cells[torch.randperm(cells.shape[0], generator=g)[:n]]
    return torch.cat([torch.zeros(cells.shape[0], 1, dtype=cells.dtype), cells], dim=1).to(torch.int32)


def build_encoder(grid: tuple[int, int, int]) -> Any:
    from mmdet3d.models.builder import build_middle_encoder

    return build_middle_encoder(dict(type="SparseEncoder", in_channels=4, sparse_shape=list(grid),
                                     order=("conv", "norm", "act")))


def dense_twin(encoder: Any) -> Any:
    """The encoder's layers as dense ``Conv3d`` / ``BatchNorm3d`` / ``ReLU`` (submanifold convs padded k // 2)."""
    from torch import nn

    def convert(module: nn.Module) -> list[nn.Module]:
        if isinstance(module, nn.BatchNorm1d):
            return [nn.BatchNorm3d(module.num_features, eps=module.eps, momentum=module.momentum)]
        if isinstance(module, nn.ReLU):
            return [nn.ReLU(inplace=True)]
        if hasattr(module, "kernel_size") and hasattr(module, "subm"):
            pad = [k // 2 for k in module.kernel_size] if module.subm else list(module.padding)
            stride = 1 if module.subm else list(module.stride)
            return [nn.Conv3d(module.in_channels, module.out_channels, list(module.kernel_size), stride=stride,
                              padding=pad, bias=module.bias is not None)]
        layers: list[nn.Module] = []
        for child in module.children():
            layers += convert(child)
        return layers

    stack = convert(encoder.conv_input) + convert(encoder.encoder_layers) + convert(encoder.conv_out)
    return nn.Sequential(*stack)


def _time(fn: Any, repeats: int) -> list[float]:
    fn()
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def run_variant(variant: str, voxels: int, grid: tuple[int, int, int], repeats: int, threads: int) -> dict[str, Any]:
    """One variant in this process: ``{"fwd": [s...], "fwd_bwd": [s...] or None, "error": str, "voxels": M}``."""
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    coors = lidar_like_voxels(voxels, grid)
    feats = torch.randn(coors.shape[0], 4)
    result: dict[str, Any] = {"voxels": int(coors.shape[0]), "fwd_bwd": None, "error": ""}
    if variant == "dense":
        net = dense_twin(_encoder_for("torch", grid))
        grid_in = torch.zeros(1, 4, *grid)
        grid_in[0, :, coors[:, 1].long(), coors[:, 2].long(), coors[:, 3].long()] = feats.t()

        def fwd() -> Any:
            return net(grid_in)

        result["fwd"] = _time(lambda: fwd(), repeats)
        result["fwd_bwd"] = _time(lambda: fwd().sum().backward(), repeats)
        return result
    encoder = _encoder_for(variant, grid)
    result["backend"] = type(encoder.conv_input[0]).__module__

    def step(backward: bool) -> None:
        x = feats.clone().requires_grad_(backward)
        out = encoder(x, coors, 1)
        if backward:
            out.sum().backward()

    result["fwd"] = _time(lambda: step(False), repeats)
    try:
        result["fwd_bwd"] = _time(lambda: step(True), repeats)
    except RuntimeError as exc:
        result["error"] = str(exc).strip().splitlines()[-1].split(". ")[0][:100]
    return result


def _encoder_for(variant: str, grid: tuple[int, int, int]) -> Any:
    os.environ["DETLIGHT_SPARSE_CONV"] = "spconv" if variant == "spconv" else "torch"
    import detlight.openmmlab

    detlight.openmmlab.install_ops()
    return build_encoder(grid)


def _child(variant: str, args: argparse.Namespace) -> dict[str, Any]:
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    paths = [str(ROOT)] + ([args.spconv_path] if variant == "spconv" and args.spconv_path else [])
    env["PYTHONPATH"] = os.pathsep.join(paths + [os.environ.get("PYTHONPATH", "")])
    cmd = [sys.executable, __file__, "--worker", variant, "--voxels", str(args.voxels), "--grid", args.grid,
           "--repeats", str(args.repeats), "--threads", str(args.threads)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"fwd": [], "fwd_bwd": None, "voxels": 0, "error": (proc.stderr.strip().splitlines() or ["?"])[-1][:120]}
    return json.loads(lines[-1])


def _spconv_available(args: argparse.Namespace) -> bool:
    if args.spconv_path:
        return (Path(args.spconv_path) / "spconv").is_dir()
    import importlib.util

    return importlib.util.find_spec("spconv") is not None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--voxels", type=int, default=5000)
    parser.add_argument("--grid", default="41,160,140", help="sparse_shape z,y,x (SECOND's is 41,1600,1408)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--spconv-path", default="", help="a folder holding spconv 2.x + cumm (pip install --target)")
    parser.add_argument("--no-dense", action="store_true", help="skip the dense conv3d baseline")
    parser.add_argument("--worker", choices=["torch", "spconv", "dense"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    grid = tuple(int(v) for v in args.grid.split(","))
    if len(grid) != 3:
        parser.error(f"--grid needs 3 sizes z,y,x, got {args.grid!r}")
    if args.worker:
        print(json.dumps(run_variant(args.worker, args.voxels, grid, args.repeats, args.threads)))  # type: ignore[arg-type]
        return

    variants = [("detlight (mmcv ops)", "torch")]
    if _spconv_available(args):
        variants.append(("spconv CPU", "spconv"))
    if not args.no_dense:
        variants.append(("dense conv3d", "dense"))
    results = {label: _child(kind, args) for label, kind in variants}
    base = _bench.median(results["detlight (mmcv ops)"]["fwd"])
    base_fb = _bench.median(results["detlight (mmcv ops)"]["fwd_bwd"] or [])
    rows = []
    for label, res in results.items():
        fb = res["fwd_bwd"]
        rows.append([label, res["voxels"], _bench.spread(res["fwd"]),
                     f"{_bench.median(res['fwd']) / base:.2f}" if res["fwd"] else "n/a",
                     _bench.spread(fb) if fb else f"fails: {res['error']}" if res["error"] else "n/a",
                     f"{_bench.median(fb) / base_fb:.2f}" if fb else "n/a"])
    print(f"SparseEncoder (hv_second_secfpn_kitti middle_encoder), grid {args.grid}, batch 1, "
          f"{args.threads} thread(s); seconds, median [min-max] of {args.repeats}")
    print(_bench.machine_info())
    print()
    print(_bench.markdown_table(["variant", "voxels", "forward s", "fwd / detlight", "forward+backward s",
                                 "f+b / detlight"], rows))


if __name__ == "__main__":
    main()
