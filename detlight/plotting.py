"""Loss and metric curves from a run directory, and prediction images, for notebooks (no TensorBoard needed).

Replaces: mmdet3d's ``tools/analysis_tools/analyze_logs.py plot_curve`` for notebook use. Curves are read from the
``{timestamp}.log.json`` that :class:`~detlight.callbacks.text_logger.TextLogger` writes, and returned as plain data
(:class:`Curves`); :func:`plot_curves` draws them with matplotlib when it is installed and otherwise renders a small
PIL chart, which Jupyter shows inline as well. :func:`render_predictions` / :func:`show_images` draw validation
images with boxes, as :class:`~detlight.callbacks.visualization.DetVisualization` logs them to TensorBoard.
"""

from __future__ import annotations

import json as jsonlib
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw

from detlight.callbacks.text_logger import read_json_log
from detlight.callbacks.visualization import class_names_of, render_batch

__all__ = ["Curves", "Series", "find_json_log", "load_curves", "plot_curves", "recorded_epoch_length", "render_predictions",
           "show_images"]

#: json log keys that are bookkeeping, not curves.
NON_CURVE_KEYS = frozenset({"mode", "epoch", "iter", "memory"})


@dataclass
class Series:
    """One curve: ``values[i]`` was logged at train iteration ``steps[i]`` (counted over the run) in ``epochs[i]``."""

    steps: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    epochs: list[int] = field(default_factory=list)


@dataclass
class Curves:
    """The curves of one run: ``train[key]`` (losses, ``lr``, ``time``, ...) and ``val[key]`` (``bbox_mAP``, ...).

    Attributes:
        path: the json log read.
        train: train-mode series by key.
        val: val-mode series by key (``steps`` = the train iteration the evaluation followed).
        iters_per_epoch: train iterations per epoch as the log shows them (``None`` for an iteration-based run).
    """

    path: str
    train: dict[str, Series] = field(default_factory=dict)
    val: dict[str, Series] = field(default_factory=dict)
    iters_per_epoch: int | None = None

    def get(self, key: str) -> Series:
        """``"loss"`` / ``"train/loss"`` -> train series, ``"val/bbox_mAP"`` or a key only logged in val -> val."""
        mode, _, name = key.rpartition("/")
        if mode not in ("", "train", "val"):
            raise KeyError(f"Unknown curve {key!r}: prefix with 'train/' or 'val/'. {self._known()}")
        table = self.val if mode == "val" or (not mode and name not in self.train) else self.train
        if name not in table:
            raise KeyError(f"No curve {key!r} in {self.path}. {self._known()}")
        return table[name]

    def __contains__(self, key: object) -> bool:
        try:
            self.get(str(key))
        except KeyError:
            return False
        return True

    def _known(self) -> str:
        return f"Logged: train {sorted(self.train)}, val {sorted(self.val)}"

    def table(self, keys: Sequence[str] = ("val/bbox_mAP",), precision: int = 4) -> str:
        """One row per logged point of ``keys``: ``epoch | step | <key> ...`` (for printing without a plot)."""
        series = {key: self.get(key) for key in keys}
        rows: dict[tuple[int, int], dict[str, float]] = {}
        for key, s in series.items():
            for step, value, epoch in zip(s.steps, s.values, s.epochs):
                rows.setdefault((epoch, step), {})[key] = value
        header = ["epoch", "step", *keys]
        lines = [" | ".join(header)]
        for (epoch, step), values in sorted(rows.items()):
            cells = [str(epoch), str(step)] + [f"{values[k]:.{precision}f}" if k in values else "" for k in keys]
            lines.append(" | ".join(cells))
        return "\n".join(lines)


def find_json_log(path: str | os.PathLike[str]) -> Path:
    """The json log of a run: ``path`` itself, the newest ``*.log.json`` in it, or the newest one below it.

    Raises:
        FileNotFoundError: no ``*.log.json`` at or below ``path`` (the run had no TextLogger, or has not started).
    """
    target = Path(path)
    if target.is_file():
        return target
    if not target.is_dir():
        raise FileNotFoundError(f"No run directory or log file at {target}")
    here = sorted(target.glob("*.log.json"))
    if here:
        return here[-1]  # names are %Y%m%d_%H%M%S timestamps
    below = sorted(target.rglob("*.log.json"), key=lambda p: p.stat().st_mtime)
    if not below:
        raise FileNotFoundError(f"No *.log.json under {target}: add detlight.callbacks.TextLogger (json: true) to "
                                "trainer.callbacks to record curves")
    return below[-1]


def load_curves(path: str | os.PathLike[str]) -> Curves:
    """Read a run's json log (see :func:`find_json_log`) into :class:`Curves`.

    Train ``iter`` values that restart every epoch (an epoch-based run) are turned into run-wide iterations
    ``(epoch - 1) * iters_per_epoch + iter``; val points sit at the last train step before them. The epoch length is
    the one the run recorded (see :func:`recorded_epoch_length`); only a log without it (another tool's) falls back
    to the largest ``iter`` logged in any epoch, which is short when the log interval does not divide the epoch.
    """
    log_path = find_json_log(path)
    records = read_json_log(log_path)
    train_records = [r for r in records if r.get("mode", "train") == "train"]
    # An epoch-based log restarts `iter` every epoch; an iteration-based one counts over the run.
    restarts = any(b["epoch"] > a["epoch"] and b["iter"] <= a["iter"] for a, b in zip(train_records, train_records[1:]))
    per_epoch = None
    if restarts:
        per_epoch = recorded_epoch_length(log_path) or max((int(r["iter"]) for r in train_records), default=0)
    curves = Curves(path=str(log_path), iters_per_epoch=per_epoch)
    last_step = 0
    for record in records:
        epoch = int(record["epoch"])
        if record.get("mode", "train") == "train":
            last_step = (epoch - 1) * per_epoch + int(record["iter"]) if per_epoch else int(record["iter"])
            _append(curves.train, record, last_step, epoch)
        elif record.get("mode") == "val":
            step = max(last_step, epoch * per_epoch) if per_epoch else last_step
            _append(curves.val, record, step, epoch)
    return curves


#: mmcv's text-log head of a train line: ``Epoch [2][20/36]``.
_TEXT_HEAD = re.compile(r" - Epoch \[\d+\]\[\d+/(\d+)\]\t")


def recorded_epoch_length(log_path: str | os.PathLike[str]) -> int | None:
    """Train iterations per epoch as a run recorded them, or ``None`` when it did not.

    Read from the json log's meta line (``iters_per_epoch``, written by
    :class:`~detlight.callbacks.text_logger.TextLogger`), else from the text log beside it (``{stem}.log``, whose
    train lines show ``Epoch [E][i/N]``, as mmcv's do).
    """
    path = Path(log_path)
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                record = jsonlib.loads(line)
            except jsonlib.JSONDecodeError:
                continue
            if isinstance(record, dict) and "epoch" not in record:
                value = record.get("iters_per_epoch")
                if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                    return value
    text = path.with_suffix("") if path.name.endswith(".log.json") else None
    if text is not None and text.is_file():
        with open(text, encoding="utf-8", errors="replace") as f:
            for line in f:
                match = _TEXT_HEAD.search(line)
                if match:
                    return int(match.group(1))
    return None


def _append(table: dict[str, Series], record: dict[str, Any], step: int, epoch: int) -> None:
    for key, value in record.items():
        if key in NON_CURVE_KEYS or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        series = table.setdefault(key, Series())
        series.steps.append(step)
        series.values.append(float(value))
        series.epochs.append(epoch)


def plot_curves(curves: Curves | str | os.PathLike[str], keys: Sequence[str] = ("loss", "val/bbox_mAP"),
                use_matplotlib: bool | None = None) -> Any:
    """One panel per key against the train iteration: a matplotlib ``Figure``, or a PIL image without matplotlib.

    Args:
        curves: :class:`Curves` or a run directory / json log path.
        keys: curve names (see :meth:`Curves.get`).
        use_matplotlib: ``None`` uses matplotlib when it can be imported.
    """
    if not isinstance(curves, Curves):
        curves = load_curves(curves)
    series = [(key, curves.get(key)) for key in keys]
    if use_matplotlib is not False:
        try:
            import matplotlib.pyplot as plt
        except ImportError:
            if use_matplotlib:
                raise
        else:
            fig, axes = plt.subplots(1, len(series), figsize=(4 * len(series), 3), squeeze=False)
            for ax, (key, s) in zip(axes[0], series):
                ax.plot(s.steps, s.values, marker="o" if len(s.steps) < 30 else None)
                ax.set_title(key)
                ax.set_xlabel("iteration")
            fig.tight_layout()
            return fig
    return _pil_chart(series)


def _pil_chart(series: Sequence[tuple[str, Series]], width: int = 320, height: int = 220) -> Image.Image:
    """Small line charts side by side (title, min/max labels, iteration axis) in pure PIL."""
    canvas = Image.new("RGB", (width * max(1, len(series)), height), "white")
    draw = ImageDraw.Draw(canvas)
    left, top, right, bottom = 48, 22, 12, 28
    for n, (key, s) in enumerate(series):
        x0, x1, y0, y1 = n * width + left, (n + 1) * width - right, top, height - bottom
        draw.rectangle([x0, y0, x1, y1], outline=(160, 160, 160))
        draw.text((x0, 4), key, fill="black")
        finite = [(x, v) for x, v in zip(s.steps, s.values) if math.isfinite(v)]
        if not finite:
            draw.text((x0 + 8, y0 + 8), "no data", fill="gray")
            continue
        lo_x, hi_x = min(x for x, _ in finite), max(x for x, _ in finite)
        lo_v, hi_v = min(v for _, v in finite), max(v for _, v in finite)
        span_x, span_v = max(hi_x - lo_x, 1), (hi_v - lo_v) or 1.0

        points = [(x0 + (x - lo_x) / span_x * (x1 - x0), y1 - (v - lo_v) / span_v * (y1 - y0)) for x, v in finite]
        if len(points) > 1:
            draw.line(points, fill=(31, 119, 180), width=2)
        for px, py in points if len(points) < 30 else points[-1:]:
            draw.ellipse([px - 2, py - 2, px + 2, py + 2], fill=(31, 119, 180))
        draw.text((n * width + 2, y0), f"{hi_v:.3g}", fill="black")
        draw.text((n * width + 2, y1 - 10), f"{lo_v:.3g}", fill="black")
        draw.text((x0, y1 + 4), f"{lo_x}", fill="black")
        draw.text((x1 - 40, y1 + 4), f"{hi_x} it", fill="black")
    return canvas


def render_predictions(module: Any, datamodule: Any, num_images: int = 4, score_thr: float = 0.3,
                       split: str = "val", upscale: int = 2) -> list[torch.Tensor]:
    """Draw the first ``num_images`` images of a datamodule split with ground truth and the module's detections.

    Args:
        module: a trained :class:`~detlight.module.DetectorModule` (e.g. ``detlight.fit(...).module``).
        datamodule: the datamodule (e.g. ``run.datamodule``); its ``<split>_dataloader()`` supplies the batches.
        num_images: how many images.
        score_thr: detections scoring below this are not drawn.
        split: ``"val"``, ``"test"`` or ``"train"`` (train images carry the train pipeline's flips).
        upscale: integer zoom so labels stay readable.

    Returns:
        ``uint8[3, H, W]`` images; :func:`show_images` turns them into one picture.
    """
    loader = getattr(datamodule, f"{split}_dataloader")()
    names = class_names_of(None, module) or tuple(getattr(datamodule, "CLASSES", ()))
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    images: list[torch.Tensor] = []
    for batch in loader:
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        images += render_batch(module, batch, names, num_images - len(images), score_thr, upscale=upscale)
        if len(images) >= num_images:
            break
    return images


def show_images(images: Iterable[torch.Tensor], columns: int = 4, padding: int = 4) -> Image.Image:
    """Tile ``uint8[3, H, W]`` images into one PIL image (a notebook cell shows it when it is the cell's value)."""
    from torchvision.utils import make_grid

    tiles = list(images)
    if not tiles:
        raise ValueError("show_images got no images")
    h = max(t.shape[1] for t in tiles)
    w = max(t.shape[2] for t in tiles)
    padded = [torch.nn.functional.pad(t, (0, w - t.shape[2], 0, h - t.shape[1]), value=255) for t in tiles]
    grid = make_grid(torch.stack(padded), nrow=columns, padding=padding, pad_value=255)
    return Image.fromarray(grid.permute(1, 2, 0).contiguous().numpy())
