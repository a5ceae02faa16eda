"""torchvision detection models built from YAML with their own defaults and a dataset-sized ``num_classes``.

Replaces: mmdet's ``build_detector(cfg.model)`` for the torchvision families (Faster/Mask/Keypoint R-CNN, RetinaNet,
FCOS, SSD/SSDLite). :func:`torchvision_detector` calls a torchvision builder function with only the arguments the
config names, so the builder keeps its own defaults (``fasterrcnn_mobilenet_v3_large_320_fpn``'s ``min_size=320``,
``rpn_score_thresh=0.05``), and nothing is downloaded unless the config asks for ``weights`` / ``weights_backbone``.

A builder given directly as ``class_path`` (``torchvision.models.detection.fasterrcnn_mobilenet_v3_large_320_fpn``)
also keeps its defaults: while the CLI parses, :func:`builder_signatures` shows jsonargparse each builder's effective
signature (the model class's keywords with the builder's own ``defaults`` over them, ``weights_backbone=None``), so
the values jsonargparse fills in and records in ``config.yaml`` are the ones the builder would use. That form keeps
torchvision's meaning of ``num_classes`` (background included), checked against the dataset by
:class:`~detlight.module.DetectorModule`.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import importlib
import inspect
import textwrap
import warnings
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from torch import nn

from detlight.exceptions import ConfigError

if TYPE_CHECKING:
    from torchvision.models.resnet import ResNet

__all__ = ["builder_signatures", "effective_signature", "torchvision_detector"]

_MODULE = "torchvision.models.detection"


def torchvision_detector(
    builder: str,
    num_classes: int,
    weights: str | None = None,
    weights_backbone: str | None = None,
    options: dict[str, Any] | None = None,
    backbone: str | None = None,
    fpn_channels: int | None = None,
    anchor_sizes: list[list[float]] | None = None,
    aspect_ratios: list[float] | None = None,
    frozen_bn: bool | None = None,
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
            the builder's model class is then built around that ResNet and an FPN, wired as the builder wires its
            ResNet-50 (RetinaNet / FCOS: C3-C5 + P6/P7). ``None`` keeps the builder's own backbone. Any ResNeXt
            width is accepted as ``resnext<depth>_<groups>x<width>d`` (``resnext101_32x4d``: torchvision's ResNet
            class with ``groups=32, width_per_group=4``; no ImageNet weights for the ones torchvision does not ship).
            ``options.trainable_backbone_layers`` (0-5) freezes the other stages (mmdet ``frozen_stages=k``:
            ``4 - k``), with or without backbone weights.
        fpn_channels: the FPN's width (torchvision: 256; mmdet ``neck.out_channels``), with ``backbone`` only. The
            heads follow it (R-CNN box head input ``fpn_channels * 7 * 7``). Narrow it to train fast on a CPU.
        anchor_sizes: anchor sizes in input pixels, one list per feature level from the finest (mmdet
            ``anchor_generator``: ``octave_base_scale * 2**(i / scales_per_octave) * stride`` or ``scales * stride``).
            R-CNN families (RPN anchors) and RetinaNet only. ``None`` keeps torchvision's (32 to 512, RetinaNet with
            3 octave scales each). Small objects need small anchors: 12 px boxes barely overlap a 32 px anchor.
        aspect_ratios: anchor height/width ratios used on every level (mmdet ``ratios``); default ``[0.5, 1, 2]``.
        frozen_bn: with ``backbone``: ``True`` builds the backbone with ``FrozenBatchNorm2d`` (fixed statistics and
            affine, mmdet ``norm_eval=True``), ``False`` with trainable ``BatchNorm2d``; ``None``: frozen exactly
            when ``weights_backbone`` is given (torchvision's rule).

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
    if anchor_sizes is not None or aspect_ratios is not None:
        kwargs.update(_anchor_option(fn, anchor_sizes, aspect_ratios, kwargs))
    if fpn_channels is not None and backbone is None:
        raise ConfigError("`model.model.init_args.fpn_channels` sizes the FPN that `backbone` builds; name a "
                          "`backbone` too (e.g. resnet18), or drop `fpn_channels` to keep the builder's own.")
    if frozen_bn is not None and backbone is None:
        raise ConfigError("`model.model.init_args.frozen_bn` sets the normalisation of the backbone that `backbone` "
                          "builds; name a `backbone` too (e.g. resnet50), or drop `frozen_bn`.")
    try:
        if backbone is not None:
            width = 256 if fpn_channels is None else fpn_channels
            model = _with_backbone(fn, backbone, head, weights, weights_backbone, kwargs, width, frozen_bn)
        else:
            model = fn(weights=weights, weights_backbone=weights_backbone, num_classes=head, **kwargs)
    except TypeError as err:
        raise ConfigError(f"torchvision builder `{probe}` rejected the options {sorted(kwargs)}: {err}") from None
    except ValueError as err:
        raise ConfigError(f"torchvision builder `{probe}` with weights={weights!r}, weights_backbone="
                          f"{weights_backbone!r}, num_classes={head} failed: {err}") from None
    if anchor_sizes is not None:
        _check_anchor_levels(model, len(anchor_sizes))
    return model  # type: ignore[no-any-return]


def _check_anchor_levels(model: nn.Module, given: int) -> None:
    """One ``anchor_sizes`` entry per feature map, checked now rather than at the first step."""
    import torch

    was_training = model.training
    model.eval()  # no BatchNorm statistics change
    try:
        with torch.no_grad():
            levels = len(model.backbone(torch.zeros(1, 3, 64, 64)))  # type: ignore[operator]
    finally:
        model.train(was_training)
    if levels != given:
        raise ConfigError(f"`model.model.init_args.anchor_sizes` has {given} levels, but the model's backbone gives "
                          f"{levels} feature maps; give one list of sizes per feature map, finest first.")


def _anchor_option(fn: Any, sizes: list[list[float]] | None, ratios: list[float] | None,
                   options: dict[str, Any]) -> dict[str, Any]:
    """``anchor_sizes`` / ``aspect_ratios`` -> the anchor generator keyword the builder's model class takes."""
    from torchvision.models.detection import FasterRCNN, RetinaNet
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    cls = inspect.signature(fn).return_annotation
    key = ("rpn_anchor_generator" if isinstance(cls, type) and issubclass(cls, FasterRCNN) else
           "anchor_generator" if isinstance(cls, type) and issubclass(cls, RetinaNet) else None)
    if key is None:
        raise ConfigError(f"`anchor_sizes` / `aspect_ratios` apply to the R-CNN families and RetinaNet; "
                          f"{fn.__name__} builds {getattr(cls, '__name__', cls)}, whose boxes are not set that way. "
                          "Drop them, or pass the model's own generator object from Python.")
    if key in options:
        raise ConfigError(f"Give either `options.{key}` or `anchor_sizes` / `aspect_ratios`, not both.")
    if sizes is None:
        sizes = ([[32.0], [64.0], [128.0], [256.0], [512.0]] if key == "rpn_anchor_generator" else
                 [[x, x * 2 ** (1 / 3), x * 2 ** (2 / 3)] for x in (32.0, 64.0, 128.0, 256.0, 512.0)])
    ratios = [0.5, 1.0, 2.0] if ratios is None else ratios
    bad = [v for level in sizes for v in (level if isinstance(level, (list, tuple)) else [level])
           if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0]
    if not sizes or bad or not all(isinstance(level, (list, tuple)) and level for level in sizes):
        raise ConfigError(f"Expected `model.model.init_args.anchor_sizes` to be one non-empty list of positive "
                          f"pixel sizes per feature level, e.g. [[16], [32], [64], [128], [256]], but got {sizes!r}.")
    if not ratios or any(isinstance(r, bool) or not isinstance(r, (int, float)) or r <= 0 for r in ratios):
        raise ConfigError(f"Expected `model.model.init_args.aspect_ratios` to be a non-empty list of positive "
                          f"height/width ratios, e.g. [0.5, 1.0, 2.0], but got {ratios!r}.")
    if len({len(level) for level in sizes}) != 1:
        raise ConfigError(f"Every level of `anchor_sizes` needs the same number of sizes (one head serves all "
                          f"levels), but got {[len(level) for level in sizes]}.")
    generator = AnchorGenerator(tuple(tuple(float(v) for v in level) for level in sizes),
                                tuple(tuple(float(r) for r in ratios) for _ in sizes))
    return {key: generator}


def _with_backbone(fn: Any, backbone: str, num_classes: int, weights: str | None, weights_backbone: str | None,
                   options: dict[str, Any], fpn_channels: int = 256, frozen_bn: bool | None = None) -> nn.Module:
    from torchvision.models.detection import FCOS, RetinaNet
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.ops import FrozenBatchNorm2d
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

    cls = inspect.signature(fn).return_annotation
    if weights is not None:
        raise ConfigError(f"`weights: {weights}` loads a whole {fn.__name__}; it cannot be combined with "
                          f"`backbone: {backbone}`. Use `weights_backbone` for the backbone's ImageNet weights.")
    if not backbone.startswith(("resnet", "resnext", "wide_resnet")) or not isinstance(cls, type):
        raise ConfigError(f"`model.model.init_args.backbone` {backbone!r} is not supported for {fn.__name__}: use "
                          "a torchvision ResNet name (resnet18, resnet34, resnet50, resnet101, resnet152, "
                          "resnext50_32x4d, resnext101_32x8d, resnext101_64x4d, wide_resnet50_2) or any "
                          "resnext<depth>_<groups>x<width>d.")
    if isinstance(fpn_channels, bool) or not isinstance(fpn_channels, int) or fpn_channels < 1:
        raise ConfigError(f"Expected `model.model.init_args.fpn_channels` to be an int >= 1, but got {fpn_channels!r}.")
    trainable = options.pop("trainable_backbone_layers", 5 if weights_backbone is None else 3)
    if isinstance(trainable, bool) or not isinstance(trainable, int) or not 0 <= trainable <= 5:
        raise ConfigError(f"Expected `options.trainable_backbone_layers` to be an int in [0, 5], but got {trainable!r}.")
    dense = issubclass(cls, (RetinaNet, FCOS))
    v2 = fn.__name__.endswith("_v2")
    if v2 and fn.__name__ != "retinanet_resnet50_fpn_v2":
        raise ConfigError(f"`backbone: {backbone}` with {fn.__name__} would drop the v2 heads it builds; use "
                          f"{fn.__name__[:-3]} (v1 heads) with `backbone`, or {fn.__name__} without it.")
    if v2 and fpn_channels % 32:
        raise ConfigError(f"retinanet_resnet50_fpn_v2's head uses GroupNorm(32, fpn_channels): "
                          f"`fpn_channels` must be a multiple of 32, but got {fpn_channels}.")
    frozen = weights_backbone is not None if frozen_bn is None else bool(frozen_bn)
    try:
        body = _resnet(backbone, weights_backbone, FrozenBatchNorm2d if frozen else nn.BatchNorm2d)
    except (AttributeError, KeyError, ValueError) as err:
        raise ConfigError(f"Building torchvision backbone {backbone!r} with weights_backbone={weights_backbone!r} "
                          f"failed: {err}") from None
    # As torchvision wires its ResNet-50 FPNs: only the last `trainable` stages train; dense heads read C3-C5 and
    # add P6/P7 (from P5; from C5 in RetinaNet v2), R-CNNs read C2-C5 and add a max-pooled P6.
    train = ["layer4", "layer3", "layer2", "layer1", "conv1"][:trainable] + (["bn1"] if trainable == 5 else [])
    for name, parameter in body.named_parameters():
        if not name.startswith(tuple(train)):
            parameter.requires_grad_(False)
    levels = [2, 3, 4] if dense else [1, 2, 3, 4]
    stage2 = body.inplanes // 8
    extra = (LastLevelP6P7(stage2 * 8 if v2 else fpn_channels, fpn_channels) if dense else LastLevelMaxPool())
    try:
        with_fpn = BackboneWithFPN(
            body, {f"layer{k}": str(i) for i, k in enumerate(levels)}, [stage2 * 2 ** (k - 1) for k in levels],
            fpn_channels, extra_blocks=extra)
        if v2 and "head" not in options:  # retinanet_resnet50_fpn_v2's head: GroupNorm convs, GIoU box loss
            options["head"] = _retinanet_v2_head(fpn_channels, options.get("anchor_generator"), num_classes)
        return cls(with_fpn, num_classes=num_classes, **options)  # type: ignore[no-any-return]
    except (KeyError, TypeError, ValueError) as err:
        raise ConfigError(f"Building {cls.__name__} with backbone {backbone!r} and options {sorted(options)} "
                          f"failed: {err}") from None


#: ResNet depth -> Bottleneck blocks per stage (torchvision's and mmdet's).
_BOTTLENECK_LAYERS = {50: [3, 4, 6, 3], 101: [3, 4, 23, 3], 152: [3, 8, 36, 3]}


def _resnet(name: str, weights: str | None, norm_layer: Any) -> ResNet:
    """A torchvision ResNet by builder name, or ``resnext<depth>_<groups>x<width>d`` built from the ResNet class.

    Example:
        >>> body = _resnet("resnext101_32x4d", None, nn.BatchNorm2d)
        >>> body.layer1[0].conv2.groups, body.layer1[0].conv2.out_channels, len(body.layer3)
        (32, 128, 23)
    """
    import re

    from torchvision.models import resnet

    if hasattr(resnet, name):
        return getattr(resnet, name)(weights=weights, norm_layer=norm_layer)  # type: ignore[no-any-return]
    match = re.fullmatch(r"resnext(\d+)_(\d+)x(\d+)d", name)
    if match is None or int(match[1]) not in _BOTTLENECK_LAYERS:
        raise AttributeError(f"torchvision has no ResNet {name!r}")
    if weights is not None:
        raise ValueError(f"torchvision ships no ImageNet weights for {name}; leave weights_backbone unset")
    depth, groups, width = (int(v) for v in match.groups())
    return resnet.ResNet(resnet.Bottleneck, _BOTTLENECK_LAYERS[depth], groups=groups, width_per_group=width,
                         norm_layer=norm_layer)


def _retinanet_v2_head(channels: int, anchor_generator: Any, num_classes: int) -> nn.Module:
    from functools import partial

    from torchvision.models.detection.retinanet import RetinaNetHead

    from detlight.upstream_internals import set_box_loss

    anchors = anchor_generator.num_anchors_per_location()[0] if anchor_generator is not None else 9
    head = RetinaNetHead(channels, anchors, num_classes, norm_layer=partial(nn.GroupNorm, 32))
    set_box_loss(head.regression_head, "giou")
    return head


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


def mentions_builders(args: Any) -> bool:
    """Whether CLI ``args`` (a list of strings, or a config dict) or the files they name refer to
    ``torchvision.models.detection``: only then is :func:`builder_signatures` worth its ~0.15 s."""
    import json
    from pathlib import Path

    if isinstance(args, dict):
        return _MODULE in json.dumps(args, default=str)
    texts = [str(a) for a in args or ()]
    for arg in list(texts):
        candidate = arg.split("=", 1)[-1]
        with contextlib.suppress(OSError, ValueError):
            if len(candidate) < 4096 and Path(candidate).is_file():
                texts.append(Path(candidate).read_text(encoding="utf-8", errors="replace"))
    return any(_MODULE in text for text in texts)


@contextlib.contextmanager
def builder_signatures(enabled: bool = True) -> Iterator[None]:
    """Give each torchvision detection builder its :func:`effective_signature` for the body of the ``with``.

    jsonargparse reads ``inspect.signature``, which honours ``__signature__``; the attribute is removed again on exit,
    so code outside the CLI's parsing sees torchvision's functions untouched. ``enabled=False`` does nothing.
    """
    installed: list[Callable[..., Any]] = []
    try:
        for fn in _detection_builders() if enabled else ():
            signature = effective_signature(fn)
            if signature is not None and "__signature__" not in vars(fn):
                fn.__signature__ = signature  # type: ignore[attr-defined]
                installed.append(fn)
        yield
    finally:
        for fn in installed:
            with contextlib.suppress(AttributeError):
                del fn.__signature__  # type: ignore[attr-defined]


@functools.cache
def effective_signature(fn: Callable[..., Any]) -> inspect.Signature | None:
    """The keywords a torchvision builder really takes, with the defaults it really uses, and no download.

    Its own keywords, then the model class's (what its ``**kwargs`` reach), with the builder's ``defaults = {...}``
    literal over the class defaults (``fasterrcnn_mobilenet_v3_large_320_fpn``: ``min_size=320``,
    ``rpn_score_thresh=0.05``, ...), and ``weights_backbone=None`` (torchvision's default downloads ImageNet weights;
    name them in the config to get them). ``None`` when the signature cannot be followed.

    Example:
        >>> from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_320_fpn as fn
        >>> params = effective_signature(fn).parameters
        >>> params["min_size"].default, params["rpn_score_thresh"].default, params["weights_backbone"].default
        (320, 0.05, None)
    """
    from detlight.upstream_internals import followed_parameters

    try:
        followed = followed_parameters(fn)
    except (ImportError, AttributeError, TypeError, ValueError) as err:  # resolver moved: keep plain behaviour
        warnings.warn(f"Cannot follow the keywords of {fn.__name__} ({err}); as a class_path it gets the model "
                      "class defaults. Use detlight.models.torchvision_detector to keep the builder's.", stacklevel=2)
        return None
    own = _builder_defaults(fn)
    params = []
    for name, annotation, default in followed:
        if name == "weights_backbone":
            default = None
        elif name in own:
            default = own.pop(name)
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation))
    # Builder defaults the follower did not reach (ssdlite's **kwargs go to two calls) are keywords all the same.
    params += [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default) for name, default in own.items()]
    return inspect.Signature(params, return_annotation=inspect.signature(fn).return_annotation)


def _builder_defaults(fn: Callable[..., Any]) -> dict[str, Any]:
    """The literal ``defaults = {...}`` a torchvision builder merges under its ``**kwargs`` (empty if none)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(inspect.unwrap(fn))))
    except (OSError, TypeError, SyntaxError):
        return {}
    found: dict[str, Any] = {}
    for node in ast.walk(tree):
        target = (node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else
                  node.target if isinstance(node, ast.AnnAssign) else None)
        value = getattr(node, "value", None)
        if isinstance(target, ast.Name) and target.id == "defaults" and isinstance(value, ast.Dict):
            for key, item in zip(value.keys, value.values):
                with contextlib.suppress(ValueError, TypeError, SyntaxError):
                    if isinstance(key, ast.Constant) and isinstance(key.value, str):
                        found[key.value] = ast.literal_eval(item)
    return found


def _detection_builders() -> list[Callable[..., Any]]:
    """Public functions of ``torchvision.models.detection`` that return a detector (an ``nn.Module`` subclass)."""
    detection = importlib.import_module(_MODULE)
    builders = []
    for name, value in vars(detection).items():
        if name.startswith("_") or isinstance(value, type) or not callable(value):
            continue
        with contextlib.suppress(TypeError, ValueError):
            annotation = inspect.signature(value).return_annotation
            if isinstance(annotation, type) and issubclass(annotation, nn.Module):
                builders.append(value)
    return builders
