from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from detlight.models.centernet import CenterNet, gaussian_focal_loss, gaussian_radius

LOSS_KEYS = ["loss_center_heatmap", "loss_wh", "loss_offset"]


def _meta(h: int = 64, w: int = 64, scale: float = 1.0, **extra: Any) -> dict[str, Any]:
    ori = (round(h / scale), round(w / scale), 3)
    return dict(filename="x.png", image_id=0, ori_shape=ori, img_shape=(h, w, 3), pad_shape=(h, w, 3),
                scale_factor=[scale] * 4, flip=False, flip_direction=None, **extra)


def _batch(num_boxes: tuple[int, ...] = (2, 0), size: int = 64, seed: int = 0) -> dict[str, Any]:
    """Images with bright squares at the given boxes, following the contract's batch layout."""
    g = torch.Generator().manual_seed(seed)
    img = torch.randn(len(num_boxes), 3, size, size, generator=g) * 0.1
    boxes, labels = [], []
    for i, n in enumerate(num_boxes):
        xy = torch.rand(n, 2, generator=g) * (size / 2)
        wh = 8 + torch.rand(n, 2, generator=g) * (size / 3)
        b = torch.cat([xy, xy + wh], dim=1)
        lab = torch.randint(0, 2, (n,), generator=g)
        for (x1, y1, x2, y2), c in zip(b.long().tolist(), lab.tolist()):
            img[i, c, y1:y2, x1:x2] = 2.0
        boxes.append(b)
        labels.append(lab)
    return dict(img=img, img_metas=[_meta(size, size) for _ in num_boxes], gt_bboxes=boxes, gt_labels=labels)


def _model(**kw: Any) -> CenterNet:
    torch.manual_seed(0)
    return CenterNet(**{"num_classes": 2, "width": 16, "head_channels": 16, **kw})


@pytest.mark.parametrize("num_boxes", [(2, 0), (0, 0), (1, 3)])
def test_losses_keys_finite(num_boxes: tuple[int, ...]) -> None:
    losses = _model().forward_train(**_batch(num_boxes))
    assert list(losses) == LOSS_KEYS
    for name, value in losses.items():
        assert value.dim() == 0 and torch.isfinite(value), name
    if sum(num_boxes) == 0:
        # No centres: only the negative heatmap term remains, the regression losses are exactly zero.
        assert losses["loss_wh"] == 0 and losses["loss_offset"] == 0
        assert losses["loss_center_heatmap"] > 0
    else:
        assert losses["loss_wh"] > 0 and losses["loss_offset"] > 0


def test_gradients_reach_every_parameter() -> None:
    model = _model()
    losses = model.forward_train(**_batch((2, 1)))
    sum(losses.values()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_forward_dispatches_like_mmdet() -> None:
    model = _model()
    batch = _batch((1, 1))
    assert list(model(**batch)) == LOSS_KEYS
    model.eval()
    out = model(batch["img"], batch["img_metas"], return_loss=False)
    assert len(out) == 2 and set(out[0]) == {"boxes", "scores", "labels"}


def test_targets_match_mmdet_layout() -> None:
    model = _model()
    # A 40x48 box centred at (32.5, 34.5) in a 64x64 input -> 10x12 cells on the 16x16 grid, centre (8.125, 8.625).
    boxes = [torch.tensor([[12.5, 10.5, 52.5, 58.5]]), torch.zeros(0, 4)]
    labels = [torch.tensor([1]), torch.zeros(0, dtype=torch.int64)]
    heat, box, weight = model.get_targets(boxes, labels, torch.Size([2, 2, 16, 16]), (64, 64))
    assert heat.shape == (2, 2, 16, 16) and box.shape == weight.shape == (2, 4, 16, 16)
    assert heat[1].sum() == 0 and heat[0, 0].sum() == 0
    assert heat[0, 1, 8, 8] == 1 and heat.eq(1).sum() == 1
    radius = int(gaussian_radius(torch.tensor(12.0), torch.tensor(10.0)))
    assert radius >= 1
    sigma = (2 * radius + 1) / 6
    assert heat[0, 1, 8, 9] == pytest.approx(math.exp(-1 / (2 * sigma**2)))
    assert heat[0, 1, 8 - radius, 8 + radius] == pytest.approx(math.exp(-2 * radius**2 / (2 * sigma**2)))
    assert heat[0, 1, 8, 8 + radius + 1] == 0  # cut at the radius, as mmdet's window
    assert box[0, :, 8, 8].tolist() == pytest.approx([10.0, 12.0, 0.125, 0.625])
    assert weight.sum() == 4 and weight[0, :, 8, 8].tolist() == [1, 1, 1, 1]


def test_overlapping_gaussians_take_the_max() -> None:
    model = _model()
    boxes = [torch.tensor([[0.0, 0.0, 40.0, 40.0], [8.0, 0.0, 48.0, 40.0]])]
    labels = [torch.tensor([0, 0])]
    heat, _, _ = model.get_targets(boxes, labels, torch.Size([1, 2, 16, 16]), (64, 64))
    single, _, _ = model.get_targets([boxes[0][:1]], [labels[0][:1]], torch.Size([1, 2, 16, 16]), (64, 64))
    other, _, _ = model.get_targets([boxes[0][1:]], [labels[0][1:]], torch.Size([1, 2, 16, 16]), (64, 64))
    assert torch.equal(heat, torch.maximum(single, other))


def test_gaussian_radius_reference_value() -> None:
    # CornerNet / mmdet gaussian_radius((10, 20), 0.3), computed by hand from the three quadratic cases.
    h, w, o = 10.0, 20.0, 0.3
    r2 = (2 * (h + w) - math.sqrt((2 * (h + w)) ** 2 - 16 * (1 - o) * w * h)) / 8
    assert float(gaussian_radius(torch.tensor(h), torch.tensor(w), o)) == pytest.approx(r2, rel=1e-6)


def test_gaussian_focal_loss_matches_probability_form() -> None:
    logits = torch.tensor([[-3.0, 0.5, 2.0, 0.0]])
    target = torch.tensor([[0.0, 0.4, 1.0, 0.9]])
    p = logits.sigmoid()
    pos = -(p.log()) * (1 - p) ** 2 * target.eq(1)
    neg = -((1 - p).log()) * p**2 * (1 - target) ** 4 * target.ne(1)
    assert gaussian_focal_loss(logits, target) == pytest.approx(float((pos + neg).sum()), rel=1e-5)


def test_simple_test_format() -> None:
    model = _model(max_per_img=7, score_thr=0.0).eval()
    out = model.simple_test(torch.randn(3, 3, 64, 64), [_meta() for _ in range(3)])
    assert len(out) == 3
    for det in out:
        assert det["boxes"].dtype == torch.float32 and det["boxes"].shape == (7, 4)
        assert det["scores"].dtype == torch.float32 and det["scores"].shape == (7,)
        assert det["labels"].dtype == torch.int64 and det["labels"].max() < 2
        assert torch.all(det["scores"][:-1] >= det["scores"][1:])


def _constant_head(model: CenterNet, peak: tuple[int, int, int], wh: tuple[float, float]) -> None:
    """Make the head predict one peak at ``(class, y, x)`` with size ``wh`` (grid units) and zero offset."""
    head = model.bbox_head
    for conv in (head.heatmap, head.wh, head.offset):
        torch.nn.init.zeros_(conv.weight)
        torch.nn.init.zeros_(conv.bias)
    head.heatmap.bias.data.fill_(-10.0)
    head.wh.bias.data = torch.tensor(wh)
    original = head.forward

    def forward(feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        heat, size, off = original(feat)
        heat = heat.clone()
        heat[:, peak[0], peak[1], peak[2]] = 5.0
        return heat, size, off

    head.forward = forward  # type: ignore[method-assign]


@pytest.mark.parametrize("scale", [0.5, 2.0])
def test_rescale_divides_by_scale_factor_and_clamps(scale: float) -> None:
    model = _model(score_thr=0.5).eval()
    # Peak at grid (x=2, y=3) of a 64x64 input (stride 4), size 6x4 cells -> input box [-4, 4, 20, 20].
    _constant_head(model, (1, 3, 2), (6.0, 4.0))
    meta = _meta(64, 64, scale)
    raw = model.simple_test(torch.zeros(1, 3, 64, 64), [meta], rescale=False)[0]
    assert raw["boxes"].tolist() == [[0.0, 4.0, 20.0, 20.0]]  # clamped to img_shape
    assert raw["labels"].tolist() == [1] and raw["scores"][0] == pytest.approx(torch.tensor(5.0).sigmoid())
    out = model.simple_test(torch.zeros(1, 3, 64, 64), [meta], rescale=True)[0]
    expected = torch.tensor([[-4.0, 4.0, 20.0, 20.0]]) / scale
    expected[:, 0::2] = expected[:, 0::2].clamp(0, meta["ori_shape"][1])
    expected[:, 1::2] = expected[:, 1::2].clamp(0, meta["ori_shape"][0])
    assert torch.allclose(out["boxes"], expected)


def test_rescale_clamps_to_original_shape_and_unflips() -> None:
    model = _model(score_thr=0.5).eval()
    _constant_head(model, (0, 8, 14), (6.0, 4.0))  # input box [44, 24, 68, 40] sticks out on the right
    meta = _meta(64, 64, 1.0)
    assert model.simple_test(torch.zeros(1, 3, 64, 64), [meta])[0]["boxes"].tolist() == [[44.0, 24.0, 64.0, 40.0]]
    meta.update(flip=True, flip_direction="horizontal")
    assert model.simple_test(torch.zeros(1, 3, 64, 64), [meta])[0]["boxes"].tolist() == [[0.0, 24.0, 20.0, 40.0]]


def test_score_threshold_can_leave_no_detection() -> None:
    model = _model(score_thr=0.99).eval()
    det = model.simple_test(torch.zeros(1, 3, 32, 32), [_meta(32, 32)])[0]
    assert det["boxes"].shape == (0, 4) and det["scores"].shape == (0,) and det["labels"].shape == (0,)


def test_overfit_one_batch_lowers_loss() -> None:
    torch.set_num_threads(1)
    model = _model()
    batch = _batch((2, 1, 3), size=64, seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = last = None
    for _ in range(25):
        loss = sum(model.forward_train(**batch).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = float(loss.detach()) if first is None else first
        last = float(loss.detach())
    assert last < 0.25 * first


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"num_classes": 0}, "num_classes"), ({"topk": 0}, "topk"), ({"min_overlap": 1.0}, "min_overlap"),
     ({"width": 15}, "width")],
)
def test_bad_config_is_rejected(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        CenterNet(**kwargs)


def test_bad_inputs_are_named() -> None:
    model = _model()
    batch = _batch((1, 1))
    with pytest.raises(ValueError, match="gt_labels in \\[0, 1\\]"):
        model.forward_train(**{**batch, "gt_labels": [torch.tensor([2]), torch.tensor([0])]})
    with pytest.raises(ValueError, match="one gt_bboxes"):
        model.forward_train(**{**batch, "gt_bboxes": batch["gt_bboxes"][:1]})
    with pytest.raises(ValueError, match="float\\[B, 3, H, W\\]"):
        model.forward_train(batch["img"][:, :1], batch["img_metas"], batch["gt_bboxes"], batch["gt_labels"])
    with pytest.raises(KeyError, match="scale_factor"):
        model.eval().simple_test(batch["img"], [{"ori_shape": (64, 64, 3)}] * 2)
