"""detlight.openmmlab.detector.predict_batch against a stand-in detector (default suite: no mmdet needed)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from detlight.openmmlab.detector import predict_batch


class FastRCNNLike:
    """``forward_test(imgs, img_metas, proposals, **kwargs)``: mmdet's Fast R-CNN takes the test pipeline's
    ``proposals``, nested per augmentation like ``img``."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def forward_test(self, imgs: list[torch.Tensor], img_metas: list[Any], proposals: Any = None,
                     **kwargs: Any) -> list[list[np.ndarray]]:
        self.calls.append({"imgs": imgs, "proposals": proposals, **kwargs})
        return [[np.array([[0, 0, 4, 4, 0.9]], np.float32)] for _ in img_metas[0]]


def test_proposals_reach_forward_test_and_other_keys_do_not() -> None:
    det = FastRCNNLike()
    props = [torch.rand(5, 4)]
    batch = {"img": torch.zeros(1, 3, 8, 8), "img_metas": [{"detlight_idx": 3}], "proposals": props,
             "gt_bboxes": [torch.zeros(0, 4)]}
    out = predict_batch(det, batch)
    assert det.calls[0]["proposals"] == [props] and "gt_bboxes" not in det.calls[0]
    assert det.calls[0]["rescale"] is True
    assert out[0]["sample_idx"] == 3 and out[0]["boxes"].shape == (1, 4)
