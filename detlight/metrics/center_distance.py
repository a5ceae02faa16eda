"""nuScenes-style centre-distance mAP for 3D detection, as a DDP-safe torchmetrics ``Metric``.

Replaces: the detection part of ``nuscenes.eval.detection`` (``accumulate`` + ``calc_ap``) that mmdet3d's
``NuScenesDataset.evaluate`` calls, on detlight's LiDAR boxes.

Matching (per class and distance threshold ``d``): all predictions of the class, from every sample, are sorted by
descending score; each one takes the nearest (BEV centre distance) not-yet-taken ground truth of the same class in
its sample and is a true positive if that distance is ``< d``, else a false positive. Precision is interpolated at
101 recall points (``numpy.interp`` with precision 0 beyond the highest recall reached), and
``AP = mean(max(p - min_precision, 0) for recalls > min_recall) / (1 - min_precision)`` (nuScenes defaults 0.1 and
0.1). A class without ground truth or without a true positive scores 0, as in nuScenes. nuScenes' per-class range
filter and 500-box cap are not applied (the data pipeline already range-filters).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

from detlight.exceptions import ConfigError, DatasetError, ModelContractError

__all__ = ["CenterDistanceMAP", "average_precision", "match_class"]


def match_class(pred_xy: np.ndarray, pred_score: np.ndarray, pred_sample: np.ndarray, gt_xy: np.ndarray,
                gt_sample: np.ndarray, threshold: float) -> np.ndarray:
    """Greedy nuScenes matching for one class: ``bool`` true-positive flag per prediction, in descending score order.

    Ties in score keep the later prediction first, as nuScenes' ``sorted(...)[::-1]`` does.
    """
    order = np.lexsort((np.arange(len(pred_score)), pred_score))[::-1]
    taken = np.zeros(len(gt_xy), dtype=bool)
    by_sample: dict[int, np.ndarray] = {}
    for s in np.unique(gt_sample):
        by_sample[int(s)] = np.flatnonzero(gt_sample == s)
    tp = np.zeros(len(order), dtype=bool)
    for rank, i in enumerate(order):
        cand = by_sample.get(int(pred_sample[i]))
        if cand is None:
            continue
        free = cand[~taken[cand]]
        if not len(free):
            continue
        dist = np.linalg.norm(gt_xy[free] - pred_xy[i], axis=1)
        j = int(np.argmin(dist))
        if dist[j] < threshold:
            taken[free[j]] = True
            tp[rank] = True
    return tp


def average_precision(tp: np.ndarray, num_gt: int, min_recall: float = 0.1, min_precision: float = 0.1) -> float:
    """nuScenes ``calc_ap`` from score-ordered true-positive flags."""
    if num_gt == 0 or not tp.any():
        return 0.0
    ctp = np.cumsum(tp).astype(np.float64)
    cfp = np.cumsum(~tp).astype(np.float64)
    prec = ctp / (ctp + cfp)
    rec = ctp / float(num_gt)
    prec = np.interp(np.linspace(0, 1, 101), rec, prec, right=0)
    prec = prec[round(100 * min_recall) + 1:] - min_precision
    prec[prec < 0] = 0
    return float(np.mean(prec)) / (1.0 - min_precision)


class CenterDistanceMAP(Metric):
    """Centre-distance mAP over distance thresholds, per class and overall.

    As input to ``update(preds, batch)``:

    - ``preds``: one dict per sample with ``boxes_3d`` (``float[n, >=2]``, LiDAR ``x, y`` first), ``scores_3d``
      (``float[n]``) and ``labels_3d`` (``int[n]``): the output of ``PointPillars.simple_test``.
    - ``batch``: the collated batch; reads ``gt_bboxes_3d`` (``list[float[m, >=2]]``), ``gt_labels_3d``
      (``list[int[m]]``) and ``img_metas[i]["sample_idx"]``.

    ``compute()`` returns ``mAP`` (mean over classes and thresholds), ``mAP_<class>`` (mean over thresholds) and
    ``AP_<class>_dist_<d>``.

    Under DDP the distributed sampler pads the last round with repeated samples; rows are tagged with the sample id
    and an occurrence id unique across ranks, and only the first occurrence of each sample id is scored.

    Args:
        class_names: names indexed by label.
        dist_thresholds: matching thresholds in metres (nuScenes: 0.5, 1, 2, 4).
        min_recall: recalls up to this value are ignored.
        min_precision: precision floor subtracted before averaging.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    pred_rows: list[torch.Tensor]
    gt_rows: list[torch.Tensor]
    samples: list[torch.Tensor]

    def __init__(self, class_names: Sequence[str] = ("Pedestrian", "Cyclist", "Car"),
                 dist_thresholds: Sequence[float] = (0.5, 1.0, 2.0, 4.0), min_recall: float = 0.1,
                 min_precision: float = 0.1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not class_names:
            raise ConfigError("CenterDistanceMAP needs at least one class name")
        if not dist_thresholds or min(dist_thresholds) <= 0:
            raise ConfigError(f"dist_thresholds must be positive distances in metres, got {list(dist_thresholds)}")
        if not (0 <= min_recall < 1 and 0 <= min_precision < 1):
            raise ConfigError(f"min_recall and min_precision must be in [0, 1), got {min_recall}, {min_precision}")
        self.class_names = list(class_names)
        self.dist_thresholds = [float(d) for d in dist_thresholds]
        self.min_recall, self.min_precision = min_recall, min_precision
        self._seen = 0
        for name in ("pred_rows", "gt_rows", "samples"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def _occurrence_base(self) -> int:
        rank, world = 0, 1
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        occ = self._seen * world + rank
        self._seen += 1
        return occ

    def update(self, preds: Sequence[Mapping[str, torch.Tensor]], batch: Mapping[str, Any]) -> None:
        """Add one batch. Rows are ``(occurrence, label, x, y, score)`` for predictions, ``(occ, label, x, y)`` for
        ground truth, and ``(occurrence, sample_idx)`` per sample."""
        metas, gt_boxes, gt_labels = batch["img_metas"], batch["gt_bboxes_3d"], batch["gt_labels_3d"]
        if not len(preds) == len(metas) == len(gt_boxes) == len(gt_labels):
            raise ValueError(f"CenterDistanceMAP.update: {len(preds)} predictions for {len(metas)} samples "
                             f"({len(gt_boxes)} gt box sets); pass one prediction dict per sample")
        for i, (pred, meta) in enumerate(zip(preds, metas)):
            missing = {"boxes_3d", "scores_3d", "labels_3d"} - set(pred)
            if missing:
                raise ModelContractError(f"Prediction {i} lacks {sorted(missing)}; expected simple_test's "
                                         f"boxes_3d/scores_3d/labels_3d (got {sorted(pred)})")
            if "sample_idx" not in meta:
                raise DatasetError(f"img_metas[{i}] has no `sample_idx`; the metric needs it to drop sampler padding")
            occ = float(self._occurrence_base())
            self.samples.append(torch.tensor([[occ, float(meta["sample_idx"])]], dtype=torch.float64,
                                             device=self.device))
            self.pred_rows.append(self._rows(occ, pred["labels_3d"], pred["boxes_3d"], pred["scores_3d"]))
            self.gt_rows.append(self._rows(occ, gt_labels[i], gt_boxes[i], None))

    def _rows(self, occ: float, labels: Any, boxes: Any, scores: Any) -> torch.Tensor:
        labels = torch.as_tensor(labels).detach().reshape(-1, 1).to(self.device, torch.float64)
        boxes = torch.as_tensor(boxes).detach()
        xy = boxes.reshape(len(labels), -1)[:, :2] if len(labels) else boxes.new_zeros(0, 2)
        cols = [torch.full_like(labels, occ), labels, xy.to(self.device, torch.float64)]
        if scores is not None:
            cols.append(torch.as_tensor(scores).detach().reshape(-1, 1).to(self.device, torch.float64))
        return torch.cat(cols, dim=1)

    def compute(self) -> dict[str, torch.Tensor]:
        """Per-class and overall APs (see the class docstring for the keys)."""
        samples = _as_array(self.samples, 2)
        preds, gts = _as_array(self.pred_rows, 5), _as_array(self.gt_rows, 4)
        first: dict[float, float] = {}
        for occ, sid in sorted(samples.tolist()):
            first.setdefault(sid, occ)
        kept = np.array(sorted(first.values()))
        preds = preds[np.isin(preds[:, 0], kept)]
        gts = gts[np.isin(gts[:, 0], kept)]
        out: dict[str, torch.Tensor] = {}
        class_maps = []
        for c, name in enumerate(self.class_names):
            p, g = preds[preds[:, 1] == c], gts[gts[:, 1] == c]
            aps = []
            for d in self.dist_thresholds:
                tp = match_class(p[:, 2:4], p[:, 4], p[:, 0], g[:, 2:4], g[:, 0], d)
                ap = average_precision(tp, len(g), self.min_recall, self.min_precision)
                out[f"AP_{name}_dist_{d:g}"] = torch.tensor(ap)
                aps.append(ap)
            class_maps.append(float(np.mean(aps)))
            out[f"mAP_{name}"] = torch.tensor(class_maps[-1])
        return {"mAP": torch.tensor(float(np.mean(class_maps))), **out}

    def reset(self) -> None:
        super().reset()
        self._seen = 0


def _as_array(state: Any, width: int) -> np.ndarray:
    """A list state (or its gathered tensor) as ``float64[n, width]`` numpy."""
    if isinstance(state, list) and not state:
        return np.zeros((0, width))
    return dim_zero_cat(state).reshape(-1, width).cpu().numpy()
