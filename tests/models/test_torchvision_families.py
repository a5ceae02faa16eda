"""Every torchvision detection family through detlight's contract: first train step and eval step on tiny inputs."""

from __future__ import annotations

import pytest
import torch

from detlight.exceptions import ModelContractError
from detlight.models.contract import DetectorAdapter
from detlight.models.torchvision_factory import torchvision_detector

SMALL = {"min_size": 64, "max_size": 64}
RCNN = {**SMALL, "rpn_pre_nms_top_n_train": 100, "rpn_pre_nms_top_n_test": 100, "rpn_post_nms_top_n_train": 50,
        "rpn_post_nms_top_n_test": 50, "box_batch_size_per_image": 32, "box_detections_per_img": 8}
DENSE = {**SMALL, "detections_per_img": 8, "topk_candidates": 50}
# builder, options that keep it small on CPU, expected family, background shift. ResNet-50 families are built around
# a ResNet-18 (the same family class, see `backbone`) to keep the CPU test short.
FAMILIES = [
    ("fasterrcnn_mobilenet_v3_large_320_fpn", RCNN, "FasterRCNN", 1),
    ("retinanet_resnet50_fpn", DENSE, "RetinaNet", 0),
    ("fcos_resnet50_fpn", DENSE, "FCOS", 0),
    ("ssdlite320_mobilenet_v3_large", {}, "SSD", 1),  # SSDLite always runs at 320x320
    ("maskrcnn_resnet50_fpn", RCNN, "MaskRCNN", 1),
    ("keypointrcnn_resnet50_fpn", {**RCNN, "num_keypoints": 3}, "KeypointRCNN", 1),
]


def _batch(num_classes: int = 3) -> dict:
    boxes = [torch.tensor([[4.0, 6.0, 30.0, 40.0], [34.0, 10.0, 60.0, 28.0]]), torch.zeros((0, 4))]
    labels = [torch.tensor([0, num_classes - 1]), torch.zeros((0,), dtype=torch.int64)]
    masks = [torch.zeros(2, 64, 64, dtype=torch.uint8), torch.zeros(0, 64, 64, dtype=torch.uint8)]
    masks[0][0, 6:40, 4:30] = 1
    masks[0][1, 10:28, 34:60] = 1
    keypoints = [torch.tensor([[[10.0, 10.0, 2], [20.0, 20.0, 2], [25.0, 30.0, 1]],
                               [[40.0, 12.0, 2], [50.0, 20.0, 2], [55.0, 25.0, 2]]]), torch.zeros((0, 3, 3))]
    meta = {"img_shape": (64, 64, 3), "ori_shape": (64, 64, 3), "scale_factor": [1.0] * 4, "flip": False,
            "image_id": 1}
    return {"img": torch.rand(2, 3, 64, 64), "img_metas": [dict(meta), dict(meta, image_id=2)], "gt_bboxes": boxes,
            "gt_labels": labels, "gt_masks": masks, "gt_keypoints": keypoints}


@pytest.mark.parametrize(("builder", "options", "family", "offset"), FAMILIES, ids=[f[2] for f in FAMILIES])
def test_family_first_train_step_and_eval_step(builder, options, family, offset):
    torch.manual_seed(0)
    backbone = "resnet18" if "resnet50" in builder else None
    model = torchvision_detector(builder, num_classes=3, options=options, backbone=backbone)
    adapter = DetectorAdapter(model)
    assert adapter.family is not None and adapter.family.name == family
    assert adapter.label_offset == offset and adapter.num_classes() == 3
    model.train()
    out = adapter.losses(_batch())
    assert out["loss"].requires_grad and torch.isfinite(out["loss"])
    # every key torchvision returns is a loss: the total is their sum
    parts = [v for k, v in out["log_vars"].items() if k != "loss"]
    assert float(out["loss"].detach()) == pytest.approx(float(sum(parts)), rel=1e-5)
    out["loss"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    model.eval()
    with torch.no_grad():
        dets = adapter.predict(_batch())
    assert len(dets) == 2
    for det in dets:
        assert det["boxes"].shape[1] == 4 and det["labels"].dtype == torch.int64
        assert ((det["labels"] >= 0) & (det["labels"] < 3)).all()
        if family == "MaskRCNN":
            assert det["masks"].dtype == torch.bool and det["masks"].shape[1:] == (64, 64)


def test_masks_family_without_masks_names_the_key_and_the_fix():
    model = torchvision_detector("maskrcnn_resnet50_fpn", num_classes=3, options=RCNN, backbone="resnet18")
    batch = _batch()
    del batch["gt_masks"]
    with pytest.raises(ModelContractError, match=r"MaskRCNN.*gt_masks.*pipeline.with_mask: true"):
        DetectorAdapter(model).losses(batch)
