"""The dataset's own ``evaluate(results, metric=...)`` as detlight's evaluator (COCO through pycocotools for mmdet).

Replaces: mmdet's ``EvalHook`` / ``DistEvalHook`` evaluation pass: ``single_gpu_test`` / ``multi_gpu_test``
(results of every rank collected, the distributed sampler's padding removed, put back in dataset order) followed by
``dataset.evaluate(results, logger=runner.logger, **eval_kwargs)``. The numeric results are logged as
``val/<key>`` with mmdet's keys (``bbox_mAP``, ``bbox_mAP_50``, ...); string results (``bbox_mAP_copypaste``) are
written to the log only. When to evaluate stays :class:`~detlight.callbacks.Evaluation`'s decision.

Limits: global rank 0 runs ``evaluate`` and broadcasts the numbers; results are gathered as pickled objects
(``all_gather_object``), as mmdet's CPU collection did. Samples that were never predicted (``limit_val_batches``)
count as images without detections, with a warning.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torchmetrics import Metric

from detlight.exceptions import ConfigError, ModelContractError

__all__ = ["DatasetEvaluator", "empty_like", "ordered_results"]

log = logging.getLogger(__name__)
eval_log = logging.getLogger("detlight.openmmlab.evaluate")  # the logger handed to dataset.evaluate


def empty_like(result: Any) -> Any:
    """A result of the same layout without detections (per-class ``[0, 5]`` arrays, empty mask lists, ...).

    Raises:
        ModelContractError: the layout is not mmdet's list / tuple of per-class arrays.

    Example:
        >>> [a.shape for a in empty_like([np.ones((2, 5)), np.ones((1, 5))])]
        [(0, 5), (0, 5)]
    """
    if isinstance(result, np.ndarray):
        return np.zeros((0, *result.shape[1:]), dtype=result.dtype)
    if isinstance(result, tuple):
        return tuple(empty_like(r) for r in result)
    if isinstance(result, list):
        return [empty_like(r) if isinstance(r, np.ndarray) else [] for r in result]
    raise ModelContractError(f"Cannot build an empty result like a {type(result).__name__}; evaluate every sample "
                             "(leave trainer.limit_val_batches unset)")


def ordered_results(pairs: Sequence[tuple[int, Any]], size: int) -> tuple[list[Any], int]:
    """``(sample index, result)`` pairs from every rank -> results in dataset order, duplicates dropped.

    Returns:
        The ``size`` results and how many samples had none (filled with :func:`empty_like`).

    Example:
        >>> ordered_results([(1, "b"), (0, "a"), (1, "b")], 2)
        (['a', 'b'], 0)
    """
    by_index: dict[int, Any] = {}
    for index, result in pairs:
        if not 0 <= index < size:
            raise ModelContractError(f"A prediction carries sample index {index}, outside the dataset's [0, {size})")
        by_index.setdefault(int(index), result)
    missing = size - len(by_index)
    if missing and by_index:
        blank = empty_like(next(iter(by_index.values())))
        return [by_index.get(i, blank) for i in range(size)], missing
    if missing:
        return [], missing
    return [by_index[i] for i in range(size)], 0


class DatasetEvaluator(Metric):
    """Collects mmdet's per-image results and calls the bound dataset's ``evaluate`` (see the module docstring).

    ``update(preds, batch)`` reads ``result`` and ``sample_idx`` from each prediction
    (:func:`detlight.openmmlab.detector.predict_batch` writes them); :class:`~detlight.openmmlab.data.OpenMMLabDataModule`
    binds the dataset of the split being evaluated (:meth:`bind_dataset`).

    Args:
        metric: mmdet's ``evaluation.metric`` (``'bbox'``, ``['bbox', 'segm']``, ``'mAP'``, ...); ``None`` leaves the
            dataset's default.
        eval_kwargs: the other ``evaluation`` keys the dataset's ``evaluate`` takes (``classwise``, ``iou_thrs``,
            ``proposal_nums``, ``jsonfile_prefix``, ...).
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, metric: str | Sequence[str] | None = "bbox", eval_kwargs: Mapping[str, Any] | None = None) -> None:
        super().__init__(sync_on_compute=False)
        self.metric = list(metric) if isinstance(metric, (list, tuple)) else metric
        self.eval_kwargs = dict(eval_kwargs or {})
        self.dataset: Any = None
        self._pairs: list[tuple[int, Any]] = []

    def bind_dataset(self, dataset: Any) -> None:
        """Evaluate against ``dataset`` (an mmdet / mmdet3d dataset with ``evaluate``)."""
        if not hasattr(dataset, "evaluate"):
            raise ConfigError(f"{type(dataset).__name__} has no `evaluate` method; set `model.evaluator` to one of "
                              "detlight's metrics instead")
        self.dataset = dataset

    def update(self, preds: Sequence[Mapping[str, Any]], batch: Any = None) -> None:
        """Keep each image's ``(sample_idx, result)``."""
        for pred in preds:
            if "result" not in pred or "sample_idx" not in pred:
                raise ModelContractError("DatasetEvaluator needs predictions with `result` and `sample_idx` (from "
                                         "detlight.openmmlab's detector); got keys " + str(sorted(pred)))
            self._pairs.append((int(pred["sample_idx"]), pred["result"]))

    def reset(self) -> None:
        """Forget the collected results."""
        super().reset()
        self._pairs = []

    def compute(self) -> OrderedDict[str, torch.Tensor]:
        """Gather every rank's results, evaluate them with the dataset on rank 0, share the numbers."""
        if self.dataset is None:
            raise ConfigError("DatasetEvaluator has no dataset: use it with detlight.openmmlab.OpenMMLabDataModule, "
                              "which binds the val / test dataset")
        pairs = _gather(self._pairs)
        values: dict[str, float] = {}
        if _rank() == 0:
            values = self._evaluate(pairs)
        values = _broadcast(values)
        return OrderedDict((k, torch.tensor(v, dtype=torch.float32)) for k, v in values.items())

    def _evaluate(self, pairs: list[tuple[int, Any]]) -> dict[str, float]:
        results, missing = ordered_results(pairs, len(self.dataset))
        if missing:
            log.warning("%d of %d samples of the evaluated set were not predicted (trainer.limit_val_batches?); they "
                        "count as images without detections", missing, len(self.dataset))
        if not results:
            return {}
        kwargs = dict(self.eval_kwargs)
        if self.metric is not None:
            kwargs["metric"] = self.metric
        out = self.dataset.evaluate(results, logger=eval_log, **kwargs)
        values: dict[str, float] = {}
        for key, value in out.items():
            if isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
                values[key] = float(value)
            else:
                log.info("Evaluation %s: %s", key, value)
        return values


def _rank() -> int:
    dist = torch.distributed
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _gather(pairs: list[tuple[int, Any]]) -> list[tuple[int, Any]]:
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return list(pairs)
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, pairs)
    return [pair for part in parts for pair in part]


def _broadcast(values: dict[str, float]) -> dict[str, float]:
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return values
    box = [values]
    dist.broadcast_object_list(box, src=0)
    return dict(box[0])
