"""mmdet's own Faster R-CNN (RoIAlign served by detlight.openmmlab) trained by ``detlight fit`` on an mmdet config.

Run with the OpenMMLab venv: ``.venv-openmmlab/bin/python -m pytest -q -m openmmlab tests/openmmlab``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import detlight.openmmlab

pytestmark = pytest.mark.openmmlab

mmdet = pytest.importorskip("mmdet")
detlight.openmmlab.install_ops()  # before anything imports mmcv.ops


def test_faster_rcnn_fits_two_iterations_and_evaluates_one_val_step(tmp_path: Path) -> None:
    import torch
    from mmdet.models.detectors import FasterRCNN

    from detlight.api import fit
    from detlight.openmmlab.samples import write_config

    config = write_config(tmp_path / "faster_rcnn_tiny.py", "faster_rcnn", root=tmp_path / "data", num_train=4,
                          num_val=2, image_size=64, samples_per_gpu=2, val_samples_per_gpu=2)
    trainer, module = fit(str(config), overrides={"trainer.default_root_dir": str(tmp_path / "work"),
                                                  "trainer.max_steps": 2, "trainer.enable_progress_bar": False})
    assert isinstance(module.model, FasterRCNN)
    assert trainer.global_step == 2
    last = module.last_outputs
    assert last is not None
    assert {"loss_rpn_cls", "loss_rpn_bbox", "loss_cls", "loss_bbox", "acc", "loss"} <= set(last["log_vars"])
    # mmdet's _parse_losses: the total is the sum of the keys containing "loss" (acc only logged)
    parts = sum(v for k, v in last["log_vars"].items() if "loss" in k and k != "loss")
    assert torch.allclose(last["log_vars"]["loss"], parts)
    assert list(module.eval_results)[:2] == ["bbox_mAP", "bbox_mAP_50"]
    import sys

    assert sys.modules["mmcv.ops.roi_align"].ext_module.roi_align_forward.__module__.startswith("detlight.openmmlab.ops")
