from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from detlight.data.coco import CocoDataset
from detlight.data.collate import collate
from detlight.data.transforms import PipelineConfig

PLAIN = (int, float, str, bool, type(None))


def _assert_plain(value: Any, where: str) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            assert isinstance(k, str), where
            _assert_plain(v, f"{where}.{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _assert_plain(v, f"{where}[{i}]")
    else:
        assert isinstance(value, PLAIN), f"{where} is {type(value).__name__}"


def _sample(h: int, w: int, n: int, image_id: int) -> dict[str, Any]:
    return {
        "img": torch.full((3, h, w), float(image_id)), "image_id": np.int64(image_id), "filename": f"{image_id}.png",
        "ori_shape": (h, w, 3), "img_shape": (h, w, 3), "pad_shape": (h, w, 3),
        "scale_factor": np.array([1.0, 1.0, 1.0, 1.0], dtype=np.float32), "flip": False, "flip_direction": None,
        "img_norm_cfg": {"mean": np.zeros(3), "std": [1.0, 1.0, 1.0], "to_rgb": True},
        "gt_bboxes": np.ones((n, 4)) * 2, "gt_labels": list(range(n)), "gt_bboxes_ignore": torch.zeros(0, 4),
    }


def test_collate_pads_to_the_largest_image_and_keeps_per_image_lists() -> None:
    batch = collate([_sample(64, 32, 2, 1), _sample(32, 96, 0, 2), _sample(32, 32, 5, 3)])
    assert set(batch) == {"img", "img_metas", "gt_bboxes", "gt_labels"}
    assert batch["img"].shape == (3, 3, 64, 96) and batch["img"].dtype == torch.float32
    assert batch["img"][0, :, :64, :32].eq(1).all() and batch["img"][0, :, :, 32:].eq(0).all()
    assert batch["img"][1, :, :32, :].eq(2).all() and batch["img"][1, :, 32:, :].eq(0).all()
    assert [b.shape for b in batch["gt_bboxes"]] == [(2, 4), (0, 4), (5, 4)]
    assert all(b.dtype == torch.float32 for b in batch["gt_bboxes"])
    assert [lab.tolist() for lab in batch["gt_labels"]] == [[0, 1], [], [0, 1, 2, 3, 4]]
    assert all(lab.dtype == torch.int64 for lab in batch["gt_labels"])


def test_metas_hold_plain_python_only() -> None:
    batch = collate([_sample(32, 32, 1, 7), _sample(32, 64, 1, 8)])
    for i, meta in enumerate(batch["img_metas"]):
        _assert_plain(meta, f"img_metas[{i}]")
        assert meta["batch_input_shape"] == (32, 64)
    meta = batch["img_metas"][0]
    assert meta["image_id"] == 7 and type(meta["image_id"]) is int
    assert meta["scale_factor"] == [1.0, 1.0, 1.0, 1.0] and meta["img_norm_cfg"]["mean"] == [0.0, 0.0, 0.0]
    assert "gt_bboxes_ignore" not in meta


def test_missing_annotations_become_empty_tensors() -> None:
    batch = collate([{"img": torch.zeros(3, 8, 8), "image_id": 1}])
    assert batch["gt_bboxes"][0].shape == (0, 4) and batch["gt_labels"][0].shape == (0,)
    assert batch["img_metas"][0]["flip"] is False and batch["img_metas"][0]["flip_direction"] is None


@pytest.mark.parametrize(("samples", "match"), [([], "empty list"), ([{"img": torch.zeros(8, 8)}], r"\[3, h, w\]"),
                                                ([{"img": np.zeros((3, 8, 8))}], "ndarray")])
def test_bad_batches_raise(samples: list[dict[str, Any]], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        collate(samples)


def test_dataset_pipeline_collate_end_to_end(write_coco: Callable[..., Path], coco_dict: dict) -> None:
    coco_dict["images"][1].update(width=64, height=20)
    coco_dict["annotations"][2]["bbox"] = [0, 0, 40, 20]
    ann = write_coco(coco_dict)
    ds = CocoDataset(ann, ann.parent, pipeline=PipelineConfig(img_scale=(128, 128)).build(train=False),
                     test_mode=True)
    batch = collate([ds[i] for i in range(len(ds))])
    assert batch["img"].shape == (3, 3, 96, 128)  # 40x30 -> 128x96, 64x20 -> 128x40 padded to 128x64
    metas = batch["img_metas"]
    assert [m["image_id"] for m in metas] == [1, 2, 3]
    assert metas[1]["ori_shape"] == (20, 64, 3) and metas[1]["img_shape"] == (40, 128, 3)
    assert metas[1]["pad_shape"] == (64, 128, 3) and metas[1]["scale_factor"] == [2.0, 2.0, 2.0, 2.0]
    expected = torch.tensor([[6.4, 9.6, 38.4, 25.6], [64.0, 32.0, 89.6, 57.6]])  # 40x30 -> 128x96 is x3.2
    assert torch.allclose(batch["gt_bboxes"][0], expected)
    assert batch["gt_labels"][0].tolist() == [1, 0]
    for meta in metas:
        _assert_plain(meta, "meta")
