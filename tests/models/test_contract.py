"""Loss parsing and the detector contracts (mmdet forward_train / train_step, torchvision)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from detlight.exceptions import ModelContractError
from detlight.models.contract import DetectorAdapter, flip_boxes, parse_losses, to_detections


def test_parse_losses_follows_mmdet_rules():
    losses = {
        "loss_cls": torch.tensor([1.0, 2.0, 3.0]),  # mean 2
        "acc": torch.tensor([50.0, 100.0]),  # logged, not summed
        "loss_bbox": [torch.tensor([1.0, 3.0]), torch.tensor(0.5)],  # sum of means: 2.5
    }
    loss, log_vars = parse_losses(losses)
    assert loss.item() == pytest.approx(4.5)
    assert list(log_vars) == ["loss_cls", "acc", "loss_bbox", "loss"]
    assert log_vars["acc"].item() == pytest.approx(75.0)
    assert log_vars["loss"].item() == pytest.approx(4.5)
    assert all(not v.requires_grad for v in log_vars.values())


def test_parse_losses_keeps_graph_for_backward():
    w = torch.tensor(2.0, requires_grad=True)
    loss, _ = parse_losses({"loss_a": w * 3, "loss_b": [w, w * w]})
    loss.backward()
    assert w.grad.item() == pytest.approx(3 + 1 + 4)


def test_parse_losses_without_loss_key_names_the_keys():
    with pytest.raises(ModelContractError, match=r"no key containing 'loss'.*\['acc', 'cls'\]"):
        parse_losses({"cls": torch.tensor(1.0), "acc": torch.tensor(0.5)})


def test_parse_losses_rejects_non_tensor_values():
    with pytest.raises(TypeError, match="loss_cls"):
        parse_losses({"loss_cls": 1.0})


def test_to_detections_accepts_mmdet_bbox2result_and_pairs():
    per_class = [np.array([[0, 0, 10, 10, 0.9]], dtype=np.float32), np.zeros((0, 5), np.float32),
                 np.array([[1, 1, 5, 5, 0.3], [2, 2, 6, 6, 0.2]], dtype=np.float32)]
    det = to_detections(per_class)
    assert det["labels"].tolist() == [0, 2, 2]
    assert det["scores"].tolist() == pytest.approx([0.9, 0.3, 0.2])
    pair = to_detections((torch.tensor([[0.0, 0, 4, 4, 0.7]]), torch.tensor([1])))
    assert pair["boxes"].shape == (1, 4) and pair["labels"].tolist() == [1]


def test_flip_boxes_round_trip():
    boxes = torch.tensor([[1.0, 2.0, 5.0, 9.0]])
    flipped = flip_boxes(boxes, (20, 30, 3))
    assert flipped.tolist() == [[25.0, 2.0, 29.0, 9.0]]
    assert torch.equal(flip_boxes(flipped, (20, 30, 3)), boxes)


class _TorchvisionStyle(nn.Module):
    """Minimal torchvision-contract detector: losses in train mode, detections in eval mode."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1.0))
        self.seen_sizes: list[tuple[int, int]] = []

    def forward(self, images, targets=None):
        self.seen_sizes = [tuple(img.shape[-2:]) for img in images]
        if self.training:
            return {"loss_box": self.scale * sum(t["boxes"].sum() for t in targets) * 0 + self.scale}
        return [{"boxes": torch.tensor([[2.0, 2.0, 4.0, 4.0]]), "scores": torch.tensor([0.5]),
                 "labels": torch.tensor([0])} for _ in images]


def _batch():
    return {
        "img": torch.zeros(2, 3, 32, 32),
        "img_metas": [
            {"img_shape": (20, 30, 3), "ori_shape": (10, 15, 3), "scale_factor": [2.0, 2.0, 2.0, 2.0], "flip": False},
            {"img_shape": (32, 16, 3), "ori_shape": (32, 16, 3), "scale_factor": [1.0, 1.0, 1.0, 1.0], "flip": True,
             "flip_direction": "horizontal"},
        ],
        "gt_bboxes": [torch.tensor([[0.0, 0.0, 4.0, 4.0]]), torch.zeros(0, 4)],
        "gt_labels": [torch.tensor([0]), torch.zeros(0, dtype=torch.long)],
    }


def test_torchvision_contract_crops_padding_and_rescales_predictions():
    model = _TorchvisionStyle()
    adapter = DetectorAdapter(model)
    assert adapter.kind == "torchvision"
    out = adapter.losses(_batch())
    assert set(out) == {"loss", "log_vars", "num_samples"} and out["num_samples"] == 2
    assert model.seen_sizes == [(20, 30), (32, 16)]
    model.eval()
    dets = adapter.predict(_batch())
    assert dets[0]["boxes"].tolist() == [[1.0, 1.0, 2.0, 2.0]]  # divided by scale_factor
    assert dets[1]["boxes"].tolist() == [[12.0, 2.0, 14.0, 4.0]]  # un-flipped in a 16-px-wide image


class _TrainStepStyle(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(1.0))

    def train_step(self, data, optimizer):
        loss = self.w * 2
        return {"loss": loss, "log_vars": {"loss": 2.0}, "num_samples": 7}


def test_train_step_contract_passes_outputs_through():
    adapter = DetectorAdapter(_TrainStepStyle())
    assert adapter.kind == "mmdet_train_step"
    out = adapter.losses(_batch(), optimizer=None)
    assert out["num_samples"] == 7 and out["loss"].requires_grad
