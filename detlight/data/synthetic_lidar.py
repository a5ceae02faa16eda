"""Deterministic synthetic LiDAR scenes written in the KITTI object format.

Each scene is a flat ground plane with Car / Pedestrian / Cyclist boxes of KITTI-like sizes and random yaw, plus
optional clutter (poles and walls, unlabelled). A spinning LiDAR 1.73 m above the ground is simulated by casting rays
on a beam-elevation x azimuth grid and keeping the nearest hit, so the point density falls with distance and near
objects occlude far ones. Range noise, random point dropout and per-surface intensity are added. Objects hit by fewer
than ``min_points`` rays are removed from the scene (and the labels) before the final cast.

The output is read back by :class:`detlight.data.kitti.KittiDataset`; a frame depends only on ``(seed, frame
index)``, so regenerating gives identical files.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from detlight.data.kitti import (
    KITTI_CLASSES,
    KittiCalib,
    KittiObject,
    rotation_to_alpha,
    write_calib,
    write_label,
    write_points,
)
from detlight.exceptions import ConfigError, DatasetError
from detlight.models.box3d import lidar_to_camera_boxes

__all__ = ["SyntheticLidarSpec", "ensure_synthetic_kitti", "generate_synthetic_kitti", "synthetic_cache_dir"]

_FORMAT_VERSION = 1
# Mean (l, w, h) per class, as mmdet3d's KITTI 3-class anchor sizes; order follows KITTI_CLASSES.
_MEAN_SIZES = {"Pedestrian": (0.8, 0.6, 1.73), "Cyclist": (1.76, 0.6, 1.73), "Car": (3.9, 1.6, 1.56)}
_SIZE_STD = {"Pedestrian": (0.1, 0.08, 0.08), "Cyclist": (0.12, 0.08, 0.08), "Car": (0.3, 0.1, 0.1)}
# A KITTI calibration (drive 2011_09_26), so the camera <-> LiDAR conversion is exercised with real matrices.
_P2 = np.array([[721.5377, 0.0, 609.5593, 44.85728], [0.0, 721.5377, 172.854, 0.2163791], [0.0, 0.0, 1.0, 0.002745884]])
_R0 = np.array([[0.9999239, 0.00983776, -0.007445048], [-0.009869795, 0.9999421, -0.004278459],
                [0.007402527, 0.004351614, 0.9999631]])
_TR = np.array([[7.533745e-03, -9.999714e-01, -6.166020e-04, -4.069766e-03],
                [1.480249e-02, 7.280733e-04, -9.998902e-01, -7.631618e-02],
                [9.998621e-01, 7.523790e-03, 1.480755e-02, -2.717806e-01]])
_IMAGE_WH = (1242.0, 375.0)


@dataclass(frozen=True)
class SyntheticLidarSpec:
    """What to generate. Every field feeds the cache key, so changing one gives a new dataset directory.

    Args:
        num_train: frames in ``ImageSets/train.txt`` (ids ``0 .. num_train-1``).
        num_val: frames in ``ImageSets/val.txt`` (the following ids).
        seed: base seed; frame ``i`` uses ``numpy.random.default_rng([seed, i])``.
        objects_per_scene: inclusive range of labelled objects placed per scene (before visibility filtering).
        class_probs: sampling probability of Pedestrian, Cyclist, Car.
        clutter_per_scene: inclusive range of unlabelled poles/walls.
        num_beams: LiDAR beams, evenly spread over ``elevation_range`` (degrees).
        elevation_range: lowest and highest beam elevation, degrees.
        azimuth_fov: horizontal field of view centred on +x, degrees (KITTI labels cover the camera's ~90).
        azimuth_res: horizontal angular step, degrees.
        max_range: hits further than this (metres) are dropped.
        spawn_x: range of object centre x, metres.
        spawn_half_width: objects are placed with ``|y| <= spawn_half_width``.
        range_noise: standard deviation of the range noise, metres.
        dropout: probability of losing a return.
        min_points: objects with fewer hits are removed from the scene.
    """

    num_train: int = 200
    num_val: int = 50
    seed: int = 0
    objects_per_scene: tuple[int, int] = (4, 12)
    class_probs: tuple[float, float, float] = (0.25, 0.2, 0.55)
    clutter_per_scene: tuple[int, int] = (0, 4)
    num_beams: int = 32
    elevation_range: tuple[float, float] = (-24.9, 2.0)
    azimuth_fov: float = 90.0
    azimuth_res: float = 0.4
    max_range: float = 45.0
    spawn_x: tuple[float, float] = (4.0, 40.0)
    spawn_half_width: float = 20.0
    range_noise: float = 0.02
    dropout: float = 0.1
    min_points: int = 5

    def __post_init__(self) -> None:
        if self.num_train < 1 or self.num_val < 0:
            raise ConfigError(f"SyntheticLidarSpec needs num_train >= 1 and num_val >= 0, got {self.num_train}, "
                              f"{self.num_val}")
        if len(self.class_probs) != 3 or abs(sum(self.class_probs) - 1.0) > 1e-6 or min(self.class_probs) < 0:
            raise ConfigError(f"SyntheticLidarSpec.class_probs must be 3 non-negative numbers summing to 1 "
                              f"(Pedestrian, Cyclist, Car), got {self.class_probs}")
        if self.objects_per_scene[0] > self.objects_per_scene[1] or self.objects_per_scene[0] < 0:
            raise ConfigError(f"SyntheticLidarSpec.objects_per_scene must be (low, high), got {self.objects_per_scene}")
        if self.num_beams < 1 or self.azimuth_res <= 0:
            raise ConfigError("SyntheticLidarSpec needs num_beams >= 1 and azimuth_res > 0, got "
                              f"{self.num_beams}, {self.azimuth_res}")

    def cache_key(self) -> str:
        """Short stable hash of the spec and the generator version."""
        text = json.dumps({"v": _FORMAT_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:12]


# ------------------------------------------------------------------------------------------------------ scene maker
def _place(rng: np.random.Generator, spec: SyntheticLidarSpec) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Sample labelled boxes ``[n, 7]`` + class names and clutter boxes ``[m, 7]`` without BEV overlap."""
    ground = -1.73
    boxes: list[list[float]] = []
    names: list[str] = []
    radii: list[float] = []
    half_fov = math.radians(spec.azimuth_fov) / 2

    def free(x: float, y: float, r: float) -> bool:
        return all(math.hypot(x - b[0], y - b[1]) > r + rb + 0.3 for b, rb in zip(boxes, radii))

    n_obj = int(rng.integers(spec.objects_per_scene[0], spec.objects_per_scene[1] + 1))
    for _ in range(n_obj * 20):
        if len(names) >= n_obj:
            break
        name = KITTI_CLASSES[int(rng.choice(3, p=spec.class_probs))]
        size = np.maximum(rng.normal(_MEAN_SIZES[name], _SIZE_STD[name]), 0.3)
        x = float(rng.uniform(*spec.spawn_x))
        y_lim = min(spec.spawn_half_width, x * math.tan(half_fov) * 0.95)
        y = float(rng.uniform(-y_lim, y_lim))
        r = float(np.hypot(size[0], size[1]) / 2)
        if free(x, y, r):
            boxes.append([x, y, ground + float(rng.normal(0, 0.03)), *size.tolist(), float(rng.uniform(-np.pi, np.pi))])
            names.append(name)
            radii.append(r)
    n_labelled = len(boxes)
    for _ in range(int(rng.integers(spec.clutter_per_scene[0], spec.clutter_per_scene[1] + 1)) * 10):
        if len(boxes) - n_labelled >= spec.clutter_per_scene[1]:
            break
        wall = rng.random() < 0.4
        dims = [rng.uniform(4, 12), rng.uniform(0.2, 0.4), rng.uniform(1.5, 3)] if wall else \
            [rng.uniform(0.15, 0.4), rng.uniform(0.15, 0.4), rng.uniform(2.5, 5)]
        x = float(rng.uniform(*spec.spawn_x))
        y = float(rng.uniform(-spec.spawn_half_width, spec.spawn_half_width))
        r = float(np.hypot(dims[0], dims[1]) / 2)
        if free(x, y, r):
            boxes.append([x, y, ground, *dims, float(rng.uniform(-np.pi, np.pi))])
            radii.append(r)
    all_boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
    return all_boxes[:n_labelled], names, all_boxes[n_labelled:]


def _rays(spec: SyntheticLidarSpec) -> np.ndarray:
    elev = np.radians(np.linspace(spec.elevation_range[0], spec.elevation_range[1], spec.num_beams))
    half = spec.azimuth_fov / 2
    azim = np.radians(np.arange(-half, half + 1e-9, spec.azimuth_res))
    e, a = np.meshgrid(elev, azim, indexing="ij")
    return np.stack([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)], axis=-1).reshape(-1, 3)


def _cast(dirs: np.ndarray, boxes: np.ndarray, ground: float) -> tuple[np.ndarray, np.ndarray]:
    """Nearest hit distance per ray and the index of the box hit (-1: ground or nothing)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t_best = np.where(dirs[:, 2] < 0, ground / dirs[:, 2], np.inf)
        owner = np.full(len(dirs), -1)
        if len(boxes):
            c, s = np.cos(-boxes[:, 6]), np.sin(-boxes[:, 6])
            origin = -np.stack([boxes[:, 0], boxes[:, 1], boxes[:, 2] + boxes[:, 5] / 2], axis=1)
            o_local = np.stack([c * origin[:, 0] - s * origin[:, 1], s * origin[:, 0] + c * origin[:, 1],
                                origin[:, 2]], axis=1)  # [M, 3]
            d_local = np.stack([c[None] * dirs[:, None, 0] - s[None] * dirs[:, None, 1],
                                s[None] * dirs[:, None, 0] + c[None] * dirs[:, None, 1],
                                np.broadcast_to(dirs[:, None, 2], (len(dirs), len(boxes)))], axis=-1)  # [R, M, 3]
            half = boxes[None, :, 3:6] / 2
            t1 = (-half - o_local[None]) / d_local
            t2 = (half - o_local[None]) / d_local
            t_near = np.nanmax(np.minimum(t1, t2), axis=-1)
            t_far = np.nanmin(np.maximum(t1, t2), axis=-1)
            hit = (t_near <= t_far) & (t_far > 0)
            t_box = np.where(hit, np.maximum(t_near, 0), np.inf)
            nearest = t_box.argmin(axis=1)
            t_min = t_box[np.arange(len(dirs)), nearest]
            closer = t_min < t_best
            t_best = np.where(closer, t_min, t_best)
            owner = np.where(closer, nearest, -1)
    return t_best, owner


def make_scene(spec: SyntheticLidarSpec, index: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Frame ``index``: points ``float32[N, 4]``, labelled LiDAR boxes ``[n, 7]`` and their class names."""
    rng = np.random.default_rng([spec.seed, index])
    boxes, names, clutter = _place(rng, spec)
    dirs = _rays(spec)
    ground = -1.73
    _, owner = _cast(dirs, np.concatenate([boxes, clutter]), ground)
    counts = np.bincount(owner[owner >= 0], minlength=len(boxes) + len(clutter))[: len(boxes)]
    visible = counts >= spec.min_points
    boxes, names = boxes[visible], [n for n, v in zip(names, visible) if v]
    scene = np.concatenate([boxes, clutter])
    t, owner = _cast(dirs, scene, ground)
    keep = np.isfinite(t) & (t <= spec.max_range) & (rng.random(len(t)) >= spec.dropout)
    t, owner, dirs = t[keep], owner[keep], dirs[keep]
    xyz = dirs * (t + rng.normal(0.0, spec.range_noise, len(t)))[:, None]
    reflect = np.concatenate([rng.uniform(0.3, 0.9, len(scene)), [0.0]])  # last entry: ground
    intensity = np.where(owner >= 0, reflect[owner], rng.uniform(0.05, 0.3, len(t)))
    intensity = np.clip(intensity * np.exp(-t / 80.0) + rng.normal(0, 0.02, len(t)), 0.0, 1.0)
    points = np.concatenate([xyz, intensity[:, None]], axis=1).astype(np.float32)
    return points, boxes.astype(np.float32), names


def _kitti_objects(boxes: np.ndarray, names: list[str]) -> list[KittiObject]:
    cam = lidar_to_camera_boxes(torch.from_numpy(boxes).float(), torch.from_numpy(_R0), torch.from_numpy(_TR))
    objects = []
    for box, cam_box, name in zip(boxes, cam.double().numpy(), names):
        x, y, z, length, h, w, ry = cam_box.tolist()
        objects.append(KittiObject(type=name, alpha=rotation_to_alpha(ry, x, z), bbox=_image_box(box),
                                   dimensions=(h, w, length), location=(x, y, z), rotation_y=ry))
    return objects


def _image_box(box: np.ndarray) -> tuple[float, float, float, float]:
    """2D box of the projected 3D corners, clipped to the KITTI image size."""
    x, y, z, dx, dy, dz, yaw = box.tolist()
    lx, ly, lz = np.meshgrid([-dx / 2, dx / 2], [-dy / 2, dy / 2], [0, dz], indexing="ij")
    c, s = math.cos(yaw), math.sin(yaw)
    corners = np.stack([c * lx - s * ly + x, s * lx + c * ly + y, lz + z, np.ones_like(lx)], axis=-1).reshape(-1, 4)
    r0 = np.eye(4)
    r0[:3, :3] = _R0
    tr = np.vstack([_TR, [0, 0, 0, 1]])
    uvw = (corners @ (r0 @ tr).T) @ _P2.T
    uv = uvw[:, :2] / np.maximum(uvw[:, 2:3], 1e-3)
    w_img, h_img = _IMAGE_WH
    u = np.clip(uv[:, 0], 0, w_img - 1)
    v = np.clip(uv[:, 1], 0, h_img - 1)
    return float(u.min()), float(v.min()), float(u.max()), float(v.max())


def generate_synthetic_kitti(spec: SyntheticLidarSpec, out_dir: str | Path) -> Path:
    """Write ``spec``'s frames into ``out_dir`` (created) in the KITTI layout and return it."""
    out = Path(out_dir)
    for sub in ("velodyne", "label_2", "calib"):
        (out / "training" / sub).mkdir(parents=True, exist_ok=True)
    (out / "ImageSets").mkdir(parents=True, exist_ok=True)
    calib = KittiCalib(P0=_P2, P1=_P2, P2=_P2, P3=_P2, R0_rect=_R0, Tr_velo_to_cam=_TR, Tr_imu_to_velo=np.eye(3, 4))
    total = spec.num_train + spec.num_val
    for i in range(total):
        points, boxes, names = make_scene(spec, i)
        frame = f"{i:06d}"
        write_points(out / "training" / "velodyne" / f"{frame}.bin", points)
        write_label(out / "training" / "label_2" / f"{frame}.txt", _kitti_objects(boxes, names))
        write_calib(out / "training" / "calib" / f"{frame}.txt", calib)
    ids = [f"{i:06d}" for i in range(total)]
    (out / "ImageSets" / "train.txt").write_text("\n".join(ids[: spec.num_train]) + "\n")
    (out / "ImageSets" / "val.txt").write_text("\n".join(ids[spec.num_train:]) + ("\n" if spec.num_val else ""))
    (out / "spec.json").write_text(json.dumps(asdict(spec), indent=1))
    return out


def synthetic_cache_dir() -> Path:
    """``$DETLIGHT_CACHE`` or ``~/.cache/detlight``."""
    return Path(os.environ.get("DETLIGHT_CACHE") or Path.home() / ".cache" / "detlight")


def ensure_synthetic_kitti(spec: SyntheticLidarSpec, cache_dir: str | Path | None = None) -> Path:
    """Return the cached dataset for ``spec``, generating it first if needed.

    Generation happens in a temporary sibling directory that is moved into place with ``os.replace``, so concurrent
    processes (DDP ranks, parallel test runs) never see a half-written dataset; the loser of a race discards its copy.
    """
    root = Path(cache_dir) if cache_dir is not None else synthetic_cache_dir()
    target = root / f"synthetic_lidar_{spec.cache_key()}"
    if (target / "spec.json").is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=root))
    try:
        generate_synthetic_kitti(spec, tmp)
        try:
            os.replace(tmp, target)
        except OSError as err:
            if not (target / "spec.json").is_file():
                raise DatasetError(
                    f"Synthetic dataset folder {target} exists but has no spec.json, so it was not written by "
                    "detlight's generator (or was copied incompletely). Delete the folder to regenerate it, or set "
                    "`data.cache_dir` elsewhere."
                ) from err
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
