"""mmdet-style pipeline steps on a ``results`` dict, with torch tensors instead of numpy arrays.

Each step replaces the mmdet 2.x transform of the same name and keeps its keys and semantics: ``img`` is a
``[3, H, W]`` tensor (uint8 until :class:`Normalize`, float32 after), shapes are ``(h, w, 3)`` tuples,
``scale_factor`` is ``[sx, sy, sx, sy]`` (resized = original * scale), and every key listed in ``bbox_fields`` holds
``float32[n, 4]`` xyxy boxes in the current image frame.

Example:
    >>> steps = Compose([Resize((64, 64)), Normalize((0, 0, 0), (1, 1, 1)), Pad(size_divisor=32)])
    >>> out = steps({"img": torch.zeros(3, 100, 50, dtype=torch.uint8), "gt_bboxes": torch.tensor([[0., 0, 50, 100]]),
    ...              "bbox_fields": ["gt_bboxes"]})
    >>> out["img_shape"], out["pad_shape"], out["scale_factor"], out["gt_bboxes"].tolist()
    ((64, 32, 3), (64, 32, 3), [0.64, 0.64, 0.64, 0.64], [[0.0, 0.0, 32.0, 64.0]])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from detlight.data.coco import DatasetError
from detlight.exceptions import ConfigError

__all__ = ["Compose", "LoadImage", "LoadKeypoints", "LoadMasks", "Normalize", "Pad", "PipelineConfig", "RandomFlip",
           "Resize", "polygons_to_mask", "rescale_size"]

Results = dict[str, Any]
FlipDirection = Literal["horizontal", "vertical", "diagonal"]


class Compose:
    """Replaces ``mmdet.datasets.pipelines.Compose``: run the steps in order."""

    def __init__(self, transforms: Sequence[Callable[[Results], Results]]) -> None:
        self.transforms = list(transforms)

    def __call__(self, results: Results) -> Results:
        for t in self.transforms:
            results = t(results)
        return results

    def __repr__(self) -> str:
        return f"Compose({self.transforms})"


class LoadImage:
    """Replaces ``mmdet``'s ``LoadImageFromFile``: decode ``results["filename"]`` to a uint8 ``[3, H, W]`` tensor.

    Like mmcv, the default channel order is BGR, so ``Normalize(to_rgb=True)`` means what it means in mmdet configs.

    Raises:
        DatasetError: the file is missing or not a decodable image, or its size differs from the annotation's
            ``img_info`` width/height.
    """

    def __init__(self, channel_order: Literal["bgr", "rgb"] = "bgr") -> None:
        if channel_order not in ("bgr", "rgb"):
            raise ConfigError(f"Expected `channel_order` to be 'bgr' or 'rgb', but got {channel_order!r}.")
        self.channel_order = channel_order

    def __call__(self, results: Results) -> Results:
        path = Path(results["filename"])
        try:
            with Image.open(path) as pil:
                array = _to_rgb8(pil, path)
        except FileNotFoundError as err:
            raise DatasetError(f"Image file {path} does not exist; check `img_prefix` and the `file_name`.") from err
        except IsADirectoryError as err:
            raise DatasetError(f"Image file {path} is a directory, not an image.") from err
        except PermissionError as err:
            raise DatasetError(f"Image file {path} cannot be opened: permission denied (check the folder's "
                               "permissions).") from err
        except Image.DecompressionBombError as err:
            raise DatasetError(f"Image file {path} is too large to decode safely ({err}); resize it, or raise "
                               "PIL.Image.MAX_IMAGE_PIXELS if the file is trusted.") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
            raise DatasetError(f"Image file {path} cannot be read as an image (empty, truncated or not an image "
                               f"file): {err}") from err
        if self.channel_order == "bgr":
            array = array[..., ::-1]
        # numpy does the HWC -> CHW copy: single-threaded, so it stays fast when torch's thread pool is contended
        img = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))
        h, w = int(img.shape[1]), int(img.shape[2])
        info = results.get("img_info")
        if info is not None and (info.get("width"), info.get("height")) != (w, h):
            raise DatasetError(f"Image file {path} is {w}x{h} but its annotation says "
                               f"{info.get('width')}x{info.get('height')}.")
        results["img"] = img
        results["img_shape"] = results["ori_shape"] = (h, w, 3)
        results["img_fields"] = ["img"]
        return results

    def __repr__(self) -> str:
        return f"LoadImage(channel_order={self.channel_order!r})"


def polygons_to_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """One COCO ``segmentation`` (polygon list, uncompressed or compressed RLE) -> ``uint8[height, width]`` 0/1 mask.

    Decoded with faster-coco-eval's mask utilities (the COCO reference encoding, so masks agree with ``segm`` mAP).

    Example:
        >>> polygons_to_mask([[1, 1, 5, 1, 5, 3, 1, 3]], 6, 8).sum(axis=0).tolist()  # a 4 x 2 rectangle
        [0, 2, 2, 2, 2, 0, 0, 0]
    """
    from faster_coco_eval.core import mask as mask_utils

    if isinstance(segmentation, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    elif isinstance(segmentation, dict):
        rle = segmentation
    else:
        raise TypeError(f"a COCO segmentation is a polygon list or an RLE dict, got {type(segmentation).__name__}")
    return np.ascontiguousarray(mask_utils.decode(rle), dtype=np.uint8)


class LoadMasks:
    """Replaces ``LoadAnnotations(with_mask=True)``: decode each box's COCO ``segmentation`` into ``gt_masks``.

    ``gt_masks`` is ``uint8[n, H, W]`` (original image size, one 0/1 mask per ``gt_bboxes`` row) and is listed in
    ``mask_fields``, so :class:`Resize` and :class:`RandomFlip` transform it with the image (:class:`Pad` leaves it
    un-padded; detectors see the ``img_shape`` crop).

    Raises:
        DatasetError: an annotation has no (or an unreadable) ``segmentation``; the message names the annotation file.
    """

    def __call__(self, results: Results) -> Results:
        h, w = int(results["img"].shape[-2]), int(results["img"].shape[-1])
        info = results.get("ann_info", {})
        segms = info.get("masks")
        if segms is None or len(segms) != len(results["gt_bboxes"]):
            segms = [None] * len(results["gt_bboxes"])
        masks = []
        for i, segm in enumerate(segms):
            if segm is None:
                raise DatasetError(
                    f"Annotation file {info.get('ann_file', '?')}: image {results.get('ori_filename')} box {i} has no "
                    "`segmentation`, but the pipeline loads masks (`pipeline.with_mask: true`, needed by mask "
                    "detectors). Add polygons / RLE to every annotation or train a box-only detector."
                )
            try:
                masks.append(polygons_to_mask(segm, h, w))
            except (TypeError, ValueError) as err:
                raise DatasetError(f"Annotation file {info.get('ann_file', '?')}: image {results.get('ori_filename')} "
                                   f"box {i} has an unreadable `segmentation`: {err}") from err
        results["gt_masks"] = torch.from_numpy(np.stack(masks)) if masks else torch.zeros((0, h, w), dtype=torch.uint8)
        results["mask_fields"] = ["gt_masks"]
        return results

    def __repr__(self) -> str:
        return "LoadMasks()"


class LoadKeypoints:
    """Replaces ``LoadAnnotations`` for COCO keypoints: ``gt_keypoints`` ``float32[n, K, 3]`` (x, y, visibility).

    Raises:
        DatasetError: an annotation has no ``keypoints`` or a count not divisible by 3; the message names the file.
    """

    def __call__(self, results: Results) -> Results:
        info = results.get("ann_info", {})
        raw = info.get("keypoints") or [None] * len(results["gt_bboxes"])
        points = []
        for i, flat in enumerate(raw):
            if not isinstance(flat, list) or not flat or len(flat) % 3:
                raise DatasetError(
                    f"Annotation file {info.get('ann_file', '?')}: image {results.get('ori_filename')} box {i} has "
                    f"no usable `keypoints` (got {flat!r}); keypoint detectors need COCO `keypoints: [x, y, v, ...]` "
                    "on every annotation."
                )
            points.append(torch.tensor(flat, dtype=torch.float32).reshape(-1, 3))
        if points and len({p.shape[0] for p in points}) > 1:
            raise DatasetError(f"Annotation file {info.get('ann_file', '?')}: image {results.get('ori_filename')} "
                               "mixes keypoint counts; every annotation needs the same K.")
        results["gt_keypoints"] = torch.stack(points) if points else torch.zeros((0, 1, 3))
        return results

    def __repr__(self) -> str:
        return "LoadKeypoints()"


#: Single-channel modes holding more than 8 bits per pixel: PIL's ``convert("RGB")`` clips them at 255.
_WIDE_GRAY_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def _to_rgb8(pil: Image.Image, path: Path) -> np.ndarray:
    """``H x W x 3`` uint8 pixels; 16-bit grey scales to 8 bits as mmcv's OpenCV decoder does (``value >> 8``)."""
    if pil.mode in _WIDE_GRAY_MODES:
        wide = np.asarray(pil).astype(np.int64)
        if wide.size and (wide.min() < 0 or wide.max() > 0xFFFF):
            raise DatasetError(f"Image file {path} has 32-bit pixel values outside 0..65535 (mode {pil.mode}); "
                               "convert it to an 8- or 16-bit PNG or a JPEG.")
        gray = (wide >> 8).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if pil.mode == "F":
        raise DatasetError(f"Image file {path} holds floating-point pixels (mode F), which detection pipelines do "
                           "not scale; convert it to an 8- or 16-bit PNG or a JPEG.")
    return np.asarray(pil.convert("RGB"))


def rescale_size(w: int, h: int, scale: tuple[int, int]) -> tuple[int, int, float]:
    """mmcv's ``rescale_size``: the largest ``(new_w, new_h)`` with the same ratio that fits ``scale``.

    ``scale`` is read as (long edge, short edge) bounds whatever its order, as mmcv does.
    """
    factor = min(max(scale) / max(h, w), min(scale) / min(h, w))
    return int(w * factor + 0.5), int(h * factor + 0.5), factor


class Resize:
    """Replaces ``mmdet``'s ``Resize`` (single scale): resize the image and every box field.

    With ``keep_ratio`` the image is rescaled to fit ``img_scale`` (mmcv ``imrescale``), otherwise resized to it
    exactly. ``scale_factor`` is the actual ``new/old`` per axis after rounding, boxes are multiplied by it and
    clipped to the new image (``bbox_clip_border=True``). Bilinear interpolation without antialiasing, like
    ``cv2.INTER_LINEAR``.

    Args:
        img_scale: Target ``(w, h)``.
        keep_ratio: Keep the aspect ratio.
    """

    def __init__(self, img_scale: tuple[int, int] = (1333, 800), keep_ratio: bool = True) -> None:
        if len(img_scale) != 2 or min(img_scale) <= 0:
            raise ConfigError(f"Expected `img_scale` to be (w, h) with positive ints, but got {img_scale!r}.")
        self.img_scale = (int(img_scale[0]), int(img_scale[1]))
        self.keep_ratio = keep_ratio

    def __call__(self, results: Results) -> Results:
        img = results["img"]
        h, w = int(img.shape[-2]), int(img.shape[-1])
        new_w, new_h = rescale_size(w, h, self.img_scale)[:2] if self.keep_ratio else self.img_scale
        if (new_h, new_w) != (h, w):
            resized = F.interpolate(img[None].float(), size=(new_h, new_w), mode="bilinear", align_corners=False)[0]
            img = resized.round_().clamp_(0, 255).to(torch.uint8) if img.dtype == torch.uint8 else resized
        sx, sy = new_w / w, new_h / h
        results["img"] = img
        results["img_shape"] = (new_h, new_w, 3)
        results["scale_factor"] = [sx, sy, sx, sy]
        results["keep_ratio"] = self.keep_ratio
        scale = torch.tensor([sx, sy, sx, sy], dtype=torch.float32)
        for key in results.get("bbox_fields", []):
            boxes = results[key] * scale
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, new_w)
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, new_h)
            results[key] = boxes
        for key in results.get("mask_fields", []):
            masks = results[key]
            if (new_h, new_w) != tuple(masks.shape[-2:]):
                masks = F.interpolate(masks[None].float(), size=(new_h, new_w), mode="nearest")[0].to(masks.dtype)
            results[key] = masks
        if "gt_keypoints" in results:
            points = results["gt_keypoints"].clone()
            points[..., 0] *= sx
            points[..., 1] *= sy
            results["gt_keypoints"] = points
        return results

    def __repr__(self) -> str:
        return f"Resize(img_scale={self.img_scale}, keep_ratio={self.keep_ratio})"


def flip_bboxes(boxes: torch.Tensor, img_shape: Sequence[int], direction: FlipDirection) -> torch.Tensor:
    """mmdet's ``RandomFlip.bbox_flip``: mirror xyxy boxes inside an image of shape ``(h, w, ...)``."""
    h, w = img_shape[0], img_shape[1]
    flipped = boxes.clone()
    if direction in ("horizontal", "diagonal"):
        flipped[:, 0], flipped[:, 2] = w - boxes[:, 2], w - boxes[:, 0]
    if direction in ("vertical", "diagonal"):
        flipped[:, 1], flipped[:, 3] = h - boxes[:, 3], h - boxes[:, 1]
    return flipped


class RandomFlip:
    """Replaces ``mmdet``'s ``RandomFlip`` (one direction): flip with probability ``flip_ratio``.

    Sets ``flip`` and ``flip_direction`` (``None`` when not flipped, as mmdet). A ``flip`` already in ``results``
    is obeyed, not redrawn. Like mmdet, the draw uses numpy's global generator (seeded per worker by
    :func:`detlight.data.datamodule.worker_init_fn`), so the data pipeline leaves torch's random stream alone.
    """

    def __init__(self, flip_ratio: float = 0.5, direction: FlipDirection = "horizontal") -> None:
        if not 0.0 <= flip_ratio <= 1.0:
            raise ConfigError(f"Expected `flip_ratio` to be in [0, 1], but got {flip_ratio!r}.")
        if direction not in ("horizontal", "vertical", "diagonal"):
            raise ConfigError(f"Expected `direction` to be 'horizontal', 'vertical' or 'diagonal', got {direction!r}.")
        self.flip_ratio = flip_ratio
        self.direction = direction

    def __call__(self, results: Results) -> Results:
        if "flip" not in results:
            results["flip"] = bool(np.random.rand() < self.flip_ratio) if self.flip_ratio > 0 else False
        results["flip_direction"] = self.direction if results["flip"] else None
        if not results["flip"]:
            return results
        dims = {"horizontal": [-1], "vertical": [-2], "diagonal": [-2, -1]}[self.direction]
        for key in results.get("img_fields", ["img"]):
            results[key] = results[key].flip(dims)
        for key in results.get("bbox_fields", []):
            results[key] = flip_bboxes(results[key], results["img_shape"], self.direction)
        for key in results.get("mask_fields", []):
            results[key] = results[key].flip(dims)
        if "gt_keypoints" in results:
            raise DatasetError("RandomFlip with keypoints would need the dataset's left/right keypoint pairs, which "
                               "detlight does not read; set `data.init_args.pipeline.flip_ratio: 0`.")
        return results

    def __repr__(self) -> str:
        return f"RandomFlip(flip_ratio={self.flip_ratio}, direction={self.direction!r})"


class Normalize:
    """Replaces ``mmdet``'s ``Normalize``: ``(img[, reversed channels] [/ 255] - mean) / std`` as float32.

    Args:
        mean: Per-channel mean in the output channel order (0-255 space unless ``to_unit_range``).
        std: Per-channel standard deviation, same space as ``mean``.
        to_rgb: Swap the channel order first (BGR -> RGB for images loaded the mmcv way).
        to_unit_range: Divide by 255 before subtracting ``mean``, for detectors that expect 0-1 input
            (torchvision's normalise internally; use ``mean=(0, 0, 0), std=(1, 1, 1)`` with them).
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], to_rgb: bool = True,
                 to_unit_range: bool = False) -> None:
        if len(mean) != 3 or len(std) != 3 or any(s == 0 for s in std):
            raise ConfigError(f"Expected `mean` and `std` to hold 3 values each, std non-zero, but got mean={mean!r}, "
                              f"std={std!r}.")
        self.mean = [float(m) for m in mean]
        self.std = [float(s) for s in std]
        self.to_rgb = to_rgb
        self.to_unit_range = to_unit_range
        self._mean = torch.tensor(self.mean, dtype=torch.float32).view(3, 1, 1)
        self._inv_std = 1.0 / torch.tensor(self.std, dtype=torch.float32).view(3, 1, 1)

    def __call__(self, results: Results) -> Results:
        for key in results.get("img_fields", ["img"]):
            img = results[key]
            img = img.flip(0) if self.to_rgb else img
            img = img.to(torch.float32, copy=not self.to_rgb)  # the in-place ops below must not touch the input
            if self.to_unit_range:
                img.mul_(1.0 / 255.0)
            results[key] = img.sub_(self._mean).mul_(self._inv_std)
        results["img_norm_cfg"] = {"mean": list(self.mean), "std": list(self.std), "to_rgb": self.to_rgb}
        return results

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean}, std={self.std}, to_rgb={self.to_rgb}, to_unit_range={self.to_unit_range})"


class Pad:
    """Replaces ``mmdet``'s ``Pad``: pad bottom/right to a fixed ``size`` or to multiples of ``size_divisor``.

    Sets ``pad_shape`` ``(h, w, 3)``, ``pad_fixed_size`` and ``pad_size_divisor``.

    Args:
        size: Fixed ``(h, w)`` to pad to (exclusive with ``size_divisor``).
        size_divisor: Pad height and width up to the next multiple.
        pad_val: Fill value (applied after :class:`Normalize` in the usual order, so 0 is the mean colour).
    """

    def __init__(self, size: tuple[int, int] | None = None, size_divisor: int | None = 32,
                 pad_val: float = 0.0) -> None:
        if (size is None) == (size_divisor is None):
            raise ConfigError(f"Pad needs exactly one of `size` or `size_divisor`, got size={size!r}, "
                              f"size_divisor={size_divisor!r}.")
        if size_divisor is not None and size_divisor < 1:
            raise ConfigError(f"Expected `size_divisor` to be an int >= 1, but got {size_divisor!r}.")
        self.size = size
        self.size_divisor = size_divisor
        self.pad_val = pad_val

    def __call__(self, results: Results) -> Results:
        for key in results.get("img_fields", ["img"]):
            img = results[key]
            h, w = int(img.shape[-2]), int(img.shape[-1])
            if self.size is not None:
                th, tw = self.size
            else:
                d = self.size_divisor
                th, tw = -(-h // d) * d, -(-w // d) * d  # type: ignore[operator]
            if th < h or tw < w:
                raise ConfigError(f"Pad size {(th, tw)} is smaller than the image {(h, w)}.")
            if (th, tw) != (h, w):
                img = F.pad(img, (0, tw - w, 0, th - h), value=self.pad_val)
            results[key] = img
        results["pad_shape"] = (int(results["img"].shape[-2]), int(results["img"].shape[-1]), 3)
        results["pad_fixed_size"] = self.size
        results["pad_size_divisor"] = self.size_divisor
        return results

    def __repr__(self) -> str:
        return f"Pad(size={self.size}, size_divisor={self.size_divisor}, pad_val={self.pad_val})"


@dataclass
class PipelineConfig:
    """The usual mmdet detection pipeline, as typed fields: Load -> Resize -> [RandomFlip] -> Normalize -> Pad.

    Defaults fit the 128x128 synthetic set with mmdet's ImageNet statistics (0-255 space, RGB).

    Args:
        img_scale: Resize target ``(w, h)``.
        keep_ratio: Keep the aspect ratio when resizing.
        flip_ratio: Horizontal flip probability in the train pipeline (the test pipeline never flips).
        mean: Per-channel mean, RGB if ``to_rgb``.
        std: Per-channel std.
        to_rgb: Convert the BGR-loaded image to RGB before normalising (mmdet's ``img_norm_cfg.to_rgb``).
        to_unit_range: Scale to 0-1 before normalising (see :class:`Normalize`).
        size_divisor: Pad to a multiple of this.
        with_mask: Decode instance masks from the annotations' ``segmentation`` (mask detectors need them).
        with_keypoints: Read the annotations' ``keypoints`` (keypoint detectors need them; no flip then).
    """

    img_scale: tuple[int, int] = (128, 128)
    keep_ratio: bool = True
    flip_ratio: float = 0.5
    mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    std: tuple[float, float, float] = (58.395, 57.12, 57.375)
    to_rgb: bool = True
    to_unit_range: bool = False
    size_divisor: int = 32
    with_mask: bool = False
    with_keypoints: bool = False

    def build(self, train: bool) -> Compose:
        """The train pipeline (with flip) or the test pipeline (without).

        Raises:
            ValueError: a field is out of range (the message names the ``data.pipeline`` key).
        """
        steps: list[Callable[[Results], Results]] = [LoadImage()]
        steps += [LoadMasks()] if self.with_mask else []
        steps += [LoadKeypoints()] if self.with_keypoints else []
        steps.append(self._make("img_scale", Resize, self.img_scale, self.keep_ratio))
        if train and self.flip_ratio > 0:
            steps.append(self._make("flip_ratio", RandomFlip, self.flip_ratio))
        steps.append(self._make("mean/std", Normalize, self.mean, self.std, self.to_rgb, self.to_unit_range))
        steps.append(self._make("size_divisor", Pad, None, self.size_divisor))
        return Compose(steps)

    @staticmethod
    def _make(key: str, cls: Callable[..., Any], *args: Any) -> Any:
        try:
            return cls(*args)
        except ValueError as err:
            raise ConfigError(f"Invalid `data.pipeline.{key}`: {err}") from err
