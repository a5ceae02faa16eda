"""The mmdet model type -> detlight model table used by the converter."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from detlight.convert import ConversionReport, convert_config
from detlight.convert.model_map import FAMILY_TABLE, NEAREST, map_model
from detlight.convert.unmapped_detector import UnmappedDetector
from detlight.exceptions import ConfigError

# The real mmdet 2.28.2 zoo (the wheel's ``mmdet/.mim/configs``), when DETLIGHT_MMDET_ZOO names it (``:``-separated
# folders, as in test_zoo_like.py); the first folder holding ``retinanet/`` is used.
ZOO = next((Path(p) for p in os.environ.get("DETLIGHT_MMDET_ZOO", "").split(":") if p and (Path(p) / "retinanet").is_dir()),
           Path("/nonexistent"))


def _rcnn(kind: str, depth: int = 50) -> dict:
    return {"type": kind, "backbone": {"type": "ResNet", "depth": depth}, "neck": {"type": "FPN"},
            "roi_head": {"bbox_head": {"num_classes": 7}},
            "test_cfg": {"rcnn": {"score_thr": 0.05, "nms": {"iou_threshold": 0.5}, "max_per_img": 100}}}


def _dense(kind: str, depth: int = 50) -> dict:
    return {"type": kind, "backbone": {"type": "ResNet", "depth": depth}, "neck": {"type": "FPN"},
            "bbox_head": {"type": f"{kind}Head", "num_classes": 7},
            "test_cfg": {"score_thr": 0.05, "nms": {"iou_threshold": 0.6}, "max_per_img": 50, "nms_pre": 1000}}


CASES = [
    (_rcnn("FasterRCNN"), "fasterrcnn_resnet50_fpn", "resnet50", {"box_score_thresh": 0.05, "box_nms_thresh": 0.5}),
    (_rcnn("MaskRCNN", 101), "maskrcnn_resnet50_fpn", "resnet101", {"box_detections_per_img": 100}),
    (_dense("RetinaNet", 18), "retinanet_resnet50_fpn", "resnet18", {"nms_thresh": 0.6, "detections_per_img": 50}),
    (_dense("FCOS"), "fcos_resnet50_fpn", "resnet50", {"topk_candidates": 1000}),
    ({"type": "SingleStageDetector", "backbone": {"type": "SSDVGG", "depth": 16},
      "bbox_head": {"type": "SSDHead", "num_classes": 7}}, "ssd300_vgg16", None, {}),
    ({"type": "SingleStageDetector", "backbone": {"type": "MobileNetV2"},
      "bbox_head": {"type": "SSDHead", "num_classes": 7}}, "ssdlite320_mobilenet_v3_large", None, {}),
]


@pytest.mark.parametrize(("model", "builder", "backbone", "options"), CASES, ids=[c[1] for c in CASES])
def test_type_maps_to_family_with_head_classes(model, builder, backbone, options):
    report = ConversionReport("x.py")
    out = map_model(model, report)
    assert out["class_path"] == "detlight.models.torchvision_detector"
    init = out["init_args"]
    assert init["builder"] == builder and init["num_classes"] == 7 and init.get("backbone") == backbone
    assert options.items() <= init.get("options", {}).items()
    (entry,) = [e for e in report.entries if e.key == "model"]
    assert entry.status == "approximated" and "no pretrained weights" in entry.note


def test_every_family_in_the_table_is_tested():
    assert {c[0].get("type") if c[0]["type"] != "SingleStageDetector" else "SSD" for c in CASES} == set(FAMILY_TABLE)


def test_anchor_generator_and_neck_width_are_carried_where_they_differ():
    from detlight.models.torchvision_factory import torchvision_detector

    retina = dict(_dense("RetinaNet", 18), neck={"type": "FPN", "out_channels": 64})
    retina["bbox_head"]["anchor_generator"] = {"type": "AnchorGenerator", "octave_base_scale": 2,
                                               "scales_per_octave": 3, "ratios": [1.0, 2.0],
                                               "strides": [8, 16, 32, 64, 128]}
    report = ConversionReport("x.py")
    init = map_model(retina, report)["init_args"]
    assert init["anchor_sizes"][0] == [16.0, 20.16, 25.4] and init["anchor_sizes"][4][0] == 256.0
    assert "anchors from anchor_generator: anchor_sizes=[[16.0, 20.16, 25.4]" in next(
        e.note for e in report.entries if e.key == "model")  # the report says the anchors were carried
    assert init["aspect_ratios"] == [1.0, 2.0] and init["fpn_channels"] == 64 and init["backbone"] == "resnet18"
    model = torchvision_detector(**init)  # what the converted YAML builds
    assert model.anchor_generator.sizes[0] == (16.0, 20.16, 25.4) and model.backbone.out_channels == 64
    faster = _rcnn("FasterRCNN")  # mmdet's defaults: scales=[8], strides 4..64 -> torchvision's own sizes
    faster["rpn_head"] = {"anchor_generator": {"type": "AnchorGenerator", "scales": [8], "ratios": [0.5, 1.0, 2.0],
                                               "strides": [4, 8, 16, 32, 64]}}
    init = map_model(faster, ConversionReport("x.py"))["init_args"]
    assert "anchor_sizes" not in init and "aspect_ratios" not in init and "fpn_channels" not in init
    faster["rpn_head"]["anchor_generator"]["scales"] = [4]
    faster["neck"]["out_channels"] = 128  # a ResNet-50 FPN of another width: detlight builds it
    init = map_model(faster, ConversionReport("x.py"))["init_args"]
    assert init["anchor_sizes"] == [[16.0], [32.0], [64.0], [128.0], [256.0]]
    assert init["backbone"] == "resnet50" and init["fpn_channels"] == 128
    report = ConversionReport("x.py")
    faster["rpn_head"]["anchor_generator"] = {"type": "LegacyAnchorGenerator", "scales": [8], "strides": [4]}
    map_model(faster, report)
    assert "swapped head: anchor generator `LegacyAnchorGenerator` -> torchvision's" in next(e.note for e in report.entries if e.key == "model")


def test_unknown_type_names_nearest_family_and_stops_fit():
    cfg = {"model": {"type": "CascadeRCNN", "roi_head": {}}}
    out, report = convert_config(cfg, "cascade.py")
    model = out["model"]["model"]
    assert model["class_path"] == "detlight.convert.unmapped_detector.UnmappedDetector"
    (entry,) = [e for e in report.entries if e.key == "model"]
    assert entry.status == "dropped" and "CascadeRCNN" in entry.note and "nearest supported family is FasterRCNN" in entry.note
    with pytest.raises(ConfigError, match=r"`CascadeRCNN` has no detlight counterpart.*FasterRCNN"):
        UnmappedDetector(**model["init_args"])
    assert NEAREST["CascadeRCNN"] == "FasterRCNN"


def test_converted_torchvision_config_scales_pipeline_and_loads_masks():
    cfg = {"model": _rcnn("MaskRCNN"), "data": {"samples_per_gpu": 2, "train": {
        "type": "CocoDataset", "ann_file": "a.json", "img_prefix": "img/", "pipeline": [
            {"type": "Resize", "img_scale": (1333, 800), "keep_ratio": True},
            {"type": "Normalize", "mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375], "to_rgb": True}]}}}
    out, _ = convert_config(cfg, "m.py")
    pipeline = out["data"]["init_args"]["pipeline"]
    assert pipeline["to_unit_range"] and pipeline["mean"] == [0.0] * 3 and pipeline["with_mask"]
    options = out["model"]["model"]["init_args"]["options"]
    assert options["image_mean"] == pytest.approx([0.485, 0.456, 0.406], abs=1e-3)
    assert (options["min_size"], options["max_size"]) == (800, 1333)


def test_nuscenes_style_pointpillars_maps_with_range_classes_and_3d_evaluator():
    names = ["car", "truck", "pedestrian"]
    cfg = {"class_names": names, "model": {
        "type": "MVXFasterRCNN", "pts_voxel_encoder": {"type": "HardVFE"},
        "pts_voxel_layer": {"point_cloud_range": [-50, -50, -5, 50, 50, 3], "voxel_size": [0.25, 0.25, 8]},
        "pts_bbox_head": {"num_classes": 3}}}
    out, report = convert_config(cfg, "pp_nus.py")
    model = out["model"]["model"]
    assert model["class_path"] == "detlight.models.pointpillars.PointPillars"
    assert model["init_args"]["point_cloud_range"] == [-50, -50, -5, 50, 50, 3]
    assert model["init_args"]["num_classes"] == 3
    assert out["model"]["evaluator"] == {"class_path": "detlight.metrics.CenterDistanceMAP",
                                         "init_args": {"class_names": names}}


@pytest.mark.skipif(not ZOO.is_dir(), reason="set DETLIGHT_MMDET_ZOO to the mmdet 2.28.2 zoo")
@pytest.mark.parametrize("config", ["retinanet/retinanet_r50_fpn_1x_coco.py", "fcos/fcos_r50_caffe_fpn_gn-head_1x_coco.py",
                                    "faster_rcnn/faster_rcnn_r101_fpn_1x_coco.py", "mask_rcnn/mask_rcnn_r50_fpn_1x_coco.py",
                                    "ssd/ssd300_coco.py"])
def test_real_zoo_configs_map_to_a_real_model(config):
    from detlight.convert.config import load_config

    out, _ = convert_config(load_config(ZOO / config), config)
    assert out["model"]["model"]["class_path"] == "detlight.models.torchvision_detector"
    assert out["model"]["model"]["init_args"]["num_classes"] == 80


# ------------------------------------------------------------------------------------------ what the network is
def _swaps(report: ConversionReport) -> dict[str, list[str]]:
    note = next(e.note for e in report.entries if e.key == "model")
    found: dict[str, list[str]] = {}
    for part in note.split("; "):
        if part.startswith("swapped "):
            kind, _, text = part.removeprefix("swapped ").partition(": ")
            found.setdefault(kind, []).append(text)
    return found


@pytest.mark.parametrize(("groups", "width", "name"), [(32, 4, "resnext101_32x4d"), (64, 4, "resnext101_64x4d")])
def test_resnext_is_built_with_the_configured_groups_and_width(groups, width, name):
    from detlight.models.torchvision_factory import torchvision_detector

    model = dict(_dense("RetinaNet"), backbone={"type": "ResNeXt", "depth": 101, "groups": groups,
                                                "base_width": width, "frozen_stages": 1, "norm_eval": True})
    report = ConversionReport("x.py")
    init = map_model(model, report)["init_args"]
    assert init["backbone"] == name and "backbone" not in _swaps(report)
    built = torchvision_detector(**init)
    block = built.backbone.body.layer1[0]
    assert (block.conv2.groups, block.conv2.out_channels, len(built.backbone.body.layer3)) == (groups, groups * width, 23)
    # frozen_stages=1: stem and layer1 frozen, layer2-4 train; norm_eval: BatchNorm frozen
    trainable = {n.split(".")[2] for n, p in built.backbone.body.named_parameters(prefix="backbone.body")
                 if p.requires_grad}
    assert trainable == {"layer2", "layer3", "layer4"}
    assert type(block.bn1).__name__ == "FrozenBatchNorm2d"


def test_caffe_style_dcn_and_other_backbones_are_named_swaps():
    caffe = dict(_rcnn("FasterRCNN"), backbone={"type": "ResNet", "depth": 50, "style": "caffe",
                                                 "dcn": {"type": "DCN"}, "stage_with_dcn": [False, True, True, True]})
    report = ConversionReport("x.py")
    init = map_model(caffe, report)["init_args"]
    swaps = _swaps(report)
    assert any("caffe-style" in s for s in swaps["backbone"]) and any("deformable" in s for s in swaps["backbone"])
    assert init["backbone"] == "resnet50"
    report = ConversionReport("x.py")
    map_model(dict(_rcnn("FasterRCNN"), backbone={"type": "HRNet"}, neck={"type": "HRFPN"}), report)
    swaps = _swaps(report)
    assert swaps["backbone"] == ["`HRNet` -> torchvision ResNet-50"] and swaps["neck"] == ["`HRFPN` -> torchvision FPN"]
    report = ConversionReport("x.py")
    map_model(dict(_rcnn("FasterRCNN"), backbone={"type": "ResNet", "depth": 50}), report)
    assert "backbone" not in _swaps(report) and "neck" not in _swaps(report)


def test_heads_and_losses_other_than_torchvisions_are_named_swaps():
    retina = _dense("RetinaNet")
    retina["bbox_head"].update(type="GARetinaHead", loss_bbox={"type": "GIoULoss"})
    report = ConversionReport("x.py")
    map_model(retina, report)
    swaps = _swaps(report)
    assert swaps["head"] == ["bbox_head `GARetinaHead` -> torchvision's RetinaHead-like head"]
    assert swaps["loss"] == ["bbox_head.loss_bbox `GIoULoss` -> torchvision's L1"]
    retina["bbox_head"].update(type="RetinaHead", loss_bbox={"type": "L1Loss"})
    report = ConversionReport("x.py")
    map_model(retina, report)
    assert "head" not in _swaps(report) and "loss" not in _swaps(report)


def _with_pipelines(model: dict, train_scale, test_scale, mode: str = "value") -> dict:
    resize = {"type": "Resize", "img_scale": train_scale, "keep_ratio": True, "multiscale_mode": mode}
    return {"model": model, "data": {
        "train": {"type": "CocoDataset", "ann_file": "a.json", "pipeline": [resize]},
        "test": {"type": "CocoDataset", "ann_file": "a.json", "pipeline": [
            {"type": "MultiScaleFlipAug", "img_scale": test_scale, "transforms": [{"type": "Resize"}]}]}}}


def test_test_scale_comes_from_the_test_pipeline_and_train_scales_are_drawn():
    cfg = _with_pipelines(_rcnn("FasterRCNN"), [(1333, 640), (1333, 672), (1333, 800)], (1333, 800))
    out, report = convert_config(cfg, "ms.py")
    options = out["model"]["model"]["init_args"]["options"]
    assert options["min_size"] == [640, 672, 800] and options["max_size"] == 1333  # evaluated at min_size[-1]
    assert "scale" not in _swaps(report)
    assert out["data"]["init_args"]["pipeline"]["img_scale"] == [1333, 800]  # the loader keeps the largest
    cfg = _with_pipelines(_rcnn("FasterRCNN"), [(1333, 640), (1333, 800)], (1333, 720), mode="range")
    out, report = convert_config(cfg, "range.py")
    sizes = out["model"]["model"]["init_args"]["options"]["min_size"]
    assert sorted(sizes) == list(range(640, 801)) and sizes[-1] == 720 and "scale" not in _swaps(report)
    cfg = _with_pipelines(_rcnn("FasterRCNN"), [(1333, 640), (1333, 672)], (1333, 800))
    out, report = convert_config(cfg, "apart.py")
    assert out["model"]["model"]["init_args"]["options"]["min_size"][-1] == 800
    assert "the test short side 800" in _swaps(report)["scale"][0]


@pytest.mark.parametrize(("backbone", "kind"), [
    ({"type": "ResNet", "depth": 50, "num_stages": 3, "strides": [1, 2, 2], "out_indices": [2]}, "C4 "),
    ({"type": "ResNet", "depth": 50, "strides": [1, 2, 2, 1], "dilations": [1, 1, 1, 2], "out_indices": [3]}, "DC5 ")])
def test_c4_and_dc5_rcnns_are_refused_with_the_reason(backbone, kind):
    model = {"type": "FasterRCNN", "backbone": backbone, "neck": None,
             "rpn_head": {"anchor_generator": {"type": "AnchorGenerator", "scales": [2, 4, 8, 16, 32], "strides": [16]}},
             "roi_head": {"bbox_head": {"num_classes": 3}}}
    out, report = convert_config({"model": model}, "c4.py")
    spec = out["model"]["model"]
    assert spec["class_path"] == "detlight.convert.unmapped_detector.UnmappedDetector"
    (entry,) = [e for e in report.entries if e.key == "model"]
    assert entry.status == "dropped" and entry.note.startswith(kind) and "FPN variant only" in entry.note
    with pytest.raises(ConfigError, match=kind + ".*fasterrcnn_resnet50_fpn"):
        UnmappedDetector(**spec["init_args"])


@pytest.mark.parametrize("head", ["PISASSDHead", "AscendSSDHead"])
def test_pisa_and_ascend_ssd_heads_map_to_ssd(head):
    model = {"type": "SingleStageDetector", "backbone": {"type": "SSDVGG", "depth": 16, "input_size": 300},
             "bbox_head": {"type": head, "num_classes": 7}}
    report = ConversionReport("x.py")
    assert map_model(model, report)["init_args"]["builder"] == "ssd300_vgg16"
    assert ("loss" in _swaps(report)) == (head == "PISASSDHead")  # Ascend's head is SSDHead's math
    assert "neck" not in _swaps(report) and "scale" not in _swaps(report)


def test_ssd512_names_its_input_size_and_neck_swaps():
    model = {"type": "SingleStageDetector", "backbone": {"type": "SSDVGG", "depth": 16, "input_size": 512},
             "bbox_head": {"type": "SSDHead", "num_classes": 7}}
    report = ConversionReport("x.py")
    map_model(model, report, {})
    swaps = _swaps(report)
    assert swaps["scale"] == ["input 512x512 -> 300x300 (torchvision's fixed SSD size)"] and "512" in swaps["neck"][0]


def test_kitti_pointpillars_and_centernet_are_approximated_and_3d_reports_name_no_coco_metric():
    from detlight.convert.config import load_config

    configs = Path(__file__).parent / "configs"
    pp = configs / "pointpillars" / "hv_pointpillars_secfpn_6x8_160e_kitti-3d-3class.py"
    out, report = convert_config(load_config(pp), str(pp))
    (entry,) = [e for e in report.entries if e.key == "model"]
    assert entry.status == "approximated" and "swapped head: `Anchor3DHead`" in entry.note
    assert not any("COCO" in e.note for e in report.entries), [e for e in report.entries if "COCO" in e.note]
    assert [e.target for e in report.entries if e.key == "evaluation.metric"] == [
        "model.evaluator: detlight.metrics.CenterDistanceMAP"]
    cn = configs / "centernet" / "centernet_tiny_1x_coco.py"
    _, report = convert_config(load_config(cn), str(cn))
    (entry,) = [e for e in report.entries if e.key == "model"]
    assert entry.status == "approximated" and "swapped backbone:" in entry.note and "swapped neck:" in entry.note


@pytest.mark.parametrize(("ratio", "swapped"), [((0.15, 0.9), False), ((0.2, 0.9), True)])
def test_ssd_default_boxes_other_than_torchvisions_are_a_head_swap(ratio, swapped):
    model = {"type": "SingleStageDetector", "backbone": {"type": "SSDVGG", "depth": 16},
             "bbox_head": {"type": "SSDHead", "num_classes": 7,
                           "anchor_generator": {"type": "SSDAnchorGenerator", "basesize_ratio_range": ratio}}}
    report = ConversionReport("x.py")
    map_model(model, report)
    assert ("head" in _swaps(report)) == swapped
