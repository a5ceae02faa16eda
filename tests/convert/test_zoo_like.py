"""Converting zoo-like mmdet / mmdet3d configs: new mappings and the report's honesty rule.

The fixtures under ``configs/zoo_like`` are shortened copies of real mmdet 2.28 / mmdet3d 1.0.0rc6 zoo configs. Set
``DETLIGHT_MMDET_ZOO`` to config folders (``:``-separated, e.g. the wheels' ``.mim/configs``) to also walk a real zoo.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from detlight.convert import ConversionReport, convert_config, convert_to_yaml
from detlight.convert.cli import convert_folder, convert_main, format_summary
from detlight.convert.config import load_config
from detlight.convert.targets import LR_UPDATER
from detlight.exceptions import ConfigError

ZOO_LIKE = Path(__file__).parent / "configs" / "zoo_like"
FIXTURES = sorted(p for p in ZOO_LIKE.glob("*.py"))
VOC = ZOO_LIKE / "retinanet_r50_fpn_1x_voc0712.py"
YOLOX = ZOO_LIKE / "yolox_s_8x8_300e_coco.py"
CENTERPOINT = ZOO_LIKE / "centerpoint_02pillar_second_secfpn_4x8_cyclic_20e_nus.py"
MASK2FORMER = ZOO_LIKE / "mask2former_swin-t-p4-w7-224_lsj_8x2_50e_coco.py"
S3DIS = ZOO_LIKE / "pointnet2_ssg_16x2_cosine_50e_s3dis_seg-3d-13class.py"
CITYSCAPES = ZOO_LIKE / "mask_rcnn_r50_fpn_1x_cityscapes.py"


def _convert(path: Path) -> tuple[dict[str, Any], ConversionReport]:
    return convert_config(load_config(path), str(path))


def _lookup(tree: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        tree = tree[int(part)] if isinstance(tree, list) else tree[part]
    return tree


def _strings(tree: Any) -> list[str]:
    if isinstance(tree, dict):
        return [s for v in tree.values() for s in _strings(v)]
    if isinstance(tree, list):
        return [s for v in tree for s in _strings(v)]
    return [tree] if isinstance(tree, str) else []


def _assert_honest(report: ConversionReport, yaml_text: str) -> None:
    """Every *mapped* line names a target that the written YAML holds (a key path or a class_path value)."""
    written = yaml.safe_load(yaml_text)
    values = set(_strings(written))
    for entry in report.entries:
        if entry.status != "mapped":
            continue
        assert entry.target, f"{entry.key}: mapped without a target"
        for piece in entry.target.replace(" + ", ": ").split(": "):
            if piece.startswith("("):
                continue  # built-in behaviour, no YAML entry (the note says what)
            if piece.startswith(("detlight.", "lightning.")):
                assert piece in values, f"{entry.key}: mapped to {piece}, which the YAML does not use"
            else:
                try:
                    _lookup(written, piece)
                except (KeyError, IndexError, TypeError):
                    pytest.fail(f"{entry.key}: mapped to `{piece}`, which is not in the YAML")


# ------------------------------------------------------------------------------------------------ honesty
@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_every_mapped_line_has_its_yaml_counterpart(path: Path, tmp_path: Path) -> None:
    text, report = convert_to_yaml(path, tmp_path / "out.yaml")
    assert report.entries and report.unbacked(yaml.safe_load(text)) == []
    _assert_honest(report, text)


def test_the_honesty_check_catches_a_false_mapped_line() -> None:
    out, report = _convert(VOC)
    report.add("data.samples_per_gpu", "mapped", "data.init_args.samples_per_gpu")
    assert [e.key for e in report.unbacked(out)] == ["data.samples_per_gpu"]
    report.add("x", "mapped", "detlight.callbacks.nothing.Here")
    assert [e.key for e in report.unbacked(out)] == ["data.samples_per_gpu", "x"]


def test_approximated_and_dropped_lines_say_how_or_why() -> None:
    for path in FIXTURES:
        _, report = _convert(path)
        for entry in report.entries:
            if entry.status == "approximated":
                assert entry.note, f"{path.name}: {entry.key} approximated without saying how"
            if entry.status == "dropped":
                assert len(entry.note) > 15, f"{path.name}: {entry.key} dropped without saying why"


# ------------------------------------------------------------------------------------------------ data
def test_unknown_dataset_keeps_batch_settings_and_paths_in_a_commented_block(tmp_path: Path) -> None:
    text, report = convert_to_yaml(VOC, tmp_path / "voc.yaml")
    out = yaml.safe_load(text)
    assert out["data"]["class_path"] == "detlight.convert.unmapped_data.UnmappedDataModule"  # stops fit, named
    assert set(out["data"]["init_args"]) == {"dataset_type", "message"}  # nothing else (it accepts nothing else)
    assert out["data"]["init_args"]["dataset_type"] == "VOCDataset"
    for key in ("data.samples_per_gpu", "data.workers_per_gpu", "data.train.times"):
        assert report.status_of(key) == ["dropped"], key
    assert "VOCDataset` has no detlight datamodule" in next(e.note for e in report.entries
                                                           if e.key == "data.samples_per_gpu")
    block = "\n".join(line[2:] for line in text.splitlines() if line.startswith("# ") and not
                      line.startswith(("# Converted", "# Run", "# Keys", "# model.model", "# dataset")))
    hint = yaml.safe_load(block)["data"]["init_args"]
    assert (hint["samples_per_gpu"], hint["workers_per_gpu"], hint["repeat_times"]) == (2, 2, 3)
    assert hint["train"]["ann_file"][0] == "data/VOCdevkit/VOC2007/ImageSets/Main/trainval.txt"
    assert hint["val"]["img_prefix"] == "data/VOCdevkit/VOC2007/"


def test_repeat_dataset_becomes_the_samplers_repeat_factor() -> None:
    out, report = _convert(CITYSCAPES)
    init = out["data"]["init_args"]
    assert out["data"]["class_path"] == "detlight.data.datamodule.DetDataModule"
    assert init["repeat_times"] == 8 and out["trainer"]["max_epochs"] == 8
    assert init["train"] == {"ann_file": "data/cityscapes/annotations/instancesonly_filtered_gtFine_train.json",
                             "img_prefix": "data/cityscapes/leftImg8bit/train/"}
    assert report.status_of("data.train.times") == ["mapped"]
    assert report.status_of("data.train") == ["approximated"]  # CityscapesDataset read as COCO json


def test_wrappers_that_change_sampling_are_reported_dropped() -> None:
    out, report = _convert(CENTERPOINT)
    assert report.status_of("data.train.type") == ["dropped"]
    assert "CBGSDataset" in next(e.note for e in report.entries if e.key == "data.train.type")
    out, report = _convert(YOLOX)
    assert out["data"]["init_args"]["train"]["ann_file"] == "data/coco/annotations/instances_train2017.json"
    note = next(e.note for e in report.entries if e.key == "data.train.type")
    assert "MultiImageMixDataset" in note and "Mosaic" in note


# ------------------------------------------------------------------------------------------------ runtime keys
def test_naive_sync_bn_sets_sync_batchnorm() -> None:
    out, report = _convert(CENTERPOINT)
    assert out["trainer"]["sync_batchnorm"] is True
    entry = next(e for e in report.entries if e.key == "model.norm_cfg")
    assert entry.status == "mapped" and "naiveSyncBN2d" in entry.note
    assert "sync_batchnorm" not in _convert(VOC)[0]["trainer"]  # plain BN: not set


def test_builtins_and_update_statements_of_real_configs_resolve() -> None:
    cfg = load_config(CENTERPOINT)
    assert cfg["model"]["pts_bbox_head"]["in_channels"] == 384  # sum([128, 128, 128])
    keys = load_config(MASK2FORMER)["optimizer"]["paramwise_cfg"]["custom_keys"]
    assert len(keys) == 8 + 12 + 3  # 8 written, sum(depths) block norms, len(depths) - 1 downsample norms
    assert keys["backbone.stages.2.blocks.5.norm"] == {"lr_mult": 0.1, "decay_mult": 0.0}
    s3dis = load_config(S3DIS)
    assert s3dis["data"]["train"]["ignore_index"] == 13
    assert s3dis["data"]["train"]["pipeline"][0]["valid_cat_ids"] == tuple(range(13))


def test_yolox_lr_config_maps_to_the_yolox_policy() -> None:
    out, report = _convert(YOLOX)
    lr = next(cb["init_args"] for cb in out["trainer"]["callbacks"] if cb["class_path"] == LR_UPDATER)
    assert lr == {"policy": "YOLOX", "warmup": "exp", "by_epoch": False, "warmup_by_epoch": True, "warmup_ratio": 1,
                  "warmup_iters": 5, "num_last_epochs": 15, "min_lr_ratio": 0.05}
    assert report.status_of("lr_config") == ["mapped"]


def test_a_schedule_detlight_refuses_is_reported_dropped_not_mapped() -> None:
    cfg = load_config(YOLOX, ["lr_config.policy=NoSuchPolicy"])
    out, report = convert_config(cfg, str(YOLOX))
    assert report.status_of("lr_config") == ["dropped"]
    assert "unknown policy 'NoSuchPolicy'" in next(e.note for e in report.entries if e.key == "lr_config")
    assert all(cb["class_path"] != LR_UPDATER for cb in out["trainer"]["callbacks"])


def test_base_reference_in_an_expression_gets_a_report_line(tmp_path: Path) -> None:
    (tmp_path / "base.py").write_text("optimizer = dict(type='SGD', lr=0.02)\nlr = 0.02\n")
    (tmp_path / "cfg.py").write_text("_base_ = 'base.py'\noptimizer = dict(lr={{_base_.lr}} * 2)\n")
    text, report = convert_to_yaml(tmp_path / "cfg.py")
    assert yaml.safe_load(text)["model"]["optimizer"]["lr"] == 0.04
    entry = next(e for e in report.entries if e.key == "optimizer" and e.status == "approximated")
    assert "cfg.py:2" in entry.note and "mmcv 1.x" in entry.note


# ------------------------------------------------------------------------------------------------ CLI
@pytest.mark.parametrize("path", [YOLOX, CITYSCAPES, CENTERPOINT], ids=lambda p: p.stem)
def test_converted_yaml_is_accepted_by_print_config(path: Path, tmp_path: Path,
                                                    print_config: Callable[..., str]) -> None:
    convert_to_yaml(path, tmp_path / "out.yaml")
    printed = yaml.safe_load(print_config(tmp_path / "out.yaml"))
    assert printed["trainer"]["max_epochs"] == _convert(path)[0]["trainer"]["max_epochs"]


def test_convert_a_folder_with_a_summary_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "configs"
    (src / "_base_").mkdir(parents=True)
    (src / "_base_" / "rt.py").write_text("runner = dict(type='EpochBasedRunner', max_epochs=2)\n")
    (src / "a").mkdir()
    (src / "a" / "good.py").write_text("_base_ = '../_base_/rt.py'\noptimizer = dict(type='SGD', lr=0.01)\n")
    (src / "bad.py").write_text("import os\n")
    status = convert_main([str(src), "-o", str(tmp_path / "out")])
    table = capsys.readouterr().out
    assert status == 1  # one config was refused
    assert (tmp_path / "out" / "a" / "good.yaml").is_file() and (tmp_path / "out" / "a" / "good.report.txt").is_file()
    assert not (tmp_path / "out" / "_base_").exists()
    rows = {line.split(" | ")[0].strip(): line for line in table.splitlines() if " | " in line}
    assert "| converted |" in rows["a/good.py"] and "| refused   |" in rows["bad.py"]
    assert table.splitlines()[-1].startswith("2 configs: 1 converted, 1 refused, 0 crashed; median ")
    results = convert_folder(src, tmp_path / "out2")
    assert [(r.config, r.status) for r in results] == [("a/good.py", "converted"), ("bad.py", "refused")]
    assert "an import" in results[1].message and results[0].mapped > 0
    assert format_summary(results).splitlines()[-1].startswith("2 configs: 1 converted, 1 refused, 0 crashed")
    assert convert_main([str(src)]) == 2  # a folder needs -o
    assert rows["a/good.py"].split(" | ")[2].strip() == "placeholder model+data"  # no model, no data section
    assert table.splitlines()[-2] == ("1 converted: 0 runnable (real model and real data), 1 with a placeholder "
                                      "model, 1 with placeholder data (1 both)")


def test_folder_summary_separates_runnable_from_placeholder_model_and_data(tmp_path: Path) -> None:
    results = {r.config: r for r in convert_folder(ZOO_LIKE.parent, tmp_path / "out")}
    runs = {name: r.runs for name, r in results.items()}
    assert runs["centernet/centernet_tiny_1x_coco.py"] == "runnable"  # CenterNet on COCO json
    assert runs["zoo_like/mask_rcnn_r50_fpn_1x_cityscapes.py"] == "runnable"  # torchvision Mask R-CNN on COCO json
    assert runs["zoo_like/retinanet_r50_fpn_1x_voc0712.py"] == "placeholder data"  # VOC xml: no reader
    assert runs["zoo_like/yolox_s_8x8_300e_coco.py"] == "placeholder model"  # no YOLOX
    assert runs["zoo_like/mask2former_swin-t-p4-w7-224_lsj_8x2_50e_coco.py"] == "placeholder model+data"
    assert results["zoo_like/yolox_s_8x8_300e_coco.py"].message.startswith("model: mmdet detector type `YOLOX`")
    assert "data: mmdet dataset `VOCDataset`" in results["zoo_like/retinanet_r50_fpn_1x_voc0712.py"].message
    assert results["centernet/centernet_tiny_1x_coco.py"].message == ""
    counts = format_summary(list(results.values())).splitlines()[-2]
    runnable = sum(r == "runnable" for r in runs.values())
    assert counts.startswith(f"{len(results)} converted: {runnable} runnable (real model and real data), ")


def test_detlight_convert_does_not_import_lightning_or_torch(tmp_path: Path) -> None:
    code = ("import sys\nfrom detlight.cli import main\ntry:\n"
            f"    main(['convert', {str(CITYSCAPES)!r}, '-o', {str(tmp_path / 'o.yaml')!r}])\n"
            "except SystemExit as e:\n    assert e.code == 0, e.code\n"
            "print(sorted(m for m in ('lightning', 'torch', 'jsonargparse') if m in sys.modules))\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == "[]"
    assert (tmp_path / "o.yaml").is_file()


# ------------------------------------------------------------------------------------------------ a real zoo
@pytest.mark.skipif(not os.environ.get("DETLIGHT_MMDET_ZOO"), reason="set DETLIGHT_MMDET_ZOO to zoo config folders")
def test_real_zoo_converts_without_crash_and_honestly() -> None:
    counts = {"converted": 0, "refused": 0}
    for folder in os.environ["DETLIGHT_MMDET_ZOO"].split(":"):
        for path in sorted(Path(folder).rglob("*.py")):
            if "_base_" in path.relative_to(folder).parts:
                continue
            try:
                out, report = _convert(path)
            except ConfigError:
                counts["refused"] += 1
                continue
            counts["converted"] += 1
            assert report.unbacked(out) == [], path
    assert counts["converted"] >= 0.98 * (counts["converted"] + counts["refused"]), counts


def test_report_wording_matches_the_written_yaml(tmp_path: Path) -> None:
    """Mask R-CNN's `with_mask` is carried (and said so); a placeholder `data:` is not called "not written"."""
    cfg = tmp_path / "mask.py"
    cfg.write_text(f"_base_ = '{CITYSCAPES}'\ndata = dict(train=dict(dataset=dict(pipeline=[\n"
                   "    dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True, with_mask=True),\n"
                   "    dict(type='Resize', img_scale=(2048, 1024), keep_ratio=True)])))\n")
    text, report = convert_to_yaml(cfg)
    assert yaml.safe_load(text)["data"]["init_args"]["pipeline"]["with_mask"] is True
    (load,) = [e for e in report.entries if e.key.endswith("pipeline.1")]
    assert load.status == "mapped" and "with_mask" not in load.note
    text, report = convert_to_yaml(VOC)
    out = yaml.safe_load(text)
    assert out["data"]["class_path"] == "detlight.convert.unmapped_data.UnmappedDataModule"
    assert "no `data:` section is written" not in text and "section written is a placeholder" in text
