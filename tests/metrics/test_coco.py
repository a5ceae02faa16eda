"""COCO mAP with mmdet names; ground truth mapped back to the original frame; duplicates dropped."""

from __future__ import annotations

import pytest
import torch

from detlight.metrics.coco import MMDET_KEYS, CocoMeanAP


def _batch(image_ids, scale=2.0, flip=False):
    metas, gt_boxes, gt_labels = [], [], []
    for i in image_ids:
        metas.append({"image_id": i, "scale_factor": [scale] * 4, "flip": flip, "ori_shape": (100, 100, 3)})
        box = torch.tensor([[10.0 + i, 10.0, 40.0 + i, 50.0]])  # original frame
        resized = box * scale
        if flip:
            resized[:, [0, 2]] = 100 * scale - resized[:, [2, 0]]
        gt_boxes.append(resized)
        gt_labels.append(torch.tensor([i % 2]))
    return {"img_metas": metas, "gt_bboxes": gt_boxes, "gt_labels": gt_labels}


def _perfect(image_ids):
    return [{"boxes": torch.tensor([[10.0 + i, 10.0, 40.0 + i, 50.0]]), "scores": torch.tensor([0.9]),
             "labels": torch.tensor([i % 2])} for i in image_ids]


@pytest.mark.parametrize("flip", [False, True])
def test_perfect_predictions_score_one_in_the_original_frame(flip):
    metric = CocoMeanAP()
    metric.update(_perfect([1, 2, 3]), _batch([1, 2, 3], flip=flip))
    res = metric.compute()
    assert list(res) == list(MMDET_KEYS.values())
    assert res["bbox_mAP"].item() == pytest.approx(1.0)
    assert res["bbox_mAP_50"].item() == pytest.approx(1.0)


def test_shifted_predictions_lower_the_score():
    metric = CocoMeanAP()
    preds = _perfect([1, 2])
    preds[0]["boxes"] = preds[0]["boxes"] + 25.0  # IoU < 0.5
    metric.update(preds, _batch([1, 2]))
    res = metric.compute()
    assert 0.0 < res["bbox_mAP_50"].item() < 1.0


def test_padding_duplicates_are_dropped_by_image_id():
    once, twice = CocoMeanAP(), CocoMeanAP()
    preds = _perfect([1, 2, 3])
    preds[2]["boxes"] = preds[2]["boxes"] + 25.0  # a miss
    once.update(preds, _batch([1, 2, 3]))
    # the distributed sampler pads with duplicates: image 3 (the miss) seen twice would change AP
    twice.update(preds + [preds[2]], _batch([1, 2, 3, 3]))
    a, b = once.compute(), twice.compute()
    assert twice.num_images == 3
    for key in a:
        assert a[key].item() == pytest.approx(b[key].item())


def test_backends_agree():
    torch.manual_seed(0)
    fast, ref = CocoMeanAP(), CocoMeanAP(backend="pycocotools")
    preds = _perfect(list(range(8)))
    for p in preds:
        p["boxes"] = p["boxes"] + torch.randn(1, 4) * 4
        p["scores"] = torch.rand(1)
    for m in (fast, ref):
        m.update(preds, _batch(list(range(8))))
    a, b = fast.compute(), ref.compute()
    for key in a:
        assert a[key].item() == pytest.approx(b[key].item(), abs=1e-6)


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(ValueError, match="backend"):
        CocoMeanAP(backend="coco")


def test_segm_map_with_masks_equal_to_ground_truth_is_one():
    from detlight.metrics.coco import CocoMeanAP

    metric = CocoMeanAP(iou_types=("bbox", "segm"))
    gt_mask = torch.zeros(1, 20, 20, dtype=torch.uint8)
    gt_mask[0, 2:10, 4:12] = 1
    batch = {"img_metas": [{"image_id": 1, "scale_factor": [1.0] * 4, "ori_shape": (20, 20, 3), "flip": False}],
             "gt_bboxes": [torch.tensor([[4.0, 2.0, 12.0, 10.0]])], "gt_labels": [torch.tensor([0])],
             "gt_masks": [gt_mask]}
    pred = [{"boxes": torch.tensor([[4.0, 2.0, 12.0, 10.0]]), "scores": torch.tensor([0.9]),
             "labels": torch.tensor([0]), "masks": gt_mask.bool()}]
    metric.update(pred, batch)
    out = metric.compute()
    assert float(out["bbox_mAP"]) == 1.0 and float(out["segm_mAP"]) == 1.0 and "segm_mAP_50" in out
