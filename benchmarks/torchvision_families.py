"""The six torchvision detection families through the detlight CLI: fit / validate / predict, loss at iteration 1 vs
the last one, val bbox_mAP_50 after a short run.

Run:  python benchmarks/torchvision_families.py [--steps 30] [--batch 4] [--families fasterrcnn retinanet ...]
Each family uses ``configs/torchvision/<family>_synthetic.yaml``; the table is printed as markdown. No timing is
compared against a baseline here: this is a does-it-train table, not a speed benchmark.
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
FAMILIES = ("fasterrcnn", "retinanet", "fcos", "ssdlite", "maskrcnn", "keypointrcnn")


def _cli(args: list[str], log: Path) -> tuple[int, float]:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    start = time.perf_counter()
    with log.open("a") as f:
        rc = subprocess.call([sys.executable, "-m", "detlight.cli", *args], stdout=f, stderr=subprocess.STDOUT,
                             env=env, cwd=ROOT)
    return rc, time.perf_counter() - start


def run_family(name: str, steps: int, batch: int, work: Path) -> dict[str, object]:
    source = ROOT / "configs" / "torchvision" / f"{name}_synthetic.yaml"
    config = work / source.name  # the same run, logging every iteration
    config.write_text(source.read_text().replace("interval: 10}", "interval: 1}"))
    run_root = work / name
    log = work / f"{name}.log"
    common = ["--config", str(config), "--trainer.default_root_dir", str(run_root),
              "--trainer.logger.init_args.save_dir", str(run_root), "--data.init_args.samples_per_gpu", str(batch)]
    row: dict[str, object] = {"family": name}
    # one short epoch, so that it ends with a validation on the whole val split (100 images)
    rc, secs = _cli(["fit", *common, "--trainer.limit_train_batches", str(steps), "--trainer.max_epochs", "1"], log)
    row["fit"] = "ok" if rc == 0 else f"rc={rc}"
    row["fit_s"] = round(secs)
    version = sorted((run_root / f"{name}_synthetic").glob("version_*"))
    losses, mAP = [], None
    if version:
        for line in next(version[-1].glob("*.log.json")).read_text().splitlines()[1:]:
            rec = json.loads(line)
            if rec.get("mode") == "train":
                losses.append(rec["loss"])
            if "bbox_mAP_50" in rec:
                mAP = rec["bbox_mAP_50"]
    row["loss_1"] = losses[0] if losses else None
    row[f"loss_{steps}"] = losses[-1] if losses else None
    row["val_bbox_mAP_50"] = mAP
    ckpt = version[-1] / "checkpoints" / "last.ckpt" if version else None
    if ckpt is not None and ckpt.is_file():
        rc, _ = _cli(["validate", *common, "--ckpt_path", str(ckpt)], log)
        row["validate"] = "ok" if rc == 0 else f"rc={rc}"
        rc, _ = _cli(["predict", *common, "--ckpt_path", str(ckpt)], log)
        written = sorted(str(p.relative_to(run_root)) for p in run_root.rglob("predictions/results.*.json"))
        row["predict"] = ("ok: " + ", ".join(Path(w).name for w in written)) if rc == 0 and written else f"rc={rc}"
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=4, help="samples_per_gpu")
    parser.add_argument("--families", nargs="*", default=list(FAMILIES))
    parser.add_argument("--work", default="/tmp/detlight_tv_families")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.families:
        rows.append(run_family(name, args.steps, args.batch, work))
        print(json.dumps(rows[-1]), flush=True)
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for row in rows:
        print("| " + " | ".join(str(row.get(k)) for k in keys) + " |")
    print(f"load average at the end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
