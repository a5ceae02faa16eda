"""torchvision detection models built from YAML with their own defaults and a dataset-sized ``num_classes``.

Replaces: mmdet's ``build_detector(cfg.model)`` for the torchvision families (Faster/Mask/Keypoint R-CNN, RetinaNet,
FCOS, SSD/SSDLite). :func:`torchvision_detector` calls a torchvision builder function with only the arguments the
config names, so the builder keeps its own defaults (``fasterrcnn_mobilenet_v3_large_320_fpn``'s ``min_size=320``,
``rpn_score_thresh=0.05``), and nothing is downloaded unless the config asks for ``weights`` / ``weights_backbone``.

Why not the builder as ``class_path``: jsonargparse resolves a builder's ``**kwargs`` to the model class signature and
passes every one of its defaults explicitly (``min_size: 800`` over the builder's 320), and the builders default
``weights_backbone`` to ImageNet weights (a download). A builder given directly as ``class_path`` still trains, with
torchvision's meaning of ``num_classes`` (background included) checked against the dataset by
:class:`~detlight.module.DetectorModule`.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from torch import nn

from detlight.exceptions import ConfigError

__all__ = ["torchvision_detector"]

_MODULE = "torchvision.models.detection"


def torchvision_detector(
    builder: str,
    num_classes: int,
    weights: str | None = None,
    weights_backbone: str | None = None,
    options: dict[str, Any] | None = None,
    backbone: str | None = None,
) -> nn.Module:
    """Build a torchvision detector for a dataset of ``num_classes`` classes.

    Args:
        builder: a builder in ``torchvision.models.detection`` by name (``fasterrcnn_resnet50_fpn``) or full import
            path (``torchvision.models.detection.retinanet_resnet50_fpn``).
        num_classes: the dataset's classes (``len(CLASSES)``). Families with a background class (R-CNNs, SSD) get a
            head of ``num_classes + 1``; detlight shifts labels on the way in and out.
        weights: full-detector weights enum name (``DEFAULT``, ``COCO_V1``); ``None`` downloads nothing. With
            weights the head keeps its COCO size, so ``num_classes`` must then match it.
        weights_backbone: backbone weights enum name (``IMAGENET1K_V1``, ``DEFAULT``); ``None`` downloads nothing.
        options: further builder / model keyword arguments (``min_size``, ``max_size``, ``box_score_thresh``,
            ``trainable_backbone_layers``, ...); those not named keep the builder's defaults.
        backbone: another torchvision ResNet for an FPN family (``resnet18``, ``resnet101``, ``resnext101_32x8d``):
            the builder's model class is then built around ``resnet_fpn_backbone`` wired as the builder wires its
            ResNet-50 (RetinaNet / FCOS: C3-C5 + P6/P7). ``None`` keeps the builder's own backbone.

    Returns:
        The torchvision model itself (state-dict keys as torchvision's, so its checkpoints load with ``load_from``).

    Raises:
        ConfigError: unknown builder, ``num_classes`` < 1, or an option the builder rejects.

    Example:
        >>> model = torchvision_detector("fcos_resnet50_fpn", num_classes=3, options={"min_size": 64, "max_size": 64})
        >>> type(model).__name__, model.head.classification_head.num_classes, model.transform.min_size
        ('FCOS', 3, (64,))
    """
    fn = _resolve_builder(builder)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"Expected `model.model.init_args.num_classes` to be an int >= 1 (the dataset's classes), "
                          f"but got {num_classes!r}.")
    kwargs = dict(options or {})
    clash = sorted({"num_classes", "weights", "weights_backbone"} & set(kwargs))
    if clash:
        raise ConfigError(f"Set {clash} as init_args of torchvision_detector, not inside `options`.")
    probe = fn.__name__
    head = num_classes + 1 if _has_background(fn) else num_classes
    if backbone is not None:
        return _with_backbone(fn, backbone, head, weights, weights_backbone, kwargs)
    try:
        return fn(weights=weights, weights_backbone=weights_backbone, num_classes=head, **kwargs)  # type: ignore[no-any-return]
    except TypeError as err:
        raise ConfigError(f"torchvision builder `{probe}` rejected the options {sorted(kwargs)}: {err}") from None
    except ValueError as err:
        raise ConfigError(f"torchvision builder `{probe}` with weights={weights!r}, weights_backbone="
                          f"{weights_backbone!r}, num_classes={head} failed: {err}") from None


def _with_backbone(fn: Any, backbone: str, num_classes: int, weights: str | None, weights_backbone: str | None,
                   options: dict[str, Any]) -> nn.Module:
    from torchvision.models.detection import FCOS, RetinaNet
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
    from torchvision.ops import FrozenBatchNorm2d
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7

    cls = inspect.signature(fn).return_annotation
    if weights is not None:
        raise ConfigError(f"`weights: {weights}` loads a whole {fn.__name__}; it cannot be combined with "
                          f"`backbone: {backbone}`. Use `weights_backbone` for the backbone's ImageNet weights.")
    if not backbone.startswith(("resnet", "resnext", "wide_resnet")) or not isinstance(cls, type):
        raise ConfigError(f"`model.model.init_args.backbone` {backbone!r} is not supported for {fn.__name__}: use "
                          "a torchvision ResNet name (resnet18, resnet34, resnet50, resnet101, resnet152, "
                          "resnext50_32x4d, resnext101_32x8d, wide_resnet50_2).")
    trainable = options.pop("trainable_backbone_layers", 5 if weights_backbone is None else 3)
    dense = issubclass(cls, (RetinaNet, FCOS))
    try:
        body = resnet_fpn_backbone(
            backbone_name=backbone, weights=weights_backbone, trainable_layers=trainable,
            norm_layer=nn.BatchNorm2d if weights_backbone is None else FrozenBatchNorm2d,
            returned_layers=[2, 3, 4] if dense else None, extra_blocks=LastLevelP6P7(256, 256) if dense else None)
        return cls(body, num_classes=num_classes, **options)  # type: ignore[no-any-return]
    except (KeyError, TypeError, ValueError) as err:
        raise ConfigError(f"Building {cls.__name__} with backbone {backbone!r} and options {sorted(options)} "
                          f"failed: {err}") from None


def _resolve_builder(builder: str) -> Any:
    module_name, _, name = builder.rpartition(".")
    module_name = module_name or _MODULE
    try:
        module = importlib.import_module(module_name)
        fn = getattr(module, name)
    except (ImportError, AttributeError):
        detection = importlib.import_module(_MODULE)
        known = sorted(n for n, v in vars(detection).items() if n.islower() and callable(v) and not n.startswith("_")
                       and not isinstance(v, type) and "weights" not in n and n not in ("boxes",))
        raise ConfigError(f"Unknown torchvision detection builder `{builder}` (`model.model.init_args.builder`); "
                          f"known: {known}") from None
    if not callable(fn):
        raise ConfigError(f"`model.model.init_args.builder` {builder!r} is not a function")
    return fn


def _has_background(fn: Any) -> bool:
    """Whether the builder's model family reserves class 0 for background (read from the families table)."""
    from detlight.models.contract import TORCHVISION_FAMILIES, torchvision_family

    torchvision_family(nn.Module())  # fills the table on first use
    annotation = inspect.signature(fn).return_annotation
    if isinstance(annotation, type):
        for cls in annotation.__mro__:
            if cls in TORCHVISION_FAMILIES:
                return TORCHVISION_FAMILIES[cls].background
    raise ConfigError(f"torchvision builder `{fn.__name__}` returns {annotation!r}, which is in no declared family "
                      f"({sorted(f.name for f in TORCHVISION_FAMILIES.values())}); build the model yourself and give it "
                      "as `model.model`.")
