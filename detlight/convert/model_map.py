"""mmdet / mmdet3d model types -> detlight models, for configs converted without mmdet installed.

Replaces: mmdet's ``build_detector(cfg.model)`` registry lookup, for the types detlight can stand in for.
:data:`FAMILY_TABLE` maps each supported mmdet detector type to a torchvision family (built by
:func:`detlight.models.torchvision_detector` with the head's ``num_classes``, the ResNet / ResNeXt depth of the
backbone and the test-time thresholds); mmdet3d PointPillars-style types map to detlight's ``PointPillars``
(with :class:`~detlight.metrics.CenterDistanceMAP` as evaluator). Every mapped model is reported "approximated",
saying what differs. Any other type gets the nearest supported family named in the report, and a ``model.model``
(:class:`~detlight.convert.unmapped_detector.UnmappedDetector`) whose construction stops ``fit`` with that message.
This module imports neither torch nor Lightning, so ``detlight convert`` stays light.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from detlight.convert.report import dotted_get
from detlight.convert.sections import UNMAPPED_DATA

if TYPE_CHECKING:
    from detlight.convert.report import ConversionReport

__all__ = ["FAMILY_TABLE", "NEAREST", "apply_model_map", "map_model"]

TV_FACTORY = "detlight.models.torchvision_detector"
UNMAPPED = "detlight.convert.unmapped_detector.UnmappedDetector"  # imported by the CLI only (it needs torch)
POINTPILLARS = "detlight.models.pointpillars.PointPillars"
CENTER_DISTANCE = "detlight.metrics.CenterDistanceMAP"

#: mmdet detector type -> (torchvision builder, what always differs from mmdet's model of that type).
FAMILY_TABLE: dict[str, tuple[str, str]] = {
    "FasterRCNN": ("fasterrcnn_resnet50_fpn", "torchvision RPN/RoI heads (anchors rounded to whole pixels; "
                   "RoIAlign 7x7; sampling/NMS settings at torchvision defaults except the test thresholds)"),
    "MaskRCNN": ("maskrcnn_resnet50_fpn", "torchvision RPN/RoI/mask heads (anchors rounded to whole pixels; "
                 "mask head 4 convs + deconv, 28x28 masks)"),
    "RetinaNet": ("retinanet_resnet50_fpn", "torchvision RetinaNet head (P3-P7 from C3-C5, anchors rounded to whole "
                  "pixels, focal loss + L1 on box deltas) where mmdet builds P6 from the FPN input by default"),
    "FCOS": ("fcos_resnet50_fpn", "torchvision FCOS head (GroupNorm, centerness on the regression branch, GIoU "
             "loss); mmdet's norm_on_bbox / centerness_on_reg / center_sampling switches are not carried"),
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
#: torchvision ResNet-family backbones reachable from an mmdet backbone (type, depth, groups).
_RESNETS: dict[tuple[Any, Any], str] = {("ResNet", 18): "resnet18", ("ResNet", 34): "resnet34", ("ResNet", 50): "resnet50",
            ("ResNet", 101): "resnet101", ("ResNet", 152): "resnet152", ("ResNetV1d", 50): "resnet50",
            ("ResNetV1d", 101): "resnet101", ("ResNeXt", 50): "resnext50_32x4d", ("ResNeXt", 101): "resnext101_32x8d"}


_get = dotted_get


def model_kind(model: Mapping[str, Any]) -> str | None:
    """The :data:`FAMILY_TABLE` key for an mmdet ``model`` dict, or ``None`` (SSD is a ``SingleStageDetector``)."""
    kind = model.get("type")
    if kind == "SingleStageDetector" and _get(model, "bbox_head.type") in ("SSDHead",):
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


def _anchors(kind: str, model: Mapping[str, Any], notes: list[str]) -> dict[str, Any]:
    """mmdet ``AnchorGenerator`` -> ``anchor_sizes`` / ``aspect_ratios``, when they differ from torchvision's."""
    gen = _get(model, "bbox_head.anchor_generator" if kind == "RetinaNet" else "rpn_head.anchor_generator")
    if not isinstance(gen, Mapping):
        return {}
    if gen.get("type") != "AnchorGenerator":
        notes.append(f"anchor generator `{gen.get('type')}` replaced by torchvision's")
        return {}
    strides, ratios = gen.get("strides"), gen.get("ratios", _TV_RATIOS)
    scales = gen.get("scales")
    if scales is None and gen.get("octave_base_scale") is not None:
        per = int(gen.get("scales_per_octave", 1))
        scales = [gen["octave_base_scale"] * 2 ** (i / per) for i in range(per)]
    numbers = [*(strides or []), *(scales or []), *(ratios or [])]
    if not strides or not scales or not ratios or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in numbers):
        notes.append("anchor_generator not carried (no plain strides / scales / ratios)")
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


def map_model(model: Mapping[str, Any], report: ConversionReport) -> dict[str, Any] | None:
    """An mmdet ``model`` dict -> ``{class_path, init_args}`` for ``model.model``; ``None`` when not a 2D family."""
    kind = model_kind(model)
    if kind is None:
        return None
    builder, differs = FAMILY_TABLE[kind]
    notes = [differs]
    backbone = model.get("backbone") or {}
    init: dict[str, Any] = {}
    name: str | None = None
    if kind == "SSD":
        builder = SSD_BACKBONES.get(str(backbone.get("type")), builder)
        if backbone.get("type") not in SSD_BACKBONES:
            notes.append(f"backbone `{backbone.get('type')}` replaced by VGG-16")
        if backbone.get("type") == "MobileNetV2":
            notes.append("MobileNetV2 replaced by MobileNetV3-Large (SSDLite 320)")
        if backbone.get("input_size", 300) not in (300, None) and builder == "ssd300_vgg16":
            notes.append(f"input {backbone.get('input_size')} replaced by 300")
    else:
        name = _RESNETS.get((backbone.get("type"), backbone.get("depth")))
        if name is None:
            notes.append(f"backbone `{backbone.get('type')}`{' depth ' + str(backbone.get('depth')) if backbone.get('depth') else ''} "
                         "replaced by ResNet-50")
        elif name != "resnet50":
            init["backbone"] = name
        for key in ("dcn", "plugins", "norm_cfg"):
            if backbone.get(key) and not (key == "norm_cfg" and backbone[key].get("type") in ("BN", "SyncBN")):
                notes.append(f"backbone `{key}` not carried")
        neck = model.get("neck")
        neck_type = neck.get("type") if isinstance(neck, Mapping) else None
        if neck_type not in ("FPN", None):
            notes.append(f"neck `{neck_type}` replaced by FPN")
    if kind in ("FasterRCNN", "MaskRCNN", "RetinaNet"):
        init.update(_anchors(kind, model, notes))
    width = _get(model, "neck.out_channels")
    if kind != "SSD" and isinstance(width, int) and not isinstance(width, bool) and width != 256:
        init.setdefault("backbone", name or "resnet50")  # the FPN width is set where detlight builds the FPN
        init["fpn_channels"] = width
    num_classes = _num_classes(model)
    if num_classes is None:
        report.entries = [e for e in report.entries if not (e.key == "model" and e.status == "dropped")]
        report.add("model", "dropped", note=f"detector `{model.get('type')}` maps to torchvision {builder} but its "
                   "head has no int `num_classes`; set `model: {model: {class_path: detlight.models."
                   "torchvision_detector, init_args: {builder: ..., num_classes: ...}}}` or my_pkg.MyDetector")
        return None
    init = {"builder": builder, "num_classes": num_classes, **init}
    options = _test_options(kind, model)
    if options:
        init["options"] = options
    report.add("model", "approximated", f"model.model: {TV_FACTORY}({builder})",
               f"{model.get('type')} -> torchvision {kind}; " + "; ".join(notes) + "; no pretrained weights "
               "(mmdet's init_cfg / pretrained not carried: set weights_backbone: DEFAULT to download ImageNet ones)")
    return {"class_path": TV_FACTORY, "init_args": init}


def _unmapped(model: Mapping[str, Any], report: ConversionReport) -> dict[str, Any]:
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
               f"MVXFasterRCNN ({_get(model, 'pts_voxel_encoder.type')}) -> detlight PointPillars: anchor-free "
               "CenterPoint-style head instead of Anchor3DHead, no velocity / attribute outputs, FPN neck not carried")
    return {"class_path": POINTPILLARS, "init_args": init}


def apply_model_map(cfg: Mapping[str, Any], out: dict[str, Any], report: ConversionReport) -> None:
    """Fill ``out["model"]["model"]`` where the generic converter left it empty, and fit data / evaluator to it.

    2D families: the data pipeline scales to 0-1 with mean 0 / std 1 (torchvision normalises inside the model, with
    the mmdet ``img_norm_cfg`` carried into ``image_mean`` / ``image_std``), and mask families load masks. 3D
    PointPillars: ``model.evaluator`` becomes the center-distance mAP over the config's ``class_names``.
    """
    source = cfg.get("model")
    model_out = out.setdefault("model", {})
    if isinstance(source, Mapping) and "model" not in model_out:
        mapped = map_model(source, report) or _map_3d(source, cfg, report)
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
    scale = pipeline.get("img_scale")
    if isinstance(scale, list) and len(scale) == 2 and not init["builder"].startswith("ssd"):
        options = init.setdefault("options", {})
        options.setdefault("min_size", int(min(scale)))
        options.setdefault("max_size", int(max(scale)))
