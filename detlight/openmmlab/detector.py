"""mmdet's / mmdet3d's own detector, built from the config's ``model`` dict, as detlight's ``model.model``.

Replaces: ``build_detector(cfg.model, train_cfg=cfg.get('train_cfg'), test_cfg=cfg.get('test_cfg'))`` followed by
``model.init_weights()`` in mmdet's ``tools/train.py`` (mmdet3d's ``build_model`` for a 3D config), and the
``MMDataParallel`` wrapper's ``train_step`` / ``val_step`` / ``forward_test`` calls of mmcv's runner.

:func:`openmmlab_detector` returns the mmdet module itself (not a wrapper), so its ``state_dict`` keys are mmdet's:
an mmdet ``.pth`` loads into it, a detlight checkpoint exports to a ``.pth`` that mmdet's ``init_detector`` reads, and
mmcv-style hooks see ``runner.model.module`` as the real detector. detlight's
:class:`~detlight.models.contract.DetectorAdapter` trains it through its own ``forward_train`` with mmdet's loss
parsing (the sum of the keys containing ``loss``; the rest is only logged), and evaluates it through its
``forward_test`` -> ``simple_test`` (:func:`predict_batch`, attached to the instance). Optimizer, ``paramwise_cfg``,
LR / momentum schedules, gradient clipping, fp16 and EMA stay detlight's.

Limits: ``init_cfg`` / ``pretrained`` checkpoints must be local files (nothing is downloaded); test-time
augmentation with several scales goes through mmdet's ``aug_test`` but detlight's predict writer sees the first
image only.
"""

from __future__ import annotations

import logging
import os
import types
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from torch import nn

from detlight.exceptions import CheckpointError, ConfigError

__all__ = ["check_init_checkpoints", "mmcv_containers", "openmmlab_detector", "predict_batch", "remote_checkpoints",
           "tuple_paths"]

log = logging.getLogger(__name__)


def remote_checkpoints(cfg: Any, prefix: str = "model") -> Iterator[tuple[str, str]]:
    """``(dotted key, value)`` of every ``init_cfg.checkpoint`` / ``pretrained`` in ``cfg`` that names a URL.

    mmcv fetches ``http(s)://``, ``torchvision://``, ``open-mmlab://``, ``mmcls://`` and ``modelzoo://`` names from
    the internet; detlight never downloads, so each one is reported with its key.

    Example:
        >>> cfg = {"backbone": {"init_cfg": {"type": "Pretrained", "checkpoint": "torchvision://resnet50"}}}
        >>> list(remote_checkpoints(cfg))
        [('model.backbone.init_cfg.checkpoint', 'torchvision://resnet50')]
    """
    if isinstance(cfg, Mapping):
        for key, value in cfg.items():
            path = f"{prefix}.{key}"
            if key in ("checkpoint", "pretrained") and isinstance(value, str) and "://" in value:
                yield path, value
            else:
                yield from remote_checkpoints(value, path)
    elif isinstance(cfg, (list, tuple)):
        for i, item in enumerate(cfg):
            yield from remote_checkpoints(item, f"{prefix}.{i}")


def _local_checkpoints(cfg: Any, prefix: str = "model") -> Iterator[tuple[str, str]]:
    if isinstance(cfg, Mapping):
        for key, value in cfg.items():
            path = f"{prefix}.{key}"
            if key in ("checkpoint", "pretrained") and isinstance(value, str) and "://" not in value:
                yield path, value
            else:
                yield from _local_checkpoints(value, path)
    elif isinstance(cfg, (list, tuple)):
        for i, item in enumerate(cfg):
            yield from _local_checkpoints(item, f"{prefix}.{i}")


def check_init_checkpoints(model: Mapping[str, Any]) -> None:
    """Refuse URLs and missing files among the model's ``init_cfg`` / ``pretrained`` checkpoints (one line each).

    Raises:
        CheckpointError: the first remote or missing checkpoint, with its config key.
    """
    for key, url in remote_checkpoints(model):
        raise CheckpointError(f"`{key}` is {url!r}: detlight does not download weights, the files must be local. "
                              f"Download it once and set `{key}` to the local path in the config, or set that `init_cfg` "
                              "to None there to train from scratch")
    for key, path in _local_checkpoints(model):
        if not os.path.isfile(os.path.expanduser(path)):
            raise CheckpointError(f"`{key}` checkpoint not found: {path}")


def openmmlab_detector(
    model: Mapping[str, Any],
    train_cfg: Mapping[str, Any] | None = None,
    test_cfg: Mapping[str, Any] | None = None,
    custom_imports: Mapping[str, Any] | Sequence[str] | None = None,
    scope: str = "mmdet",
    init_weights: bool = True,
    tuples: Sequence[str] | None = None,
) -> nn.Module:
    """Build the config's own detector with mmdet's (or mmdet3d's) registry, as ``tools/train.py`` does.

    Args:
        model: the config's ``model`` dict (``type`` plus its arguments, ``train_cfg`` / ``test_cfg`` inside or not).
        train_cfg: the top-level ``train_cfg`` of old configs (``None`` when it sits inside ``model``).
        test_cfg: the top-level ``test_cfg`` of old configs.
        custom_imports: the config's ``custom_imports``; imported first, so their types are registered.
        scope: ``"mmdet"`` or ``"mmdet3d"`` (whose ``build_model`` also knows mmdet's and mmseg's types).
        init_weights: call ``init_weights()`` (mmdet does, right after building).
        tuples: dotted paths (``model.backbone.order``, ``train_cfg.sampler.x``; list items by index) of the values
            that are tuples in the ``.py`` config, which YAML writes as lists: ``detlight convert`` records them
            (:func:`tuple_paths`) so the sections reach mmdet with exactly the config's containers. ``None`` (a
            hand-written YAML): pairs of numbers become tuples (:func:`mmcv_containers`).

    Returns:
        The mmdet detector module, with :func:`predict_batch` attached as ``predict_batch``.

    Raises:
        ConfigError: a type is not registered (with the ``custom_imports`` hint), or ``scope`` is unknown.
        CustomImportError: a ``custom_imports`` module failed to import.
        CheckpointError: an ``init_cfg`` checkpoint is a URL or a missing file.
    """
    from detlight.openmmlab.imports import import_custom_modules, registry_errors
    from detlight.openmmlab.provider import install_ops

    if scope not in ("mmdet", "mmdet3d"):
        raise ConfigError(f"`scope` must be 'mmdet' or 'mmdet3d', got {scope!r}")
    if not isinstance(model, Mapping) or "type" not in model:
        raise ConfigError(f"`model` must be the config's model dict with a `type`, got {model!r}"[:300])
    if init_weights:
        check_init_checkpoints(model)
    install_ops()
    import_custom_modules(custom_imports)
    from mmcv import ConfigDict

    sections = mmcv_containers({"model": model, "train_cfg": train_cfg, "test_cfg": test_cfg}, tuples)
    cfg = ConfigDict(sections["model"])
    train = ConfigDict(sections["train_cfg"]) if train_cfg is not None else None
    test = ConfigDict(sections["test_cfg"]) if test_cfg is not None else None
    with registry_errors(f"building `model` ({model['type']})", custom_imports):
        if scope == "mmdet3d":
            from mmdet3d.models import build_model

            detector = build_model(cfg, train_cfg=train, test_cfg=test)
        else:
            from mmdet.models import build_detector

            detector = build_detector(cfg, train_cfg=train, test_cfg=test)
    from detlight.openmmlab.legacy import apply_legacy_fixes

    apply_legacy_fixes()  # `device='cuda'` defaults without CUDA, numpy >= 1.24 (detlight.openmmlab.legacy)
    if init_weights and hasattr(detector, "init_weights"):
        detector.init_weights()
    detector.predict_batch = types.MethodType(predict_batch, detector)
    log.info("Built %s.%s from the config's model dict", type(detector).__module__, type(detector).__name__)
    return detector


#: keys whose number lists mmcv checks for tuples whatever their length (``impad(pad_val=...)``, in YOLOX's
#: ``Pad(pad_val=dict(img=(114.0, 114.0, 114.0)))``)
_TUPLE_KEYS = ("pad_val", "seg_pad_val")


def tuple_paths(value: Any, _path: str = "") -> list[str]:
    """The dotted paths of every tuple in a config section (list items by index), for :func:`mmcv_containers`.

    Example:
        >>> tuple_paths({"model": {"order": ("conv", "norm"), "fractions": [1.0, 0.0], "a": [{"s": (1, 2)}]}})
        ['model.order', 'model.a.0.s']
    """
    found: list[str] = []
    if isinstance(value, Mapping):
        for key, item in value.items():
            found += tuple_paths(item, f"{_path}.{key}" if _path else str(key))
    elif isinstance(value, (list, tuple)):
        if isinstance(value, tuple) and _path:
            found.append(_path)
        for i, item in enumerate(value):
            found += tuple_paths(item, f"{_path}.{i}" if _path else str(i))
    return found


def mmcv_containers(value: Any, tuples: Sequence[str] | None = None) -> Any:
    """Copy a config section read back from YAML, giving back the tuples mmcv / mmdet check for.

    YAML has no tuples, and mmcv / mmdet check some values for them: ``Resize(img_scale=(1333, 800))`` (a list of
    two ints would be read as two scales), ``Voxelization(max_voxels=(16000, 40000))``, ``SparseEncoder(order=
    ('conv', 'norm', 'act'))``, while others must stay lists (``IoUNegPiecewiseSampler(neg_piece_fractions=[...])``).

    Args:
        value: the section (``{"model": ..., "train_cfg": ...}`` or ``{"data": ...}``).
        tuples: the paths that were tuples in the ``.py`` config (:func:`tuple_paths`, written by ``detlight
            convert``): exactly those become tuples, nothing else. ``None`` (a hand-written YAML): each list of two
            numbers becomes a tuple (the scales, sizes and ranges of mmdet's configs), and the number lists under
            ``pad_val`` / ``seg_pad_val`` (mmcv's ``impad`` takes a number or a tuple).

    Example:
        >>> mmcv_containers({"img_scale": [[1333, 640], [1333, 800]], "mean": [1.0, 2.0, 3.0]})
        {'img_scale': [(1333, 640), (1333, 800)], 'mean': [1.0, 2.0, 3.0]}
        >>> mmcv_containers({"pad_val": {"img": [114.0, 114.0, 114.0], "masks": 0}})
        {'pad_val': {'img': (114.0, 114.0, 114.0), 'masks': 0}}
        >>> mmcv_containers({"m": {"order": ["conv", "norm"], "fractions": [1.0, 0.0]}}, tuples=["m.order"])
        {'m': {'order': ('conv', 'norm'), 'fractions': [1.0, 0.0]}}
    """
    if tuples is not None:
        return _exact_containers(value, frozenset(tuples), "")
    return _guessed_containers(value, False)


def _exact_containers(value: Any, tuples: frozenset[str], path: str) -> Any:
    if isinstance(value, Mapping):
        return {k: _exact_containers(v, tuples, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [_exact_containers(v, tuples, f"{path}.{i}" if path else str(i)) for i, v in enumerate(value)]
        return tuple(items) if path in tuples else items
    return value


def _guessed_containers(value: Any, in_tuple_key: bool) -> Any:
    if isinstance(value, Mapping):
        return {k: _guessed_containers(v, in_tuple_key or k in _TUPLE_KEYS) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [_guessed_containers(v, in_tuple_key) for v in value]
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in items)
        if numbers and (len(items) == 2 or in_tuple_key and items):
            return tuple(items)
        return items if isinstance(value, list) else tuple(items)
    return value


#: batch keys a 2D ``forward_test`` takes besides ``img`` / ``img_metas``
_TEST_INPUTS = ("proposals",)


def predict_batch(detector: Any, batch: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The detector's ``forward_test`` on one batch; one dict per image: ``result`` (mmdet's own), ``sample_idx``.

    2D results also carry detlight's ``boxes`` / ``scores`` / ``labels`` (from the bbox part), so detlight's
    evaluators and prediction writer read them; 3D results carry the result dict's own keys.
    """
    from detlight.models.contract import to_detections

    metas = batch["img_metas"]
    aug = bool(metas) and isinstance(metas[0], list)  # several test-time augmentations, mmdet's nesting kept
    wrap = (lambda v: v) if aug else (lambda v: [v])
    if "points" in batch:
        kwargs: dict[str, Any] = {"points": wrap(batch["points"]), "img_metas": wrap(metas)}
        if batch.get("img") is not None:
            kwargs["img"] = wrap(batch["img"])
        results = detector.forward_test(rescale=True, **kwargs)
    else:
        # the test pipeline's other collected keys go along, as in mmdet's `model(return_loss=False, **data)`:
        # Fast R-CNN's `proposals`
        extra = {k: wrap(v) for k, v in batch.items() if k not in ("img", "img_metas") and k in _TEST_INPUTS}
        results = detector.forward_test(wrap(batch["img"]), wrap(metas), rescale=True, **extra)
    first = metas[0] if aug else metas
    out = []
    for result, meta in zip(results, first):
        item: dict[str, Any] = {"result": result, "sample_idx": meta.get("detlight_idx", -1)}
        if "points" in batch:
            if isinstance(result, Mapping):
                item.update({k: v for k, v in result.items() if k != "result"})
        else:
            bbox = result[0] if isinstance(result, tuple) else result
            if isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], (list, tuple)):
                # single_gpu_test / multi_gpu_test: masks as RLE (bytes), what the dataset's evaluate expects; a
                # (masks, mask scores) pair for Mask Scoring R-CNN
                from mmdet.core import encode_mask_results

                item["result"] = (bbox, encode_mask_results(result[1]))
            if isinstance(bbox, (list, tuple)):
                item.update(to_detections(list(bbox)))
        out.append(item)
    return out
