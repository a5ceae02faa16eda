"""mmdet's own ``train_detector`` (mmcv ``EpochBasedRunner``) against ``detlight fit`` on the same mmdet config.

Both train the same config on the CPU from seed 0: by default the RetinaNet of :mod:`detlight.openmmlab.samples`
(ResNet-18 + FPN, 64 px synthetic COCO images, SGD, linear warm-up, grad clip 35), or with ``--config`` one of mmdet's
shipped configs as ``benchmarks/openmmlab_zoo.py`` adapts it (synthetic set, sizes scaled, ``init_cfg`` off). The
script prints every logged loss (and accuracy) and the LR side by side per iteration with the largest relative
difference, and the step times with their ratio (detlight / mmdet).

mmdet's side runs as ``tools/train.py`` would on one GPU, but on the CPU: ``cfg.device='cpu'``, ``cfg.gpu_ids=[0]``,
``workers_per_gpu=0``, ``set_random_seed(0, deterministic=True)``. One deliberate change: mmdet's single-process
``GroupSampler`` shuffles with the global numpy RNG, detlight uses ``DistributedGroupSampler``'s seeded order for every
world size (so resumes are exact); for the comparison mmdet's run is given ``DistributedGroupSampler(num_replicas=1,
rank=0, seed=0)`` too, so both see the same batches. And one difference in the global torch RNG stream: torch's
``DataLoader`` (mmdet's) draws its workers' base seed from the global RNG each time an epoch's iterator starts,
detlight's stateful loader from its own seeded generator (so a mid-epoch resume gives the workers the same seeds). Models
that draw from the global RNG in ``forward_train`` (the ``RandomSampler`` of Faster R-CNN's RPN and RoI head) would
then sample other anchors / RoIs; detlight's run gets a callback that makes that one draw at each epoch start, so both
streams are the same and the comparison is step for step.

Needs the OpenMMLab venv (``make openmmlab``)::

    .venv-openmmlab/bin/python benchmarks/openmmlab_parity.py --iters 20
    .venv-openmmlab/bin/python benchmarks/openmmlab_parity.py --config faster_rcnn/faster_rcnn_r50_fpn_1x_coco.py \
        --image-size 128
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _bench import machine_info, markdown_table  # noqa: E402


def run_mmdet(config: Path, work_dir: Path, iters: int) -> list[dict[str, float]]:
    """mmdet's ``train_detector`` (one epoch of ``iters`` iterations); per iteration: losses, lr, time since the last."""
    import detlight.openmmlab

    detlight.openmmlab.install_ops()
    import mmdet.datasets.builder as builder
    from mmcv import Config
    from mmcv.runner import HOOKS, Hook
    from mmdet.apis import set_random_seed, train_detector
    from mmdet.datasets import build_dataset
    from mmdet.datasets.samplers import DistributedGroupSampler
    from mmdet.models import build_detector

    records: list[dict[str, float]] = []

    class ParityRecorder(Hook):
        def __init__(self) -> None:
            self.last = (time.perf_counter(), time.process_time())

        def after_train_iter(self, runner: Any) -> None:
            now = (time.perf_counter(), time.process_time())
            row = {k: float(v) for k, v in runner.outputs["log_vars"].items()}
            row.update(lr=float(runner.current_lr()[0]), time=now[0] - self.last[0], cpu=now[1] - self.last[1])
            self.last = now
            records.append(row)

    if "ParityRecorder" not in HOOKS.module_dict:
        HOOKS.register_module(module=ParityRecorder)
    cfg = Config.fromfile(str(config))
    cfg.device, cfg.gpu_ids, cfg.seed, cfg.work_dir = "cpu", [0], 0, str(work_dir)
    cfg.data.workers_per_gpu = 0
    cfg.custom_hooks = [dict(type="ParityRecorder", priority="LOWEST")]
    builder.GroupSampler = lambda dataset, samples_per_gpu: DistributedGroupSampler(  # type: ignore[assignment]
        dataset, samples_per_gpu, num_replicas=1, rank=0, seed=0)
    set_random_seed(0, deterministic=True)
    model = build_detector(cfg.model, train_cfg=cfg.get("train_cfg"), test_cfg=cfg.get("test_cfg"))
    model.init_weights()
    datasets = [build_dataset(cfg.data.train)]
    model.CLASSES = datasets[0].CLASSES
    train_detector(model, datasets, cfg, distributed=False, validate=False, timestamp="parity", meta={})
    return records


def run_detlight(config: Path, work_dir: Path, iters: int) -> list[dict[str, float]]:
    """``detlight fit`` on the same config for ``iters`` iterations, recorded like :func:`run_mmdet`."""
    import torch
    from lightning.pytorch.callbacks import Callback

    from detlight.api import fit

    records: list[dict[str, float]] = []

    class Recorder(Callback):
        def __init__(self) -> None:
            self.last = (time.perf_counter(), time.process_time())

        def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            now = (time.perf_counter(), time.process_time())
            row = {k: float(v) for k, v in outputs["log_vars"].items()}  # one host copy per iteration, as mmdet
            row.update(lr=float(trainer.optimizers[0].param_groups[0]["lr"]), time=now[0] - self.last[0],
                       cpu=now[1] - self.last[1])
            self.last = now
            records.append(row)

    class LoaderSeedDraw(Callback):
        """The one number mmcv's ``DataLoader`` draws from the global torch RNG when an epoch's iterator starts."""

        def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
            torch.empty((), dtype=torch.int64).random_()

    fit(str(config), overrides={"trainer.default_root_dir": str(work_dir), "trainer.max_steps": iters,
                                "trainer.limit_val_batches": 0, "trainer.enable_progress_bar": False},
        callbacks=[Recorder(), LoaderSeedDraw()])
    return records


def compare(mmdet: list[dict[str, float]], ours: list[dict[str, float]], keys: list[str]) -> tuple[str, float]:
    """The side-by-side table and the largest relative difference over ``keys``."""
    rows, worst = [], 0.0
    for i, (a, b) in enumerate(zip(mmdet, ours)):
        cells: list[Any] = [i + 1]
        for key in keys:
            x, y = a.get(key, float("nan")), b.get(key, float("nan"))
            rel = abs(x - y) / max(abs(x), 1e-12)
            worst = max(worst, rel)
            cells += [f"{x:.6g}", f"{y:.6g}"]
        rows.append(cells)
    headers = ["iter"] + [f"{k} ({who})" for k in keys for who in ("mmdet", "detlight")]
    return markdown_table(headers, rows), worst


def main(argv: list[str] | None = None) -> None:
    """Run both trainings and print the tables."""
    from detlight.openmmlab.samples import write_config

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--config", help="one of mmdet's shipped configs, relative to its configs folder (e.g. "
                        "faster_rcnn/faster_rcnn_r50_fpn_1x_coco.py), pointed at the synthetic set by "
                        "openmmlab_zoo.adapt (init_cfg off, sizes scaled to --image-size); default: the ResNet-18 "
                        "RetinaNet of detlight.openmmlab.samples")
    parser.add_argument("--repeats", type=int, default=1, help="alternate mmdet / detlight runs this many times; "
                        "step times are the median over all of them")
    args = parser.parse_args(argv)
    runs: dict[str, list[list[dict[str, float]]]] = {"mmdet": [], "detlight": []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        # a few synthetic images hold no object and are filtered out of training, as mmdet does: draw some spare
        num_train = args.iters * args.batch * 5 // 4
        if args.config:
            import openmmlab_zoo

            cfg = openmmlab_zoo.adapt(openmmlab_zoo.config_root() / args.config, root / "data", args.image_size,
                                      num_train=num_train, samples_per_gpu=args.batch)
            cfg["log_config"] = {"interval": 50, "hooks": [{"type": "TextLoggerHook"}]}
            config = openmmlab_zoo.write_py(cfg, root / Path(args.config).name)
        else:
            config = write_config(root / "retinanet_parity.py", "retinanet", root=root / "data", num_train=num_train,
                                  num_val=2, image_size=args.image_size, samples_per_gpu=args.batch, max_epochs=1)
        for repeat in range(args.repeats):
            order = (("mmdet", run_mmdet), ("detlight", run_detlight))
            for name, runner in order if repeat % 2 == 0 else order[::-1]:
                runs[name].append(runner(config, root / f"{name}_{repeat}", args.iters)[: args.iters])
    mmdet, ours = runs["mmdet"][0], runs["detlight"][0]
    keys = [k for k in mmdet[0] if k.startswith("loss") or k.startswith("acc")] + ["lr"]
    table, worst = compare(mmdet, ours, keys)
    print(machine_info())
    what = args.config or "RetinaNet (ResNet-18 FPN)"
    print(f"\n{what}, {args.image_size} px, batch {args.batch}, {args.iters} iterations, CPU\n")
    print(table)
    print(f"\nmax relative difference over {', '.join(keys)}: {worst:.3g}")
    skip = min(3, max(len(mmdet) - 1, 0))
    rows = []
    for key, what in (("time", "wall"), ("cpu", "CPU (process time, all threads)")):
        t_mm = statistics.median(r[key] for run in runs["mmdet"] for r in run[skip:])
        t_dl = statistics.median(r[key] for run in runs["detlight"] for r in run[skip:])
        rows.append([what, f"{t_mm:.4f}", f"{t_dl:.4f}", f"{t_dl / t_mm:.2f}"])
    print(f"\nMedian seconds per iteration (iterations {skip + 1}..{args.iters}, {args.repeats} run(s) each, "
          "alternating); on a shared host the CPU time is the steadier figure\n")
    print(markdown_table(["time", "mmdet train_detector", "detlight fit", "ratio detlight / mmdet"], rows))


if __name__ == "__main__":
    main()
