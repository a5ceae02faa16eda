from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from detlight.data.coco import DatasetError
from detlight.data.transforms import (
    LoadImage,
    Normalize,
    Pad,
    PipelineConfig,
    RandomFlip,
    Resize,
    flip_bboxes,
    rescale_size,
)


def _results(h: int, w: int, boxes: list[list[float]] | None = None) -> dict:
    img = torch.arange(3 * h * w, dtype=torch.int64).remainder(251).to(torch.uint8).reshape(3, h, w)
    return {"img": img, "img_shape": (h, w, 3), "ori_shape": (h, w, 3), "img_fields": ["img"],
            "gt_bboxes": torch.tensor(boxes or [[0.0, 0.0, float(w), float(h)]]), "bbox_fields": ["gt_bboxes"]}


@pytest.mark.parametrize(("w", "h", "scale", "expected"), [
    (640, 480, (1333, 800), (1067, 800)),  # mmdet's classic 1x schedule on a VGA image
    (480, 640, (1333, 800), (800, 1067)),  # portrait: the short edge goes to 800
    (1000, 200, (1333, 800), (1333, 267)),  # the long edge binds
    (200, 100, (128, 128), (128, 64)),
    (100, 200, (800, 1333), (667, 1333)),  # (w, h) order of img_scale does not matter with keep_ratio
])
def test_rescale_size_matches_mmcv(w: int, h: int, scale: tuple[int, int], expected: tuple[int, int]) -> None:
    assert rescale_size(w, h, scale)[:2] == expected


def test_resize_keep_ratio_sets_shapes_scale_factor_and_boxes() -> None:
    out = Resize((128, 128), keep_ratio=True)(_results(100, 200, [[10, 20, 110, 60], [150, 0, 200, 100]]))
    assert out["img"].shape == (3, 64, 128) and out["img"].dtype == torch.uint8
    assert out["img_shape"] == (64, 128, 3) and out["ori_shape"] == (100, 200, 3)
    assert out["scale_factor"] == [0.64, 0.64, 0.64, 0.64] and all(type(v) is float for v in out["scale_factor"])
    assert torch.allclose(out["gt_bboxes"], torch.tensor([[6.4, 12.8, 70.4, 38.4], [96.0, 0.0, 128.0, 64.0]]))


def test_resize_without_ratio_and_clipping() -> None:
    out = Resize((50, 40), keep_ratio=False)(_results(20, 100, [[-4, 0, 104, 10]]))
    assert out["img_shape"] == (40, 50, 3)
    assert out["scale_factor"] == [0.5, 2.0, 0.5, 2.0]
    assert out["gt_bboxes"].tolist() == [[0.0, 0.0, 50.0, 20.0]]  # clipped to the new image


def test_resize_is_cv2_style_bilinear() -> None:
    # torch's bilinear (align_corners=False, no antialias) is the cv2.INTER_LINEAR convention; on a 2x upscale the
    # interior samples are the 3:1 blends of neighbours.
    img = torch.tensor([[0, 100], [200, 40]], dtype=torch.uint8).expand(3, 2, 2).clone()
    out = Resize((4, 4), keep_ratio=False)({"img": img, "bbox_fields": []})["img"][0]
    assert out[1, 1].item() == round(0.75 * 0.75 * 0 + 0.75 * 0.25 * 100 + 0.25 * 0.75 * 200 + 0.25 * 0.25 * 40)
    assert out[0, 0].item() == 0 and out[3, 3].item() == 40


def test_resize_same_size_is_identity() -> None:
    res = _results(128, 128)
    img = res["img"].clone()
    out = Resize((128, 128))(res)
    assert torch.equal(out["img"], img) and out["scale_factor"] == [1.0, 1.0, 1.0, 1.0]


@pytest.mark.parametrize(("direction", "expected_box", "pixel_map"), [
    ("horizontal", [70, 20, 90, 40], lambda y, x, h, w: (y, w - 1 - x)),
    ("vertical", [10, 10, 30, 30], lambda y, x, h, w: (h - 1 - y, x)),
    ("diagonal", [70, 10, 90, 30], lambda y, x, h, w: (h - 1 - y, w - 1 - x)),
])
def test_flip_mirrors_image_and_boxes(direction: str, expected_box: list[int], pixel_map: Callable[..., tuple[int, int]]) -> None:
    res = _results(50, 100, [[10, 20, 30, 40]])
    before = res["img"].clone()
    out = RandomFlip(flip_ratio=1.0, direction=direction)(res)  # type: ignore[arg-type]
    assert out["flip"] is True and out["flip_direction"] == direction
    assert out["gt_bboxes"].tolist() == [expected_box]
    for y, x in [(0, 0), (7, 33), (49, 99)]:
        fy, fx = pixel_map(y, x, 50, 100)
        assert torch.equal(out["img"][:, fy, fx], before[:, y, x])
    twice = RandomFlip(1.0, direction)({**out, "flip": True})  # type: ignore[arg-type]
    assert torch.equal(twice["img"], before) and twice["gt_bboxes"].tolist() == [[10, 20, 30, 40]]


def test_flip_ratio_zero_never_flips_and_ratio_half_flips_about_half() -> None:
    out = RandomFlip(0.0)(_results(4, 4))
    assert out["flip"] is False and out["flip_direction"] is None
    np.random.seed(0)
    torch_state = torch.random.get_rng_state()
    flips = [RandomFlip(0.5)(_results(2, 2))["flip"] for _ in range(400)]
    assert 150 < sum(flips) < 250
    assert torch.equal(torch.random.get_rng_state(), torch_state)  # mmdet draws from numpy, not torch
    np.random.seed(0)
    assert [RandomFlip(0.5)(_results(2, 2))["flip"] for _ in range(400)] == flips


def test_flip_boxes_uses_the_resized_shape() -> None:
    assert flip_bboxes(torch.tensor([[0.0, 0, 10, 5]]), (64, 128, 3), "horizontal").tolist() == [[118, 0, 128, 5]]


def test_normalize_reverses_channels_and_scales() -> None:
    img = torch.tensor([10, 20, 30], dtype=torch.uint8).view(3, 1, 1)  # stored BGR, as LoadImage does
    out = Normalize(mean=(1, 2, 3), std=(2, 4, 8), to_rgb=True)({"img": img.clone()})
    assert out["img"].dtype == torch.float32
    assert out["img"].flatten().tolist() == [(30 - 1) / 2, (20 - 2) / 4, (10 - 3) / 8]
    assert out["img_norm_cfg"] == {"mean": [1.0, 2.0, 3.0], "std": [2.0, 4.0, 8.0], "to_rgb": True}
    unit = Normalize((0, 0, 0), (1, 1, 1), to_rgb=False, to_unit_range=True)({"img": img.clone()})
    assert torch.allclose(unit["img"].flatten(), torch.tensor([10, 20, 30]) / 255.0)


@pytest.mark.parametrize(("h", "w", "divisor", "padded"), [
    (128, 128, 32, (128, 128)), (100, 65, 32, (128, 96)), (1, 1, 32, (32, 32)), (64, 33, 16, (64, 48)),
    (30, 30, 1, (30, 30)),
])
def test_pad_to_divisor_bottom_right(h: int, w: int, divisor: int, padded: tuple[int, int]) -> None:
    img = torch.ones(3, h, w)
    out = Pad(size_divisor=divisor)({"img": img, "img_shape": (h, w, 3)})
    assert out["pad_shape"] == (*padded, 3) and out["img"].shape == (3, *padded)
    assert out["pad_shape"][0] % divisor == 0 and out["pad_shape"][1] % divisor == 0
    assert out["img"][:, :h, :w].eq(1).all() and out["img"].sum().item() == 3 * h * w
    assert out["img_shape"] == (h, w, 3) and out["pad_size_divisor"] == divisor


def test_pad_to_fixed_size_and_argument_checks() -> None:
    out = Pad(size=(40, 50), size_divisor=None, pad_val=-1.0)({"img": torch.zeros(3, 30, 20)})
    assert out["pad_shape"] == (40, 50, 3) and out["img"][:, 35, 45].eq(-1).all()
    with pytest.raises(ValueError, match="exactly one"):
        Pad(size=(4, 4), size_divisor=4)
    with pytest.raises(ValueError, match="smaller than the image"):
        Pad(size=(4, 4), size_divisor=None)({"img": torch.zeros(3, 8, 8)})


def test_load_image_default_order_is_bgr(tmp_path: Path) -> None:
    path = tmp_path / "px.png"
    Image.fromarray(np.array([[[255, 0, 10]]], dtype=np.uint8)).save(path)
    out = LoadImage()({"filename": str(path)})
    assert out["img"].flatten().tolist() == [10, 0, 255] and out["ori_shape"] == (1, 1, 3)
    with pytest.raises(DatasetError, match="missing.png"):
        LoadImage()({"filename": str(tmp_path / "missing.png")})


def test_pipeline_config_builds_train_and_test_pipelines(tmp_path: Path) -> None:
    path = tmp_path / "im.png"
    Image.fromarray(np.full((100, 60, 3), 128, dtype=np.uint8)).save(path)
    cfg = PipelineConfig(flip_ratio=1.0)
    names = [type(t).__name__ for t in cfg.build(train=True).transforms]
    assert names == ["LoadImage", "Resize", "RandomFlip", "Normalize", "Pad"]
    assert "RandomFlip" not in [type(t).__name__ for t in cfg.build(train=False).transforms]
    base = {"filename": str(path), "gt_bboxes": torch.tensor([[0.0, 0.0, 30.0, 50.0]]), "bbox_fields": ["gt_bboxes"]}
    train = cfg.build(train=True)(dict(base))
    test = cfg.build(train=False)(dict(base))
    assert train["img_shape"] == test["img_shape"] == (128, 77, 3) and train["pad_shape"] == (128, 96, 3)
    assert train["flip"] is True and "flip" not in test
    assert torch.allclose(train["gt_bboxes"], torch.tensor([[77 - 30 * 77 / 60, 0.0, 77.0, 50 * 1.28]]))
    assert train["img"].dtype == torch.float32 and train["img"][:, 0, 0].abs().max() < 0.5  # 128 is near the mean


@pytest.mark.parametrize(("field", "value", "key"), [("flip_ratio", 1.5, "data.pipeline.flip_ratio"),
                                                     ("size_divisor", 0, "data.pipeline.size_divisor"),
                                                     ("std", (1.0, 0.0, 1.0), "data.pipeline.mean/std"),
                                                     ("img_scale", (0, 128), "data.pipeline.img_scale")])
def test_bad_pipeline_config_names_the_key(field: str, value: object, key: str) -> None:
    with pytest.raises(ValueError, match=key):
        PipelineConfig(**{field: value}).build(train=True)  # type: ignore[arg-type]
