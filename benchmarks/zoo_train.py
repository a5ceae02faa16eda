"""Train an mmdet zoo config, as shipped, on the synthetic COCO set: loss by iteration window, then val mAP.

Run:  python benchmarks/zoo_train.py --config <mmdet>/.mim/configs/retinanet/retinanet_r18_fpn_1x_coco.py --iters 300

The ``.py`` config goes to ``detlight fit`` unchanged (converted on the fly: its model maps to a torchvision family,
its optimizer, ``optimizer_config``, ``lr_config`` (with warm-up), ``checkpoint_config``, ``log_config`` and
``evaluation`` to detlight's callbacks). Only what a CPU and the synthetic data need is overridden on the command
line, each override printed: the dataset (synthetic 128x128 COCO instead of ``data/coco``), the head's
``num_classes`` (the synthetic set's 4), the model input size (128 instead of 800/1333), and the run length.
This is a does-it-train table, not a speed benchmark: no timing is compared against a baseline.
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


def overrides(iters: int, batch: int, work: Path) -> list[str]:
    """What a CPU and the synthetic set need on top of the zoo config."""
    return [
        "--data.init_args.train=null", "--data.init_args.val=null", "--data.init_args.test=null",  # synthetic COCO
        f"--data.init_args.samples_per_gpu={batch}", "--data.init_args.workers_per_gpu=1",
        "--data.init_args.val_samples_per_gpu=16", "--data.init_args.pipeline.img_scale=[128, 128]",
        "--model.model.init_args.num_classes=4",
        "--model.model.init_args.options.min_size=128", "--model.model.init_args.options.max_size=128",
        f"--trainer.max_steps={iters}", "--trainer.max_epochs=-1", f"--trainer.default_root_dir={work}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="an mmdet 2.x .py config (e.g. from the mmdet wheel)")
    parser.add_argument("--iters", type=int, default=300)
    parser.add_argument("--batch", type=int, default=2, help="samples_per_gpu (the zoo's 1x configs use 2)")
    parser.add_argument("--work", default="/tmp/detlight_zoo_train")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    extra = overrides(args.iters, args.batch, work)
    print("config:", args.config)
    print("overrides:", " ".join(extra))
    log = work / "fit.log"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    start = time.perf_counter()
    with log.open("w") as f:
        rc = subprocess.call([sys.executable, "-m", "detlight.cli", "fit", "--config", args.config, *extra],
                             stdout=f, stderr=subprocess.STDOUT, env=env)
    wall = time.perf_counter() - start
    runs = sorted(work.rglob("*.log.json"), key=lambda p: p.stat().st_mtime)
    if rc != 0 or not runs:
        print(f"fit failed (rc={rc}); see {log}")
        print(log.read_text()[-3000:])
        sys.exit(1)
    # The text/json log's records: each averages the losses over the config's log_config.interval (as mmcv's).
    records = [json.loads(line) for line in runs[-1].read_text().splitlines()[1:]]
    train = [r for r in records if r.get("mode") == "train" and "loss" in r]
    print(f"\nfit: rc {rc}, {wall:.0f} s wall ({args.iters} iterations), log {runs[-1]}\n")
    keys = [k for k in train[0] if k not in ("mode", "epoch", "iter", "data_time", "time", "memory")] if train else []
    print("| epoch | iter | " + " | ".join(keys) + " | s/iter |\n|" + "---|" * (len(keys) + 3))
    for r in train:
        print(f"| {r['epoch']} | {r['iter']} | " + " | ".join(f"{r[k]:.4g}" for k in keys) + f" | {r['time']:.3f} |")
    for r in records:
        if r.get("mode") == "val":
            print("val: " + ", ".join(f"{k} {v:.4f}" for k, v in r.items() if k.startswith("bbox_mAP")))
    print(f"load average at the end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
