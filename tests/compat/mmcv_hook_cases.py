"""Scenarios that run real mmcv-1.x hook files under MMCVHooks; shared by the shim suite and the real-mmcv suite.

Each ``case_*`` takes ``tmp_path`` and asserts; ``test_mmcv_shim.py`` runs them with detlight's mmcv shim (default
suite, no mmcv installed) and ``test_real_mmcv.py`` with mmcv 1.7.2 installed (``make test-mmcv``). The hook files are
mmdet 2.28.2's own (``fixtures/mmdet_hooks``) and mmcv's own classes, imported through ``mmcv.runner``.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from toy_run import NullEvaluator, make_trainer

from detlight.callbacks.check_invalid_loss import CheckInvalidLoss
from detlight.callbacks.checkpoint import MMCheckpoint
from detlight.callbacks.ema import EMA
from detlight.callbacks.lr_updater import LrUpdater
from detlight.callbacks.mmcv_hooks import MMCVHooks
from detlight.exceptions import ConfigError, HookError
from detlight.module import DetectorModule

FIXTURES = Path(__file__).parent / "fixtures"
PKG = "mmdet_hooks"


# ---------------------------------------------------------------------------------------------------- toy run
class Head(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.use_l1 = False


class Detector(nn.Module):
    """What mmdet's hooks touch: ``set_epoch``, ``bbox_head.use_l1``, a BatchNorm (SyncNormHook)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 1)
        self.bn = nn.BatchNorm1d(3)
        self.bbox_head = Head()
        self.epochs: list[int] = []

    def set_epoch(self, epoch: int) -> None:
        self.epochs.append(epoch)

    def forward_train(self, img: torch.Tensor, img_metas: list[dict], **kwargs: Any) -> dict[str, torch.Tensor]:
        pred = self.fc(self.bn(img.mean(dim=(2, 3))))
        return {"loss_cls": (pred**2).mean()}

    def simple_test(self, img: torch.Tensor, img_metas: list[dict], rescale: bool = True) -> list[dict]:
        return [{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)}
                for _ in img_metas]


class Module(DetectorModule):
    def __init__(self) -> None:
        super().__init__(Detector(), evaluator=NullEvaluator())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.model.parameters(), lr=0.1, momentum=0.9)


class ToyDataset(Dataset):
    """mmdet's MultiImageMixDataset hooks: ``update_skip_type_keys`` (YOLOX) and ``update_dynamic_scale``."""

    def __init__(self, n: int) -> None:
        self.n, self.skip_type_keys, self.dynamic_scale = n, None, None

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i

    def update_skip_type_keys(self, keys: Any) -> None:
        self.skip_type_keys = keys

    def update_dynamic_scale(self, scale: Any) -> None:
        self.dynamic_scale = scale


def _collate(items: list[int]) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(items[0])
    return {"img": torch.randn(len(items), 3, 4, 4, generator=gen), "img_metas": [{"idx": i} for i in items],
            "gt_bboxes": [torch.zeros(0, 4) for _ in items], "gt_labels": [torch.zeros(0, dtype=torch.long)
                                                                           for _ in items]}


def loader(batches: int = 2) -> DataLoader:
    return DataLoader(ToyDataset(batches * 2), batch_size=2, collate_fn=_collate)


def fit(tmp_path: Path, hooks: list[Any], extra: Sequence[pl.Callback] = (), max_epochs: int = 2,
        ckpt_path: str | None = None, **trainer_kwargs: Any) -> tuple[pl.Trainer, Module, MMCVHooks]:
    cb = MMCVHooks(hooks=hooks)
    module = Module()
    trainer = make_trainer(tmp_path, [*extra, cb], max_epochs=max_epochs, **trainer_kwargs)
    trainer.fit(module, train_dataloaders=loader(), ckpt_path=ckpt_path)
    return trainer, module, cb


def hook_cls(module: str, name: str) -> type:
    """A class from an mmdet fixture file (imported through mmcv.runner, real or shim) or from mmcv itself."""
    if module.startswith("mmcv"):
        return getattr(importlib.import_module(module), name)
    return getattr(importlib.import_module(f"{PKG}.{module}"), name)


# ---------------------------------------------------------------------------------------------------- cases
def case_checkloss_replaces_its_counterpart(tmp_path: Path) -> None:
    cls = hook_cls("checkloss_hook", "CheckInvalidLossHook")
    trainer, _, cb = fit(tmp_path, [cls(interval=1)], extra=[CheckInvalidLoss()])
    assert not any(isinstance(c, CheckInvalidLoss) for c in trainer.callbacks)
    assert cb.runner.iter == 4


def case_checkloss_failure_names_hook_and_stage(tmp_path: Path) -> None:
    cls = hook_cls("checkloss_hook", "CheckInvalidLossHook")

    class NanModule(Module):
        def training_step(self, batch: Any, batch_idx: int) -> Any:
            out = super().training_step(batch, batch_idx)
            self.last_outputs = dict(self.last_outputs or {}, loss=torch.tensor(float("nan")))
            return out

    cb = MMCVHooks(hooks=[cls(interval=1)])
    trainer = make_trainer(tmp_path, [cb], max_epochs=1)
    with pytest.raises(HookError, match=r"`CheckInvalidLossHook` raised in `after_train_iter`.*AssertionError"):
        trainer.fit(NanModule(), train_dataloaders=loader())


def case_set_epoch_info(tmp_path: Path) -> None:
    _, module, _ = fit(tmp_path, [hook_cls("set_epoch_info_hook", "SetEpochInfoHook")()], max_epochs=3)
    assert module.model.epochs == [0, 1, 2]


def case_yolox_mode_switch(tmp_path: Path) -> None:
    hook = hook_cls("yolox_mode_switch_hook", "YOLOXModeSwitchHook")(num_last_epochs=1)
    trainer, module, _ = fit(tmp_path, [hook], max_epochs=3)
    assert module.model.bbox_head.use_l1 is True
    assert trainer.train_dataloader.dataset.skip_type_keys == ("Mosaic", "RandomAffine", "MixUp")


def case_sync_norm(tmp_path: Path) -> None:
    hook = hook_cls("sync_norm_hook", "SyncNormHook")(num_last_epochs=1, interval=5)
    fit(tmp_path, [hook], max_epochs=3)
    assert hook.interval == 1  # switched at epoch max_epochs - num_last_epochs, as mmdet does


def case_sync_random_size(tmp_path: Path) -> None:
    hook = hook_cls("sync_random_size_hook", "SyncRandomSizeHook")(device="cpu")
    trainer, _, _ = fit(tmp_path, [hook], max_epochs=1)
    height, width = trainer.train_dataloader.dataset.dynamic_scale
    assert height % 32 == 0 and 14 * 32 <= height <= 26 * 32 and width == height


def case_ema_replaces_detlight_ema(tmp_path: Path) -> None:
    cls = hook_cls("ema", "ExpMomentumEMAHook")
    spec = {"class_path": f"{cls.__module__}.ExpMomentumEMAHook", "momentum": 0.001, "priority": 49}
    trainer, module, _ = fit(tmp_path, [spec], extra=[EMA()], max_epochs=1)
    assert not any(isinstance(c, EMA) for c in trainer.callbacks)
    assert "ema_fc_weight" in dict(module.model.named_buffers())


def case_yolox_lr_replaces_lr_updater(tmp_path: Path) -> None:
    hook = hook_cls("yolox_lrupdater_hook", "YOLOXLrUpdaterHook")(
        num_last_epochs=1, min_lr_ratio=0.05, warmup="exp", warmup_iters=1, warmup_ratio=1, warmup_by_epoch=True,
        by_epoch=False)
    trainer, _, _ = fit(tmp_path, [hook], extra=[LrUpdater(policy="step", step=[1])], max_epochs=3)
    assert not any(isinstance(c, LrUpdater) for c in trainer.callbacks)
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.1 * 0.05)  # YOLOX's fixed last-epochs lr


def case_memory_profiler(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    fake = types.ModuleType("memory_profiler")
    fake.memory_usage = lambda: [123.0]  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "memory_profiler", fake)
    hook = hook_cls("memory_profiler_hook", "MemoryProfilerHook")(interval=2)
    with caplog.at_level(logging.INFO, logger="detlight"):
        fit(tmp_path, [hook], max_epochs=1)
    assert sum("current_process_memory: 123 MB" in r.getMessage() for r in caplog.records) == 1


def case_checkpoint_hook(tmp_path: Path) -> None:
    """mmcv's CheckpointHook through runner.save_checkpoint: mmcv-readable .pth, resumable .ckpt, hook_msgs."""
    cls = hook_cls("mmcv.runner", "CheckpointHook")
    trainer, module, cb = fit(tmp_path, [cls(interval=1, max_keep_ckpts=1)], extra=[MMCheckpoint(interval=1)],
                              enable_checkpointing=True)
    assert not any(isinstance(c, MMCheckpoint) for c in trainer.callbacks)
    assert sorted(p.name for p in tmp_path.glob("*.pth")) == ["epoch_2.pth", "latest.pth"]  # epoch_1.pth pruned
    assert cb.runner.meta["hook_msgs"]["last_ckpt"] == os.path.join(str(tmp_path), "epoch_2.pth")
    saved = torch.load(tmp_path / "epoch_2.pth", weights_only=True)
    assert saved["meta"]["epoch"] == 2 and saved["meta"]["iter"] == 4
    assert saved["meta"]["hook_msgs"]["last_ckpt"] == os.path.join(str(tmp_path), "epoch_1.pth")
    assert set(saved["state_dict"]) == set(module.model.state_dict()) and "optimizer" in saved
    assert torch.equal(saved["state_dict"]["fc.weight"], module.model.fc.weight.detach())
    # The .ckpt beside it resumes in detlight: the third epoch runs, the first two do not.
    trainer2, module2, cb2 = fit(tmp_path / "resume", [cls(interval=1)], max_epochs=3,
                                 ckpt_path=str(tmp_path / "epoch_2.ckpt"))
    assert cb2.runner.epoch == 3 and cb2.runner.iter == 4 + 2  # 4 restored batches + 2 new
    assert cb2.runner.meta["hook_msgs"]["last_ckpt"].endswith("epoch_3.pth")


def case_optimizer_hook_refused(tmp_path: Path) -> None:
    base = hook_cls("mmcv.runner", "OptimizerHook")

    class ClipAndLog(base):  # type: ignore[misc, valid-type]
        pass

    with pytest.raises(HookError, match=r"ClipAndLog.*OptimizerHook.*configure_gradient_clipping.*"
                                        r"on_before_optimizer_step"):
        MMCVHooks(hooks=[ClipAndLog(grad_clip={"max_norm": 1.0})])


def case_two_lr_updaters_refused(tmp_path: Path) -> None:
    step = hook_cls("mmcv.runner", "StepLrUpdaterHook")
    yolox = hook_cls("yolox_lrupdater_hook", "YOLOXLrUpdaterHook")
    with pytest.raises(HookError, match=r"both replace detlight\.callbacks\.LrUpdater"):
        MMCVHooks(hooks=[step(step=[1]), yolox(num_last_epochs=1, min_lr_ratio=0.05)])


def case_registered_type_name(tmp_path: Path) -> None:
    hook_cls("checkloss_hook", "CheckInvalidLossHook")  # importing the file runs @HOOKS.register_module()
    cb = MMCVHooks(hooks=[{"type": "CheckInvalidLossHook", "interval": 3}])
    assert type(cb.hooks[0]).__name__ == "CheckInvalidLossHook" and cb.hooks[0].interval == 3


def case_logger_subclass_reads_output(tmp_path: Path) -> None:
    base = hook_cls("mmcv.runner", "LoggerHook")
    seen: list[dict[str, float]] = []

    class Capture(base):  # type: ignore[misc, valid-type]
        def log(self, runner: Any) -> None:
            seen.append(dict(runner.log_buffer.output))

    fit(tmp_path, [Capture(interval=2)], max_epochs=1)
    assert len(seen) == 1 and set(seen[0]) == {"loss_cls", "loss"}


def case_hook_raising_keeps_checkpoints(tmp_path: Path) -> None:
    base = hook_cls("mmcv.runner", "Hook")

    class Fails(base):  # type: ignore[misc, valid-type]
        def after_train_epoch(self, runner: Any) -> None:
            if runner.epoch == 1:
                raise KeyError("score")

    cb = MMCVHooks(hooks=[Fails()])
    trainer = make_trainer(tmp_path, [MMCheckpoint(interval=1), cb], max_epochs=3, enable_checkpointing=True)
    with pytest.raises(HookError, match=r"`Fails` raised in `after_train_epoch`.*KeyError: 'score'"):
        trainer.fit(Module(), train_dataloaders=loader())
    assert torch.load(tmp_path / "epoch_1.ckpt", weights_only=False)["epoch"] == 0


def case_loader_writes_reach_the_loader(tmp_path: Path) -> None:
    base = hook_cls("mmcv.runner", "Hook")

    class Writes(base):  # type: ignore[misc, valid-type]
        def before_train_epoch(self, runner: Any) -> None:
            runner.data_loader._iterator = None
            runner.data_loader.custom_flag = runner.epoch

    trainer, _, _ = fit(tmp_path, [Writes()], max_epochs=2)
    assert trainer.train_dataloader.custom_flag == 1

    class Resizes(base):  # type: ignore[misc, valid-type]
        def before_train_epoch(self, runner: Any) -> None:
            runner.data_loader.batch_size = 8

    with pytest.raises(HookError, match=r"runner\.data_loader\.batch_size.*reload_dataloaders_every_n_epochs"):
        fit(tmp_path / "b", [Resizes()], max_epochs=1)


def case_bad_input(tmp_path: Path) -> None:
    class NoStages:
        def __init__(self) -> None:
            self.interval = 1

    with pytest.raises(HookError, match=r"NoStages.*none of the stage methods"):
        MMCVHooks(hooks=[NoStages()])
    cls = hook_cls("checkloss_hook", "CheckInvalidLossHook")
    with pytest.raises(ConfigError, match=r"Unknown hook priority 'URGENT'.*VERY_LOW"):
        MMCVHooks(hooks=[{"class_path": f"{cls.__module__}.CheckInvalidLossHook", "priority": "URGENT"}])


CASES = {name: fn for name, fn in globals().items() if name.startswith("case_")}
