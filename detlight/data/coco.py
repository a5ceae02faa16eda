"""COCO-format detection dataset with early, file-naming validation.

Replaces: ``mmdet.datasets.CocoDataset`` (mmdet 2.x) for box detection. Differences: no pycocotools dependency, the
annotation file is validated when the dataset is built (mmdet fails deep inside a worker, or silently drops bad
boxes), and samples are torch tensors rather than numpy arrays.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import torch
from torch.utils.data import Dataset

from detlight.exceptions import ConfigError, DatasetError

__all__ = ["CocoDataset", "DatasetError"]

#: How far (pixels) a box may stick out of its image before it counts as an annotation error.
BOX_TOLERANCE = 1.0

Pipeline = Callable[[dict[str, Any]], dict[str, Any]]




class CocoDataset(Dataset):
    """COCO json + image folder -> mmdet-style ``results`` dicts run through a transform pipeline.

    Replaces: ``mmdet.datasets.CocoDataset``. Labels are contiguous and 0-based, ordered by category id (mmdet's
    ``cat2label``); ``classes`` selects a subset by name and drops the other categories' boxes. Crowd boxes
    (``iscrowd=1``) never reach training: they are kept apart as ``gt_bboxes_ignore``.

    Each item starts as ``{"img_info", "img_prefix", "filename", "ori_filename", "image_id", "gt_bboxes"
    (float32[n, 4] xyxy pixels), "gt_labels" (int64[n]), "gt_bboxes_ignore" (float32[m, 4]), "bbox_fields"}`` and is
    returned after ``pipeline``.

    Args:
        ann_file: COCO detection json (``images``, ``annotations``, ``categories``).
        img_prefix: Folder that ``images[*].file_name`` is relative to.
        pipeline: Transforms applied in order (or one callable); see :mod:`detlight.data.transforms`.
        test_mode: Keep every image (mmdet's val/test datasets); no empty-image filtering.
        filter_empty_gt: In train mode, drop images without any box of the selected classes.
        classes: Names of the categories to keep; ``None`` keeps all.

    Raises:
        DatasetError: the annotation file is missing, not json, lacks a top-level key, holds no image, refers to an
            unknown image or category id, or has a box of non-positive size or outside its image.
    """

    def __init__(self, ann_file: str | Path, img_prefix: str | Path,
                 pipeline: Sequence[Pipeline] | Pipeline | None = None, test_mode: bool = False,
                 filter_empty_gt: bool = True, classes: Sequence[str] | None = None) -> None:
        self.ann_file = Path(ann_file)
        self.img_prefix = Path(img_prefix)
        self.test_mode = test_mode
        self.filter_empty_gt = filter_empty_gt
        self.pipeline = _compose(pipeline)
        coco = _load_json(self.ann_file)
        self.cat_ids, self.CLASSES = _select_categories(coco["categories"], classes, self.ann_file)
        self.cat2label = {cat_id: i for i, cat_id in enumerate(self.cat_ids)}
        images, anns_by_image = _index(coco, self.ann_file)
        self.data_infos = [img for img in images
                           if test_mode or not filter_empty_gt or self._has_boxes(anns_by_image[img["id"]])]
        if not self.data_infos:
            raise DatasetError(f"Annotation file {self.ann_file}: none of its {len(images)} images has a box of the "
                               f"classes {self.CLASSES}, so filter_empty_gt=True leaves an empty training split.")
        self._anns = {img["id"]: anns_by_image[img["id"]] for img in self.data_infos}

    @property
    def num_classes(self) -> int:
        """Number of classes (length of ``CLASSES``)."""
        return len(self.CLASSES)

    def _has_boxes(self, anns: list[dict[str, Any]]) -> bool:
        return any(a["category_id"] in self.cat2label for a in anns)

    def __len__(self) -> int:
        return len(self.data_infos)

    def get_ann_info(self, idx: int) -> dict[str, Any]:
        """Boxes of image ``idx`` in the original image frame (mmdet's ``get_ann_info``).

        Returns:
            ``{"bboxes": float32[n, 4] xyxy, "labels": int64[n], "bboxes_ignore": float32[m, 4], "masks": list of
            n raw COCO segmentations (polygon lists, RLE dicts, or None where absent), "keypoints": list of n raw
            flat ``[x, y, v] * K`` lists (or None)}``; decoding is left to the pipeline
            (:class:`~detlight.data.transforms.LoadMasks`, :class:`~detlight.data.transforms.LoadKeypoints`).
        """
        boxes, labels, ignore, masks, keypoints = [], [], [], [], []
        for ann in self._anns[self.data_infos[idx]["id"]]:
            label = self.cat2label.get(ann["category_id"])
            if label is None:
                continue
            x, y, w, h = ann["bbox"]
            if ann.get("iscrowd", 0):
                ignore.append([x, y, x + w, y + h])
            else:
                boxes.append([x, y, x + w, y + h])
                labels.append(label)
                masks.append(ann.get("segmentation"))
                keypoints.append(ann.get("keypoints"))
        return {
            "bboxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.int64),
            "bboxes_ignore": torch.tensor(ignore, dtype=torch.float32).reshape(-1, 4),
            "masks": masks,
            "keypoints": keypoints,
        }

    def __getitem__(self, idx: int) -> dict[str, Any]:
        info = self.data_infos[idx]
        ann = self.get_ann_info(idx)
        results: dict[str, Any] = {
            "img_info": dict(info),
            "img_prefix": str(self.img_prefix),
            "filename": str(self.img_prefix / info["file_name"]),
            "ori_filename": info["file_name"],
            "image_id": int(info["id"]),
            "gt_bboxes": ann["bboxes"],
            "gt_labels": ann["labels"],
            "gt_bboxes_ignore": ann["bboxes_ignore"],
            "bbox_fields": ["gt_bboxes", "gt_bboxes_ignore"],
            "ann_info": {"masks": ann["masks"], "keypoints": ann["keypoints"], "ann_file": str(self.ann_file)},
        }
        try:
            return self.pipeline(results)
        except DatasetError as err:
            if "dataset index" in str(err):
                raise
            raise DatasetError(f"{err} (dataset index {idx}, image id {info['id']} in {self.ann_file})") from err

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(ann_file={str(self.ann_file)!r}, images={len(self)}, "
                f"classes={self.CLASSES}, test_mode={self.test_mode})")


def _compose(pipeline: Sequence[Pipeline] | Pipeline | None) -> Pipeline:
    if pipeline is None:
        return lambda results: results
    if callable(pipeline):
        return pipeline
    steps = list(pipeline)
    for step in steps:
        if not callable(step):
            raise ConfigError(f"Expected every pipeline step to be callable, but got {type(step).__name__}: {step!r}")

    def run(results: dict[str, Any]) -> dict[str, Any]:
        for step in steps:
            results = step(results)
        return results

    return run


def _load_json(ann_file: Path) -> dict[str, Any]:
    if not ann_file.is_file():
        raise DatasetError(f"Annotation file {ann_file} does not exist (or is not a file); check `ann_file`.")
    try:
        coco = json.loads(ann_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetError(f"Annotation file {ann_file} is not valid json: {err}") from err
    if not isinstance(coco, Mapping):
        raise DatasetError(f"Annotation file {ann_file} must hold a json object, but holds a {type(coco).__name__}.")
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(coco.get(k), list)]
    if missing:
        raise DatasetError(
            f"Annotation file {ann_file} lacks the top-level list(s) {missing}; a COCO detection file needs "
            "`images`, `annotations` and `categories`."
        )
    if not coco["images"]:
        raise DatasetError(f"Annotation file {ann_file} has an empty `images` list: the split holds no image.")
    return dict(coco)


def _select_categories(categories: list[dict[str, Any]], classes: Sequence[str] | None,
                       ann_file: Path) -> tuple[list[int], tuple[str, ...]]:
    by_id: dict[int, str] = {}
    for i, cat in enumerate(categories):
        if not isinstance(cat, Mapping) or not isinstance(cat.get("id"), int) or not isinstance(cat.get("name"), str):
            raise DatasetError(f"Annotation file {ann_file}: categories[{i}] needs an int `id` and a str `name`, "
                               f"got {cat!r}.")
        if cat["id"] in by_id:
            raise DatasetError(f"Annotation file {ann_file}: category id {cat['id']} appears twice.")
        by_id[cat["id"]] = cat["name"]
    if not by_id:
        raise DatasetError(f"Annotation file {ann_file} has an empty `categories` list.")
    ids = sorted(by_id)
    if classes is not None:
        unknown = [c for c in classes if c not in by_id.values()]
        if unknown:
            raise DatasetError(f"Annotation file {ann_file} has no categor(y/ies) named {unknown}; "
                               f"`classes` must be chosen from {[by_id[i] for i in ids]}.")
        ids = [i for i in ids if by_id[i] in set(classes)]
    return ids, tuple(by_id[i] for i in ids)


def _index(coco: dict[str, Any], ann_file: Path) -> tuple[list[dict[str, Any]], dict[int, list[dict[str, Any]]]]:
    """Validate images and annotations; return the images and each image's annotations."""
    images: dict[int, dict[str, Any]] = {}
    for i, img in enumerate(coco["images"]):
        if isinstance(img, dict) and "file_name" not in img and isinstance(img.get("coco_url"), str):
            # LVIS v1 names images by URL only; mmdet's LVISV1Dataset reads them as <img_prefix>/train2017/<id>.jpg
            img["file_name"] = urlsplit(img["coco_url"]).path.lstrip("/")
        _check_image(img, i, ann_file)
        if img["id"] in images:
            raise DatasetError(f"Annotation file {ann_file}: image id {img['id']} appears twice in `images`.")
        images[img["id"]] = img
    cat_ids = {cat["id"] for cat in coco["categories"]}
    anns_by_image: dict[int, list[dict[str, Any]]] = {img_id: [] for img_id in images}
    for i, ann in enumerate(coco["annotations"]):
        where = f"Annotation file {ann_file}: annotations[{i}] (id {ann.get('id')!r})"
        if ann.get("image_id") not in images:
            raise DatasetError(f"{where} refers to unknown image_id {ann.get('image_id')!r}; it must be one of the "
                               "ids in `images`.")
        if ann.get("category_id") not in cat_ids:
            raise DatasetError(f"{where} refers to unknown category_id {ann.get('category_id')!r}; known category "
                               f"ids are {sorted(cat_ids)}.")
        _check_box(ann, images[ann["image_id"]], where)
        anns_by_image[ann["image_id"]].append(ann)
    return list(images.values()), anns_by_image


def _check_image(img: Any, index: int, ann_file: Path) -> None:
    if not isinstance(img, Mapping):
        raise DatasetError(f"Annotation file {ann_file}: images[{index}] must be an object, got {img!r}.")
    for key, kind in (("id", int), ("file_name", str), ("width", int), ("height", int)):
        if not isinstance(img.get(key), kind):
            raise DatasetError(f"Annotation file {ann_file}: images[{index}] needs a {kind.__name__} `{key}`, "
                               f"got {img.get(key)!r}.")
    if img["width"] <= 0 or img["height"] <= 0:
        raise DatasetError(f"Annotation file {ann_file}: images[{index}] ({img['file_name']}) has non-positive size "
                           f"{img['width']}x{img['height']}.")


def _check_box(ann: Mapping[str, Any], img: Mapping[str, Any], where: str) -> None:
    bbox = ann.get("bbox")
    if (not isinstance(bbox, (list, tuple)) or len(bbox) != 4
            or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in bbox)):
        raise DatasetError(f"{where} needs `bbox` as 4 finite numbers [x, y, w, h], got {bbox!r}.")
    x, y, w, h = bbox
    if w <= 0 or h <= 0:
        raise DatasetError(f"{where} has a box of non-positive size: bbox {list(bbox)} (w={w}, h={h}).")
    width, height, tol = img["width"], img["height"], BOX_TOLERANCE
    if x < -tol or y < -tol or x + w > width + tol or y + h > height + tol:
        raise DatasetError(f"{where} has bbox {list(bbox)} outside its image {img['file_name']} of size "
                           f"{width}x{height} (tolerance {tol} px).")
