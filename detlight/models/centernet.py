"""A small CenterNet ("Objects as Points") detector in plain PyTorch, speaking mmdet's detector contract.

Replaces: mmdet 2.x ``CenterNet`` (``SingleStageDetector``) with ``CenterNetHead``. The head, targets, losses and
decoding follow mmdet (loss names ``loss_center_heatmap`` / ``loss_wh`` / ``loss_offset``, Gaussian focal loss with
CornerNet radii at ``min_overlap=0.3``, ``L1`` losses weighted 0.1 and 1, 3x3 max-pool peak extraction); the backbone
is :class:`~detlight.models.backbone.TinyFPNBackbone` instead of ResNet-18 + ``CTResNetNeck``, so that it trains
from scratch on a CPU. Batch layout: see :mod:`detlight.models.contract`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from detlight.exceptions import ConfigError
from detlight.models.backbone import TinyFPNBackbone
from detlight.models.contract import flip_boxes

__all__ = ["CenterNet", "CenterNetHead", "gaussian_focal_loss", "gaussian_radius"]

# mmcv's bias_init_with_prob(0.1): the heatmap starts at sigmoid = 0.1 so the focal loss is not swamped at step 0.
HEATMAP_BIAS_INIT = -2.19


def gaussian_radius(height: torch.Tensor, width: torch.Tensor, min_overlap: float = 0.3) -> torch.Tensor:
    """CornerNet's radius (mmdet ``gaussian_radius``): the largest corner shift keeping IoU >= ``min_overlap``.

    Args:
        height: box heights on the output grid, any shape.
        width: box widths, same shape as ``height``.
        min_overlap: the IoU the shifted box must keep.

    Returns:
        The radius (float, not yet truncated), same shape as ``height``.

    Example:
        >>> round(float(gaussian_radius(torch.tensor(10.0), torch.tensor(10.0))), 3)
        2.261
    """
    b1 = height + width
    c1 = width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 - torch.sqrt(b1**2 - 4 * c1)) / 2
    b2 = 2 * (height + width)
    c2 = (1 - min_overlap) * width * height
    r2 = (b2 - torch.sqrt(b2**2 - 16 * c2)) / 8
    a3 = 4 * min_overlap
    b3 = -2 * min_overlap * (height + width)
    c3 = (min_overlap - 1) * width * height
    r3 = (b3 + torch.sqrt(b3**2 - 4 * a3 * c3)) / (2 * a3)
    return torch.minimum(torch.minimum(r1, r2), r3)


def gaussian_focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 2.0, gamma: float = 4.0) -> torch.Tensor:
    """Summed Gaussian focal loss (mmdet ``gaussian_focal_loss``) computed from logits.

    mmdet applies it to ``sigmoid`` outputs with an ``eps`` inside the log; using ``logsigmoid`` gives the same values
    without the ``eps`` and without ``log(0)`` once the heatmap saturates.

    Args:
        logits: raw heatmap scores ``[B, C, h, w]``.
        target: Gaussian heatmap in ``[0, 1]``, same shape; exactly 1 at object centres.
        alpha: focusing power on the prediction.
        gamma: down-weighting power of negatives near a centre.

    Returns:
        A 0-dim tensor: the sum over all elements (divide by the number of centres for mmdet's mean).
    """
    pred = logits.sigmoid()
    pos = target.eq(1).to(logits.dtype)
    pos_loss = -F.logsigmoid(logits) * (1 - pred).pow(alpha) * pos
    neg_loss = -F.logsigmoid(-logits) * pred.pow(alpha) * (1 - target).pow(gamma) * (1 - pos)
    return (pos_loss + neg_loss).sum()


class CenterNetHead(nn.Module):
    """mmdet's ``CenterNetHead``: heatmap, ``wh`` and ``offset`` branches, each ``conv3x3 -> ReLU -> conv1x1``.

    The three 3x3 convolutions run as one convolution with ``3 * feat_channels`` outputs, which is the same function
    as three separate ones (each output channel has its own kernel) but one CPU kernel launch instead of three.

    Args:
        num_classes: number of object classes (heatmap channels).
        in_channels: channels of the input feature.
        feat_channels: hidden channels of each branch.
    """

    def __init__(self, num_classes: int, in_channels: int, feat_channels: int = 32) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.feat_channels = feat_channels
        self.stem = nn.Conv2d(in_channels, 3 * feat_channels, 3, padding=1)
        self.heatmap = nn.Conv2d(feat_channels, num_classes, 1)
        self.wh = nn.Conv2d(feat_channels, 2, 1)
        self.offset = nn.Conv2d(feat_channels, 2, 1)
        self.init_weights()

    def init_weights(self) -> None:
        """mmdet's init: heatmap bias at prior 0.1, ``wh`` / ``offset`` branches ``normal(std=0.001)``, zero biases."""
        f = self.feat_channels
        nn.init.kaiming_normal_(self.stem.weight[:f], mode="fan_out", nonlinearity="relu")
        for weight in (self.stem.weight[f:], self.heatmap.weight, self.wh.weight, self.offset.weight):
            nn.init.normal_(weight, std=0.001)
        for conv, value in ((self.stem, 0.0), (self.heatmap, HEATMAP_BIAS_INIT), (self.wh, 0.0), (self.offset, 0.0)):
            if conv.bias is not None:
                nn.init.constant_(conv.bias, value)

    def forward(self, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return ``(heatmap_logits[B, C, h, w], wh[B, 2, h, w], offset[B, 2, h, w])``."""
        heat_feat, wh_feat, off_feat = F.relu(self.stem(feat)).split(self.feat_channels, dim=1)
        return self.heatmap(heat_feat), self.wh(wh_feat), self.offset(off_feat)


class CenterNet(nn.Module):
    """Small CenterNet trained from scratch; mmdet ``CenterNet`` contract (``forward_train`` / ``simple_test``).

    Replaces: mmdet 2.x ``CenterNet`` + ``CenterNetHead``. Differences: a tiny backbone (see module docstring),
    a ``score_thr`` filter before the per-image cap (mmdet keeps all top-k), and flipped test images are mapped back
    to the original frame. ``gt_bboxes`` must be given in the (padded) input frame, as the batch layout says.

    Args:
        num_classes: number of object classes; also read by num-class checks (``model.num_classes``).
        width: backbone width (output channels of the stride-4 feature).
        head_channels: hidden channels of each head branch.
        topk: peaks kept per image from the heatmap before the score filter.
        max_per_img: detections kept per image after the score filter.
        score_thr: minimum heatmap score of a detection.
        min_overlap: IoU that sets the Gaussian radius of each centre.
        loss_wh_weight: weight of the size ``L1`` loss.
        loss_offset_weight: weight of the sub-pixel offset ``L1`` loss.

    Raises:
        ValueError: ``num_classes`` < 1, ``topk`` or ``max_per_img`` < 1, or ``min_overlap`` outside ``(0, 1)``.

    Example:
        >>> model = CenterNet(num_classes=2, width=16, head_channels=16).eval()
        >>> meta = dict(ori_shape=(64, 64, 3), img_shape=(64, 64, 3), scale_factor=[1.0, 1.0, 1.0, 1.0])
        >>> out = model.simple_test(torch.zeros(1, 3, 64, 64), [meta])
        >>> sorted(out[0]), out[0]["boxes"].shape[1]
        (['boxes', 'labels', 'scores'], 4)
    """

    def __init__(
        self,
        num_classes: int = 3,
        width: int = 32,
        head_channels: int = 32,
        topk: int = 100,
        max_per_img: int = 100,
        score_thr: float = 0.05,
        min_overlap: float = 0.3,
        loss_wh_weight: float = 0.1,
        loss_offset_weight: float = 1.0,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ConfigError(f"Expected `num_classes` >= 1, but got {num_classes}.")
        if topk < 1 or max_per_img < 1:
            raise ConfigError(f"Expected `topk` and `max_per_img` >= 1, but got topk={topk}, "
                              f"max_per_img={max_per_img}.")
        if not 0.0 < min_overlap < 1.0:
            raise ConfigError(f"Expected `min_overlap` in (0, 1), but got {min_overlap}.")
        self.num_classes = num_classes
        self.topk, self.max_per_img, self.score_thr = topk, max_per_img, score_thr
        self.min_overlap = min_overlap
        self.loss_wh_weight, self.loss_offset_weight = loss_wh_weight, loss_offset_weight
        self.backbone = TinyFPNBackbone(width=width)
        self.stride = self.backbone.stride
        self.bbox_head = CenterNetHead(num_classes, self.backbone.out_channels, head_channels)

    # ------------------------------------------------------------------ mmdet entry points
    def forward(self, img: torch.Tensor, img_metas: Sequence[dict[str, Any]] | None = None, return_loss: bool = True,
                **kwargs: Any) -> Any:
        """mmdet ``BaseDetector.forward``: ``forward_train`` when ``return_loss`` else ``simple_test``."""
        if return_loss:
            return self.forward_train(img, img_metas or [], **kwargs)
        return self.simple_test(img, img_metas or [], rescale=kwargs.get("rescale", True))

    def extract_feat(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Backbone + head: ``(heatmap_logits, wh, offset)`` on the stride-4 grid."""
        if img.dim() != 4 or img.shape[1] != 3:
            raise ValueError(f"Expected `img` as float[B, 3, H, W], but got shape {tuple(img.shape)}.")
        return self.bbox_head(self.backbone(img))

    def forward_train(self, img: torch.Tensor, img_metas: Sequence[dict[str, Any]], gt_bboxes: Sequence[torch.Tensor],
                      gt_labels: Sequence[torch.Tensor], **kwargs: Any) -> dict[str, torch.Tensor]:
        """Losses of one batch (extra batch keys such as ``gt_bboxes_ignore`` are ignored, as in mmdet CenterNet).

        Returns:
            ``{"loss_center_heatmap", "loss_wh", "loss_offset"}``, each a 0-dim tensor.

        Raises:
            ValueError: ``gt_bboxes`` / ``gt_labels`` do not hold one entry per image, or a label is out of range.
        """
        if len(gt_bboxes) != img.shape[0] or len(gt_labels) != img.shape[0]:
            raise ValueError(f"Expected one gt_bboxes / gt_labels entry per image ({img.shape[0]}), but got "
                             f"{len(gt_bboxes)} and {len(gt_labels)}.")
        heat_logits, wh_pred, off_pred = self.extract_feat(img)
        heat_t, box_t, box_w = self.get_targets(gt_bboxes, gt_labels, heat_logits.shape, img.shape[-2:], img.device)
        num_centers = heat_t.eq(1).sum().clamp(min=1)
        num_reg = box_w[:, :2].sum().clamp(min=1)
        l1_wh = (F.l1_loss(wh_pred, box_t[:, :2], reduction="none") * box_w[:, :2]).sum()
        l1_off = (F.l1_loss(off_pred, box_t[:, 2:], reduction="none") * box_w[:, 2:]).sum()
        return {
            "loss_center_heatmap": gaussian_focal_loss(heat_logits, heat_t) / num_centers,
            "loss_wh": self.loss_wh_weight * l1_wh / num_reg,
            "loss_offset": self.loss_offset_weight * l1_off / num_reg,
        }

    # ------------------------------------------------------------------ targets
    def get_targets(self, gt_bboxes: Sequence[torch.Tensor], gt_labels: Sequence[torch.Tensor],
                    heat_shape: torch.Size, img_hw: Sequence[int],
                    device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """mmdet ``CenterNetHead.get_targets``, vectorised over every box of the batch.

        Args:
            gt_bboxes: per-image ``float32[n_i, 4]`` ``xyxy`` in the input frame.
            gt_labels: per-image ``int64[n_i]``.
            heat_shape: ``(B, C, h, w)`` of the heatmap prediction.
            img_hw: ``(H, W)`` of the padded input.
            device: where the targets live; default: that of the first ``gt_bboxes`` tensor, else the CPU.

        Returns:
            ``heatmap[B, C, h, w]`` (max over overlapping Gaussians), ``box[B, 4, h, w]`` (``w, h`` on the grid then the
            sub-cell ``dx, dy``) and ``weight[B, 4, h, w]`` (1 at each centre cell).
        """
        batch, num_classes, feat_h, feat_w = heat_shape
        if device is None:
            ref = next((b for b in gt_bboxes if isinstance(b, torch.Tensor)), None)
            device = ref.device if ref is not None else torch.device("cpu")
        boxes = torch.cat([torch.as_tensor(b, dtype=torch.float32, device=device).reshape(-1, 4) for b in gt_bboxes])
        labels = torch.cat([torch.as_tensor(lab, dtype=torch.int64, device=device).reshape(-1) for lab in gt_labels])
        counts = torch.tensor([len(lab) for lab in gt_labels])  # on the host: the index below needs no device sync
        if len(boxes) != len(labels):
            raise ValueError(f"Expected as many gt_labels as gt_bboxes, but got {len(labels)} labels for "
                             f"{len(boxes)} boxes (counts per image {[len(b) for b in gt_bboxes]}).")
        img_idx = torch.repeat_interleave(torch.arange(batch), counts).to(device, non_blocking=True)
        self._check_labels(labels, num_classes)
        ratio = boxes.new_tensor([feat_w / img_hw[1], feat_h / img_hw[0]])
        center = (boxes[:, :2] + boxes[:, 2:]) / 2 * ratio
        size = (boxes[:, 2:] - boxes[:, :2]) * ratio
        grid_max = boxes.new_tensor([feat_w - 1, feat_h - 1])
        center_int = torch.minimum(center.floor().clamp(min=0), grid_max)
        radius = gaussian_radius(size[:, 1], size[:, 0], self.min_overlap).clamp(min=0).floor()
        gauss = self._gaussians(center_int, radius, feat_h, feat_w)

        heatmap = boxes.new_zeros(batch * num_classes, feat_h * feat_w)
        rows = (img_idx * num_classes + labels)[:, None].expand(-1, feat_h * feat_w)
        heatmap.scatter_reduce_(0, rows, gauss.reshape(len(boxes), feat_h * feat_w), reduce="amax", include_self=True)
        box_target = boxes.new_zeros(batch, feat_h, feat_w, 4)
        weight = boxes.new_zeros(batch, feat_h, feat_w, 4)
        cx, cy = center_int[:, 0].long(), center_int[:, 1].long()
        box_target[img_idx, cy, cx] = torch.cat([size, center - center_int], dim=1)
        weight[img_idx, cy, cx] = 1.0
        return (heatmap.view(batch, num_classes, feat_h, feat_w), box_target.permute(0, 3, 1, 2),
                weight.permute(0, 3, 1, 2))

    @staticmethod
    def _gaussians(center: torch.Tensor, radius: torch.Tensor, feat_h: int, feat_w: int) -> torch.Tensor:
        """One ``[h, w]`` Gaussian per box (mmdet ``gen_gaussian_target``: sigma = diameter / 6, cut at radius)."""
        sigma = (2 * radius + 1) / 6
        dx = torch.arange(feat_w, device=center.device, dtype=center.dtype)[None] - center[:, :1]
        dy = torch.arange(feat_h, device=center.device, dtype=center.dtype)[None] - center[:, 1:]
        two_var = (2 * sigma * sigma)[:, None]
        gx = torch.exp(-dx * dx / two_var) * (dx.abs() <= radius[:, None])
        gy = torch.exp(-dy * dy / two_var) * (dy.abs() <= radius[:, None])
        return gy[:, :, None] * gx[:, None, :]

    @staticmethod
    def _check_labels(labels: torch.Tensor, num_classes: int) -> None:
        # A bad label would silently land in another image's heatmap row. Checked only for host tensors, where it
        # costs no device sync.
        if labels.device.type == "cpu" and labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(f"Expected gt_labels in [0, {num_classes - 1}] (0-based, num_classes={num_classes}), but "
                             f"got values in [{int(labels.min())}, {int(labels.max())}].")

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def simple_test(self, img: torch.Tensor, img_metas: Sequence[dict[str, Any]],
                    rescale: bool = True) -> list[dict[str, torch.Tensor]]:
        """Detections per image: ``{"boxes": float32[n, 4] xyxy, "scores": float32[n], "labels": int64[n]}``.

        With ``rescale`` the boxes are divided by ``scale_factor``, un-flipped when ``flip`` is set and clamped to
        ``ori_shape`` (the original image frame); otherwise they stay in the input frame, clamped to ``img_shape``.

        Raises:
            ValueError: ``img_metas`` does not hold one dict per image.
        """
        if len(img_metas) != img.shape[0]:
            raise ValueError(f"Expected one img_metas dict per image ({img.shape[0]}), but got {len(img_metas)}.")
        heat_logits, wh_pred, off_pred = self.extract_feat(img)
        boxes, scores, labels = self.decode(heat_logits, wh_pred, off_pred, img.shape[-2:])
        return [self._finish(b, s, lab, meta, rescale) for b, s, lab, meta in zip(boxes, scores, labels, img_metas)]

    def forward_test(self, imgs: Sequence[torch.Tensor], img_metas: Sequence[Sequence[dict[str, Any]]],
                     rescale: bool = True, **kwargs: Any) -> list[dict[str, torch.Tensor]]:
        """mmdet ``forward_test`` for a single test-time augmentation (lists of length 1)."""
        if len(imgs) != 1:
            raise ValueError(f"CenterNet supports one test-time augmentation, but got {len(imgs)} image batches.")
        return self.simple_test(imgs[0], img_metas[0], rescale=rescale)

    def decode(self, heat_logits: torch.Tensor, wh: torch.Tensor, offset: torch.Tensor,
               img_hw: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """mmdet ``decode_heatmap``: 3x3 max-pool peaks, top-k over classes and cells, boxes in the input frame.

        Returns:
            ``boxes[B, k, 4]``, ``scores[B, k]`` and ``labels[B, k]`` with ``k = min(topk, C * h * w)``.
        """
        batch, num_classes, feat_h, feat_w = heat_logits.shape
        heat = heat_logits.sigmoid()
        heat = heat * (F.max_pool2d(heat, 3, stride=1, padding=1) == heat)
        k = min(self.topk, num_classes * feat_h * feat_w)
        scores, index = heat.reshape(batch, -1).topk(k)
        labels = torch.div(index, feat_h * feat_w, rounding_mode="floor")
        cell = index % (feat_h * feat_w)
        wh_k = wh.flatten(2).gather(2, cell[:, None].expand(-1, 2, -1))
        off_k = offset.flatten(2).gather(2, cell[:, None].expand(-1, 2, -1))
        cx = (cell % feat_w).to(heat.dtype) + off_k[:, 0]
        cy = torch.div(cell, feat_w, rounding_mode="floor").to(heat.dtype) + off_k[:, 1]
        sx, sy = img_hw[1] / feat_w, img_hw[0] / feat_h
        boxes = torch.stack([(cx - wh_k[:, 0] / 2) * sx, (cy - wh_k[:, 1] / 2) * sy,
                             (cx + wh_k[:, 0] / 2) * sx, (cy + wh_k[:, 1] / 2) * sy], dim=-1)
        return boxes, scores, labels

    def _finish(self, boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, meta: dict[str, Any],
                rescale: bool) -> dict[str, torch.Tensor]:
        keep = scores > self.score_thr
        cap = self.max_per_img
        boxes, scores, labels = boxes[keep][:cap], scores[keep][:cap], labels[keep][:cap]
        shape_key = "ori_shape" if rescale else "img_shape"
        if rescale:
            boxes = boxes / _scale_factor(meta, boxes)
            if meta.get("flip"):
                boxes = flip_boxes(boxes, meta["ori_shape"], meta.get("flip_direction", "horizontal"))
        if shape_key in meta:
            h, w = meta[shape_key][0], meta[shape_key][1]
            boxes = torch.stack([boxes[:, 0].clamp(0, w), boxes[:, 1].clamp(0, h),
                                 boxes[:, 2].clamp(0, w), boxes[:, 3].clamp(0, h)], dim=1)
        return {"boxes": boxes.float(), "scores": scores.float(), "labels": labels.long()}


def _scale_factor(meta: dict[str, Any], like: torch.Tensor) -> torch.Tensor:
    """``scale_factor`` as a ``[4]`` tensor; mmdet stores 4 floats, some pipelines a single float."""
    if "scale_factor" not in meta:
        raise KeyError(f"rescale=True needs `scale_factor` in img_metas (resized = original * scale); got keys "
                       f"{sorted(meta)}. Pass rescale=False to keep boxes in the input frame.")
    scale = torch.as_tensor(meta["scale_factor"], dtype=like.dtype, device=like.device).reshape(-1)
    if scale.numel() == 1:
        scale = scale.expand(4)
    elif scale.numel() == 2:
        scale = scale.repeat(2)
    if scale.numel() != 4:
        raise ValueError(f"Expected `scale_factor` as 1, 2 or 4 floats ([sx, sy, sx, sy]), but got {meta['scale_factor']!r}.")
    return scale
