"""3D box geometry and the CenterPoint box coder, in pure torch.

Replaces: the parts of ``mmdet3d.core.bbox`` that PointPillars/CenterPoint training needs
(``LiDARInstance3DBoxes`` flip/rotate/scale/points_in_boxes, ``Box3DMode.convert`` camera -> LiDAR,
``limit_period``, ``CenterPointBBoxCoder`` and ``gaussian_radius``).

Box layout everywhere in detlight's 3D code: ``float32[n, 7] = (x, y, z, dx, dy, dz, yaw)`` in the LiDAR frame with
``(x, y, z)`` the **bottom centre** (mmdet3d ``LiDARInstance3DBoxes`` origin ``(0.5, 0.5, 0)``), ``dx`` the length
along the heading, ``dy`` the width, ``dz`` the height, and ``yaw`` the counter-clockwise heading about +z measured
from +x. KITTI camera boxes are ``(x, y, z, l, h, w, ry)`` in the rectified camera frame (bottom centre, y down).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

__all__ = [
    "CenterPointBBoxCoder",
    "boxes_bev_corners",
    "camera_to_lidar_boxes",
    "flip_horizontal",
    "gaussian_radius",
    "gravity_center",
    "lidar_to_camera_boxes",
    "limit_period",
    "points_in_boxes",
    "rotate_z",
    "scale_scene",
    "undo_pcd_aug",
]


def limit_period(val: torch.Tensor, offset: float = 0.5, period: float = 2 * math.pi) -> torch.Tensor:
    """mmdet3d ``limit_period``: map ``val`` into ``[-offset * period, (1 - offset) * period)``."""
    return val - torch.floor(val / period + offset) * period


def gravity_center(boxes: torch.Tensor) -> torch.Tensor:
    """Geometric centres ``[n, 3]`` of bottom-centred boxes."""
    center = boxes[:, :3].clone()
    center[:, 2] = center[:, 2] + boxes[:, 5] * 0.5
    return center


def _rot2d(xy: torch.Tensor, angle: torch.Tensor | float) -> torch.Tensor:
    """Rotate ``[..., 2]`` points counter-clockwise by ``angle`` (scalar or broadcastable to ``xy[..., 0]``)."""
    angle = torch.as_tensor(angle, dtype=xy.dtype, device=xy.device)
    c, s = torch.cos(angle), torch.sin(angle)
    x, y = xy[..., 0], xy[..., 1]
    return torch.stack([c * x - s * y, s * x + c * y], dim=-1)


def boxes_bev_corners(boxes: torch.Tensor) -> torch.Tensor:
    """Bird's-eye-view corners ``[n, 4, 2]`` in counter-clockwise order (front-left first)."""
    half = boxes[:, 3:5] * 0.5
    signs = boxes.new_tensor([[1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0], [1.0, -1.0]])
    local = signs[None] * half[:, None, :]
    return _rot2d(local, boxes[:, 6:7]) + boxes[:, None, :2]


def points_in_boxes(points: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Mask ``bool[N, M]``: point ``i`` lies inside box ``j`` (mmdet3d ``points_in_boxes_all``, CPU friendly)."""
    if boxes.numel() == 0 or points.numel() == 0:
        return torch.zeros(points.shape[0], boxes.shape[0], dtype=torch.bool, device=points.device)
    rel = points[:, None, :2] - boxes[None, :, :2]
    local = _rot2d(rel, -boxes[None, :, 6])
    dz = points[:, None, 2] - boxes[None, :, 2]
    inside_xy = (local.abs() <= boxes[None, :, 3:5] * 0.5).all(dim=-1)
    return inside_xy & (dz >= 0) & (dz <= boxes[None, :, 5])


def _homogeneous(mat: torch.Tensor) -> torch.Tensor:
    """Pad a ``3x3`` or ``3x4`` matrix to ``4x4``."""
    out = torch.eye(4, dtype=torch.float64)
    out[: mat.shape[0], : mat.shape[1]] = mat.to(torch.float64)
    return out


def camera_to_lidar_boxes(boxes_cam: torch.Tensor, r0_rect: torch.Tensor, tr_velo_to_cam: torch.Tensor) -> torch.Tensor:
    """KITTI camera boxes ``(x, y, z, l, h, w, ry)`` -> LiDAR boxes (mmdet3d ``Box3DMode.convert`` CAM -> LIDAR).

    The rectified camera point ``p_rect = R0_rect @ Tr_velo_to_cam @ p_velo`` is inverted in float64, sizes become
    ``(l, w, h)`` and ``yaw = -ry - pi/2``, wrapped into ``[-pi, pi)``.
    """
    rt = torch.linalg.inv(_homogeneous(r0_rect) @ _homogeneous(tr_velo_to_cam))
    xyz = boxes_cam[:, :3].to(torch.float64)
    xyz = (torch.cat([xyz, torch.ones_like(xyz[:, :1])], dim=1) @ rt.T)[:, :3]
    dims = boxes_cam[:, [3, 5, 4]].to(torch.float64)
    yaw = limit_period(-boxes_cam[:, 6:7].to(torch.float64) - math.pi / 2)
    return torch.cat([xyz, dims, yaw], dim=1).to(torch.float32)


def lidar_to_camera_boxes(boxes: torch.Tensor, r0_rect: torch.Tensor, tr_velo_to_cam: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`camera_to_lidar_boxes`: LiDAR boxes -> KITTI camera ``(x, y, z, l, h, w, ry)``."""
    rt = _homogeneous(r0_rect) @ _homogeneous(tr_velo_to_cam)
    xyz = boxes[:, :3].to(torch.float64)
    xyz = (torch.cat([xyz, torch.ones_like(xyz[:, :1])], dim=1) @ rt.T)[:, :3]
    dims = boxes[:, [3, 5, 4]].to(torch.float64)
    ry = limit_period(-boxes[:, 6:7].to(torch.float64) - math.pi / 2)
    return torch.cat([xyz, dims, ry], dim=1).to(torch.float32)


# ---------------------------------------------------------------------------------------------- global augmentation
def flip_horizontal(points: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """mmdet3d ``RandomFlip3D`` horizontal flip in the LiDAR frame: ``y -> -y``, ``yaw -> -yaw``."""
    points, boxes = points.clone(), boxes.clone()
    points[:, 1] = -points[:, 1]
    boxes[:, 1] = -boxes[:, 1]
    boxes[:, 6] = -boxes[:, 6]
    return points, boxes


def rotate_z(points: torch.Tensor, boxes: torch.Tensor, angle: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate the scene counter-clockwise about +z by ``angle`` radians (``GlobalRotScaleTrans`` rotation)."""
    points, boxes = points.clone(), boxes.clone()
    points[:, :2] = _rot2d(points[:, :2], angle)
    boxes[:, :2] = _rot2d(boxes[:, :2], angle)
    boxes[:, 6] = limit_period(boxes[:, 6] + angle)
    return points, boxes


def scale_scene(points: torch.Tensor, boxes: torch.Tensor, factor: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale coordinates and box sizes by ``factor`` (``GlobalRotScaleTrans`` scaling)."""
    points, boxes = points.clone(), boxes.clone()
    points[:, :3] = points[:, :3] * factor
    boxes[:, :6] = boxes[:, :6] * factor
    return points, boxes


def undo_pcd_aug(boxes: torch.Tensor, meta: Mapping[str, Any]) -> torch.Tensor:
    """Map boxes predicted on an augmented cloud back to the original LiDAR frame.

    The data pipeline applies flip, then rotation, then scaling (mmdet3d's order) and records them in the sample's
    meta as ``pcd_horizontal_flip``, ``pcd_rotation`` (radians) and ``pcd_scale_factor``; they are undone in reverse.
    """
    empty = boxes.new_zeros(0, 3)
    scale = float(meta.get("pcd_scale_factor", 1.0))
    if scale != 1.0:
        _, boxes = scale_scene(empty, boxes, 1.0 / scale)
    angle = float(meta.get("pcd_rotation", 0.0))
    if angle != 0.0:
        _, boxes = rotate_z(empty, boxes, -angle)
    if meta.get("pcd_horizontal_flip", False):
        _, boxes = flip_horizontal(empty, boxes)
    return boxes


# ---------------------------------------------------------------------------------------------- CenterPoint targets
def gaussian_radius(height: torch.Tensor, width: torch.Tensor, min_overlap: float = 0.5) -> torch.Tensor:
    """CenterNet/CenterPoint ``gaussian_radius`` (the three-case bound, vectorised), in feature-map cells."""
    a1, b1 = 1.0, height + width
    c1 = width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + torch.sqrt(b1**2 - 4 * a1 * c1)) / 2
    a2, b2 = 4.0, 2 * (height + width)
    c2 = (1 - min_overlap) * width * height
    r2 = (b2 + torch.sqrt(b2**2 - 4 * a2 * c2)) / 2
    a3, b3 = 4 * min_overlap, -2 * min_overlap * (height + width)
    c3 = (min_overlap - 1) * width * height
    r3 = (b3 + torch.sqrt(b3**2 - 4 * a3 * c3)) / 2
    return torch.minimum(torch.minimum(r1, r2), r3)


class CenterPointBBoxCoder:
    """Encodes LiDAR boxes as CenterPoint regression targets (replaces mmdet3d ``CenterPointBBoxCoder``).

    A box whose centre falls in feature cell ``(row, col)`` is encoded as 8 numbers: the sub-cell offset of the
    centre ``(dx, dy)`` in cells, the gravity-centre ``z``, ``log(dx, dy, dz)`` and ``(sin yaw, cos yaw)``. Decoding
    returns bottom-centred boxes, as mmdet3d's ``CenterHead.get_bboxes`` does.

    Args:
        point_cloud_range: ``[x_min, y_min, z_min, x_max, y_max, z_max]`` in metres.
        voxel_size: pillar size ``[vx, vy(, vz)]`` in metres.
        out_size_factor: stride of the head's feature map in pillars.
    """

    code_size = 8

    def __init__(self, point_cloud_range: Sequence[float], voxel_size: Sequence[float], out_size_factor: int) -> None:
        self.pc_range = [float(v) for v in point_cloud_range]
        self.cell = (float(voxel_size[0]) * out_size_factor, float(voxel_size[1]) * out_size_factor)
        self.grid = (
            round((self.pc_range[4] - self.pc_range[1]) / self.cell[1]),
            round((self.pc_range[3] - self.pc_range[0]) / self.cell[0]),
        )

    def cell_coords(self, boxes: torch.Tensor) -> torch.Tensor:
        """Continuous ``(col, row)`` feature-map coordinates of the box centres ``[n, 2]``."""
        col = (boxes[:, 0] - self.pc_range[0]) / self.cell[0]
        row = (boxes[:, 1] - self.pc_range[1]) / self.cell[1]
        return torch.stack([col, row], dim=1)

    def encode(self, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return ``(flat_index[n], targets[n, 8], valid[n])`` for boxes whose centre lies on the grid."""
        coords = self.cell_coords(boxes)
        ij = torch.floor(coords).long()
        rows, cols = self.grid
        valid = (ij[:, 0] >= 0) & (ij[:, 0] < cols) & (ij[:, 1] >= 0) & (ij[:, 1] < rows)
        ij = torch.stack([ij[:, 0].clamp(0, cols - 1), ij[:, 1].clamp(0, rows - 1)], dim=1)
        flat = ij[:, 1] * cols + ij[:, 0]
        targets = torch.cat(
            [
                coords - ij.to(coords.dtype),
                (boxes[:, 2] + boxes[:, 5] * 0.5)[:, None],
                torch.log(boxes[:, 3:6].clamp(min=1e-3)),
                torch.sin(boxes[:, 6:7]),
                torch.cos(boxes[:, 6:7]),
            ],
            dim=1,
        )
        return flat, targets, valid

    def decode(self, flat_index: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Boxes ``[n, 7]`` from flat cell indices ``[n]`` and predicted codes ``[n, 8]``."""
        cols = self.grid[1]
        col = (flat_index % cols).to(codes.dtype) + codes[:, 0]
        row = torch.div(flat_index, cols, rounding_mode="floor").to(codes.dtype) + codes[:, 1]
        x = col * self.cell[0] + self.pc_range[0]
        y = row * self.cell[1] + self.pc_range[1]
        dims = torch.exp(codes[:, 3:6].clamp(max=5.0))
        z = codes[:, 2] - dims[:, 2] * 0.5
        yaw = torch.atan2(codes[:, 6], codes[:, 7])
        return torch.cat([torch.stack([x, y, z], dim=1), dims, yaw[:, None]], dim=1)
