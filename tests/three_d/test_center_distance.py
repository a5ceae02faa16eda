"""Centre-distance mAP against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from detlight.exceptions import ModelContractError
from detlight.metrics.center_distance import CenterDistanceMAP, average_precision, match_class

CLASSES = ("Pedestrian", "Cyclist", "Car")


def _pred(xy: list[list[float]], scores: list[float], labels: list[int]) -> dict[str, torch.Tensor]:
    boxes = torch.zeros(len(xy), 7)
    if xy:
        boxes[:, :2] = torch.tensor(xy)
    return {"boxes_3d": boxes, "scores_3d": torch.tensor(scores), "labels_3d": torch.tensor(labels, dtype=torch.long)}


def _batch(gts: list[tuple[list[list[float]], list[int]]], ids: list[int]) -> dict:
    boxes, labels = [], []
    for xy, lab in gts:
        b = torch.ones(len(xy), 7)
        if xy:
            b[:, :2] = torch.tensor(xy)
        boxes.append(b)
        labels.append(torch.tensor(lab, dtype=torch.long))
    return {"gt_bboxes_3d": boxes, "gt_labels_3d": labels, "img_metas": [{"sample_idx": i} for i in ids]}


def test_perfect_predictions_score_one() -> None:
    metric = CenterDistanceMAP(CLASSES)
    metric.update([_pred([[5, 1], [9, -2]], [0.9, 0.8], [2, 0])], _batch([([[5, 1], [9, -2]], [2, 0])], [0]))
    metric.update([_pred([[3, 3]], [0.7], [1])], _batch([([[3.2, 3]], [1])], [1]))
    out = metric.compute()
    assert out["mAP"].item() == pytest.approx(1.0)
    assert {f"mAP_{c}" for c in CLASSES} | {"AP_Car_dist_0.5", "AP_Pedestrian_dist_4"} <= set(out)


def test_half_recall() -> None:
    # 2 gt, 1 exact hit: precision 1 up to recall 0.5, then 0 -> 40 of the 90 bins above 0.1 hold 0.9:
    # AP = 40 * 0.9 / 90 / 0.9 = 4/9.
    metric = CenterDistanceMAP(["Car"])
    metric.update([_pred([[10, 0]], [0.9], [0])], _batch([([[10, 0], [20, 5]], [0, 0])], [3]))
    assert metric.compute()["mAP"].item() == pytest.approx(4 / 9)


def test_false_positive_ranked_first() -> None:
    # 1 gt; a far pred with score .9 then an exact one with .8: prec = [0, .5] at rec = [0, 1], interpolated as 0.5 r.
    # sum over r = .21..1.00 of (0.5 r - 0.1) = 16.2 -> AP = 16.2 / 90 / 0.9 = 0.2
    metric = CenterDistanceMAP(["Car"])
    metric.update([_pred([[30, 0], [10, 0]], [0.9, 0.8], [0, 0])], _batch([([[10, 0]], [0])], [0]))
    assert metric.compute()["mAP"].item() == pytest.approx(0.2)


def test_distance_thresholds() -> None:
    # 1.5 m off: a miss at 0.5 m and 1 m, a hit at 2 m and 4 m -> class AP 0.5; classes without gt score 0.
    metric = CenterDistanceMAP(CLASSES)
    metric.update([_pred([[11.5, 0]], [0.9], [2])], _batch([([[10, 0]], [2])], [0]))
    out = metric.compute()
    assert [out[f"AP_Car_dist_{d}"].item() for d in ("0.5", "1", "2", "4")] == [0.0, 0.0, 1.0, 1.0]
    assert out["mAP_Car"].item() == pytest.approx(0.5)
    assert out["mAP_Pedestrian"].item() == 0.0
    assert out["mAP"].item() == pytest.approx(0.5 / 3)


def test_wrong_class_and_wrong_sample_do_not_match() -> None:
    metric = CenterDistanceMAP(["Pedestrian", "Car"])
    metric.update([_pred([[10, 0]], [0.9], [0]), _pred([], [], [])],
                  _batch([([], []), ([[10, 0]], [0])], [0, 1]))
    metric.update([_pred([[5, 5]], [0.9], [0])], _batch([([[5, 5]], [1])], [2]))
    assert metric.compute()["mAP"].item() == 0.0


def test_greedy_matching_takes_nearest_free_gt() -> None:
    gt = np.array([[0.0, 0.0], [1.0, 0.0]])
    pred = np.array([[0.9, 0.0], [0.2, 0.0], [0.1, 0.0]])
    tp = match_class(pred, np.array([0.9, 0.8, 0.7]), np.zeros(3), gt, np.zeros(2), threshold=0.5)
    assert tp.tolist() == [True, True, False]  # the third finds both gts taken
    assert average_precision(np.array([], dtype=bool), num_gt=3) == 0.0


def test_duplicate_samples_from_sampler_padding_are_ignored() -> None:
    metric = CenterDistanceMAP(["Car"])
    metric.update([_pred([[10, 0]], [0.9], [0])], _batch([([[10, 0]], [0])], [5]))
    # the sampler pads with sample 5 again; its (here: poorer) second evaluation must not count
    metric.update([_pred([[30, 0]], [0.95], [0])], _batch([([[10, 0]], [0])], [5]))
    assert metric.compute()["mAP"].item() == pytest.approx(1.0)
    metric.reset()
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert metric.compute()["mAP"].item() == 0.0


def test_update_validates_inputs() -> None:
    metric = CenterDistanceMAP(["Car"])
    with pytest.raises(ValueError, match="1 predictions for 2 samples"):
        metric.update([_pred([], [], [])], _batch([([], []), ([], [])], [0, 1]))
    with pytest.raises(ModelContractError, match="scores_3d"):
        metric.update([{"boxes_3d": torch.zeros(0, 7), "labels_3d": torch.zeros(0)}], _batch([([], [])], [0]))
    with pytest.raises(ValueError, match="dist_thresholds"):
        CenterDistanceMAP(["Car"], dist_thresholds=[0.0])
