"""Tests for the mmcv config -> LightningCLI YAML converter (``detlight.convert``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from detlight.convert import convert_config, convert_file
from detlight.convert.config import ConfigError, load_config
from detlight.convert.targets import (
    CHECKPOINT,
    EMA,
    EVALUATION,
    INTERVAL_LOGGER,
    LR_UPDATER,
    MMCV_HOOKS,
    MOMENTUM_UPDATER,
    TEXT_LOGGER,
    WORKFLOW,
)

CONFIGS = Path(__file__).parent / "configs"
PP = CONFIGS / "pointpillars" / "hv_pointpillars_secfpn_6x8_160e_kitti-3d-3class.py"
PP_FP16 = CONFIGS / "pointpillars" / "hv_pointpillars_fp16_secfpn_6x8_160e_kitti-3d-3class.py"
CN_1X = CONFIGS / "centernet" / "centernet_tiny_1x_coco.py"
CN_ADAMW = CONFIGS / "centernet" / "centernet_tiny_adamw_cosine_coco.py"
CN_ITER = CONFIGS / "centernet" / "centernet_tiny_40k_iter_coco.py"
ALL = [PP, PP_FP16, CN_1X, CN_ADAMW, CN_ITER]


def _convert(path: Path, options: list[str] | None = None) -> tuple[dict[str, Any], Any]:
    return convert_config(load_config(path, options), str(path))


def _callbacks(out: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {cb["class_path"]: cb.get("init_args", {}) for cb in out["trainer"].get("callbacks", [])}


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.stem)
def test_every_top_level_key_is_reported(path: Path) -> None:
    cfg = load_config(path)
    _, report = convert_config(cfg, str(path))
    missing = [key for key in cfg if not report.covers(key)]
    assert not missing
    assert {e.status for e in report.entries} <= {"mapped", "approximated", "dropped"}
    assert all(e.note for e in report.entries if e.status != "mapped")  # every non-mapping says why


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.stem)
def test_yaml_round_trips_without_tuples_or_anchors(path: Path, tmp_path: Path) -> None:
    out_path = tmp_path / "out.yaml"
    text, report_text = convert_file(path, out=out_path)
    assert out_path.read_text() == text
    assert "&id" not in text and "!!python" not in text
    expected, _ = _convert(path)
    assert yaml.safe_load(text) == expected
    assert report_text.startswith(f"Mapping report for {path}") and "| status" in report_text


def test_mmdet_1x_schedule() -> None:
    out, report = _convert(CN_1X)
    trainer = out["trainer"]
    assert trainer["max_epochs"] == 12 and "max_steps" not in trainer
    assert trainer["default_root_dir"] == "./work_dirs/centernet_512" and trainer["benchmark"] is True
    assert trainer["check_val_every_n_epoch"] == 1 and trainer["log_every_n_steps"] == 50
    assert trainer["use_distributed_sampler"] is False and trainer["num_sanity_val_steps"] == 0
    assert "strategy" not in trainer  # dist_params nccl is Lightning's own default
    assert "precision" not in trainer
    callbacks = _callbacks(out)
    assert callbacks[LR_UPDATER] == {"policy": "step", "warmup": "linear", "warmup_iters": 500,
                                     "warmup_ratio": 0.001, "step": [8, 11]}
    assert callbacks[CHECKPOINT] == {"interval": 1, "by_epoch": True}
    assert callbacks[EVALUATION]["interval"] == 1 and callbacks[TEXT_LOGGER] == {"interval": 50}
    assert MOMENTUM_UPDATER not in callbacks and MMCV_HOOKS not in callbacks
    assert callbacks["detlight.callbacks.num_class_check.NumClassCheck"] == {}  # from custom_hooks
    model = out["model"]
    assert model["optimizer"] == {"type": "SGD", "lr": 0.02, "momentum": 0.9, "weight_decay": 0.0001}
    assert model["grad_clip"] == {"max_norm": 35, "norm_type": 2}
    assert model["auto_scale_lr"] == {"enable": False, "base_batch_size": 16} and model["load_from"] is None
    assert model["model"]["class_path"].endswith(".CenterNet")
    assert model["model"]["init_args"] == {"num_classes": 80, "topk": 100, "max_per_img": 100,
                                           "loss_wh_weight": 0.1, "loss_offset_weight": 1.0}
    data = out["data"]["init_args"]
    assert data["train"] == {"ann_file": "data/coco/annotations/instances_train2017.json",
                             "img_prefix": "data/coco/train2017/"}
    assert (data["samples_per_gpu"], data["workers_per_gpu"], data["val_samples_per_gpu"]) == (16, 4, 4)
    assert data["pipeline"] == {"img_scale": [512, 512], "keep_ratio": True, "flip_ratio": 0.5,
                                "mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375], "to_rgb": True,
                                "size_divisor": 32}
    assert out["seed_everything"] == 0 and data["seed"] == 0 and out["ckpt_path"] is None
    assert report.status_of("custom_hooks.0") == ["mapped"]
    assert report.status_of("data.train.pipeline.2") == ["dropped"]  # PhotoMetricDistortion
    assert report.status_of("opencv_num_threads") == ["dropped"] and report.status_of("workflow") == ["mapped"]


def test_pointpillars_cyclic_adamw() -> None:
    out, report = _convert(PP)
    callbacks = _callbacks(out)
    assert out["trainer"]["max_epochs"] == 80 and out["trainer"]["check_val_every_n_epoch"] == 2
    assert callbacks[LR_UPDATER] == {"policy": "cyclic", "target_ratio": [10, 1e-4], "cyclic_times": 1,
                                     "step_ratio_up": 0.4}
    assert callbacks[MOMENTUM_UPDATER]["target_ratio"] == [pytest.approx(0.85 / 0.95), 1]
    assert out["model"]["optimizer"] == {"type": "AdamW", "lr": 0.001, "betas": [0.95, 0.99], "weight_decay": 0.01}
    assert out["model"]["grad_clip"] == {"max_norm": 35, "norm_type": 2}
    logger = out["trainer"]["logger"]
    assert logger["class_path"].endswith("TensorBoardLogger") and logger["init_args"]["name"] == ""
    assert out["trainer"]["default_root_dir"] == "work_dirs/hv_pointpillars_secfpn_6x8_160e_kitti-3d-3class"
    pillars = out["model"]["model"]
    assert pillars["class_path"].endswith(".PointPillars")
    assert pillars["init_args"]["num_classes"] == 3 and pillars["init_args"]["voxel_size"] == [0.16, 0.16, 4]
    assert pillars["init_args"]["backbone_strides"] == [2, 2, 2] and pillars["init_args"]["pillar_channels"] == 64
    data = out["data"]
    assert data["class_path"].endswith(".Det3DDataModule")
    assert data["init_args"] == {
        "samples_per_gpu": 6, "workers_per_gpu": 4, "data_root": "data/kitti/", "classes": ["Pedestrian", "Cyclist",
                                                                                             "Car"],
        "train_split": "train", "val_split": "val", "test_split": "val",
        "point_cloud_range": [0, -39.68, -3, 69.12, 39.68, 1],  # the child's range, same as the model's
        "augment": {"flip_ratio": 0.5, "rot_range": [-0.78539816, 0.78539816], "scale_range": [0.95, 1.05],
                    "shuffle": True},
        "repeat_times": 2}  # RepeatDataset(times=2): the sampler draws each frame twice per epoch, as mmdet
    assert report.status_of("data.train.pipeline.2") == ["dropped"]  # ObjectSample (GT database sampling)
    assert report.status_of("data.train.times") == ["mapped"]
    notes = " ".join(e.note for e in report.entries if e.key.startswith("data."))
    assert "RepeatDataset" in notes and "times" in notes


def test_callbacks_follow_mmcv_priority_order() -> None:
    out, _ = _convert(CN_ADAMW)
    order = [cb["class_path"] for cb in out["trainer"]["callbacks"]]
    # LR (VERY_HIGH) < EMA (ABOVE_NORMAL, from the config) < checkpoint (NORMAL) < custom NORMAL < eval (LOW)
    assert order.index(LR_UPDATER) < order.index(EMA) < order.index(CHECKPOINT) < order.index(MMCV_HOOKS)
    assert order.index(MMCV_HOOKS) < order.index(EVALUATION) < order.index(TEXT_LOGGER)


def test_fp16_loss_scale_maps_to_the_mmcv_precision_plugin() -> None:
    out, report = _convert(PP_FP16)
    assert "precision" not in out["trainer"]
    [plugin] = out["trainer"]["plugins"]
    assert plugin == {"class_path": "detlight.precision.MMFp16Precision", "init_args": {"loss_scale": 512.0}}
    [entry] = [e for e in report.entries if e.key == "fp16"]
    assert entry.status == "mapped" and "static scale" in entry.note and "auto_fp16" in entry.note
    dynamic, report = _convert(PP_FP16, ["fp16.loss_scale=dynamic"])
    assert dynamic["trainer"]["plugins"][0]["init_args"] == {"loss_scale": "dynamic"}
    assert report.status_of("fp16") == ["mapped"]


def test_fp16_int_loss_scale_is_refused_like_mmcv() -> None:
    with pytest.raises(ValueError, match="fp16.loss_scale"):
        _convert(PP_FP16, ["fp16.loss_scale=512"])


def test_iter_based_runner() -> None:
    out, report = _convert(CN_ITER)
    trainer = out["trainer"]
    assert trainer["max_epochs"] == -1
    assert trainer["check_val_every_n_epoch"] is None and trainer["val_check_interval"] == 4000
    assert trainer["accumulate_grad_batches"] == 2 and trainer["log_every_n_steps"] == 100
    assert trainer["strategy"] == {"class_path": "detlight.dist.DetDDPStrategy",
                                   "init_args": {"find_unused_parameters": True, "backend": "gloo"}}
    callbacks = _callbacks(out)
    assert callbacks[LR_UPDATER]["by_epoch"] is False and callbacks[LR_UPDATER]["step"] == [30000, 36000]
    assert callbacks[CHECKPOINT] == {"interval": 4000, "by_epoch": False, "max_keep_ckpts": 3}
    assert trainer["max_steps"] == 20000  # 40000 iterations in optimizer steps of 2 accumulated batches
    assert callbacks[EVALUATION] == {"interval": 4000, "save_best": "bbox_mAP", "by_epoch": False}
    assert out["ckpt_path"] == "work_dirs/centernet/iter_8000.pth"
    assert report.status_of("runner") == ["approximated"]
    assert report.status_of("optimizer_config.cumulative_iters") == ["approximated"]
    assert report.status_of("auto_resume") == ["dropped"]  # resume_from wins, as in mmdet
    assert report.status_of("dist_params.port") == ["approximated"]
    assert report.status_of("workflow") == ["mapped"]


def test_custom_hooks_imports_and_other_loggers() -> None:
    out, report = _convert(CN_ADAMW)
    callbacks = _callbacks(out)
    assert callbacks[EMA] == {"momentum": 0.0002, "interval": 1, "warm_up": 100, "momentum_schedule": "mmcv"}
    assert callbacks[MMCV_HOOKS] == {"hooks": [{"type": "MyProjectHook", "every": "epoch", "priority": "NORMAL"}],
                                     "by_epoch": True}
    [imports] = [e for e in report.entries if e.key == "custom_imports"]
    assert imports.status == "dropped" and "my_project.hooks" in imports.note
    [wandb] = [e for e in report.entries if e.key == "log_config.hooks.1"]
    assert wandb.status == "dropped" and "WandbLogger" in wandb.note
    assert report.status_of("momentum_config") == ["mapped"] and MOMENTUM_UPDATER not in callbacks
    assert out["model"]["optimizer"]["paramwise_cfg"]["custom_keys"] == {"backbone": {"lr_mult": 0.1}}


def test_unknown_model_and_dataset_say_how_to_point_at_own_class(tmp_path: Path) -> None:
    path = tmp_path / "faster.py"
    path.write_text(f"_base_ = '{CN_1X}'\nmodel = dict(_delete_=True, type='FasterRCNN', backbone=dict(type='ResNet'))\n"
                    "data = dict(train=dict(_delete_=True, type='VOCDataset', ann_file='a.txt'))\n")
    text, report_text = convert_file(path)
    out = yaml.safe_load(text)
    assert "model" not in out["model"]
    assert "`FasterRCNN` maps to torchvision" in report_text and "no int `num_classes`" in report_text
    assert "my_pkg.MyDetector" in report_text
    assert "`VOCDataset` has no detlight counterpart" in report_text
    assert "# model.model is missing" in text
    # data: a stand-in whose construction stops the run naming the dataset type (not jsonargparse's `required: data`)
    assert out["data"]["class_path"] == "detlight.convert.unmapped_data.UnmappedDataModule"
    assert "ann_file: a.txt" in text  # the commented block the user starts from
    from detlight.convert.unmapped_data import UnmappedDataModule
    from detlight.exceptions import DatasetError

    with pytest.raises(DatasetError, match=r"`VOCDataset` \(data.train.type\) has no detlight reader.*COCO json"):
        UnmappedDataModule(**out["data"]["init_args"])


@pytest.mark.parametrize(("cfg", "expected"), [
    ({"total_epochs": 7}, {"max_epochs": 7}),
    ({"runner": {"type": "EpochBasedRunner", "max_epochs": 3}, "total_epochs": 3}, {"max_epochs": 3}),
    ({"runner": {"type": "IterBasedRunner", "max_iters": 10}}, {"max_steps": 10, "check_val_every_n_epoch": None}),
])
def test_runner_length(cfg: dict[str, Any], expected: dict[str, Any]) -> None:
    out, report = convert_config(cfg, "x.py")
    assert expected.items() <= out["trainer"].items()
    assert all(report.covers(k) for k in cfg)


@pytest.mark.parametrize(("cfg", "match"), [
    ({"runner": {"type": "EpochBasedRunner", "max_epochs": 3, "max_iters": 9}}, "exactly one of max_epochs"),
    ({"runner": {"type": "IterBasedRunner"}}, "exactly one of max_epochs and max_iters"),
    ({"runner": {"type": "EpochBasedRunner", "max_epochs": 3}, "total_epochs": 4}, "total_epochs=4 disagrees"),
])
def test_inconsistent_runner_is_rejected(cfg: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        convert_config(cfg, "x.py")


def test_val_workflow_and_optimizer_hook_none_are_reported() -> None:
    cfg = {"total_epochs": 4, "workflow": [("train", 2), ("val", 1)], "optimizer_config": None, "lr_config": None,
           "checkpoint_config": None,
           "log_config": {"interval": 5, "hooks": [{"type": "TensorboardLoggerHook", "interval": 7}]},
           "auto_resume": True, "fp16": {"loss_scale": {"init_scale": 256.0}}}
    out, report = convert_config(cfg, "x.py")
    assert report.status_of("workflow") == ["approximated"] and report.status_of("optimizer_config") == ["approximated"]
    assert _callbacks(out)[WORKFLOW] == {"workflow": [["train", 2], ["val", 1]],
                                         "runner": {"type": "EpochBasedRunner", "max_epochs": 4}}
    assert out["trainer"]["enable_checkpointing"] is False
    assert report.status_of("lr_config") == ["mapped"] and LR_UPDATER not in _callbacks(out)
    assert _callbacks(out)[INTERVAL_LOGGER]["interval"] == 7  # the hook's own interval wins
    assert out["ckpt_path"] == "last" and report.status_of("auto_resume") == ["approximated"]
    assert "init_scale" in next(e.note for e in report.entries if e.key == "fp16")


def test_report_format_lists_every_entry() -> None:
    _, report = _convert(CN_ITER)
    lines = report.format().splitlines()
    assert len(lines) == len(report.entries) + 4  # title, header, rule, summary
    counts = {s: sum(e.status == s for e in report.entries) for s in ("mapped", "approximated", "dropped")}
    assert lines[-1] == f"{counts['mapped']} mapped, {counts['approximated']} approximated, {counts['dropped']} dropped"
    assert any(line.startswith("runner ") and "| approximated |" in line for line in lines)


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.stem)
def test_converted_yaml_parses_with_the_cli(path: Path, tmp_path: Path, print_config: Callable[..., str]) -> None:
    out_path = tmp_path / f"{path.stem}.yaml"
    convert_file(path, out=out_path)
    printed = yaml.safe_load(print_config(out_path))
    expected, _ = _convert(path)
    assert printed["trainer"]["default_root_dir"] == expected["trainer"]["default_root_dir"]
    assert printed["model"]["model"]["class_path"] == expected["model"]["model"]["class_path"]
    assert [cb["class_path"] for cb in printed["trainer"]["callbacks"]] == [
        cb["class_path"] for cb in expected["trainer"]["callbacks"]]


def test_print_config_reports_cli_rejection(tmp_path: Path, print_config: Callable[..., str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer:\n  max_epochs: 1\n  no_such_flag: 3\nmodel:\n  model:\n"
                   "    class_path: detlight.models.centernet.CenterNet\n")
    with pytest.raises(ConfigError, match="rejected .*bad.yaml"):
        print_config(bad)


@pytest.mark.slow
def test_converted_config_trains_end_to_end(tmp_path: Path) -> None:
    """An mmdet-style config on the synthetic COCO set: convert, then `detlight fit` two iterations of one epoch."""
    from detlight.cli import main
    from detlight.data.synthetic import SyntheticCocoSpec, ensure_synthetic_coco

    paths = ensure_synthetic_coco(SyntheticCocoSpec(root=str(tmp_path / "data"), num_train=8, num_val=4))
    work_dir = tmp_path / "work"
    config = tmp_path / "centernet_synthetic.py"
    config.write_text(f"""_base_ = '{CN_1X}'
model = dict(bbox_head=dict(num_classes={len(paths.classes)}))
data = dict(samples_per_gpu=2, workers_per_gpu=0,
            train=dict(ann_file='{paths.train_ann}', img_prefix='{paths.train_img_prefix}'),
            val=dict(ann_file='{paths.val_ann}', img_prefix='{paths.val_img_prefix}', samples_per_gpu=2),
            test=dict(ann_file='{paths.val_ann}', img_prefix='{paths.val_img_prefix}'))
runner = dict(max_epochs=1)
log_config = dict(interval=1, hooks=[dict(type='TextLoggerHook'), dict(type='TensorboardLoggerHook')])
work_dir = '{work_dir}'
cudnn_benchmark = False
""")
    out = tmp_path / "converted.yaml"
    convert_file(config, out=out, cfg_options=["data.train.pipeline.3.img_scale=(64,64)"])
    main(["fit", "--config", str(out), "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1",
          "--trainer.enable_progress_bar=false", "--trainer.accelerator=cpu"])
    run_dir = work_dir / "version_0"  # each run of a converted config gets its own folder
    assert (run_dir / "checkpoints" / "epoch_1.ckpt").is_file()
    [json_log] = list(run_dir.glob("*.log.json"))
    records = [yaml.safe_load(line) for line in json_log.read_text().splitlines()[1:]]
    assert [r["iter"] for r in records if r.get("mode") == "train"] == [1, 2]  # log_config.interval=1
    assert list(run_dir.glob("events.out.tfevents.*"))


def test_standard_custom_hooks() -> None:
    cfg = {"custom_hooks": [{"type": "DistSamplerSeedHook"},
                            {"type": "CheckInvalidLossHook", "interval": 10, "priority": "VERY_LOW"},
                            {"type": "ExpMomentumEMAHook", "total_iter": 100, "resume_from": "x.pth", "priority": 49}]}
    out, report = convert_config(cfg, "x.py")
    assert out["trainer"]["callbacks"] == [  # sorted by the configs' priorities: 49 before VERY_LOW (90)
        {"class_path": EMA, "init_args": {"total_iter": 100, "momentum_schedule": "exp"}},
        {"class_path": "detlight.callbacks.check_invalid_loss.CheckInvalidLoss", "init_args": {"interval": 10}},
        {"class_path": "detlight.callbacks.preemption.Preemption"},  # every converted config gets it (LOWEST)
    ]
    [seed_hook] = [e for e in report.entries if e.key == "custom_hooks.0"]
    assert seed_hook.status == "dropped" and "set_epoch" in seed_hook.note
    assert report.status_of("custom_hooks.2.resume_from") == ["dropped"]
