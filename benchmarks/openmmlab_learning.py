"""It learns: mmdet's RetinaNet and mmdet3d's PointPillars trained through the bridge, timed, against their targets.

Run (OpenMMLab venv, a quiet machine: the time is the target):

    .venv-openmmlab/bin/python benchmarks/openmmlab_learning.py [--only retinanet|pointpillars] [--work DIR]

For each shipped config below, the synthetic data is made first (not timed: ``python -m detlight.openmmlab.samples``
/ ``python -m detlight.openmmlab.kitti_infos``), then ``detlight fit --config <config>`` runs as its own process,
exactly as a user types it. The wall time of that process (imports, training, every evaluation) and the final
evaluation's metric, read from the run's mmcv-style ``.log.json`` (mmdet's own ``CocoDataset.evaluate`` /
mmdet3d's ``KittiDataset.evaluate``), are printed in a table with the target of each: ``bbox_mAP_50`` >= 0.5 for
RetinaNet, Car 3D AP (KITTI AP40, moderate, IoU 0.7) >= 0.5 for PointPillars, each in <= 15 min on 2 CPU cores.
The epoch at which the metric first reached the target is printed too. This is a training run, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: name -> (config, data command, metric key of the val records, target, time budget in s)
RUNS = {
    "retinanet": ("configs/openmmlab/retinanet_r18_synthetic.py", ["detlight.openmmlab.samples", "data/synthetic_coco"],
                  "bbox_mAP_50", 0.5, 900.0),
    "pointpillars": ("configs/openmmlab/pointpillars_synthetic_kitti.py",
                     ["detlight.openmmlab.kitti_infos", "data/synthetic_kitti"],
                     "KITTI/Car_3D_AP40_moderate_strict", 0.5, 900.0),
}


def val_records(work: Path) -> list[dict[str, float]]:
    """The ``mode: val`` records of the newest ``.log.json`` under ``work``, in order."""
    logs = sorted(work.rglob("*.log.json"), key=lambda p: p.stat().st_mtime)
    if not logs:
        return []
    rows = [json.loads(line) for line in logs[-1].read_text().splitlines() if line.strip()]
    return [r for r in rows if r.get("mode") == "val"]


def run(name: str, work: Path) -> dict[str, object]:
    config, data, key, target, budget = RUNS[name]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    subprocess.run([sys.executable, "-m", *data], cwd=ROOT, check=True, capture_output=True, env=env)
    out = work / name
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "detlight.cli", "fit", "--config", config,
                           f"--trainer.default_root_dir={out}", "--trainer.enable_progress_bar=false"],
                          cwd=ROOT, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    (work / f"{name}.log").write_text(proc.stdout + proc.stderr)
    records = val_records(out)
    # mmdet3d's KITTI metrics are percentages (0-100); COCO's are fractions
    values = [(int(r.get("epoch", 0)), float(r[key]) / (100.0 if "KITTI" in key else 1.0)) for r in records if key in r]
    final = values[-1][1] if values else float("nan")
    first = next((e for e, v in values if v >= target), None)
    return {"name": name, "rc": proc.returncode, "seconds": seconds, "metric": key, "final": final,
            "target": target, "budget": budget, "first_epoch": first, "epochs": values[-1][0] if values else 0,
            "ok": proc.returncode == 0 and final >= target and seconds <= budget}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(RUNS), help="one of the runs")
    parser.add_argument("--work", default="work_dirs/openmmlab_learning")
    args = parser.parse_args(argv)
    work = (ROOT / args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    rows = [run(name, work) for name in ([args.only] if args.only else RUNS)]
    print("| run | metric | final | target | wall time | budget | epochs | first epoch at target | ok |\n"
          "|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ok = "yes" if r["ok"] else f"NO (rc {r['rc']})"
        print(f"| {r['name']} | {r['metric']} | {r['final']:.3f} | >= {r['target']} | {r['seconds'] / 60:.1f} min | "
              f"{float(r['budget']) / 60:.0f} min | {r['epochs']} | {r['first_epoch']} | "
              f"{ok} |")


if __name__ == "__main__":
    main()
