"""Deterministic synthetic COCO-format detection data: coloured shapes on cluttered backgrounds.

The set stands in for a real COCO download in tests, smoke configs and notebooks. It is small (600 + 100 images of
128x128 by default), generated in about a second, and cached under ``$DETLIGHT_CACHE`` (default ``~/.cache/detlight``)
in a folder whose name hashes every generation parameter and :data:`GENERATOR_VERSION`, so changing anything writes a
new folder instead of reusing a stale one.

Layout of one cached set::

    <cache>/synthetic_coco/<key>/annotations/train.json
    <cache>/synthetic_coco/<key>/annotations/val.json
    <cache>/synthetic_coco/<key>/train/000000.png ...
    <cache>/synthetic_coco/<key>/val/000000.png ...

Colours are random per object, so only the outline tells the classes apart; backgrounds carry a colour gradient,
Gaussian noise and thin lines / specks that are not objects. Objects never overlap (their boxes are tight and
unambiguous), and a few images hold no object at all.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from detlight.exceptions import ConfigError, DatasetError

__all__ = ["GENERATOR_VERSION", "SHAPES", "SyntheticCocoPaths", "SyntheticCocoSpec", "ensure_synthetic_coco"]

#: Bump whenever the drawing code changes what is written, so old caches are not reused.
GENERATOR_VERSION = 1
#: Shape names in label order; a spec with ``num_classes=k`` uses the first ``k``.
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
_COMPLETE_MARKER = ".complete"
_MIN_CONTRAST = 110.0  # L2 distance in RGB between an object and the background under it
Box = tuple[int, int, int, int, int]  # label, x, y, w, h (COCO xywh pixels)


def default_cache_root() -> Path:
    """``$DETLIGHT_CACHE`` if set, else ``~/.cache/detlight``."""
    env = os.environ.get("DETLIGHT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "detlight"


@dataclass
class SyntheticCocoSpec:
    """Parameters of a synthetic shapes dataset; every field except ``root`` is part of the cache key.

    Args:
        root: Cache folder; ``None`` means :func:`default_cache_root` at generation time.
        num_train: Images in the train split.
        num_val: Images in the val split.
        image_size: Side of the square images, in pixels.
        num_classes: How many of :data:`SHAPES` to draw (the first ``num_classes``).
        min_size: Smallest object side, in pixels.
        max_size: Largest object side, in pixels.
        max_objects: Most objects per image; non-empty images hold ``1..max_objects``.
        empty_ratio: Share of images drawn with no object.
        noise_std: Standard deviation of the per-pixel Gaussian noise (0-255 scale).
        clutter: Most distractor lines and specks per image.
        seed: Generation seed; the same spec always writes byte-identical files.
    """

    root: str | None = None
    num_train: int = 600
    num_val: int = 100
    image_size: int = 128
    num_classes: int = 4
    min_size: int = 12
    max_size: int = 48
    max_objects: int = 6
    empty_ratio: float = 0.05
    noise_std: float = 8.0
    clutter: int = 6
    seed: int = 0

    def __post_init__(self) -> None:
        checks: list[tuple[str, bool, str]] = [
            ("num_train", self.num_train >= 1, "an int >= 1"),
            ("num_val", self.num_val >= 1, "an int >= 1"),
            ("image_size", self.image_size >= 16, "an int >= 16"),
            ("num_classes", 1 <= self.num_classes <= len(SHAPES), f"an int in [1, {len(SHAPES)}]"),
            ("min_size", self.min_size >= 4, "an int >= 4"),
            ("max_size", self.min_size <= self.max_size <= self.image_size, "an int in [min_size, image_size]"),
            ("max_objects", self.max_objects >= 1, "an int >= 1"),
            ("empty_ratio", 0.0 <= self.empty_ratio <= 1.0, "a float in [0, 1]"),
            ("noise_std", self.noise_std >= 0.0, "a float >= 0"),
            ("clutter", self.clutter >= 0, "an int >= 0"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ConfigError(
                    f"Expected `synthetic.{name}` to be {expected}, but got {getattr(self, name)!r}."
                )

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names in label order."""
        return SHAPES[: self.num_classes]

    def cache_key(self) -> str:
        """Folder name that identifies these parameters and :data:`GENERATOR_VERSION`."""
        params = {k: v for k, v in dataclasses.asdict(self).items() if k != "root"}
        params["generator_version"] = GENERATOR_VERSION
        digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
        return f"v{GENERATOR_VERSION}-{digest}"

    def cache_dir(self) -> Path:
        """Where this spec's dataset lives (whether or not it exists yet)."""
        root = Path(self.root).expanduser() if self.root is not None else default_cache_root()
        return root / "synthetic_coco" / self.cache_key()


@dataclass(frozen=True)
class SyntheticCocoPaths:
    """Files of a generated synthetic set, ready for :class:`detlight.data.coco.CocoDataset`."""

    root: Path
    train_ann: Path
    train_img_prefix: Path
    val_ann: Path
    val_img_prefix: Path
    classes: tuple[str, ...]


def _paths(root: Path, classes: tuple[str, ...]) -> SyntheticCocoPaths:
    return SyntheticCocoPaths(
        root=root,
        train_ann=root / "annotations" / "train.json",
        train_img_prefix=root / "train",
        val_ann=root / "annotations" / "val.json",
        val_img_prefix=root / "val",
        classes=classes,
    )


def ensure_synthetic_coco(spec: SyntheticCocoSpec | None = None) -> SyntheticCocoPaths:
    """Return the paths of ``spec``'s dataset, generating it first if it is not cached.

    Generation writes into a temporary sibling folder and renames it into place, so an interrupted run leaves no
    partial dataset and concurrent runs (several DDP ranks, parallel tests) agree on one complete copy.

    Raises:
        DatasetError: the cache folder exists but was not written by this generator (no completion marker).

    Example:
        >>> import tempfile
        >>> paths = ensure_synthetic_coco(SyntheticCocoSpec(root=tempfile.mkdtemp(), num_train=2, num_val=1))
        >>> paths.train_ann.name, paths.classes
        ('train.json', ('circle', 'square', 'triangle', 'cross'))
    """
    spec = spec if spec is not None else SyntheticCocoSpec()
    final = spec.cache_dir()
    if final.exists():
        _check_complete(final)
        return _paths(final, spec.classes)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp's 0o700 would survive the rename and hide a shared cache from other users
        _write_dataset(spec, tmp)
        params = {k: v for k, v in dataclasses.asdict(spec).items() if k != "root"}
        (tmp / _COMPLETE_MARKER).write_text(json.dumps(params | {"generator_version": GENERATOR_VERSION}))
        try:
            os.replace(tmp, final)
        except OSError:
            # Another process renamed its copy into place first; theirs is identical, keep it.
            if not final.exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _check_complete(final)
    return _paths(final, spec.classes)


def _check_complete(folder: Path) -> None:
    if not (folder / _COMPLETE_MARKER).is_file():
        raise DatasetError(
            f"Synthetic dataset folder {folder} exists but has no {_COMPLETE_MARKER} marker, so it was not written "
            "by detlight's generator. Delete the folder to regenerate it, or point `synthetic.root` elsewhere."
        )


def _write_dataset(spec: SyntheticCocoSpec, out: Path) -> None:
    (out / "annotations").mkdir()
    for split_id, (split, count) in enumerate((("train", spec.num_train), ("val", spec.num_val))):
        img_dir = out / split
        img_dir.mkdir()
        coco = _new_coco(spec.classes)
        for index in range(count):
            rng = np.random.default_rng([spec.seed, split_id, index])
            pixels, boxes = _draw_image(spec, rng)
            file_name = f"{index:06d}.png"
            Image.fromarray(pixels).save(img_dir / file_name, format="PNG", compress_level=1)
            _append_image(coco, index + 1, file_name, spec.image_size, boxes)
        (out / "annotations" / f"{split}.json").write_text(json.dumps(coco))


def _new_coco(classes: tuple[str, ...]) -> dict[str, Any]:
    return {
        "info": {"description": "detlight synthetic shapes", "version": str(GENERATOR_VERSION)},
        "images": [],
        "annotations": [],
        "categories": [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(classes)],
    }


def _append_image(coco: dict[str, Any], image_id: int, file_name: str, size: int,
                  boxes: list[Box]) -> None:
    coco["images"].append({"id": image_id, "file_name": file_name, "width": size, "height": size})
    for label, x, y, w, h in boxes:
        coco["annotations"].append({
            "id": len(coco["annotations"]) + 1,
            "image_id": image_id,
            "category_id": label + 1,
            "bbox": [float(x), float(y), float(w), float(h)],
            "area": float(w * h),
            "iscrowd": 0,
        })


def _draw_image(spec: SyntheticCocoSpec, rng: np.random.Generator) -> tuple[np.ndarray, list[Box]]:
    """One image (uint8 HxWx3) and its boxes as ``(label, x, y, w, h)``."""
    size = spec.image_size
    img = _background(size, rng)
    _draw_clutter(img, spec.clutter, rng)
    empty = rng.random() < spec.empty_ratio
    count = 0 if empty else int(rng.integers(1, spec.max_objects + 1))
    boxes: list[Box] = []
    taken: list[tuple[int, int, int, int]] = []
    for _ in range(count):
        placed = _place_object(spec, img, taken, rng)
        if placed is not None:
            boxes.append(placed)
    if spec.noise_std > 0:
        noisy = img + np.float32(spec.noise_std) * rng.standard_normal(img.shape, dtype=np.float32)
        img = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    return img, boxes


def _background(size: int, rng: np.random.Generator) -> np.ndarray:
    start, end = rng.uniform(0, 255, 3).astype(np.float32), rng.uniform(0, 255, 3).astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.linspace(-0.5, 0.5, size, dtype=np.float32)
    t = np.clip(0.5 + ramp[None, :] * np.float32(np.cos(angle)) + ramp[:, None] * np.float32(np.sin(angle)), 0, 1)
    return (start + (end - start) * t[..., None]).astype(np.uint8)


def _draw_clutter(img: np.ndarray, clutter: int, rng: np.random.Generator) -> None:
    """Thin lines and small specks: edges and blobs a detector must learn to ignore."""
    if clutter == 0:
        return
    size = img.shape[0]
    canvas = Image.fromarray(img)
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(0, clutter + 1))):
        x0, y0, x1, y1 = (int(v) for v in rng.integers(0, size, 4))
        draw.line([(x0, y0), (x1, y1)], fill=_colour(rng), width=int(rng.integers(1, 3)))
    for _ in range(int(rng.integers(0, clutter + 1))):
        x, y = (int(v) for v in rng.integers(0, size - 4, 2))
        r = int(rng.integers(1, 4))
        draw.ellipse([x, y, x + r, y + r], fill=_colour(rng))
    img[...] = np.asarray(canvas)


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    r, g, b = (int(v) for v in rng.integers(0, 256, 3))
    return r, g, b


def _place_object(spec: SyntheticCocoSpec, img: np.ndarray, taken: list[tuple[int, int, int, int]],
                  rng: np.random.Generator) -> Box | None:
    """Draw one shape where it overlaps no earlier one; ``None`` after a few failed tries."""
    size = img.shape[0]
    label = int(rng.integers(0, spec.num_classes))
    w = int(rng.integers(spec.min_size, spec.max_size + 1))
    h = int(np.clip(round(w * rng.uniform(0.8, 1.25)), spec.min_size, spec.max_size))
    for _ in range(20):
        x, y = int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1))
        if all(x + w + 2 <= tx or tx + tw + 2 <= x or y + h + 2 <= ty or ty + th + 2 <= y
               for tx, ty, tw, th in taken):
            break
    else:
        return None
    mask = _shape_mask(SHAPES[label], w, h)
    region = img[y:y + h, x:x + w]
    colour = _contrasting_colour(region[mask].mean(axis=0), rng)
    region[mask] = colour
    ys, xs = np.nonzero(mask)
    bx, by = x + int(xs.min()), y + int(ys.min())
    bw, bh = int(xs.max() - xs.min()) + 1, int(ys.max() - ys.min()) + 1
    taken.append((x, y, w, h))
    return label, bx, by, bw, bh


def _contrasting_colour(under: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    for _ in range(50):
        colour = rng.integers(0, 256, 3)
        if np.linalg.norm(colour - under) >= _MIN_CONTRAST:
            return colour.astype(np.uint8)
    return (255 - under).astype(np.uint8)  # the complement is always far enough from the background


def _shape_mask(shape: str, w: int, h: int) -> np.ndarray:
    mask = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(mask)
    if shape == "circle":
        draw.ellipse([0, 0, w - 1, h - 1], fill=1)
    elif shape == "square":
        draw.rectangle([0, 0, w - 1, h - 1], fill=1)
    elif shape == "triangle":
        draw.polygon([((w - 1) / 2, 0), (w - 1, h - 1), (0, h - 1)], fill=1)
    elif shape == "cross":
        tw, th = max(3, w // 3), max(3, h // 3)
        draw.rectangle([(w - tw) // 2, 0, (w - tw) // 2 + tw - 1, h - 1], fill=1)
        draw.rectangle([0, (h - th) // 2, w - 1, (h - th) // 2 + th - 1], fill=1)
    else:
        raise ConfigError(f"Unknown shape {shape!r}; expected one of {SHAPES}")
    return np.asarray(mask, dtype=bool)
