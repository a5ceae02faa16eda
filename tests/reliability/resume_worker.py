"""A tiny, deterministic training run for the kill/resume tests (run as a script in its own process).

Usage: ``python resume_worker.py ROOT OUT [--kill-at N] [--kill-in save|step|after_step|crash] [--sigterm]
[--resume] [--kind 2d|3d] [--workers W] [--limit N]``.
2D: trains 3 epochs of 6 batches over a 12-image synthetic set (random flip -> numpy RNG, dropout -> torch RNG, SGD with
momentum, a warm-up + step LR schedule, EMA). 3D: a tiny PointPillars, 3 epochs of 3 batches over 6 synthetic LiDAR
frames with mmdet3d's global augmentation (numpy RNG), AdamW. Both checkpoint after every batch and write the final
weights to OUT. ``--workers`` sets ``workers_per_gpu`` (the random transforms then run in worker processes).
``--limit`` sets ``limit_train_batches`` (an int, or a fraction with a dot) and adds an mmcv-style epoch-end
checkpoint (``MMCheckpoint(interval=1)``), so a kill right after an epoch resumes from a state saved at its end.

``python resume_worker.py --jobs JSON`` runs each argument list of the JSON list in a child forked from this process,
in parallel, so the imports (most of a run's time) are paid once; each child's output goes to ``ROOT/output.txt``
and the children's exit codes (negative: killed by that signal) are printed as a JSON list.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn

from detlight.callbacks.ema import EMA
from detlight.callbacks.lr_updater import LrUpdater
from detlight.callbacks.preemption import Preemption
from detlight.checkpoint_io import AtomicCheckpointIO
from detlight.data.datamodule import DetDataModule
from detlight.data.synthetic import SyntheticCocoSpec
from detlight.data.transforms import PipelineConfig
from detlight.module import DetectorModule
from detlight.resume import resolve_ckpt_path


class TinyNet(nn.Module):
    """mmdet contract; the loss depends on the image (so order and flips matter) and on dropout."""

    def __init__(self, num_classes: int = 2) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.conv = nn.Conv2d(3, 4, 3, stride=4)
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(4, 2)

    def _feat(self, img: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(self.conv(img).relu().mean(dim=(2, 3))))

    def forward_train(self, img: torch.Tensor, img_metas: list[dict], gt_bboxes: list[torch.Tensor],
                      gt_labels: list[torch.Tensor], **kwargs: Any) -> dict[str, torch.Tensor]:
        target = torch.stack([b[:, 0].mean() / 32 if len(b) else b.new_zeros(()) for b in gt_bboxes])
        feat = self._feat(img)
        return {"loss_a": (feat[:, 0] - target).pow(2).mean(), "loss_b": feat[:, 1].pow(2).mean() * 0.1}

    def simple_test(self, img: torch.Tensor, img_metas: list[dict], rescale: bool = True) -> list[dict]:
        scores = self._feat(img).sigmoid()[:, 0]
        return [{"boxes": torch.tensor([[0.0, 0.0, 8.0, 8.0]]), "scores": s.reshape(1),
                 "labels": torch.zeros(1, dtype=torch.int64)} for s in scores]


class Progress(pl.Callback):
    """Writes the global batch index to ``path`` after each batch, ``saving`` when a preemption save starts, and
    sleeps ``pause`` seconds per batch / ``save_pause`` in that save (so a test can signal at a known point)."""

    def __init__(self, path: str, pause: float, save_pause: float) -> None:
        self.path, self.pause, self.save_pause = path, pause, save_pause

    def _write(self, text: str) -> None:
        with open(self.path + ".tmp", "w") as f:
            f.write(text)
        os.replace(self.path + ".tmp", self.path)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._write(str(trainer.fit_loop.epoch_loop.total_batch_idx))
        time.sleep(self.pause)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        if trainer.received_sigterm:
            self._write("saving")
            time.sleep(self.save_pause)


class Crash(BaseException):
    """An in-process stand-in for a hard kill (raised through Lightning, no checkpoint on the way out)."""


class Killer(pl.Callback):
    """SIGKILLs (or SIGTERMs) this process at 0-based global batch ``at``: before the optimizer step (``step``), after
    it but before that batch's checkpoint (``after_step``; put this callback first), or inside the save."""

    def __init__(self, at: int, where: str, sig: int) -> None:
        self.at, self.where, self.sig = at, where, sig

    def _due(self, trainer: pl.Trainer) -> bool:
        return trainer.fit_loop.epoch_loop.total_batch_idx == self.at

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any) -> None:
        if self.where == "step" and self._due(trainer):
            os.kill(os.getpid(), self.sig)
        if self.where == "crash" and self._due(trainer):
            raise Crash(f"crashed at batch {self.at}")

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.where == "after_step" and self._due(trainer):
            os.kill(os.getpid(), self.sig)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        if self.where == "save" and self._due(trainer):
            torch.save = _dying_save(self.sig)  # the next write dies after half the bytes


def _dying_save(sig: int) -> Any:
    real = torch.save

    def save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        import io

        buf = io.BytesIO()
        real(obj, buf, *args, **kwargs)
        data = buf.getvalue()
        f.write(data[: len(data) // 2])
        f.flush()
        os.kill(os.getpid(), sig)

    return save


def build_2d(root: str, workers: int) -> tuple[pl.LightningDataModule, DetectorModule]:
    data = DetDataModule(synthetic=SyntheticCocoSpec(root=os.path.join(root, "data"), num_train=12, num_val=2,
                                                     image_size=32, min_size=6, max_size=16, max_objects=2, num_classes=2,
                                                     empty_ratio=0.0),
                         pipeline=PipelineConfig(img_scale=(32, 32)), samples_per_gpu=2, workers_per_gpu=workers,
                         val_samples_per_gpu=2)
    module = DetectorModule(TinyNet(), optimizer={"type": "SGD", "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-3})
    return data, module


def build_3d(root: str, workers: int) -> tuple[pl.LightningDataModule, DetectorModule]:
    from detlight.data.datamodule3d import Det3DDataModule
    from detlight.data.kitti import Augment3D
    from detlight.data.synthetic_lidar import SyntheticLidarSpec
    from detlight.models.pointpillars import PointPillars

    spec = SyntheticLidarSpec(num_train=6, num_val=2, seed=7, objects_per_scene=(2, 4), clutter_per_scene=(0, 1))
    data = Det3DDataModule(synthetic=spec, cache_dir=os.path.join(root, "data3d"), samples_per_gpu=2,
                           val_samples_per_gpu=2, workers_per_gpu=workers,
                           augment=Augment3D(object_noise=False, shuffle=True))
    model = PointPillars(pillar_channels=8, backbone_channels=[8, 8], backbone_layers=[0, 0], neck_channels=[8, 8],
                         head_channels=8, voxel_size=[0.64, 0.64, 4.0], norm_momentum=0.1)
    from detlight.metrics.center_distance import CenterDistanceMAP

    module = DetectorModule(model, optimizer={"type": "AdamW", "lr": 0.001, "weight_decay": 0.01},
                            evaluator=CenterDistanceMAP(class_names=list(data.classes)))
    return data, module


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("root")
    p.add_argument("out")
    p.add_argument("--kill-at", type=int, default=-1)
    p.add_argument("--kill-in", default="step")
    p.add_argument("--sigterm", action="store_true")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--kind", choices=("2d", "3d"), default="2d")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--limit", default="", help="limit_train_batches (int, or float with a dot)")
    p.add_argument("--progress", default="")
    p.add_argument("--pause", type=float, default=0.0)
    p.add_argument("--save-pause", type=float, default=0.0)
    p.add_argument("--exit-pause", type=float, default=0.0, help="after a preempted fit: write `exiting`, sleep")
    p.add_argument("--no-ckpt", action="store_true", help="no ModelCheckpoint (only the preemption save)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    pl.seed_everything(0, verbose=False)
    data, module = build_3d(args.root, args.workers) if args.kind == "3d" else build_2d(args.root, args.workers)
    callbacks: list[pl.Callback] = [
        LrUpdater(policy="step", step=[2], warmup="linear", warmup_iters=4, warmup_ratio=0.1),
        EMA(momentum=0.1, warm_up=2),
        Preemption(),
        ModelCheckpoint(dirpath=os.path.join(args.root, "ckpt"), every_n_train_steps=1, save_last=True),
    ]
    if args.no_ckpt:
        callbacks.pop()
    limit: int | float = 1.0
    if args.limit:
        from detlight.callbacks.checkpoint import MMCheckpoint

        limit = float(args.limit) if "." in args.limit else int(args.limit)
        callbacks.append(MMCheckpoint(interval=1))
    if args.progress:
        callbacks.append(Progress(args.progress, args.pause, args.save_pause))
    if args.kill_at >= 0:
        sig = signal.SIGTERM if args.sigterm else signal.SIGKILL
        callbacks.insert(0, Killer(args.kill_at, args.kill_in, sig))
    trainer = pl.Trainer(max_epochs=3, accelerator="cpu", deterministic=True, logger=False, callbacks=callbacks,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         use_distributed_sampler=False, default_root_dir=args.root, log_every_n_steps=1,
                         plugins=[AtomicCheckpointIO()], limit_train_batches=limit)
    ckpt = resolve_ckpt_path("last", trainer) if args.resume else None
    try:
        trainer.fit(module, datamodule=data, ckpt_path=ckpt)
    except SystemExit:
        if args.progress and args.exit_pause:  # a slow shutdown after the preemption save (workers, loggers)
            Progress(args.progress, 0, 0)._write("exiting")
            time.sleep(args.exit_pause)
        raise
    torch.save({k: v.clone() for k, v in module.model.state_dict().items()}, args.out)


def _child(argv: list[str]) -> int:
    Path(argv[0]).mkdir(parents=True, exist_ok=True)
    fd = os.open(os.path.join(argv[0], "output.txt"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    try:
        main(argv)
    except SystemExit as exc:  # a preempted fit ends with Lightning's SIGTERMException, a bare SystemExit
        return 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
        return 1
    return 0


def run_forked(jobs: list[list[str]], max_parallel: int = 0) -> list[int]:
    """Run ``main(job)`` for every job in its own forked child (at most ``max_parallel`` at once, 0: all); their exit
    codes in job order."""
    sys.stdout.flush()
    sys.stderr.flush()
    children: dict[int, int] = {}
    codes = [0] * len(jobs)
    pending = list(enumerate(jobs))
    while pending or children:
        while pending and (max_parallel <= 0 or len(children) < max_parallel):
            i, job = pending.pop(0)
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    code = _child(job)
                finally:
                    sys.stdout.flush()
                    sys.stderr.flush()
                    os._exit(code)  # no exit handlers of the parent in the child
            children[pid] = i
        pid, status = os.wait()
        if pid in children:
            codes[children.pop(pid)] = os.waitstatus_to_exitcode(status)
    return codes


if __name__ == "__main__":
    if sys.argv[1:2] == ["--jobs"]:
        print(json.dumps(run_forked(json.loads(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 0)))
    else:
        main(sys.argv[1:])
