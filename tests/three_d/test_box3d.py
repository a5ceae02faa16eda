"""Box geometry, augmentation inverses and the CenterPoint box coder."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from detlight.data.kitti import Augment3D
from detlight.models.box3d import (
    CenterPointBBoxCoder,
    boxes_bev_corners,
    limit_period,
    points_in_boxes,
    undo_pcd_aug,
)

RANGE = [0.0, -20.48, -3.0, 40.96, 20.48, 1.0]


def _random_boxes(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * torch.tensor([40.0, 40.0]) + torch.tensor([0.2, -20.2])
    z = torch.rand(n, 1, generator=g) * 2 - 2.5
    dims = torch.rand(n, 3, generator=g) * 4 + 0.3
    yaw = (torch.rand(n, 1, generator=g) * 2 - 1) * math.pi
    return torch.cat([xy, z, dims, yaw], dim=1)


def test_coder_encode_hand_case() -> None:
    coder = CenterPointBBoxCoder(RANGE, [0.32, 0.32, 4.0], out_size_factor=2)  # 0.64 m cells, 64 x 64 grid
    box = torch.tensor([[1.0, -20.0, -1.5, 4.0, 2.0, 1.0, 0.5]])
    flat, target, valid = coder.encode(box)
    # col = 1.0 / 0.64 = 1.5625 -> cell 1; row = 0.48 / 0.64 = 0.75 -> cell 0
    assert coder.grid == (64, 64) and flat.tolist() == [1] and valid.tolist() == [True]
    expected = [0.5625, 0.75, -1.0, math.log(4.0), math.log(2.0), 0.0, math.sin(0.5), math.cos(0.5)]
    torch.testing.assert_close(target[0], torch.tensor(expected))


@pytest.mark.parametrize("stride", [1, 2, 4])
def test_coder_round_trip(stride: int) -> None:
    coder = CenterPointBBoxCoder(RANGE, [0.32, 0.32], out_size_factor=stride)
    boxes = _random_boxes(50)
    flat, codes, valid = coder.encode(boxes)
    assert valid.all()
    back = coder.decode(flat, codes)
    torch.testing.assert_close(back[:, :6], boxes[:, :6], atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(limit_period(back[:, 6] - boxes[:, 6]), torch.zeros(50), atol=1e-5, rtol=0)


def test_coder_marks_off_grid_boxes_invalid() -> None:
    coder = CenterPointBBoxCoder(RANGE, [0.32, 0.32], out_size_factor=2)
    _, _, valid = coder.encode(torch.tensor([[-1.0, 0, 0, 1, 1, 1, 0], [41.0, 0, 0, 1, 1, 1, 0],
                                             [10.0, 20.5, 0, 1, 1, 1, 0], [40.9, 20.4, 0, 1, 1, 1, 0]]))
    assert valid.tolist() == [False, False, False, True]


def test_points_in_rotated_box() -> None:
    box = torch.tensor([[0.0, 0.0, -1.0, 4.0, 1.0, 2.0, math.pi / 2]])  # long side along +y after rotation
    pts = torch.tensor([[0.0, 1.5, 0.0], [1.5, 0.0, 0.0], [0.0, 0.0, 1.5], [0.0, -1.9, -0.9], [0.0, 0.0, -1.1]])
    assert points_in_boxes(pts, box)[:, 0].tolist() == [True, False, False, True, False]


def test_bev_corners_area_and_order() -> None:
    boxes = _random_boxes(10)
    c = boxes_bev_corners(boxes).double()
    x, y = c[..., 0], c[..., 1]
    area = 0.5 * (x * y.roll(-1, 1) - x.roll(-1, 1) * y).sum(1)  # shoelace: positive for counter-clockwise
    torch.testing.assert_close(area, (boxes[:, 3] * boxes[:, 4]).double(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("flip", [0.0, 1.0])
def test_augmentation_then_undo_is_identity(flip: float) -> None:
    np.random.seed(0)
    boxes = _random_boxes(8, seed=1)
    aug = Augment3D(rot_range=(0.6, 0.6), scale_range=(1.1, 1.1), flip_ratio=flip, shuffle=False)
    points = torch.cat([boxes[:, :3], torch.zeros(8, 1)], dim=1)
    new_points, new_boxes, meta = aug(points, boxes)
    assert meta == {"pcd_horizontal_flip": bool(flip), "pcd_rotation": pytest.approx(0.6),
                    "pcd_scale_factor": pytest.approx(1.1)}
    # the box centres were the points: they move together
    torch.testing.assert_close(new_points[:, :3], new_boxes[:, :3])
    torch.testing.assert_close(new_boxes[:, 3:6], boxes[:, 3:6] * 1.1)
    back = undo_pcd_aug(new_boxes, meta)
    torch.testing.assert_close(back[:, :6], boxes[:, :6], atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(limit_period(back[:, 6] - boxes[:, 6]), torch.zeros(8), atol=1e-5, rtol=0)


def test_flip_mirrors_y_and_yaw() -> None:
    np.random.seed(0)
    aug = Augment3D(rot_range=(0.0, 0.0), scale_range=(1.0, 1.0), flip_ratio=1.0, shuffle=False)
    box = torch.tensor([[10.0, 3.0, -1.0, 4.0, 2.0, 1.5, 0.3]])
    _, out, _ = aug(torch.zeros(0, 4), box)
    torch.testing.assert_close(out, torch.tensor([[10.0, -3.0, -1.0, 4.0, 2.0, 1.5, -0.3]]))


def test_object_noise_moves_points_with_box() -> None:
    np.random.seed(1)
    box = torch.tensor([[10.0, 0.0, -1.7, 4.0, 2.0, 1.5, 0.0]])
    inside = torch.tensor([[10.5, 0.5, -1.0, 0.7], [9.0, -0.5, -0.5, 0.7]])
    outside = torch.tensor([[20.0, 5.0, -1.0, 0.1]])
    aug = Augment3D(rot_range=(0.0, 0.0), scale_range=(1.0, 1.0), flip_ratio=0.0, object_noise=True, shuffle=False)
    pts, out, _ = aug(torch.cat([inside, outside]), box)
    assert not torch.equal(out, box)
    torch.testing.assert_close(pts[2], outside[0])  # background untouched
    assert points_in_boxes(pts[:2, :3], out).all()  # object points follow the box


@pytest.mark.parametrize("kwargs", [{"flip_ratio": 1.5}, {"rot_range": (1.0, -1.0)}, {"scale_range": (0.0, 1.0)}])
def test_augment_rejects_bad_values(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="Augment3D"):
        Augment3D(**kwargs)
