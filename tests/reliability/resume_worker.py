"""A tiny, deterministic training run for the kill/resume tests (run as a script in its own process).

Usage: ``python resume_worker.py ROOT OUT [--kill-at N] [--kill-in save|step|crash] [--sigterm] [--resume]``.
Trains 3 epochs of 6 batches over a 12-image synthetic set (random flip -> numpy RNG, dropout -> torch RNG, SGD with
momentum, a warm-up + step LR schedule, EMA), checkpoints after every batch, and writes the final weights to OUT.

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
import traceback
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn

from detlight.callbacks.checkpoint import AtomicCheckpointIO
from detlight.callbacks.ema import EMA
from detlight.callbacks.lr_updater import LrUpdater
from detlight.data.datamodule import DetDataModule
from detlight.data.synthetic import SyntheticCocoSpec
from detlight.data.transforms import PipelineConfig
from detlight.module import DetectorModule
from detlight.resume import Preemption, resolve_ckpt_path


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


class Crash(BaseException):
    """An in-process stand-in for a hard kill (raised through Lightning, no checkpoint on the way out)."""


class Killer(pl.Callback):
    """SIGKILLs (or SIGTERMs) this process at 0-based global batch ``at``: inside the step or inside the save."""

    def __init__(self, at: int, where: str, sig: int) -> None:
        self.at, self.where, self.sig = at, where, sig

    def _due(self, trainer: pl.Trainer) -> bool:
        return trainer.fit_loop.epoch_loop.total_batch_idx == self.at

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any) -> None:
        if self.where == "step" and self._due(trainer):
            os.kill(os.getpid(), self.sig)
        if self.where == "crash" and self._due(trainer):
            raise Crash(f"crashed at batch {self.at}")

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


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("root")
    p.add_argument("out")
    p.add_argument("--kill-at", type=int, default=-1)
    p.add_argument("--kill-in", default="step")
    p.add_argument("--sigterm", action="store_true")
    p.add_argument("--resume", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    pl.seed_everything(0, verbose=False)
    data = DetDataModule(synthetic=SyntheticCocoSpec(root=os.path.join(args.root, "data"), num_train=12, num_val=2,
                                                     image_size=32, min_size=6, max_size=16, max_objects=2, num_classes=2,
                                                     empty_ratio=0.0),
                         pipeline=PipelineConfig(img_scale=(32, 32)), samples_per_gpu=2, workers_per_gpu=0,
                         val_samples_per_gpu=2)
    module = DetectorModule(TinyNet(), optimizer={"type": "SGD", "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-3})
    callbacks: list[pl.Callback] = [
        LrUpdater(policy="step", step=[2], warmup="linear", warmup_iters=4, warmup_ratio=0.1),
        EMA(momentum=0.1, warm_up=2),
        Preemption(),
        ModelCheckpoint(dirpath=os.path.join(args.root, "ckpt"), every_n_train_steps=1, save_last=True),
    ]
    if args.kill_at >= 0:
        sig = signal.SIGTERM if args.sigterm else signal.SIGKILL
        callbacks.insert(0, Killer(args.kill_at, args.kill_in, sig))
    trainer = pl.Trainer(max_epochs=3, accelerator="cpu", deterministic=True, logger=False, callbacks=callbacks,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         use_distributed_sampler=False, default_root_dir=args.root, log_every_n_steps=1,
                         plugins=[AtomicCheckpointIO()])
    ckpt = resolve_ckpt_path("last", trainer) if args.resume else None
    trainer.fit(module, datamodule=data, ckpt_path=ckpt)
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


def run_forked(jobs: list[list[str]]) -> list[int]:
    """Run ``main(job)`` for every job in its own forked child, all at once; their exit codes in job order."""
    sys.stdout.flush()
    sys.stderr.flush()
    children = {}
    for i, job in enumerate(jobs):
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
    codes = [0] * len(jobs)
    while children:
        pid, status = os.wait()
        codes[children.pop(pid)] = os.waitstatus_to_exitcode(status)
    return codes


if __name__ == "__main__":
    if sys.argv[1:2] == ["--jobs"]:
        print(json.dumps(run_forked(json.loads(sys.argv[2]))))
    else:
        main(sys.argv[1:])
