"""detlight.testing: the boring detector follows the mmdet contract, the data is deterministic, the Trainer is quiet."""

from __future__ import annotations

from pathlib import Path

import torch

from detlight.callbacks import NumClassCheck, SetEpochInfo
from detlight.models.contract import DetectorAdapter
from detlight.testing import (
    BoringDataModule,
    BoringDataset,
    BoringDetector,
    boring_loader,
    boring_module,
    boring_trainer,
)


def test_boring_detector_follows_the_mmdet_contract() -> None:
    batch = BoringDataset(num_batches=1, batch_size=3)[0]
    adapter = DetectorAdapter(BoringDetector())
    assert adapter.kind == "mmdet"
    out = adapter.losses(batch)
    assert set(out["log_vars"]) == {"loss_cls", "acc", "loss"} and out["num_samples"] == 3
    assert out["loss"].requires_grad and out["log_vars"]["loss"] == out["log_vars"]["loss_cls"]
    adapter.model.eval()
    detections = adapter.predict(batch)
    assert len(detections) == 3 and all(d["boxes"].shape == (1, 4) for d in detections)


def test_data_is_deterministic_per_seed_and_in_the_batch_layout() -> None:
    a, b, c = BoringDataset(seed=1), BoringDataset(seed=1), BoringDataset(seed=2)
    assert all(torch.equal(x["img"], y["img"]) for x, y in zip(a, b))
    assert not torch.equal(a[0]["img"], c[0]["img"])
    batch = BoringDataset(batch_size=2, image_size=6, nan_at=1)[1]
    assert batch["img"].shape == (2, 3, 6, 6) and torch.isnan(batch["img"]).sum() == 1
    assert [m["image_id"] for m in batch["img_metas"]] == [2, 3] and len(batch["gt_bboxes"]) == 2
    assert len(boring_loader(3)) == 3


def test_datamodule_loaders_and_classes() -> None:
    dm = BoringDataModule(num_batches=3, val_batches=2, batch_size=2, classes=("x", "y", "z"))
    assert [len(dm.train_dataloader()), len(dm.val_dataloader()), len(dm.test_dataloader())] == [3, 2, 2]
    assert dm.CLASSES == ("x", "y", "z") and dm.train_dataloader().dataset.CLASSES == ("x", "y", "z")
    assert not torch.equal(next(iter(dm.train_dataloader()))["img"], next(iter(dm.val_dataloader()))["img"])


def test_trainer_is_quiet_cpu_limited_and_runs_callbacks(tmp_path: Path) -> None:
    trainer = boring_trainer(tmp_path, [SetEpochInfo(), NumClassCheck()], max_epochs=2, limit_batches=2)
    assert trainer.logger is None and trainer.checkpoint_callback is None and trainer.progress_bar_callback is None
    module = boring_module(num_classes=2)
    before = {k: v.clone() for k, v in module.model.state_dict().items()}
    trainer.fit(module, datamodule=BoringDataModule(num_batches=5))
    assert trainer.global_step == 4 and module.model.epochs_seen == [0, 1]
    assert str(trainer.strategy.root_device) == "cpu" and trainer.default_root_dir == str(tmp_path)
    after = module.model.state_dict()
    assert not torch.equal(before["fc.weight"], after["fc.weight"])
    assert not torch.equal(before["norm.running_mean"], after["norm.running_mean"])
    assert not list(tmp_path.iterdir())  # nothing written: no logger, no checkpoints


def test_trainer_without_root_gets_a_temporary_directory() -> None:
    root = Path(boring_trainer().default_root_dir)
    assert root.is_dir() and root.name.startswith("detlight-test-")
    root.rmdir()
