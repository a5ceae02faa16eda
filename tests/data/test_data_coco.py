from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from detlight.data.coco import CocoDataset, DatasetError
from detlight.data.transforms import LoadImage

WriteCoco = Callable[..., Path]



def test_labels_follow_category_id_order_and_crowd_is_ignored(write_coco: WriteCoco, coco_dict: dict) -> None:
    ann = write_coco(coco_dict)
    ds = CocoDataset(ann, ann.parent)
    assert ds.CLASSES == ("cat", "dog") and ds.num_classes == 2  # cat has id 3, dog id 7
    assert len(ds) == 2  # train mode drops the image without boxes
    first = ds[0]
    assert first["image_id"] == 1 and first["filename"] == str(ann.parent / "a.png")
    assert first["gt_bboxes"].tolist() == [[2, 3, 12, 8], [20, 10, 28, 18]]
    assert first["gt_labels"].tolist() == [1, 0] and first["gt_labels"].dtype == torch.int64
    second = ds[1]
    assert second["gt_bboxes"].tolist() == [[0, 0, 40, 30]] and second["gt_labels"].tolist() == [0]
    assert second["gt_bboxes_ignore"].tolist() == [[5, 5, 10, 10]]


def test_lvis_v1_images_are_named_by_coco_url(write_coco: WriteCoco, coco_dict: dict) -> None:
    ann = write_coco(coco_dict)  # writes a.png, b.png, empty.png next to the json
    (ann.parent / "train2017").mkdir()
    for img in coco_dict["images"]:  # LVIS v1: no file_name, no iscrowd; the image lives under train2017/
        (ann.parent / img["file_name"]).rename(ann.parent / "train2017" / img["file_name"])
        img["coco_url"] = f"http://images.cocodataset.org/train2017/{img.pop('file_name')}"
    for a in coco_dict["annotations"]:
        a.pop("iscrowd")
    ann = write_coco(coco_dict, images=False)
    ds = CocoDataset(ann, ann.parent)
    first = ds[0]
    assert first["filename"] == str(ann.parent / "train2017" / "a.png") and ds.num_classes == 2
    assert len(first["gt_bboxes"]) == 2 and len(ds[1]["gt_bboxes"]) == 2  # no crowd flag: every box trains
    assert tuple(LoadImage()(dict(first))["img"].shape) == (3, 30, 40)  # the file is found and read


@pytest.mark.parametrize(("test_mode", "filter_empty_gt", "ids"), [
    (False, True, [1, 2]), (False, False, [1, 2, 3]), (True, True, [1, 2, 3]),
])
def test_images_without_boxes(write_coco: WriteCoco, coco_dict: dict, test_mode: bool, filter_empty_gt: bool,
                              ids: list[int]) -> None:
    ann = write_coco(coco_dict)
    ds = CocoDataset(ann, ann.parent, test_mode=test_mode, filter_empty_gt=filter_empty_gt)
    assert [ds[i]["image_id"] for i in range(len(ds))] == ids
    if 3 in ids:
        empty = ds[ids.index(3)]
        assert empty["gt_bboxes"].shape == (0, 4) and empty["gt_labels"].shape == (0,)


def test_classes_subset_drops_other_categories(write_coco: WriteCoco, coco_dict: dict) -> None:
    ann = write_coco(coco_dict)
    ds = CocoDataset(ann, ann.parent, classes=["dog"])
    assert ds.CLASSES == ("dog",)
    assert [ds[i]["image_id"] for i in range(len(ds))] == [1, 2]  # image 2 only has a crowd dog, kept as mmdet does
    assert ds[0]["gt_bboxes"].tolist() == [[2, 3, 12, 8]] and ds[0]["gt_labels"].tolist() == [0]
    assert ds.get_ann_info(1)["bboxes"].shape == (0, 4)
    with pytest.raises(DatasetError, match=r"horse.*\['cat', 'dog'\]"):
        CocoDataset(ann, ann.parent, classes=["horse"])


def test_pipeline_runs_and_loads_pixels(write_coco: WriteCoco, coco_dict: dict) -> None:
    ann = write_coco(coco_dict)
    seen: list[Any] = []
    ds = CocoDataset(ann, ann.parent, pipeline=[LoadImage(channel_order="rgb"), lambda r: seen.append(r) or r])
    out = ds[1]
    assert out["img"].shape == (3, 30, 40) and out["img"].dtype == torch.uint8
    assert out["img"][:, 0, 0].tolist() == [10, 100, 200]  # written as (10 * index, 100, 200)
    assert out["ori_shape"] == (30, 40, 3) and seen == [out]


def _break(coco: dict, problem: str) -> dict | str:
    if problem == "malformed json":
        return "{not json"
    if problem.startswith("missing "):
        del coco[problem.split()[1]]
    elif problem == "unknown category":
        coco["annotations"][1]["category_id"] = 99
    elif problem == "unknown image":
        coco["annotations"][2]["image_id"] = 42
    elif problem == "zero width":
        coco["annotations"][0]["bbox"] = [2, 3, 0, 5]
    elif problem == "negative height":
        coco["annotations"][0]["bbox"] = [2, 3, 4, -1]
    elif problem == "outside image":
        coco["annotations"][0]["bbox"] = [35, 3, 10, 5]
    elif problem == "bbox not numbers":
        coco["annotations"][0]["bbox"] = [2, 3, "4"]
    elif problem == "no images":
        coco["images"], coco["annotations"] = [], []
    elif problem == "all empty":
        coco["annotations"] = []
    elif problem == "duplicate image id":
        coco["images"][1]["id"] = 1
    return coco


@pytest.mark.parametrize(("problem", "message"), [
    ("malformed json", "not valid json"),
    ("missing images", r"\['images'\]"),
    ("missing annotations", r"\['annotations'\]"),
    ("missing categories", r"\['categories'\]"),
    ("unknown category", r"annotations\[1\] \(id 2\) refers to unknown category_id 99; known category ids are \[3, 7\]"),
    ("unknown image", r"annotations\[2\] \(id 3\) refers to unknown image_id 42"),
    ("zero width", r"annotations\[0\].*non-positive size"),
    ("negative height", r"annotations\[0\].*non-positive size"),
    ("outside image", r"annotations\[0\].*outside its image a.png of size 40x30"),
    ("bbox not numbers", r"annotations\[0\].*4 finite numbers"),
    ("no images", "empty `images` list"),
    ("all empty", "empty training split"),
    ("duplicate image id", "image id 1 appears twice"),
])
def test_bad_annotation_file_raises_one_clear_error(write_coco: WriteCoco, coco_dict: dict, problem: str,
                                                    message: str) -> None:
    ann = write_coco(_break(coco_dict, problem))
    with pytest.raises(DatasetError, match=message) as info:
        CocoDataset(ann, ann.parent)
    assert str(ann) in str(info.value)


def test_missing_annotation_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "instances_val.json"
    with pytest.raises(DatasetError, match="does not exist") as info:
        CocoDataset(missing, tmp_path)
    assert str(missing) in str(info.value)


def test_box_within_tolerance_is_accepted(write_coco: WriteCoco, coco_dict: dict) -> None:
    coco_dict["annotations"][0]["bbox"] = [-0.5, 3, 10, 5]
    coco_dict["annotations"][1]["bbox"] = [20, 10, 20.8, 8]
    ann = write_coco(coco_dict)
    assert CocoDataset(ann, ann.parent).get_ann_info(0)["bboxes"][0, 0].item() == -0.5


@pytest.mark.parametrize("kind", ["missing", "garbage", "wrong size"])
def test_bad_image_file_fails_at_load_time_naming_it(write_coco: WriteCoco, coco_dict: dict, kind: str) -> None:
    ann = write_coco(coco_dict)
    image = ann.parent / "b.png"
    if kind == "missing":
        image.unlink()
    elif kind == "garbage":
        image.write_bytes(b"not a png")
    else:
        coco_dict["images"][1]["width"] = 41
        coco_dict["annotations"][2]["bbox"] = [0, 0, 41, 30]
        ann = write_coco(coco_dict, images=False)
    ds = CocoDataset(ann, ann.parent, pipeline=[LoadImage()])  # construction does not touch the images
    ds[0]
    with pytest.raises(DatasetError) as info:
        ds[1]
    assert str(image) in str(info.value)
