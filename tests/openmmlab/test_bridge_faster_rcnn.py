"""mmdet's own Faster / Mask R-CNN (RoIAlign served by detlight.openmmlab) trained by ``detlight fit`` on mmdet configs.

Run with the OpenMMLab venv: ``.venv-openmmlab/bin/python -m pytest -q -m openmmlab tests/openmmlab``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import detlight.openmmlab

pytestmark = pytest.mark.openmmlab

mmdet = pytest.importorskip("mmdet")
detlight.openmmlab.install_ops()  # before anything imports mmcv.ops


@pytest.mark.parametrize("family", ["faster_rcnn", "mask_rcnn"])
def test_two_stage_fits_two_iterations_and_evaluates_one_val_step(tmp_path: Path, family: str) -> None:
    import torch
    from mmdet.models.detectors import FasterRCNN, MaskRCNN

    from detlight.api import fit
    from detlight.openmmlab.samples import write_config

    config = write_config(tmp_path / f"{family}_tiny.py", family, root=tmp_path / "data", num_train=4, num_val=2,
                          image_size=64, samples_per_gpu=2, val_samples_per_gpu=2)
    trainer, module = fit(str(config), overrides={"trainer.default_root_dir": str(tmp_path / "work"),
                                                  "trainer.max_steps": 2, "trainer.enable_progress_bar": False})
    assert type(module.model) is {"faster_rcnn": FasterRCNN, "mask_rcnn": MaskRCNN}[family]
    assert trainer.global_step == 2
    last = module.last_outputs
    assert last is not None
    expected = {"loss_rpn_cls", "loss_rpn_bbox", "loss_cls", "loss_bbox", "acc", "loss"}
    if family == "mask_rcnn":
        expected.add("loss_mask")
    assert expected <= set(last["log_vars"])
    # mmdet's _parse_losses: the total is the sum of the keys containing "loss" (acc only logged)
    parts = sum(v for k, v in last["log_vars"].items() if "loss" in k and k != "loss")
    assert torch.allclose(last["log_vars"]["loss"], parts)
    # the dataset's own evaluate: masks reached it RLE-encoded, as mmdet's single_gpu_test hands them over
    keys = list(module.eval_results)
    assert keys[:2] == ["bbox_mAP", "bbox_mAP_50"]
    assert ("segm_mAP" in keys) == (family == "mask_rcnn")
    assert sys.modules["mmcv.ops.roi_align"].ext_module.roi_align_forward.__module__.startswith(
        "detlight.openmmlab.ops")
