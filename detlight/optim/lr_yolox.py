"""mmdet 2.x's YOLOX LR policy (``lr_config.policy='YOLOX'``).

Replaces: ``YOLOXLrUpdaterHook`` of mmdet 2.28 (``mmdet/core/hook/yolox_lrupdater_hook.py``).
"""

from __future__ import annotations

from typing import Any

from detlight.optim.lr_annealing import _TargetLr
from detlight.optim.policy import Progress, annealing_cos

__all__ = ["YoloxLr"]


class YoloxLr(_TargetLr):
    """mmdet 2.x ``YOLOXLrUpdaterHook`` (``lr_config.policy='YOLOX'``): quadratic warm-up, cosine, flat tail.

    Per mmdet 2.28 ``mmdet/core/hook/yolox_lrupdater_hook.py``, with ``W`` the warm-up length in iterations
    (``warmup_iters`` epochs of ``iters_per_epoch`` with ``warmup_by_epoch``), ``L = iters_per_epoch *
    num_last_epochs``, ``p = progress + 1`` and ``P`` the run length (iterations, or epochs with ``by_epoch``, where
    ``L`` stays in iterations exactly as mmdet computes it):

    - warm-up (``iter < W``): ``base * warmup_ratio * ((iter + 1) / W) ** 2`` (of the base lr, not the regular one);
    - ``p >= P - L``: the target lr (``base * min_lr_ratio`` or ``min_lr``);
    - otherwise: ``annealing_cos(base, target, (p - W) / (P - W - L))``.

    Example:
        >>> policy = YoloxLr(num_last_epochs=1, min_lr_ratio=0.05, by_epoch=False, warmup="exp", warmup_iters=1,
        ...                  warmup_by_epoch=True, warmup_ratio=1)
        >>> [round(policy.value_at(0.01, Progress(i // 4, i, 4, 16, 4)), 7) for i in (0, 3, 4, 10, 11)]
        [0.000625, 0.01, 0.0096384, 0.0008616, 0.0005]
    """

    name = "YOLOX"

    def __init__(self, num_last_epochs: int, min_lr: float | None = None, min_lr_ratio: float | None = None,
                 **kwargs: Any) -> None:
        super().__init__(min_lr=min_lr, min_lr_ratio=min_lr_ratio, **kwargs)
        if not isinstance(num_last_epochs, int) or isinstance(num_last_epochs, bool) or num_last_epochs < 0:
            raise self._error("num_last_epochs", f"must be a non-negative int, got {num_last_epochs!r}")
        self.num_last_epochs = num_last_epochs

    def _warmup_iters(self, iters_per_epoch: int) -> int:
        # mmcv keeps warmup_iters even without a warm-up type, and YOLOX's cosine starts after it
        return self.warmup_iters * iters_per_epoch if self.warmup_by_epoch else self.warmup_iters

    def get_regular(self, base: float, progress: Progress, group: int = 0) -> float:
        last_iter = progress.iters_per_epoch * self.num_last_epochs
        p, total = self._progress(progress)
        p += 1
        target = self.target(base)
        if p >= total - last_iter:
            return target
        warm = self._warmup_iters(progress.iters_per_epoch)
        return annealing_cos(base, target, (p - warm) / (total - warm - last_iter))

    def warmup_value(self, base: float, regular: float, cur_iter: int, warmup_iters: int) -> float:
        return base * (self.warmup_ratio * ((cur_iter + 1) / float(warmup_iters)) ** 2)
