"""The ``model`` and ``data`` sections of :mod:`detlight.convert.entry`: mmdet ``type`` names -> detlight classes.

Kept apart from the runtime-key mapping because this is the part that grows with every detector and dataset detlight
adds: extend :data:`MODEL_TARGETS` / :data:`DATASET_TARGETS` (and the constants next to them) to map a new one.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from detlight.convert.report import UNMAPPED_DATA as _UNMAPPED_DATA
from detlight.convert.report import dotted_get

if TYPE_CHECKING:
    from detlight.convert.report import ConversionReport

__all__ = ["DATASET_TARGETS", "MODEL_TARGETS", "convert_data", "convert_model"]

#: mmdet/mmdet3d detector kind -> (detlight class path, {init arg: dotted path in the mmdet ``model`` dict}).
MODEL_TARGETS: dict[str, tuple[str, dict[str, str]]] = {
    "CenterNet": ("detlight.models.centernet.CenterNet", {
        "num_classes": "bbox_head.num_classes",
        "topk": "test_cfg.topk",
        "max_per_img": "test_cfg.max_per_img",
        "loss_wh_weight": "bbox_head.loss_wh.loss_weight",
        "loss_offset_weight": "bbox_head.loss_offset.loss_weight",
    }),
    "PointPillars": ("detlight.models.pointpillars.PointPillars", {
        "num_classes": "bbox_head.num_classes",
        "point_cloud_range": "voxel_layer.point_cloud_range",
        "voxel_size": "voxel_layer.voxel_size",
        "pillar_channels": "voxel_encoder.feat_channels.0",
        "backbone_channels": "backbone.out_channels",
        "backbone_layers": "backbone.layer_nums",
        "backbone_strides": "backbone.layer_strides",
        "neck_channels": "neck.out_channels",
        "neck_strides": "neck.upsample_strides",
        "score_thr": "test_cfg.score_thr",
        "nms_pre": "test_cfg.nms_pre",
        "max_num": "test_cfg.max_num",
    }),
}
#: what differs between the mmdet detector and the detlight class it maps to (said in the report).
MODEL_NOTES = {
    "CenterNet": "swapped backbone: `{backbone.type}` -> detlight CenterNet's small built-in backbone; swapped neck: "
    "`{neck.type}` -> none",
    "PointPillars": "swapped head: `{bbox_head.type}` -> anchor-free CenterPoint-style head (heatmap peaks, no "
    "rotated NMS)",
}
#: mmdet dataset type -> (datamodule class path, split init args copied from the dataset dict).
DATASET_TARGETS: dict[str, tuple[str, tuple[str, ...]]] = {
    "CocoDataset": ("detlight.data.datamodule.DetDataModule", ("ann_file", "img_prefix", "classes", "filter_empty_gt")),
    "KittiDataset": ("detlight.data.datamodule3d.Det3DDataModule", ("data_root", "classes")),
}
#: the ``data`` of a config whose dataset type detlight cannot read (imported by the CLI only: it needs Lightning).
UNMAPPED_DATA = _UNMAPPED_DATA
#: mmdet CocoDataset subclasses whose annotations are COCO-format json: read by DetDataModule, and what differs.
COCO_LIKE = {
    "CityscapesDataset": "Cityscapes' own evaluation (cityscapesscripts) is not run; COCO mAP is reported",
    "Objects365V1Dataset": "the Objects365 category ids are taken from the json as for COCO",
    "Objects365V2Dataset": "the Objects365 category ids are taken from the json as for COCO",
    "DeepFashionDataset": "evaluated with COCO mAP as in mmdet",
    "LVISV1Dataset": "LVIS json read as COCO (image files from `coco_url`, as mmdet); LVIS's federated evaluation "
    "(APr/APc/APf, not-exhaustive and negative categories) is not run: COCO mAP is reported",
    "LVISV05Dataset": "LVIS json read as COCO; LVIS's federated evaluation (APr/APc/APf, not-exhaustive and negative "
    "categories) is not run: COCO mAP is reported",
    "LVISDataset": "LVIS v0.5 json read as COCO; LVIS's federated evaluation (APr/APc/APf, not-exhaustive and "
    "negative categories) is not run: COCO mAP is reported",
}
#: loader keys of ``data`` (and of ``data.<split>_dataloader``) -> datamodule init args.
LOADER_ARGS = {"samples_per_gpu": "samples_per_gpu", "imgs_per_gpu": "samples_per_gpu",
               "workers_per_gpu": "workers_per_gpu", "persistent_workers": "persistent_workers"}
VAL_LOADER_ARGS = {"samples_per_gpu": "val_samples_per_gpu"}
#: mmdet pipeline step -> {step arg: datamodule ``pipeline`` field}; steps mapped to {} need no setting.
PIPELINE_STEPS: dict[str, dict[str, str]] = {
    "LoadImageFromFile": {}, "LoadAnnotations": {"with_mask": "with_mask"}, "DefaultFormatBundle": {}, "Collect": {}, "ImageToTensor": {},
    "Resize": {"img_scale": "img_scale", "keep_ratio": "keep_ratio"},
    "RandomFlip": {"flip_ratio": "flip_ratio"},
    "Normalize": {"mean": "mean", "std": "std", "to_rgb": "to_rgb"},
    "Pad": {"size_divisor": "size_divisor"},
}
#: mmdet3d point pipeline step -> {step arg: ``augment`` field, or ``@point_cloud_range`` for the datamodule arg}.
PIPELINE_STEPS_3D: dict[str, dict[str, str]] = {
    "LoadPointsFromFile": {}, "LoadAnnotations3D": {}, "DefaultFormatBundle3D": {}, "Collect3D": {},
    "PointShuffle": {}, "ObjectRangeFilter": {"point_cloud_range": "@point_cloud_range"},
    "ObjectNoise": {"translation_std": "translation_std", "rot_range": "object_rot_range"},
    "RandomFlip3D": {"flip_ratio_bev_horizontal": "flip_ratio"},
    "GlobalRotScaleTrans": {"rot_range": "rot_range", "scale_ratio_range": "scale_range"},
    "PointsRangeFilter": {"point_cloud_range": "@point_cloud_range"},
}
#: pipeline step args that change nothing in detlight's fixed loaders.
HARMLESS_STEP_ARGS = {"type", "keys", "to_float32", "color_type", "with_bbox", "with_bbox_3d", "with_label_3d",
                      "class_names", "with_label", "file_client_args", "coord_type", "load_dim", "use_dim"}
#: dataset wrappers: the inner ``dataset`` is converted; what each wrapper did is reported (RepeatDataset is kept).
WRAPPERS = {
    "RepeatDataset": "",
    "ClassBalancedDataset": "detlight samples every image uniformly (no class-balanced oversampling)",
    "CBGSDataset": "detlight samples every frame uniformly (no class-balanced grouping and sampling)",
    "MultiImageMixDataset": "its multi-image pipeline (Mosaic, MixUp, RandomAffine, ...) is not reproduced; "
    "detlight's own pipeline reads the wrapped dataset",
}
#: what a datamodule section the user writes for an unknown dataset type should keep, per split.
SPLIT_HINT_KEYS = ("type", "data_root", "ann_file", "img_prefix", "seg_prefix", "pts_prefix", "classes")


class _Deferred:
    """Report lines of settings that land in the datamodule's init args: mapped if a data section is written."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, str]] = []

    def add(self, key: str, target: str, note: str = "") -> None:
        self.lines.append((key, target, note))

    def flush(self, report: ConversionReport, written: bool, why: str) -> None:
        for key, target, note in self.lines:
            if written:
                report.add(key, "mapped", target, note)
            else:
                report.add(key, "dropped", note=f"{why}; keep `{target.rsplit('.', 1)[-1]}` in your datamodule (the "
                           "commented `data:` block at the end of the YAML has the values)")


_get = dotted_get


class _Dotted(dict):  # type: ignore[type-arg]
    """``str.format_map`` over dotted paths of an mmdet dict: ``"{neck.type}"`` -> ``model["neck"]["type"]``."""

    def __init__(self, source: Mapping[str, Any]) -> None:
        super().__init__()
        self.source = source

    def __missing__(self, key: str) -> Any:
        return _DottedValue(self.source, key)


class _DottedValue:
    def __init__(self, source: Any, path: str) -> None:
        self.source, self.path = source, path

    def __getattr__(self, name: str) -> Any:
        return _DottedValue(self.source, f"{self.path}.{name}")

    def __format__(self, spec: str) -> str:
        return str(_get(self.source, self.path))


def _model_kind(model: Mapping[str, Any]) -> str | None:
    kind = model.get("type")
    if kind == "VoxelNet" and _get(model, "voxel_encoder.type") == "PillarFeatureNet":
        return "PointPillars"
    return kind if kind in MODEL_TARGETS else None


def convert_model(model: Any, report: ConversionReport) -> dict[str, Any] | None:
    """``model=dict(type=...)`` -> ``{class_path, init_args}`` for ``model.model``, or ``None`` if unknown."""
    kind = _model_kind(model) if isinstance(model, Mapping) else None
    if kind is None:
        name = model.get("type", "?") if isinstance(model, Mapping) else type(model).__name__
        report.add("model", "dropped", note=f"detector `{name}` has no detlight counterpart (known: CenterNet, "
                   "VoxelNet with PillarFeatureNet = PointPillars); point the YAML at your own class: "
                   "`model: {model: {class_path: my_pkg.MyDetector, init_args: {...}}}`")
        return None
    class_path, fields = MODEL_TARGETS[kind]
    init_args = {arg: _get(model, path) for arg, path in fields.items() if _get(model, path) is not None}
    note = MODEL_NOTES[kind].format_map(_Dotted(model))
    report.add("model", "approximated", f"model.model: {class_path}", f"{model['type']} -> detlight {kind}; {note}")
    used: dict[str, list[str]] = {path.split(".")[0]: [] for path in fields.values()}
    for arg, path in fields.items():
        if arg in init_args:
            used[path.split(".")[0]].append(path.split(".", 1)[1])
    for sub, value in model.items():
        if sub == "type":
            continue
        carried = used.get(sub)
        if carried:
            report.add(f"model.{sub}", "approximated", "model.model.init_args",
                       f"carried {', '.join(carried)}; everything else follows detlight's {kind}")
        else:
            what = value.get("type") if isinstance(value, Mapping) else None
            report.add(f"model.{sub}", "approximated", "(detlight default)",
                       f"detlight's {kind} builds its own {sub}" + (f"; mmdet `{what}` settings not carried" if what
                                                                   else ""))
    return {"class_path": class_path, "init_args": init_args} if init_args else {"class_path": class_path}


def convert_data(data: Any, report: ConversionReport, seed: int | None = None) -> dict[str, Any] | None:
    """``data=dict(samples_per_gpu, ..., train, val, test)`` -> ``{class_path, init_args}`` for the datamodule.

    A dataset type detlight cannot read gets :class:`~detlight.convert.unmapped_data.UnmappedDataModule` (whose
    construction stops ``fit`` naming the type; a partial section would silently train on detlight's synthetic set);
    its batch settings and paths are reported as dropped and written, commented out, at the end of the YAML as the
    start of the user's own datamodule section (``report.yaml_notes``).
    """
    if not isinstance(data, Mapping):
        report.add("data", "dropped", note=f"expected a dict, got {type(data).__name__}")
        return None
    init: dict[str, Any] = {}
    splits: dict[str, Any] = {}
    deferred = _Deferred()
    repeat = 1
    for key, value in data.items():
        if key in LOADER_ARGS:
            init[LOADER_ARGS[key]] = value
            deferred.add(f"data.{key}", f"data.init_args.{LOADER_ARGS[key]}",
                         "deprecated alias" if key == "imgs_per_gpu" else "per process, as under mmdet DDP")
        elif key.endswith("_dataloader") and isinstance(value, Mapping):
            _loader(key, value, init, report, deferred)
        elif key in ("train", "val", "test"):
            splits[key], times = _unwrap(f"data.{key}", value, report, deferred if key == "train" else None)
            repeat = times if key == "train" else repeat
        else:
            report.add(f"data.{key}", "dropped", note="no detlight datamodule setting")
    if repeat > 1:
        init["repeat_times"] = repeat
    kinds = {key: ds.get("type") if isinstance(ds, Mapping) else None for key, ds in splits.items()}
    unknown = [key for key, kind in kinds.items() if kind not in DATASET_TARGETS and kind not in COCO_LIKE]
    targets = {_target(kind) for key, kind in kinds.items() if kind is not None and key not in unknown}
    if unknown or len(targets) != 1:
        why = (f"dataset `{kinds[unknown[0]]}` has no detlight datamodule, so the `data:` section written is a "
               "placeholder (UnmappedDataModule: `fit` stops there, naming the type)" if unknown
               else "no train/val/test dataset is given, so no `data:` section is written")
        for key in unknown:
            report.add(f"data.{key}", "dropped", note=f"dataset `{kinds[key]}` has no detlight counterpart (known: "
                       f"{', '.join([*DATASET_TARGETS, *COCO_LIKE])}); write your own LightningDataModule and set "
                       "`data: {class_path: my_pkg.MyDataModule, init_args: {...}}` (start from the commented block at "
                       "the end of the YAML)")
        if targets and not unknown:
            report.add("data", "dropped", note=f"splits {sorted(kinds)} need different datamodules, so none is written")
        deferred.flush(report, False, why)
        report.yaml_notes.append(_data_hint(init, splits, why))
        if not unknown:
            return None
        kind = str(kinds[unknown[0]])
        message = (f"mmdet dataset `{kind}` (data.{unknown[0]}.type) has no detlight reader; detlight reads "
                   f"{', '.join([*DATASET_TARGETS, *COCO_LIKE])}. Convert the annotations to COCO json (mmdet's "
                   "tools/dataset_converters/ has converters, e.g. pascal_voc.py) and use `data: {class_path: "
                   "detlight.data.DetDataModule}`, or set `data: {class_path: my_pkg.MyDataModule}`. `detlight convert "
                   "<config>.py -o <config>.yaml` writes this config's paths and batch settings as a commented `data:` "
                   "block at the end of the YAML.")
        return {"class_path": UNMAPPED_DATA, "init_args": {"dataset_type": kind, "message": message}}
    deferred.flush(report, True, "")
    class_path = targets.pop()
    convert_split = _coco_split if class_path == DATASET_TARGETS["CocoDataset"][0] else _kitti_split
    for key, ds in splits.items():
        convert_split(key, ds, init, report)
    if seed is not None:
        init["seed"] = seed
    return {"class_path": class_path, "init_args": init}


def _target(kind: str) -> str:
    return DATASET_TARGETS[kind if kind in DATASET_TARGETS else "CocoDataset"][0]


def _data_hint(init: Mapping[str, Any], splits: Mapping[str, Any], why: str) -> str:
    """A commented ``data:`` block with the batch settings and split paths, for the user's own datamodule."""
    hint_init: dict[str, Any] = dict(init)
    for key, ds in splits.items():
        if isinstance(ds, Mapping):
            hint_init[key] = {k: ds[k] for k in SPLIT_HINT_KEYS if k in ds}
    block = yaml.safe_dump({"data": {"class_path": "my_pkg.MyDataModule", "init_args": hint_init}}, sort_keys=False,
                           default_flow_style=None, width=116)
    return f"{why}. Fill in and uncomment:\n" + block


def _loader(key: str, value: Mapping[str, Any], init: dict[str, Any], report: ConversionReport,
            deferred: _Deferred) -> None:
    table = LOADER_ARGS if key == "train_dataloader" else VAL_LOADER_ARGS if key == "val_dataloader" else {}
    for sub, item in value.items():
        if sub in table:
            init[table[sub]] = item
            deferred.add(f"data.{key}.{sub}", f"data.init_args.{table[sub]}")
        elif sub in LOADER_ARGS and key != "train_dataloader":
            report.add(f"data.{key}.{sub}", "approximated", f"data.init_args.{LOADER_ARGS[sub]}",
                       "detlight uses one worker setting for every loader; the train loader's value applies")
        else:
            report.add(f"data.{key}.{sub}", "dropped", note="no detlight loader setting")


def _split_common(key: str, ds: Mapping[str, Any], init: dict[str, Any], report: ConversionReport,
                  handled: tuple[str, ...]) -> None:
    if "samples_per_gpu" in ds:
        target = "samples_per_gpu" if key == "train" else "val_samples_per_gpu"
        init[target] = ds["samples_per_gpu"]
        report.add(f"data.{key}.samples_per_gpu", "mapped", f"data.init_args.{target}")
    for sub in ds:
        if sub not in (*handled, "type", "pipeline", "test_mode", "samples_per_gpu"):
            report.add(f"data.{key}.{sub}", "dropped", note="no detlight dataset setting")
    if key != "train" and "pipeline" in ds:
        report.add(f"data.{key}.pipeline", "approximated", "(built in)",
                   "val/test use the train settings without the random augmentation")


def _coco_split(key: str, ds: Mapping[str, Any], init: dict[str, Any], report: ConversionReport) -> None:
    fields = DATASET_TARGETS["CocoDataset"][1]
    if isinstance(ds.get("ann_file"), (list, tuple)):
        report.add(f"data.{key}.ann_file", "approximated", f"data.init_args.{key}.ann_file",
                   "a list of ann_files (ConcatDataset) is not supported; only the first is used")
        ds = {**ds, "ann_file": ds["ann_file"][0]}
    init[key] = {f: ds[f] for f in fields if f in ds}
    if ds.get("type") in COCO_LIKE:
        report.add(f"data.{key}", "approximated", f"data.init_args.{key}", f"{ds['type']} read as a COCO-format json "
                   f"({', '.join(init[key])}); {COCO_LIKE[ds['type']]}")
    else:
        report.add(f"data.{key}", "mapped", f"data.init_args.{key}", "CocoDataset: " + ", ".join(init[key]))
    if key == "train" and "pipeline" in ds:
        pipeline = _pipeline(f"data.{key}.pipeline", ds["pipeline"], PIPELINE_STEPS, report, "data.init_args.pipeline")
        if pipeline:
            init["pipeline"] = pipeline
    _split_common(key, ds, init, report, fields)


def _kitti_split(key: str, ds: Mapping[str, Any], init: dict[str, Any], report: ConversionReport) -> None:
    for field in ("data_root", "classes"):
        if field in ds and init.setdefault(field, ds[field]) != ds[field]:
            report.add(f"data.{key}.{field}", "dropped", note=f"differs from the train split's {init[field]!r}; "
                       "detlight uses one value for every split")
    stem = Path(str(ds.get("ann_file", ""))).stem
    name = stem[len("kitti_infos_"):] if stem.startswith("kitti_infos_") else None
    split_arg = f"{key}_split"
    if name:
        init[split_arg] = name
        report.add(f"data.{key}", "mapped", f"data.init_args.{split_arg}",
                   f"KittiDataset: frames of ImageSets/{name}.txt under data_root (raw KITTI files, not the .pkl infos)")
    else:
        report.add(f"data.{key}", "approximated", f"data.init_args.{split_arg}",
                   f"cannot tell the ImageSets list from ann_file {ds.get('ann_file')!r}; the default is used")
    if key == "train" and "pipeline" in ds:
        augment = _pipeline(f"data.{key}.pipeline", ds["pipeline"], PIPELINE_STEPS_3D, report, "data.init_args.augment")
        if "@point_cloud_range" in augment:
            init["point_cloud_range"] = augment.pop("@point_cloud_range")
        if any(step.get("type") == "ObjectNoise" for step in ds["pipeline"] if isinstance(step, Mapping)):
            augment["object_noise"] = True
        augment["shuffle"] = any(step.get("type") == "PointShuffle" for step in ds["pipeline"]
                                 if isinstance(step, Mapping))
        init["augment"] = augment
    _split_common(key, ds, init, report, ("data_root", "classes", "ann_file", "split", "pts_prefix",
                                           "modality", "box_type_3d"))
    for sub, why in (("split", "detlight reads data_root/training"), ("pts_prefix", "detlight reads velodyne/"),
                     ("modality", "LiDAR only"), ("box_type_3d", "LiDAR boxes")):
        if sub in ds:
            report.add(f"data.{key}.{sub}", "approximated" if sub == "pts_prefix" else "mapped", "(built in)", why)


def _unwrap(key: str, ds: Any, report: ConversionReport, deferred: _Deferred | None) -> tuple[Any, int]:
    """Strip dataset wrappers; return the inner dataset and the product of the ``RepeatDataset`` times."""
    times = 1
    while isinstance(ds, Mapping) and ds.get("type") in WRAPPERS:
        kind = ds["type"]
        extra = {k: v for k, v in ds.items() if k not in ("type", "dataset")}
        if kind == "RepeatDataset" and deferred is not None and isinstance(ds.get("times"), int):
            times *= ds["times"]
            deferred.add(f"{key}.times", "data.init_args.repeat_times", f"RepeatDataset(times={ds['times']}): "
                         "the train sampler draws each image that many times per epoch, as mmdet's sampler does")
        elif kind == "RepeatDataset":
            report.add(f"{key}.type", "dropped", note=f"RepeatDataset({extra}) around a {key.split('.')[-1]} set "
                       "repeats evaluation images; detlight evaluates each image once")
        else:
            shown = {k: v for k, v in extra.items() if k != "pipeline"}
            report.add(f"{key}.type", "dropped", note=f"{kind}({shown}) is not reproduced: {WRAPPERS[kind]}; the "
                       "wrapped dataset is used")
        ds = ds.get("dataset")
    return ds, times


def _pipeline(key: str, steps: Any, table: Mapping[str, Mapping[str, str]], report: ConversionReport,
              target: str) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    for i, step in enumerate(steps if isinstance(steps, list) else []):
        kind = str(step.get("type")) if isinstance(step, Mapping) else None
        if kind is None or kind not in table:
            report.add(f"{key}.{i}", "dropped", note=f"transform `{kind}` has no counterpart in detlight's pipeline")
            continue
        for arg, field in table[kind].items():
            if step.get(arg) is not None:
                settings[field] = step[arg]
        lost = sorted(set(step) - set(table[kind]) - HARMLESS_STEP_ARGS)
        carried = target if any(step.get(arg) is not None for arg in table[kind]) else "(built in)"
        scale = settings.get("img_scale")
        if kind == "Resize" and isinstance(scale, list) and scale and isinstance(scale[0], list):
            settings["img_scale"] = max(scale, key=lambda s: (min(s), max(s)))
            report.add(f"{key}.{i}", "approximated", f"{target}.img_scale",
                       f"multi-scale Resize: the loader resizes to the largest scale {settings['img_scale']}; a "
                       "torchvision model draws the train scale itself (`min_size`), other models train at that one "
                       "scale" + (f"; {lost} not carried" if lost else ""))
        elif lost:
            report.add(f"{key}.{i}", "approximated", carried,
                       f"{kind}: {lost} not carried (detlight's defaults apply)")
        else:
            report.add(f"{key}.{i}", "mapped", carried, kind)
    return settings
