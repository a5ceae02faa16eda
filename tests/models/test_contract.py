"""Loss parsing and the detector contracts (mmdet forward_train / train_step, torchvision)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from detlight.exceptions import ModelContractError
from detlight.models.contract import (
    TORCHVISION_FAMILIES,
    DetectorAdapter,
    TorchvisionFamily,
    flip_boxes,
    parse_losses,
    to_detections,
    torchvision_family,
)


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
    with pytest.raises(ModelContractError, match="loss_cls"):
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


def test_torchvision_contract_sums_every_key_as_a_loss():
    loss, log_vars = parse_losses({"classification": torch.tensor(1.5), "bbox_regression": torch.tensor(0.5)},
                                  all_losses=True)
    assert float(loss) == pytest.approx(2.0) and list(log_vars) == ["classification", "bbox_regression", "loss"]


class _BackgroundStyle(_TorchvisionStyle):
    """A torchvision-contract detector declared (below) as reserving class 0 for background, 4 + 1 classes."""

    def forward(self, images, targets=None):
        if self.training:
            self.seen_labels = [t["labels"].tolist() for t in targets]
            return {"cls": self.scale * 1.0}
        return [{"boxes": torch.tensor([[2.0, 2.0, 4.0, 4.0]]), "scores": torch.tensor([0.5]),
                 "labels": torch.tensor([4])} for _ in images]


@pytest.fixture
def background_family(monkeypatch):
    torchvision_family(nn.Module())  # fill the table, then declare the test class
    family = TorchvisionFamily("Background", True, (), lambda model: 5)
    monkeypatch.setitem(TORCHVISION_FAMILIES, _BackgroundStyle, family)
    return family


def test_label_shift_in_and_out_for_a_background_family(background_family):
    model = _BackgroundStyle()
    adapter = DetectorAdapter(model)
    assert adapter.family is background_family and adapter.label_offset == 1 and adapter.num_classes() == 4
    batch = _batch()
    batch["gt_labels"] = [torch.tensor([0]), torch.tensor([3])]
    adapter.losses(batch)
    assert model.seen_labels == [[1], [4]]  # +1 on the way in
    model.eval()
    assert [d["labels"].tolist() for d in adapter.predict(batch)] == [[3], [3]]  # -1 on the way out


def test_no_shift_for_families_without_background():
    model = _TorchvisionStyle()
    assert DetectorAdapter(model).label_offset == 0
    out = DetectorAdapter(model).targets(_batch())
    assert out[0]["labels"].tolist() == [0]


def test_label_outside_the_head_names_model_key_and_fix(background_family):
    batch = _batch()
    batch["gt_labels"] = [torch.tensor([4]), torch.zeros(0, dtype=torch.long)]
    with pytest.raises(ModelContractError, match=r"_BackgroundStyle.*gt_labels value 4, outside \[0, 4\).*num_classes"):
        DetectorAdapter(_BackgroundStyle()).losses(batch)


class _ReturnsList(_TorchvisionStyle):
    def forward(self, images, targets=None):
        return [self.scale]


def test_train_output_not_a_dict_names_the_model():
    with pytest.raises(ModelContractError, match=r"`_ReturnsList`.*returned list in train mode.*dict of loss tensors"):
        DetectorAdapter(_ReturnsList()).losses(_batch())
