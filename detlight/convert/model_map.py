"""mmdet / mmdet3d model types -> detlight models, for configs converted without mmdet installed.

Replaces: mmdet's ``build_detector(cfg.model)`` registry lookup, for the types detlight can stand in for.
:data:`FAMILY_TABLE` maps each supported mmdet detector type to a torchvision family (built by
:func:`detlight.models.torchvision_detector` with the head's ``num_classes``, the ResNet / ResNeXt depth of the
backbone and the test-time thresholds); mmdet3d PointPillars-style types map to detlight's ``PointPillars``
(with :class:`~detlight.metrics.CenterDistanceMAP` as evaluator). Backbones are built as the config names them
(ResNet / ResNeXt depth, groups and width; ``frozen_stages``; ``norm_eval`` as frozen BatchNorm) and the test scale
comes from the test pipeline. Every mapped model is reported "approximated", and each part that is not what the
config names is listed as ``swapped <kind>: <config> -> <built>`` (kinds: backbone, neck, head, loss, scale).
C4 / DC5 R-CNNs (one feature map, no FPN) are refused with the reason (:func:`refusal`). Any other type gets the nearest supported family named in the report, and a ``model.model``
(:class:`~detlight.convert.unmapped_detector.UnmappedDetector`) whose construction stops ``fit`` with that message.
This module imports neither torch nor Lightning, so ``detlight convert`` stays light.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from detlight.convert.report import UNMAPPED_MODEL, dotted_get
from detlight.convert.sections import UNMAPPED_DATA

if TYPE_CHECKING:
    from detlight.convert.report import ConversionReport

__all__ = ["FAMILY_TABLE", "NEAREST", "SWAP_KINDS", "apply_model_map", "map_model", "refusal"]

TV_FACTORY = "detlight.models.torchvision_detector"
UNMAPPED = UNMAPPED_MODEL  # imported by the CLI only (it needs torch)
POINTPILLARS = "detlight.models.pointpillars.PointPillars"
CENTER_DISTANCE = "detlight.metrics.CenterDistanceMAP"

#: mmdet detector type -> (torchvision builder, what always differs from mmdet's model of that type).
FAMILY_TABLE: dict[str, tuple[str, str]] = {
    "FasterRCNN": ("fasterrcnn_resnet50_fpn", "torchvision RPN/RoI heads (anchors rounded to whole pixels; "
                   "RoIAlign 7x7; sampling/NMS settings at torchvision defaults except the test thresholds)"),
    "MaskRCNN": ("maskrcnn_resnet50_fpn", "torchvision RPN/RoI/mask heads (anchors rounded to whole pixels; "
                 "mask head 4 convs + deconv, 28x28 masks)"),
    "RetinaNet": ("retinanet_resnet50_fpn", "torchvision RetinaNet head (P3-P7 from C3-C5, anchors rounded to whole "
                  "pixels, focal loss + L1 on box deltas)"),
    "FCOS": ("fcos_resnet50_fpn", "torchvision FCOS head (GroupNorm, centerness on the regression branch, GIoU "
             "loss)"),
    "SSD": ("ssd300_vgg16", "torchvision SSD300-VGG16 (fixed 300x300 input, its own default boxes)"),
}
#: mmdet SSD backbone type -> torchvision builder, when not VGG.
SSD_BACKBONES = {"SSDVGG": "ssd300_vgg16", "MobileNetV2": "ssdlite320_mobilenet_v3_large"}
#: mmdet types without a counterpart -> the nearest supported family (named in the report and in the error).
NEAREST: dict[str, str] = {
    "CascadeRCNN": "FasterRCNN", "HybridTaskCascade": "MaskRCNN", "FastRCNN": "FasterRCNN", "RPN": "FasterRCNN",
    "MaskScoringRCNN": "MaskRCNN", "GridRCNN": "FasterRCNN", "TridentFasterRCNN": "FasterRCNN", "SCNet": "MaskRCNN",
    "PointRend": "MaskRCNN", "PanopticFPN": "MaskRCNN", "DynamicRCNN": "FasterRCNN", "SparseRCNN": "FasterRCNN",
    "QueryInst": "MaskRCNN", "SOLO": "MaskRCNN", "SOLOv2": "MaskRCNN", "YOLACT": "MaskRCNN", "Mask2Former": "MaskRCNN",
    "MaskFormer": "MaskRCNN", "VFNet": "FCOS", "ATSS": "FCOS", "GFL": "FCOS", "TOOD": "FCOS", "PAA": "RetinaNet",
    "FSAF": "RetinaNet", "FOVEA": "FCOS", "NASFCOS": "FCOS", "AutoAssign": "FCOS", "DDOD": "FCOS",
    "RepPointsDetector": "FCOS", "YOLOF": "RetinaNet", "YOLOV3": "SSD", "YOLOX": "FCOS", "CornerNet": "CenterNet",
    "LAD": "RetinaNet", "KnowledgeDistillationSingleStageDetector": "RetinaNet", "DETR": "FCOS",
    "DeformableDETR": "FCOS", "CenterNet": "CenterNet",
    "SECOND": "PointPillars", "CenterPoint": "PointPillars", "PartA2": "PointPillars", "DynamicVoxelNet": "PointPillars",
    "MVXFasterRCNN": "PointPillars", "DynamicMVXFasterRCNN": "PointPillars", "SASSD": "PointPillars",
    "PointRCNN": "PointPillars", "VoxelNet": "PointPillars",
}
#: the kinds of swap a report names ("swapped <kind>: ..."): any of them makes the model entry "approximated".
SWAP_KINDS = ("backbone", "neck", "head", "loss", "scale")
#: mmdet SSD-style heads: the same network as SSDHead (Ascend: an NPU-friendly implementation of it).
SSD_HEADS = {"SSDHead": "", "AscendSSDHead": "", "PISASSDHead": "PISA's ISR-P / CARL loss reweighting is not carried"}
#: ResNet depths torchvision builds (BasicBlock 18 / 34, Bottleneck 50 / 101 / 152).
_DEPTHS = (18, 34, 50, 101, 152)
#: what torchvision builds per family: head types (dotted path in the mmdet model -> accepted mmdet types).
_TV_HEADS: dict[str, dict[str, tuple[str, ...]]] = {
    "FasterRCNN": {"rpn_head": ("RPNHead",), "roi_head": ("StandardRoIHead",),
                   "roi_head.bbox_head": ("Shared2FCBBoxHead",)},
    "MaskRCNN": {"rpn_head": ("RPNHead",), "roi_head": ("StandardRoIHead",), "roi_head.bbox_head": ("Shared2FCBBoxHead",),
                 "roi_head.mask_head": ("FCNMaskHead",)},
    "RetinaNet": {"bbox_head": ("RetinaHead",)},
    "FCOS": {"bbox_head": ("FCOSHead",)},
    "SSD": {"bbox_head": tuple(SSD_HEADS)},
}
#: torchvision's losses per family: dotted path -> (mmdet type, smooth-L1 beta or None, how torchvision computes it).
_TV_LOSSES: dict[str, dict[str, tuple[str, float | None, str]]] = {
    "FasterRCNN": {"rpn_head.loss_cls": ("CrossEntropyLoss", None, "binary cross-entropy"),
                   "rpn_head.loss_bbox": ("SmoothL1Loss", 1 / 9, "smooth L1 (beta 1/9)"),
                   "roi_head.bbox_head.loss_cls": ("CrossEntropyLoss", None, "cross-entropy"),
                   "roi_head.bbox_head.loss_bbox": ("SmoothL1Loss", 1 / 9, "smooth L1 (beta 1/9)")},
    "RetinaNet": {"bbox_head.loss_cls": ("FocalLoss", None, "sigmoid focal loss"),
                  "bbox_head.loss_bbox": ("L1Loss", None, "L1")},
    "FCOS": {"bbox_head.loss_cls": ("FocalLoss", None, "sigmoid focal loss"),
             "bbox_head.loss_bbox": ("GIoULoss", None, "GIoU"),
             "bbox_head.loss_centerness": ("CrossEntropyLoss", None, "binary cross-entropy")},
    "SSD": {},
}
_TV_LOSSES["MaskRCNN"] = {**_TV_LOSSES["FasterRCNN"],
                          "roi_head.mask_head.loss_mask": ("CrossEntropyLoss", None, "binary cross-entropy")}
#: torchvision's FPN per family: R-CNNs C2-C5 + max-pooled P6; dense heads C3-C5 + P6/P7 convs from P5 (ReLU first).
_TV_FPN: dict[str, dict[str, Any]] = {"rcnn": {"start_level": 0, "add_extra_convs": False, "num_outs": 5},
           "dense": {"start_level": 1, "add_extra_convs": "on_output", "num_outs": 5, "relu_before_extra_convs": True}}
_FPN_DEFAULTS: dict[str, Any] = {"start_level": 0, "add_extra_convs": False, "relu_before_extra_convs": False, "num_outs": 5}


_get = dotted_get


def model_kind(model: Mapping[str, Any]) -> str | None:
    """The :data:`FAMILY_TABLE` key for an mmdet ``model`` dict, or ``None`` (SSD is a ``SingleStageDetector``)."""
    kind = model.get("type")
    if kind == "SingleStageDetector" and _get(model, "bbox_head.type") in SSD_HEADS:
        return "SSD"
    return kind if kind in FAMILY_TABLE else None


def _num_classes(model: Mapping[str, Any]) -> int | None:
    for path in ("roi_head.bbox_head.num_classes", "bbox_head.num_classes"):
        value = _get(model, path)
        if isinstance(value, int):
            return value
    return None


#: torchvision's anchors for its ResNet-50 FPN families: R-CNN RPN (one size per level) and RetinaNet (3 octaves).
_TV_ANCHORS = {"FasterRCNN": [[32.0 * 2 ** i] for i in range(5)],
               "RetinaNet": [[32.0 * 2 ** i * 2 ** (j / 3) for j in range(3)] for i in range(5)]}
_TV_RATIOS = [0.5, 1.0, 2.0]


def _anchors(kind: str, model: Mapping[str, Any], notes: list[str], swaps: list[tuple[str, str]]) -> dict[str, Any]:
    """mmdet ``AnchorGenerator`` -> ``anchor_sizes`` / ``aspect_ratios``, when they differ from torchvision's."""
    gen = _get(model, "bbox_head.anchor_generator" if kind == "RetinaNet" else "rpn_head.anchor_generator")
    if not isinstance(gen, Mapping):
        return {}
    if gen.get("type") != "AnchorGenerator":
        swaps.append(("head", f"anchor generator `{gen.get('type')}` -> torchvision's AnchorGenerator"))
        return {}
    strides, ratios = gen.get("strides"), gen.get("ratios", _TV_RATIOS)
    scales = gen.get("scales")
    if scales is None and gen.get("octave_base_scale") is not None:
        per = int(gen.get("scales_per_octave", 1))
        scales = [gen["octave_base_scale"] * 2 ** (i / per) for i in range(per)]
    numbers = [*(strides or []), *(scales or []), *(ratios or [])]
    if not strides or not scales or not ratios or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in numbers):
        swaps.append(("head", "anchor_generator without plain strides / scales / ratios -> torchvision's anchors"))
        return {}
    sizes = [[round(float(s) * float(stride), 2) for s in scales] for stride in strides]
    out: dict[str, Any] = {}
    default = _TV_ANCHORS["RetinaNet" if kind == "RetinaNet" else "FasterRCNN"]
    if len(sizes) != len(default) or any(abs(a - b) > 0.01 for la, lb in zip(sizes, default)
                                        for a, b in zip(la, lb)) or any(len(a) != len(b) for a, b in zip(sizes, default)):
        out["anchor_sizes"] = sizes
    if [float(r) for r in ratios] != _TV_RATIOS:
        out["aspect_ratios"] = [float(r) for r in ratios]
    if gen.get("center_offset", 0.0) not in (0, 0.0):
        notes.append(f"anchor center_offset {gen.get('center_offset')} not carried (torchvision: 0)")
    if out:
        notes.append(f"anchors from anchor_generator: {', '.join(f'{k}={v}' for k, v in out.items())}")
    return out


def _test_options(kind: str, model: Mapping[str, Any]) -> dict[str, Any]:
    test = model.get("test_cfg") or {}
    if kind in ("FasterRCNN", "MaskRCNN"):
        rcnn, rpn = test.get("rcnn") or {}, test.get("rpn") or {}
        pairs = {"box_score_thresh": rcnn.get("score_thr"), "box_nms_thresh": _get(rcnn, "nms.iou_threshold"),
                 "box_detections_per_img": rcnn.get("max_per_img"), "rpn_nms_thresh": _get(rpn, "nms.iou_threshold"),
                 "rpn_post_nms_top_n_test": rpn.get("max_per_img")}
    elif kind in ("RetinaNet", "FCOS"):
        pairs = {"score_thresh": test.get("score_thr"), "nms_thresh": _get(test, "nms.iou_threshold"),
                 "detections_per_img": test.get("max_per_img"), "topk_candidates": test.get("nms_pre")}
    else:
        pairs = {}
    return {k: v for k, v in pairs.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def refusal(model: Mapping[str, Any]) -> str | None:
    """Why an R-CNN config cannot be built from torchvision pieces (C4 / DC5: one feature map, no FPN), or ``None``.

    Example:
        >>> refusal({"type": "FasterRCNN", "backbone": {"type": "ResNet", "num_stages": 3, "out_indices": [2]},
        ...          "neck": None, "roi_head": {"shared_head": {"type": "ResLayer"}}})[:45]
        'C4 Faster R-CNN (ResNet trunk to C4, the res5'
    """
    if model.get("type") not in ("FasterRCNN", "MaskRCNN"):
        return None
    backbone = model.get("backbone") or {}
    dilations = backbone.get("dilations") or ()
    out_indices = backbone.get("out_indices")
    if isinstance(model.get("neck"), Mapping):
        return None
    name = {"FasterRCNN": "Faster R-CNN", "MaskRCNN": "Mask R-CNN"}[str(model["type"])]
    if _get(model, "roi_head.shared_head") is not None or backbone.get("num_stages") == 3:
        what = (f"C4 {name} (ResNet trunk to C4, the res5 stage as a shared RoI head on 14x14 RoIs, one feature "
                "map, no FPN)")
    elif isinstance(dilations, (list, tuple)) and any(d != 1 for d in dilations):
        what = f"DC5 {name} (dilated C5 at stride 16, one feature map, no FPN)"
    elif isinstance(out_indices, (list, tuple)) and len(out_indices) == 1:
        what = f"{name} on one backbone feature map without a neck (no FPN)"
    else:
        return None  # too little said about the backbone to tell: built as the FPN family, the report says so
    return (f"{what} is not built: detlight builds the torchvision FPN variant only, and building it with these "
            "one-level anchors would fail or train a different network; the nearest supported model is the FPN "
            f"config of the same backbone (`{TV_FACTORY}` with builder {FAMILY_TABLE[str(model['type'])][0]})")


def _backbone(backbone: Mapping[str, Any], init: dict[str, Any], notes: list[str],
              swaps: list[tuple[str, str]]) -> None:
    """mmdet ResNet / ResNeXt -> the same torchvision ResNet (exact widths), frozen stages and frozen BN carried."""
    kind, depth = backbone.get("type"), backbone.get("depth")
    groups, width = backbone.get("groups", 1), backbone.get("base_width", 4)
    if kind == "ResNet" and depth in _DEPTHS:
        name = f"resnet{depth}"
    elif kind == "ResNeXt" and depth in (50, 101, 152) and isinstance(groups, int) and isinstance(width, int):
        name = f"resnext{depth}_{groups}x{width}d"
    elif kind == "ResNetV1d" and depth in (50, 101, 152):
        name = f"resnet{depth}"
        swaps.append(("backbone", f"ResNetV1d-{depth} (deep 3-conv stem, avg-pool shortcut downsampling) -> "
                                  f"torchvision ResNet-{depth}"))
    else:
        name = "resnet50"
        swaps.append(("backbone", f"`{kind}`{' depth ' + str(depth) if depth else ''} -> torchvision ResNet-50"))
    init["backbone"] = name
    if backbone.get("style") == "caffe":
        swaps.append(("backbone", "caffe-style ResNet (stride 2 on the first 1x1 conv of a block) -> pytorch style "
                                  "(stride on the 3x3); caffe-style weights do not load into it"))
    for key, what in (("dcn", "deformable convs"), ("plugins", "plugins"), ("gen_attention", "attention"),
                      ("conv_cfg", "conv_cfg"), ("stage_with_dcn", "")):
        if backbone.get(key) and (key != "stage_with_dcn" or any(backbone[key])) and what:
            swaps.append(("backbone", f"{what} ({backbone[key]!r}) -> plain convs"))
    norm = (backbone.get("norm_cfg") or {}).get("type", "BN")
    if norm not in ("BN", "SyncBN"):
        swaps.append(("backbone", f"norm `{norm}` -> BatchNorm"))
    frozen = backbone.get("frozen_stages", -1)
    if isinstance(frozen, int) and not isinstance(frozen, bool):
        trainable = max(0, min(5, 4 - frozen))
        init.setdefault("options", {})["trainable_backbone_layers"] = trainable
        if frozen >= 0:
            stages = "" if frozen == 0 else " and stage 1" if frozen == 1 else f" and stages 1-{frozen}"
            notes.append(f"frozen_stages={frozen}: stem{stages} frozen (trainable_backbone_layers={trainable})")
    if backbone.get("norm_eval", True) is True:  # mmdet's ResNet default: BatchNorm in eval mode
        init["frozen_bn"] = True
        affine = (backbone.get("norm_cfg") or {}).get("requires_grad", True)
        notes.append("norm_eval: backbone BatchNorm frozen (FrozenBatchNorm2d" + (
            "; its scale / shift are frozen too, where mmdet trains them)" if affine else ")"))
    elif backbone.get("norm_eval") is False:
        init["frozen_bn"] = False


def _neck(kind: str, model: Mapping[str, Any], init: dict[str, Any], swaps: list[tuple[str, str]]) -> None:
    neck = model.get("neck")
    neck = neck[0] if isinstance(neck, list) and neck else neck
    if not isinstance(neck, Mapping):
        return
    if neck.get("type") != "FPN":
        swaps.append(("neck", f"`{neck.get('type')}` -> torchvision FPN"))
    else:
        expected = _TV_FPN["dense" if kind in ("RetinaNet", "FCOS") else "rcnn"]
        settings = {k: neck.get(k, _FPN_DEFAULTS[k]) for k in expected}
        if settings.get("add_extra_convs") is True:
            settings["add_extra_convs"] = "on_input"
        differ = {k: v for k, v in settings.items() if v != expected[k]}
        if differ:
            swaps.append(("neck", "FPN " + ", ".join(f"{k}={v!r}" for k, v in differ.items()) + " -> torchvision's "
                          + ", ".join(f"{k}={expected[k]!r}" for k in differ)))
        if neck.get("norm_cfg"):
            swaps.append(("neck", f"FPN norm `{neck['norm_cfg'].get('type')}` -> no norm"))
    width = neck.get("out_channels")
    if isinstance(width, int) and not isinstance(width, bool) and width != 256:
        init["fpn_channels"] = width


def _heads_and_losses(kind: str, model: Mapping[str, Any], swaps: list[tuple[str, str]]) -> None:
    for path, accepted in _TV_HEADS[kind].items():
        found = _get(model, f"{path}.type")
        if found is not None and found not in accepted:
            swaps.append(("head", f"{path} `{found}` -> torchvision's {accepted[0]}-like head"))
    head = model.get("bbox_head") or {}
    if kind == "FCOS" and (not head.get("centerness_on_reg") or (head.get("norm_cfg") or {}).get("type") != "GN"
                           or head.get("norm_on_bbox") or head.get("center_sampling")):
        swaps.append(("head", "FCOSHead (centerness_on_reg / norm_cfg / norm_on_bbox / center_sampling as set) -> "
                              "torchvision's (GroupNorm convs, centerness on the regression branch, no center "
                              "sampling)"))
    ratio = _get(model, "bbox_head.anchor_generator.basesize_ratio_range")
    lite = _get(model, "backbone.type") == "MobileNetV2"  # torchvision SSDLite's boxes: min 0.2, max 0.95
    expected = [0.2, 0.95] if lite else [0.15, 0.9]  # SSD300-VGG16's: the sizes of mmdet's COCO range
    generator = _get(model, "bbox_head.anchor_generator")
    if kind == "SSD" and isinstance(generator, Mapping) and (
            not isinstance(ratio, (list, tuple)) or [round(float(r), 4) for r in ratio] != expected):
        given = f"basesize_ratio_range {tuple(ratio)}" if isinstance(ratio, (list, tuple)) else "explicit sizes"
        swaps.append(("head", f"SSD anchors ({given}) -> torchvision's default boxes (as {tuple(expected)})"))
    if kind == "SSD" and SSD_HEADS.get(str(head.get("type"))):
        swaps.append(("loss", f"{head.get('type')}: {SSD_HEADS[str(head.get('type'))]}"))
    for path, (loss, beta, how) in _TV_LOSSES[kind].items():
        cfg = _get(model, path)
        if not isinstance(cfg, Mapping):
            continue
        found = cfg.get("type")
        if found == "SmoothL1Loss" and beta is not None and abs(float(cfg.get("beta", 1.0)) - beta) < 1e-6:
            continue
        if found != loss or beta is not None:
            swaps.append(("loss", f"{path} `{found}` -> torchvision's {how}"))


def _scales(cfg: Mapping[str, Any]) -> tuple[list[tuple[int, int]], str, tuple[int, int] | None, bool]:
    """``(train scales, multiscale mode, test scale, keep_ratio)`` read from the train and test pipelines."""
    def pipeline(split: str) -> list[Any]:
        ds = _get(cfg, f"data.{split}")
        while isinstance(ds, Mapping) and "dataset" in ds and "pipeline" not in ds:
            ds = ds["dataset"]
        steps = ds.get("pipeline") if isinstance(ds, Mapping) else None
        return steps if isinstance(steps, list) else []

    def as_pairs(value: Any) -> list[tuple[int, int]]:
        if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
            return [(int(value[0]), int(value[1]))]
        if isinstance(value, (list, tuple)):
            return [pair for item in value for pair in as_pairs(item)]
        return []

    train: list[tuple[int, int]] = []
    mode, keep = "value", True
    for step in pipeline("train"):
        if isinstance(step, Mapping) and step.get("type") == "Resize" and not train:
            train = as_pairs(step.get("img_scale"))
            mode, keep = str(step.get("multiscale_mode", "range")), step.get("keep_ratio", True) is not False
            if len(train) == 1:
                mode = "value"
    test: tuple[int, int] | None = None
    for step in pipeline("test"):
        if isinstance(step, Mapping) and step.get("type") in ("MultiScaleFlipAug", "Resize") and test is None:
            pairs = as_pairs(step.get("img_scale"))
            test = pairs[0] if len(pairs) == 1 else None
    return train, mode, test, keep


def _scale_options(kind: str, cfg: Mapping[str, Any], model: Mapping[str, Any], init: dict[str, Any],
                   notes: list[str], swaps: list[tuple[str, str]]) -> None:
    """Train scales -> torchvision ``min_size`` (a tuple: one drawn per batch), the test scale -> its last entry."""
    train, mode, test, keep = _scales(cfg)
    if kind == "SSD":
        size = _get(model, "backbone.input_size") or (test[0] if test else 300)
        built = 320 if init["builder"].startswith("ssdlite") else 300
        if size != built:
            swaps.append(("scale", f"input {size}x{size} -> {built}x{built} (torchvision's fixed SSD size)"))
            if built == 300:
                swaps.append(("neck", f"SSDNeck extra layers for a {size} input -> SSD300's"))
        return
    if not train and test is None:
        return
    test = test or max(train, key=min)
    short = [min(s) for s in train] or [min(test)]
    if mode == "range" and len(train) == 2:
        sides = list(range(min(short), max(short) + 1))
    else:
        sides = sorted(set(short))
    if min(test) in sides:  # torchvision evaluates at min_size[-1]: the test side goes last, training draws the same
        sides = [s for s in sides if s != min(test)] + [min(test)]
    else:
        swaps.append(("scale", f"training draws short sides {_span(short, mode)} and the test short side {min(test)} "
                               "(torchvision evaluates at the last min_size and trains on all of them)"))
        sides = sides + [min(test)]
    longs = {max(s) for s in train} | {max(test)}
    if len(longs) > 1:
        swaps.append(("scale", f"long sides {sorted(longs)} -> one max_size {max(test)}"))
    if not keep:
        swaps.append(("scale", f"Resize keep_ratio=False ({train[0] if train else test}) -> aspect kept (torchvision)"))
    options = init.setdefault("options", {})
    options["min_size"] = sides[0] if len(sides) == 1 else sides
    options["max_size"] = int(max(test))
    if len(sides) > 1:
        notes.append(f"train scale drawn from short sides {_span(short, mode)}, test at {min(test)}x{max(test)}")


def _span(short: list[int], mode: str) -> str:
    return f"{min(short)}-{max(short)}" if mode == "range" and len(short) == 2 else str(sorted(set(short)))


def map_model(model: Mapping[str, Any], report: ConversionReport,
              cfg: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """An mmdet ``model`` dict -> ``{class_path, init_args}`` for ``model.model``; ``None`` when not a 2D family.

    Every difference from the config is named in the report as ``swapped <kind>: ...`` (kinds in
    :data:`SWAP_KINDS`); ``cfg`` (the whole config) gives the train / test scales.
    """
    kind = model_kind(model)
    if kind is None:
        return None
    builder, differs = FAMILY_TABLE[kind]
    notes = [differs]
    swaps: list[tuple[str, str]] = []
    backbone = model.get("backbone") or {}
    init: dict[str, Any] = {}
    if kind == "SSD":
        builder = SSD_BACKBONES.get(str(backbone.get("type")), builder)
        if backbone.get("type") not in SSD_BACKBONES:
            swaps.append(("backbone", f"`{backbone.get('type')}` -> VGG-16"))
        if backbone.get("type") == "MobileNetV2":
            swaps.append(("backbone", "MobileNetV2 -> MobileNetV3-Large (torchvision SSDLite 320)"))
            swaps.append(("neck", "mmdet SSDNeck extra layers -> torchvision SSDLite's"))
    else:
        _backbone(backbone, init, notes, swaps)
        _neck(kind, model, init, swaps)
    _heads_and_losses(kind, model, swaps)
    if kind in ("FasterRCNN", "MaskRCNN", "RetinaNet"):
        init.update(_anchors(kind, model, notes, swaps))
    num_classes = _num_classes(model)
    if num_classes is None:
        report.entries = [e for e in report.entries if not (e.key == "model" and e.status == "dropped")]
        report.add("model", "dropped", note=f"detector `{model.get('type')}` maps to torchvision {builder} but its "
                   "head has no int `num_classes`; set `model: {model: {class_path: detlight.models."
                   "torchvision_detector, init_args: {builder: ..., num_classes: ...}}}` or my_pkg.MyDetector")
        return None
    init = {"builder": builder, "num_classes": num_classes, **init}
    if cfg is not None:
        _scale_options(kind, cfg, model, init, notes, swaps)
    options = {**init.pop("options", {}), **_test_options(kind, model)}
    if options:
        init["options"] = options
    named = "; ".join(f"swapped {k}: {text}" for k, text in swaps)
    report.add("model", "approximated", f"model.model: {TV_FACTORY}({builder})",
               f"{model.get('type')} -> torchvision {kind}; " + (named + "; " if named else "") + "; ".join(notes)
               + "; no pretrained weights (mmdet's init_cfg / pretrained not carried: set weights_backbone: DEFAULT "
               "to download ImageNet ones)")
    return {"class_path": TV_FACTORY, "init_args": init}


def _unmapped(model: Mapping[str, Any], report: ConversionReport, why: str | None = None) -> dict[str, Any]:
    kind = str(model.get("type", "?")) if isinstance(model, Mapping) else type(model).__name__
    nearest = NEAREST.get(kind)
    encoder = _get(model, "voxel_encoder.type") or _get(model, "pts_voxel_encoder.type")
    if encoder:  # SECOND-style VoxelNet (HardSimpleVFE + SparseEncoder) and friends: say which one it is
        kind = f"{kind}` with voxel encoder `{encoder}"
    if nearest in FAMILY_TABLE:
        hint = (f"the nearest supported family is {nearest} (`{TV_FACTORY}` with builder "
                f"{FAMILY_TABLE[nearest][0]}); set `model.model` to it, or to your own detector class")
    elif nearest:
        hint = f"the nearest supported model is detlight's {nearest}; set `model.model` to it or to your own class"
    else:
        hint = "set `model.model` to your own detector class (`class_path: my_pkg.MyDetector`)"
    message = (f"mmdet detector type `{kind}` has no detlight counterpart (supported: "
               f"{', '.join([*FAMILY_TABLE, 'CenterNet', 'PointPillars'])}); {hint}.")
    if why is not None:
        message = f"{why}; set `model.model` to it, or to your own detector class."
    report.entries = [e for e in report.entries if not (e.key == "model" and e.status == "dropped")]
    report.add("model", "dropped", f"model.model: {UNMAPPED}", message)
    return {"class_path": UNMAPPED, "init_args": {"mmdet_type": str(model.get("type", "?")), "message": message}}


def _map_3d(model: Mapping[str, Any], cfg: Mapping[str, Any], report: ConversionReport) -> dict[str, Any] | None:
    """mmdet3d ``MVXFasterRCNN`` with pillar / hard-VFE encoders (nuScenes-style PointPillars) -> PointPillars."""
    if model.get("type") not in ("MVXFasterRCNN",) or _get(model, "pts_voxel_encoder.type") not in (
            "PillarFeatureNet", "HardVFE"):
        return None
    init: dict[str, Any] = {}
    for arg, path in (("num_classes", "pts_bbox_head.num_classes"),
                      ("point_cloud_range", "pts_voxel_layer.point_cloud_range"),
                      ("voxel_size", "pts_voxel_layer.voxel_size"), ("score_thr", "test_cfg.pts.score_thr"),
                      ("max_num", "test_cfg.pts.max_num")):
        value = _get(model, path)
        if value is not None:
            init[arg] = list(value) if isinstance(value, (list, tuple)) else value
    if "num_classes" not in init and isinstance(cfg.get("class_names"), list):
        init["num_classes"] = len(cfg["class_names"])
    report.entries = [e for e in report.entries if not (e.key == "model" and e.status == "dropped")]
    report.add("model", "approximated", f"model.model: {POINTPILLARS}",
               f"MVXFasterRCNN ({_get(model, 'pts_voxel_encoder.type')}) -> detlight PointPillars; swapped head: "
               f"`{_get(model, 'pts_bbox_head.type')}` -> anchor-free CenterPoint-style head (no velocity / attribute "
               f"outputs); swapped neck: `{_get(model, 'pts_neck.type')}` -> detlight's upsample-and-concat neck")
    return {"class_path": POINTPILLARS, "init_args": init}


def apply_model_map(cfg: Mapping[str, Any], out: dict[str, Any], report: ConversionReport) -> None:
    """Fill ``out["model"]["model"]`` where the generic converter left it empty, and fit data / evaluator to it.

    2D families: the data pipeline scales to 0-1 with mean 0 / std 1 (torchvision normalises inside the model, with
    the mmdet ``img_norm_cfg`` carried into ``image_mean`` / ``image_std``), and mask families load masks. 3D
    PointPillars: ``model.evaluator`` becomes the center-distance mAP over the config's ``class_names``.
    """
    source = cfg.get("model")
    model_out = out.setdefault("model", {})
    if isinstance(source, Mapping) and "model" not in model_out and refusal(source):
        model_out["model"] = _unmapped(source, report, refusal(source))
    elif isinstance(source, Mapping) and "model" not in model_out:
        mapped = map_model(source, report, cfg) or _map_3d(source, cfg, report)
        if mapped is None and model_kind(source) is not None:
            return  # a supported family whose head lacks num_classes: the report says so, model.model stays unset
        if mapped is not None:
            report.entries = [e for e in report.entries if not (e.key == "model" and e.status == "dropped")]
            model_out["model"] = mapped
            if mapped["class_path"] == TV_FACTORY:
                _fit_pipeline(out, mapped["init_args"])
        elif source:
            model_out["model"] = _unmapped(source, report)
    model = model_out.get("model") or {}
    if model.get("class_path") == POINTPILLARS and "evaluator" not in model_out:
        names = cfg.get("class_names")
        init = {"class_names": list(names)} if isinstance(names, (list, tuple)) and names else {}
        model_out["evaluator"] = {"class_path": CENTER_DISTANCE, **({"init_args": init} if init else {})}
        report.entries = [e for e in report.entries if e.key != "evaluation.metric"]  # replaces the 2D default
        report.add("evaluation.metric", "approximated", f"model.evaluator: {CENTER_DISTANCE}",
                   "nuScenes-style center-distance mAP over BEV centres instead of KITTI / nuScenes official metrics")


def _fit_pipeline(out: dict[str, Any], init: dict[str, Any]) -> None:
    data = out.get("data") or {}
    data_init = data.get("init_args")
    if not isinstance(data_init, dict) or data.get("class_path") == UNMAPPED_DATA:
        return
    pipeline = data_init.setdefault("pipeline", {})
    mean, std = pipeline.get("mean"), pipeline.get("std")
    if isinstance(mean, list) and isinstance(std, list) and len(mean) == 3 and len(std) == 3:
        options = init.setdefault("options", {})
        options["image_mean"] = [round(float(m) / 255.0, 6) for m in mean]
        options["image_std"] = [round(float(s) / 255.0, 6) for s in std]
    pipeline.update({"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0], "to_unit_range": True})
    if init["builder"].startswith("maskrcnn"):
        pipeline["with_mask"] = True
