"""Every mmdet3d KITTI leaf config, 2 train iterations + 1 val step each through ``detlight fit``, on synthetic KITTI.

Run (OpenMMLab venv):  nice .venv-openmmlab/bin/python benchmarks/openmmlab_zoo3d.py --out zoo3d.jsonl [--timeout 600]

Each config (``*kitti*.py`` under the installed mmdet3d's ``.mim/configs``, ``_base_`` excluded) is retargeted by
:func:`detlight.openmmlab.samples3d.retarget` onto a tiny synthetic KITTI set (4 train / 2 val frames, 16 beams) with
a 20 x 20 m range, then trained in its own subprocess for ``limit_train_batches=2`` with evaluation every epoch and
one val step (both val frames in one batch): a pass is exit code 0 with mmdet3d's KITTI metrics logged as ``val/...``. Every other
config gets a named reason (the exception's last line, ``timeout``, or ``needs images`` for camera configs, which
the synthetic set cannot feed). Results append to a jsonl file and a rerun skips configs already in it (resumable).
This is a does-it-run table, not a speed benchmark.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PCR = [0.0, -10.24, -3.0, 20.48, 10.24, 1.0]
_CHAIN = re.compile(r"^\w+Error: \w+: ")
_ERROR = re.compile(r"^(\w+(\.\w+)*(Error|Exception|Exit)\b.*|detlight: error: .*)$")


def leaf_configs() -> list[Path]:
    """mmdet3d's KITTI leaf configs, sorted."""
    import mmdet3d

    base = Path(mmdet3d.__file__).parent / ".mim" / "configs"
    return sorted(p for p in base.rglob("*kitti*.py") if "_base_" not in p.parts)


def run_one(config: str, work: Path) -> dict[str, object]:
    """Retarget and fit ``config`` in this process; return the result row."""
    import detlight.openmmlab

    detlight.openmmlab.install_ops()
    from mmcv import Config

    from detlight.api import fit
    from detlight.data.synthetic_lidar import SyntheticLidarSpec
    from detlight.openmmlab.samples3d import retarget

    cfg = Config.fromfile(config)
    text = str(cfg._cfg_dict.to_dict())
    if "LoadImageFromFile" in text or "img_backbone" in cfg.model or "Mono" in str(cfg.data.train):
        return {"status": "skip", "reason": "needs images (camera config); the synthetic set has LiDAR only"}
    spec = SyntheticLidarSpec(num_train=4, num_val=2, num_beams=16, azimuth_res=0.8, max_range=30.0,
                              spawn_x=(4.0, 19.0), spawn_half_width=9.0)
    out = retarget(cfg, work / "config.py", spec, point_cloud_range=PCR, max_voxels=3000, samples_per_gpu=2,
                   max_epochs=1, extra={"evaluation.interval": 1, "work_dir": str(work / "run"),
                                        "data.val_dataloader.samples_per_gpu": 2})
    trainer, module = fit(str(out), overrides={
        "trainer.default_root_dir": str(work / "run"), "trainer.max_steps": 2, "trainer.limit_train_batches": 2,
        "trainer.enable_progress_bar": False})
    keys = [k for k in trainer.callback_metrics if k.startswith("val/")]
    if trainer.global_step != 2 or not keys:
        return {"status": "fail", "reason": f"ran {trainer.global_step} steps, val keys {keys[:3]}"}
    car = next((k for k in keys if "Car_3D_AP40_moderate" in k), keys[0])
    return {"status": "pass", "reason": "", "val_keys": len(keys), "example": car,
            "value": float(trainer.callback_metrics[car])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="zoo3d.jsonl")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per config")
    parser.add_argument("--work", default="/tmp/detlight_zoo3d")
    parser.add_argument("--only", default="", help="substring filter on the config path")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        work = Path(args.work)
        work.mkdir(parents=True, exist_ok=True)
        try:
            row = run_one(args.one, work)
        finally:
            for ckpt in work.rglob("*.ckpt"):  # the table needs no checkpoint
                ckpt.unlink(missing_ok=True)
        print("ZOO3D_RESULT " + json.dumps(row))
        return
    out = Path(args.out)
    done = {json.loads(line)["config"] for line in out.read_text().splitlines() if line.strip()} if out.exists() else set()
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for path in leaf_configs():
        name = str(path.relative_to(path.parents[1]))
        if name in done or args.only not in name:
            continue
        work = Path(args.work) / name.replace("/", "__")
        start = time.perf_counter()
        try:
            work.mkdir(parents=True, exist_ok=True)
            proc = subprocess.run([sys.executable, __file__, "--one", str(path), "--work", str(work)], env=env,
                                  capture_output=True, text=True, timeout=args.timeout)
            text = proc.stdout + proc.stderr
            (work / "fit.log").write_text(text)
            found = [line for line in text.splitlines() if line.startswith("ZOO3D_RESULT ")]
            if found:
                row = json.loads(found[-1][len("ZOO3D_RESULT "):])
            else:
                lines = [line.strip() for line in text.splitlines()]
                errors = [line for line in lines if _ERROR.match(line)]
                chain = [line for line in errors if _CHAIN.match(line)]  # mmcv registry: "Error: Model: Head: msg"
                asserts = [line for line in lines if line.startswith("assert ")]
                reason = (chain or errors or [f"exit code {proc.returncode}"])[-1]
                if chain and asserts and reason.endswith(":"):
                    reason += " " + asserts[0]
                row = {"status": "fail", "reason": reason[:300]}
        except subprocess.TimeoutExpired:
            row = {"status": "timeout", "reason": f"over {args.timeout} s"}
        row = {"config": name, **row, "seconds": round(time.perf_counter() - start, 1)}
        with out.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"{row['status']:8s} {row['seconds']:7.1f}s  {name}  {row.get('reason', '')}", flush=True)
    rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()] if out.exists() else []
    passed = sum(r["status"] == "pass" for r in rows)
    print(f"\n{passed} / {len(rows)} pass ({len(leaf_configs())} KITTI leaf configs)")


if __name__ == "__main__":
    main()
