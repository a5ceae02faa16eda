"""The real model zoo, converted without mmdet: the report names every swap, and every real-model spec builds.

Runs only when ``DETLIGHT_MMDET_ZOO`` names config folders (``:``-separated; the mmdet 2.28.2 and mmdet3d 1.0.0rc6
wheels' ``.mim/configs``), so the default suite stays fast. What a swap is, is read here from the config itself
(backbone type / style / DCN / norm, neck type, head types, box loss, test scale), independently of the converter.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from detlight.convert import ConversionReport, convert_config
from detlight.convert.config import load_config
from detlight.convert.report import dotted_get
from detlight.exceptions import ConfigError

FOLDERS = [Path(p) for p in os.environ.get("DETLIGHT_MMDET_ZOO", "").split(":") if p and Path(p).is_dir()]
pytestmark = pytest.mark.skipif(not FOLDERS, reason="set DETLIGHT_MMDET_ZOO to zoo config folders")

TV = "detlight.models.torchvision_detector"
UNMAPPED = "detlight.convert.unmapped_detector.UnmappedDetector"
#: head types torchvision builds, per mmdet detector type (the model dict path -> type).
STANDARD_HEADS = {
    "FasterRCNN": {"rpn_head": "RPNHead", "roi_head": "StandardRoIHead", "roi_head.bbox_head": "Shared2FCBBoxHead"},
    "MaskRCNN": {"rpn_head": "RPNHead", "roi_head": "StandardRoIHead", "roi_head.bbox_head": "Shared2FCBBoxHead",
                 "roi_head.mask_head": "FCNMaskHead"},
    "RetinaNet": {"bbox_head": "RetinaHead"},
}
#: the box loss torchvision computes, per mmdet detector type (any other type in the config is a loss swap).
BOX_LOSS = {"FasterRCNN": ("rpn_head.loss_bbox", "SmoothL1Loss"), "MaskRCNN": ("rpn_head.loss_bbox", "SmoothL1Loss"),
            "RetinaNet": ("bbox_head.loss_bbox", "L1Loss"), "FCOS": ("bbox_head.loss_bbox", "GIoULoss")}


@functools.cache
def converted() -> list[tuple[str, dict[str, Any], dict[str, Any], ConversionReport]]:
    rows = []
    for folder in FOLDERS:
        for path in sorted(folder.rglob("*.py")):
            if "_base_" in path.relative_to(folder).parts:
                continue
            try:
                cfg = load_config(path)
                out, report = convert_config(cfg, str(path))
            except ConfigError:
                continue
            rows.append((str(path.relative_to(folder)), cfg, out, report))
    return rows


def _model_entry(report: ConversionReport) -> Any:
    entries = [e for e in report.entries if e.key == "model"]
    assert len(entries) == 1, [(e.status, e.note[:80]) for e in entries]
    return entries[0]


def _test_scale(cfg: Mapping[str, Any]) -> tuple[int, int] | None:
    ds = dotted_get(cfg, "data.test")
    while isinstance(ds, Mapping) and "pipeline" not in ds and "dataset" in ds:
        ds = ds["dataset"]
    for step in (ds or {}).get("pipeline") or []:
        scale = step.get("img_scale") if isinstance(step, Mapping) else None
        if isinstance(scale, (list, tuple)) and len(scale) == 2 and all(isinstance(v, int) for v in scale):
            return int(min(scale)), int(max(scale))
    return None


def expected_swaps(cfg: Mapping[str, Any]) -> Iterator[str]:
    """The swap kinds a torchvision-family conversion of ``cfg`` must name, read from the config alone."""
    model = cfg["model"]
    kind = model["type"]
    backbone = model.get("backbone") or {}
    if kind in STANDARD_HEADS or kind == "FCOS":
        if (backbone.get("type") not in ("ResNet", "ResNeXt") or backbone.get("style") == "caffe"
                or backbone.get("dcn") or backbone.get("plugins")
                or (backbone.get("norm_cfg") or {}).get("type", "BN") not in ("BN", "SyncBN")):
            yield "backbone"
        neck = model.get("neck")
        if isinstance(neck, Mapping) and neck.get("type") != "FPN":
            yield "neck"
    for path, head in STANDARD_HEADS.get(kind, {}).items():
        if dotted_get(model, f"{path}.type", head) != head:
            yield "head"
    if kind in BOX_LOSS:
        path, loss = BOX_LOSS[kind]
        if dotted_get(model, f"{path}.type", loss) != loss or loss == "SmoothL1Loss":
            yield "loss"  # mmdet's SmoothL1Loss(beta=1.0) is not torchvision's beta 1/9 either


def test_report_status_rule_over_the_converted_zoo() -> None:
    """Anything swapped is "approximated" with the swap named; "mapped" only where nothing is swapped."""
    checked = 0
    for name, cfg, out, report in converted():
        spec = (out.get("model") or {}).get("model")
        if not isinstance(spec, Mapping) or spec["class_path"] == UNMAPPED:
            continue
        entry = _model_entry(report)
        named = {part.split(":")[0].removeprefix("swapped ") for part in entry.note.split("; ")
                 if part.startswith("swapped ")}
        if named or spec["class_path"] != TV:  # detlight's own stand-ins always swap a part
            assert entry.status == "approximated" and named, (name, entry)
        if spec["class_path"] == TV:
            missing = set(expected_swaps(cfg)) - named
            assert not missing, (name, missing, entry.note)
            options = spec["init_args"].get("options", {})
            test = _test_scale(cfg)
            if test is not None and not spec["init_args"]["builder"].startswith("ssd"):
                sizes = options["min_size"] if isinstance(options["min_size"], list) else [options["min_size"]]
                evaluated = (sizes[-1], options["max_size"])  # torchvision evaluates at the last min_size
                assert evaluated == test or "scale" in named, (name, evaluated, test)
            checked += 1
    assert checked > 300


def test_resnext_widths_and_c4_dc5_refusals() -> None:
    seen = {"resnext": 0, "refused": 0}
    for name, cfg, out, report in converted():
        backbone = dotted_get(cfg, "model.backbone") or {}
        spec = (out.get("model") or {}).get("model") or {}
        if spec.get("class_path") == TV and backbone.get("type") == "ResNeXt":
            assert spec["init_args"]["backbone"] == (
                f"resnext{backbone['depth']}_{backbone['groups']}x{backbone['base_width']}d"), name
            seen["resnext"] += 1
        if dotted_get(cfg, "model.type") in ("FasterRCNN", "MaskRCNN") and cfg["model"].get("neck") is None:
            assert spec.get("class_path") == UNMAPPED, name
            entry = _model_entry(report)
            assert entry.status == "dropped" and ("C4 " in entry.note or "DC5 " in entry.note), (name, entry.note)
            seen["refused"] += 1
    assert seen["resnext"] >= 40 and seen["refused"] >= 7, seen


def _distinct_specs() -> dict[str, str]:
    specs: dict[str, str] = {}
    for name, _, out, _ in converted():
        spec = (out.get("model") or {}).get("model")
        if isinstance(spec, Mapping) and spec["class_path"] != UNMAPPED:
            specs.setdefault(json.dumps(spec, sort_keys=True), name)
    return specs


def test_every_distinct_real_model_spec_of_the_zoo_builds() -> None:
    import torch

    torch.set_num_threads(1)
    specs = _distinct_specs()
    failures = []
    for text, name in specs.items():
        spec = json.loads(text)
        module, _, attr = spec["class_path"].rpartition(".")
        try:
            model = getattr(importlib.import_module(module), attr)(**spec.get("init_args", {}))
        except Exception as err:  # noqa: BLE001 - every failure is listed
            failures.append(f"{name}: {type(err).__name__}: {err}")
            continue
        backbone = spec.get("init_args", {}).get("backbone", "")
        if backbone.startswith("resnext"):  # the widths the config names, not torchvision's nearest ResNeXt
            groups, width = (int(v) for v in backbone.split("_")[1][:-1].split("x"))
            conv = model.backbone.body.layer1[0].conv2
            assert (conv.groups, conv.out_channels) == (groups, groups * width), (name, backbone)
        del model
    assert not failures, failures
    assert len(specs) > 100
