"""Instance masks (and keypoints) from COCO annotations into the batch."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from detlight.data.coco import CocoDataset
from detlight.data.collate import collate
from detlight.data.transforms import LoadKeypoints, LoadMasks, RandomFlip, Resize, polygons_to_mask
from detlight.exceptions import DatasetError


def test_polygon_to_mask_fills_the_polygon():
    mask = polygons_to_mask([[2, 1, 6, 1, 6, 4, 2, 4]], 8, 10)  # a 4x3 rectangle at x 2..6, y 1..4
    ys, xs = np.nonzero(mask)
    assert mask.dtype == np.uint8 and mask.shape == (8, 10)
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (2, 5, 1, 3)
    assert mask.sum() == 12


def test_rle_and_polygon_give_the_same_mask():
    from faster_coco_eval.core import mask as mask_utils

    poly = polygons_to_mask([[2, 1, 6, 1, 6, 4, 2, 4]], 8, 10)
    rle = mask_utils.encode(np.asfortranarray(poly))
    rle["counts"] = rle["counts"].decode()
    assert np.array_equal(polygons_to_mask(rle, 8, 10), poly)


def _results(segmentation):
    return {"img": torch.zeros(3, 8, 10, dtype=torch.uint8), "gt_bboxes": torch.tensor([[2.0, 1.0, 6.0, 4.0]]),
            "bbox_fields": ["gt_bboxes"], "ori_filename": "a.png",
            "ann_info": {"masks": [segmentation], "keypoints": [[2, 1, 2, 6, 4, 2]], "ann_file": "x.json"}}


def test_mask_follows_resize_and_flip():
    out = LoadMasks()(_results([[2, 1, 6, 1, 6, 4, 2, 4]]))
    assert out["gt_masks"].shape == (1, 8, 10) and out["mask_fields"] == ["gt_masks"]
    out = Resize((20, 16), keep_ratio=False)(out)
    mask = out["gt_masks"][0]
    assert mask.shape == (16, 20)
    ys, xs = torch.nonzero(mask, as_tuple=True)
    assert (int(xs.min()), int(xs.max()) + 1, int(ys.min()), int(ys.max()) + 1) == (4, 12, 2, 8)  # box x2
    out = RandomFlip(flip_ratio=1.0)(out)
    ys, xs = torch.nonzero(out["gt_masks"][0], as_tuple=True)
    assert (int(xs.min()), int(xs.max()) + 1) == (20 - 12, 20 - 4)
    assert out["gt_bboxes"].tolist() == [[8.0, 2.0, 16.0, 8.0]]  # the box agrees with the mask


def test_missing_segmentation_names_the_file_and_the_fix():
    with pytest.raises(DatasetError, match=r"x.json.*a.png.*no `segmentation`.*with_mask"):
        LoadMasks()(_results(None))


def test_keypoints_are_read_and_scaled():
    out = LoadKeypoints()(_results(None))
    assert out["gt_keypoints"].tolist() == [[[2.0, 1.0, 2.0], [6.0, 4.0, 2.0]]]
    out = Resize((20, 16), keep_ratio=False)(out)
    assert out["gt_keypoints"][0, :, :2].tolist() == [[4.0, 2.0], [12.0, 8.0]]


def test_synthetic_annotations_carry_masks_that_match_their_boxes(tiny_synthetic):
    tiny_coco = tiny_synthetic[1]
    ds = CocoDataset(tiny_coco.train_ann, tiny_coco.train_img_prefix, pipeline=[_load(), LoadMasks()])
    sample = ds[0]
    assert sample["gt_masks"].shape[0] == len(sample["gt_bboxes"]) > 0
    for mask, box in zip(sample["gt_masks"], sample["gt_bboxes"]):
        ys, xs = torch.nonzero(mask, as_tuple=True)
        got = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
        assert max(abs(a - b) for a, b in zip(got, box.tolist())) <= 1.0
    batch = collate([sample, ds[1]])
    assert len(batch["gt_masks"]) == 2 and batch["gt_masks"][0].dtype == torch.uint8
    assert json.loads(tiny_coco.train_ann.read_text())["annotations"][0]["segmentation"]


def _load():
    from detlight.data.transforms import LoadImage

    return LoadImage()
