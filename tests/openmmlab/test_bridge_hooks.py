"""mmdet's own hooks that need mmdet's model or dataset run unchanged through ``custom_hooks`` on the bridged model.

YOLOX's ``YOLOXModeSwitchHook`` / ``SyncNormHook`` (as in ``yolox_s_8x8_300e_coco.py``) on a narrow YOLOX, and TOOD's ``SetEpochInfoHook``, each from mmdet's shipped config pointed at the synthetic COCO
set by ``benchmarks/openmmlab_zoo.py``'s :func:`adapt` (needs the OpenMMLab venv).

Run: ``.venv-openmmlab/bin/python -m pytest -q -m openmmlab tests/openmmlab/test_bridge_hooks.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from _zoo import zoo_module

import detlight.openmmlab

pytestmark = [pytest.mark.openmmlab, pytest.mark.timeout(1200)]  # builds mmdet models: slow on a loaded host

mmdet = pytest.importorskip("mmdet")
detlight.openmmlab.install_ops()  # before anything imports mmcv.ops


class Record:
    """A Lightning callback recording, at each epoch's first batch, what the hooks changed."""

    def __init__(self) -> None:
        self.epochs: list[dict[str, Any]] = []

    def make(self) -> Any:
        from lightning.pytorch import Callback

        record = self

        class _Cb(Callback):
            def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
                if batch_idx:
                    return
                detector = pl_module.model
                dataset = trainer.datamodule.dataset("train")
                record.epochs.append({
                    "use_l1": getattr(getattr(detector, "bbox_head", None), "use_l1", None),
                    "head_epoch": getattr(getattr(detector, "bbox_head", None), "epoch", None),
                    "skip": getattr(dataset, "_skip_type_keys", None),
                    "dynamic_scale": getattr(dataset, "_dynamic_scale", None),
                    "img_shape": tuple(batch["img"].shape[-2:]),
                })

        return _Cb()


def test_yolox_hooks_switch_mode_through_custom_hooks(tmp_path: Path) -> None:
    from detlight.api import fit

    zoo = zoo_module()
    root = zoo.config_root()
    cfg = zoo.adapt(root / "yolox" / "yolox_s_8x8_300e_coco.py", tmp_path / "data", max_side=64)
    model = cfg["model"]
    model["backbone"]["widen_factor"] = 0.125
    model["neck"].update(in_channels=[32, 64, 128], out_channels=32)
    model["bbox_head"].update(in_channels=32, feat_channels=32)
    model["random_size_range"] = None  # the model's own per-batch resize off: the dataset's scale is what we see
    cfg["runner"] = {"type": "EpochBasedRunner", "max_epochs": 3}
    cfg["lr_config"].update(warmup_iters=1, num_last_epochs=1)
    # yolox_s's hooks with num_last_epochs=1: the mode switches before epoch index 1 (= max_epochs - 1 - 1)
    cfg["custom_hooks"] = [dict(type="YOLOXModeSwitchHook", num_last_epochs=1, priority=48),
                           dict(type="SyncNormHook", num_last_epochs=1, interval=1, priority=48)]
    # SyncRandomSizeHook is left out: mmdet 2.28.2's MultiImageMixDataset has no `update_dynamic_scale` any more (the
    # hook is deprecated there), so it raises AttributeError under mmdet's own runner as it does here
    cfg["evaluation"] = {"interval": 10, "metric": "bbox"}
    config = zoo.write_py(cfg, tmp_path / "yolox_tiny.py")
    record = Record()
    trainer, module = fit(str(config), callbacks=[record.make()], overrides={
        "trainer.default_root_dir": str(tmp_path / "work"), "trainer.limit_train_batches": 2,
        "trainer.limit_val_batches": 0, "trainer.num_sanity_val_steps": 0, "trainer.enable_progress_bar": False})
    assert trainer.global_step == 6 and len(record.epochs) == 3
    first, second, third = record.epochs
    assert first["use_l1"] is False and first["skip"] is None
    assert second["use_l1"] is True and tuple(second["skip"]) == ("Mosaic", "RandomAffine", "MixUp")
    assert first["img_shape"] == second["img_shape"] == (64, 64)
    assert third["use_l1"] is True
    assert module.model.bbox_head.use_l1 is True


def test_tood_set_epoch_info_hook_reaches_the_head(tmp_path: Path) -> None:
    from detlight.api import fit

    zoo = zoo_module()
    cfg = zoo.adapt(zoo.config_root() / "tood" / "tood_r50_fpn_1x_coco.py", tmp_path / "data", max_side=64)
    assert cfg["custom_hooks"] == [{"type": "SetEpochInfoHook"}]  # TOOD's own config, unchanged
    cfg["model"]["backbone"].update(depth=18, norm_eval=False)
    cfg["model"]["neck"]["in_channels"] = [64, 128, 256, 512]
    cfg["model"]["train_cfg"]["initial_epoch"] = 1  # ATSS assigner in epoch 0, task-aligned from epoch 1
    cfg["runner"] = {"type": "EpochBasedRunner", "max_epochs": 2}
    cfg["evaluation"] = {"interval": 10, "metric": "bbox"}
    config = zoo.write_py(cfg, tmp_path / "tood_tiny.py")
    record = Record()
    trainer, module = fit(str(config), callbacks=[record.make()], overrides={
        "trainer.default_root_dir": str(tmp_path / "work"), "trainer.limit_train_batches": 1,
        "trainer.limit_val_batches": 0, "trainer.num_sanity_val_steps": 0, "trainer.enable_progress_bar": False})
    assert [e["head_epoch"] for e in record.epochs] == [0, 1]
    assert trainer.global_step == 2
