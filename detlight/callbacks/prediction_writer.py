"""Writes ``detlight predict`` results to the run directory: COCO results json (2D) or KITTI label files (3D).

Replaces: mmdet's ``tools/test.py --format-only --options jsonfile_prefix=...`` (``CocoDataset.results2json``) and
mmdet3d's ``KittiDataset.format_results(submission_prefix=...)``. Lightning's ``BasePredictionWriter`` does the
calling; images with drawn boxes stay the business of :class:`~detlight.callbacks.DetVisualization` /
:class:`~detlight.callbacks.BEVVisualization` during validation.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from typing_extensions import override

__all__ = ["PredictionWriter"]


class PredictionWriter(BasePredictionWriter):
    """Collects each predict batch and writes it under ``output`` (default ``<run dir>/predictions``).

    2D (``boxes``/``scores``/``labels`` per image): one ``results.bbox.json`` in the COCO results format
    (``image_id``, ``category_id`` from the test dataset's ``cat_ids`` when it has them, else ``label + 1``, ``bbox``
    as ``[x, y, w, h]`` in original pixels, ``score``), and ``results.segm.json`` with RLE ``segmentation`` when the
    detector predicts masks. 3D (``boxes_3d``/``scores_3d``/``labels_3d``): one KITTI ``label_2``-style file per
    sample (``<sample_idx:06d>.txt``, 16 columns with the score), boxes turned into the camera frame with the frame's
    ``calib`` file when it is found next to the point cloud, else written in LiDAR coordinates (``x y z`` and
    ``rotation_y`` = yaw) and said so in ``README.txt``. Under DDP each rank writes its own part (``.rank<k>``).

    Args:
        output: folder for the files; ``None`` means ``<trainer.log_dir or default_root_dir>/predictions``.
        score_thr: detections below this score are not written.
        class_names: 3D type names by label; ``None`` reads the datamodule's ``CLASSES``.
    """

    def __init__(self, output: str | None = None, score_thr: float = 0.0,
                 class_names: Sequence[str] | None = None) -> None:
        super().__init__(write_interval="batch")
        self.output = output
        self.score_thr = score_thr
        self.class_names = list(class_names) if class_names is not None else None
        self._coco: list[dict[str, Any]] = []
        self._segm: list[dict[str, Any]] = []
        self._kitti_files = 0
        self._frame: Literal["camera", "lidar"] | None = None
        #: the files written by the last predict run
        self.written: list[Path] = []

    def out_dir(self, trainer: pl.Trainer) -> Path:
        """Where the files go (created on first use)."""
        if self.output is not None:
            folder = Path(self.output)
        else:
            folder = Path(trainer.log_dir or trainer.default_root_dir) / "predictions"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    @override
    def on_predict_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._coco, self._segm, self._kitti_files, self._frame, self.written = [], [], 0, None, []

    @override
    def write_on_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, prediction: Any,
                           batch_indices: Sequence[int] | None, batch: Any, batch_idx: int,
                           dataloader_idx: int) -> None:
        for item in prediction:
            if "boxes_3d" in item:
                self._write_kitti(trainer, item)
            else:
                self._add_coco(trainer, item)

    @override
    def on_predict_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        folder = self.out_dir(trainer)
        suffix = f".rank{trainer.global_rank}" if trainer.world_size > 1 else ""
        if self._coco or not self._kitti_files:
            path = folder / f"results.bbox{suffix}.json"
            path.write_text(json.dumps(self._coco))
            self.written.append(path)
        if self._segm:
            path = folder / f"results.segm{suffix}.json"
            path.write_text(json.dumps(self._segm))
            self.written.append(path)
        if self._frame == "lidar":
            (folder / "README.txt").write_text("No calib file was found next to the point clouds: the label files "
                                               "hold LiDAR-frame boxes (location = x y z bottom centre, rotation_y = "
                                               "yaw), not camera-frame ones.\n")
        pl.utilities.rank_zero_info(f"Predictions written to {folder}")

    # ------------------------------------------------------------------ 2D
    def _category_ids(self, trainer: pl.Trainer) -> list[int] | None:
        datamodule = getattr(trainer, "datamodule", None)
        dataset = getattr(datamodule, "datasets", {}).get("test") if datamodule is not None else None
        ids = getattr(dataset, "cat_ids", None)
        return list(ids) if ids is not None else None

    def _add_coco(self, trainer: pl.Trainer, det: Mapping[str, Any]) -> None:
        meta = det.get("img_meta", {})
        image_id = int(meta.get("image_id", len(self._coco)))
        cat_ids = self._category_ids(trainer)
        keep = det["scores"] >= self.score_thr
        boxes, scores, labels = det["boxes"][keep].tolist(), det["scores"][keep].tolist(), det["labels"][keep].tolist()
        masks = det.get("masks")
        rles = _encode_masks(masks[keep]) if masks is not None else None
        for i, ((x1, y1, x2, y2), score, label) in enumerate(zip(boxes, scores, labels)):
            category = cat_ids[label] if cat_ids is not None and 0 <= label < len(cat_ids) else label + 1
            entry = {"image_id": image_id, "category_id": int(category), "score": round(float(score), 5)}
            self._coco.append({**entry, "bbox": [round(v, 2) for v in (x1, y1, x2 - x1, y2 - y1)]})
            if rles is not None:
                self._segm.append({**entry, "segmentation": rles[i]})

    # ------------------------------------------------------------------ 3D
    def _write_kitti(self, trainer: pl.Trainer, det: Mapping[str, Any]) -> None:
        from detlight.data.kitti import KittiObject, read_calib, rotation_to_alpha, write_label
        from detlight.models.box3d import lidar_to_camera_boxes

        meta = det.get("img_meta", {})
        names = self.class_names or list(getattr(getattr(trainer, "datamodule", None), "CLASSES", ()) or ())
        keep = det["scores_3d"] >= self.score_thr
        boxes = det["boxes_3d"][keep].detach().cpu().double()
        scores, labels = det["scores_3d"][keep].tolist(), det["labels_3d"][keep].tolist()
        calib_path = _calib_path(meta)
        if calib_path is not None and len(boxes):
            calib = read_calib(calib_path)
            boxes = lidar_to_camera_boxes(boxes, torch.from_numpy(calib.R0_rect), torch.from_numpy(calib.Tr_velo_to_cam))
        self._frame = "camera" if calib_path is not None else "lidar"
        objects = []
        for box, score, label in zip(boxes.tolist(), scores, labels):
            name = names[label] if 0 <= label < len(names) else str(label)
            if calib_path is not None:  # camera box (x, y, z, l, h, w, ry)
                x, y, z, length, h, w, ry = box
                alpha = rotation_to_alpha(ry, x, z)
            else:  # LiDAR box (x, y, z, dx, dy, dz, yaw)
                x, y, z, length, w, h, ry = box
                alpha = -10.0
            objects.append(KittiObject(type=name, alpha=alpha, dimensions=(h, w, length), location=(x, y, z),
                                       rotation_y=float((ry + math.pi) % (2 * math.pi) - math.pi), score=score))
        sample = int(meta.get("sample_idx", self._kitti_files))
        path = self.out_dir(trainer) / f"{sample:06d}.txt"
        write_label(path, objects)
        self.written.append(path)
        self._kitti_files += 1


def _calib_path(meta: Mapping[str, Any]) -> Path | None:
    pts = meta.get("pts_filename")
    if not pts or "sample_idx" not in meta:
        return None
    candidate = Path(pts).parent.parent / "calib" / f"{int(meta['sample_idx']):06d}.txt"
    return candidate if candidate.is_file() else None


def _encode_masks(masks: torch.Tensor) -> list[dict[str, Any]]:
    """bool ``[n, H, W]`` -> COCO compressed RLE dicts with ``counts`` as str (json-ready)."""
    import numpy as np
    from faster_coco_eval.core import mask as mask_utils

    array = np.asfortranarray(masks.detach().cpu().numpy().astype(np.uint8).transpose(1, 2, 0))
    rles = mask_utils.encode(array) if array.shape[-1] else []
    out = []
    for rle in rles:
        counts = rle["counts"]
        out.append({"size": list(rle["size"]), "counts": counts.decode() if isinstance(counts, bytes) else counts})
    return out
