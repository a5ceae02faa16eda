"""Tests for the safe mmcv config reader (``detlight.convert.config``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from detlight.convert.config import ConfigError, load_config, merge_config, parse_option_value

CONFIGS = Path(__file__).parent / "configs"
PP = CONFIGS / "pointpillars" / "hv_pointpillars_secfpn_6x8_160e_kitti-3d-3class.py"
PP_FP16 = CONFIGS / "pointpillars" / "hv_pointpillars_fp16_secfpn_6x8_160e_kitti-3d-3class.py"
CN_1X = CONFIGS / "centernet" / "centernet_tiny_1x_coco.py"
CN_ADAMW = CONFIGS / "centernet" / "centernet_tiny_adamw_cosine_coco.py"
CN_ITER = CONFIGS / "centernet" / "centernet_tiny_40k_iter_coco.py"


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# ------------------------------------------------------------------------------------------- real-style configs
def test_pointpillars_resolves_like_mmcv() -> None:
    """The values of docs/mmcv-semantics.md §5 (PointPillars KITTI 3-class, resolved by mmcv.Config.fromfile)."""
    cfg = load_config(PP)
    assert cfg["runner"] == {"type": "EpochBasedRunner", "max_epochs": 80}  # type from cyclic_40e, epochs from child
    assert cfg["optimizer"] == {"type": "AdamW", "lr": 0.001, "betas": (0.95, 0.99), "weight_decay": 0.01}
    assert cfg["optimizer_config"] == {"grad_clip": {"max_norm": 35, "norm_type": 2}}
    assert cfg["lr_config"] == {"policy": "cyclic", "target_ratio": (10, 1e-4), "cyclic_times": 1, "step_ratio_up": 0.4}
    assert cfg["momentum_config"]["target_ratio"] == (0.85 / 0.95, 1)
    assert cfg["evaluation"]["interval"] == 2 and cfg["evaluation"]["pipeline"][-1]["type"] == "Collect3D"
    assert [h["type"] for h in cfg["log_config"]["hooks"]] == ["TextLoggerHook", "TensorboardLoggerHook"]
    data = cfg["data"]
    assert (data["samples_per_gpu"], data["workers_per_gpu"]) == (6, 4)
    assert data["train"]["type"] == "RepeatDataset" and data["train"]["times"] == 2
    inner = data["train"]["dataset"]
    assert inner["ann_file"] == "data/kitti/kitti_infos_train.pkl" and inner["test_mode"] is False
    # the child's train_pipeline replaced the base one inside the wrapped dataset; its db_sampler is the child's
    assert inner["pipeline"][2]["db_sampler"]["sample_groups"] == {"Car": 15, "Pedestrian": 15, "Cyclist": 15}
    assert data["val"]["pipeline"][1]["type"] == "MultiScaleFlipAug3D" and data["val"]["test_mode"] is True
    assert cfg["model"]["type"] == "VoxelNet" and cfg["model"]["test_cfg"]["nms_thr"] == 0.01
    assert cfg["workflow"] == [("train", 1)] and cfg["work_dir"] is None
    assert "_base_" not in cfg and "custom_hooks" not in cfg


def test_nested_base_chain_and_float_loss_scale() -> None:
    cfg = load_config(PP_FP16)
    assert cfg["fp16"] == {"loss_scale": 512.0} and isinstance(cfg["fp16"]["loss_scale"], float)
    assert (cfg["data"]["samples_per_gpu"], cfg["data"]["workers_per_gpu"]) == (2, 2)
    assert cfg["data"]["train"]["times"] == 2  # still merged from two levels up
    assert cfg["optimizer"]["lr"] == 0.001


def test_mmdet_1x_schedule_and_child_overrides() -> None:
    cfg = load_config(CN_1X)
    assert cfg["optimizer"] == {"type": "SGD", "lr": 0.02, "momentum": 0.9, "weight_decay": 0.0001}
    assert cfg["lr_config"] == {"policy": "step", "warmup": "linear", "warmup_iters": 500, "warmup_ratio": 0.001,
                                "step": [8, 11]}
    assert cfg["runner"] == {"type": "EpochBasedRunner", "max_epochs": 12}
    assert cfg["work_dir"] == "./work_dirs/centernet_512"  # f-string over a name bound earlier
    assert cfg["custom_hooks"] == [{"type": "NumClassCheckHook"}]
    # child data dict merges key by key: the base's val ann_file survives next to the child's samples_per_gpu
    assert cfg["data"]["val"]["samples_per_gpu"] == 4
    assert cfg["data"]["val"]["ann_file"] == "data/coco/annotations/instances_val2017.json"
    assert cfg["data"]["train"]["pipeline"][2]["type"] == "PhotoMetricDistortion"
    assert cfg["data"]["train"]["pipeline"][5] == {"type": "Normalize", "mean": [123.675, 116.28, 103.53],
                                                   "std": [58.395, 57.12, 57.375], "to_rgb": True}


def test_delete_replaces_instead_of_merging() -> None:
    base = load_config(CN_1X)
    cfg = load_config(CN_ADAMW)
    assert base["optimizer"]["momentum"] == 0.9
    assert "momentum" not in cfg["optimizer"] and cfg["optimizer"]["type"] == "AdamW"
    assert cfg["optimizer"]["paramwise_cfg"]["custom_keys"] == {"backbone": {"lr_mult": 0.1}}
    assert "step" not in cfg["lr_config"] and cfg["lr_config"]["policy"] == "CosineAnnealing"
    assert cfg["runner"]["type"] == "EpochBasedRunner"  # no _delete_: the base type is kept
    iter_cfg = load_config(CN_ITER)
    assert iter_cfg["runner"] == {"type": "IterBasedRunner", "max_iters": 40000}  # no max_epochs left over
    assert iter_cfg["optimizer_config"] == {"type": "GradientCumulativeOptimizerHook", "cumulative_iters": 2}
    assert not any("_delete_" in str(v) for v in iter_cfg.values())


def test_base_references() -> None:
    cfg = load_config(CN_ADAMW)
    assert cfg["base_lr"] == pytest.approx(0.002)  # {{ _base_.optimizer.lr }} / 10
    assert cfg["runner"]["max_epochs"] == 24  # {{_base_.runner.max_epochs}} * 2
    assert [s["type"] for s in cfg["data"]["train"]["pipeline"]] == [
        "LoadImageFromFile", "LoadAnnotations", "PhotoMetricDistortion", "Resize", "Normalize"]
    assert cfg["name"] == "adamw_2e-03_x24"  # f-string with a format spec and a subscript


def test_base_reference_whole_value_and_list_index(tmp_path: Path) -> None:
    _write(tmp_path, "base.py", "pipe = [dict(type='A'), dict(type='B', k=(1, 2))]\nx = dict(y=dict(z=3))\n")
    child = _write(tmp_path, "child.py", "_base_ = 'base.py'\np = {{_base_.pipe}}\nk = {{ _base_.pipe.1.k }}\n"
                   "z = {{_base_.x.y.z}}\n")
    cfg = load_config(child)
    assert cfg["p"] == [{"type": "A"}, {"type": "B", "k": (1, 2)}] and cfg["k"] == (1, 2) and cfg["z"] == 3


# ------------------------------------------------------------------------------------------- --cfg-options
def test_cfg_options_with_list_index_and_value_parsing() -> None:
    cfg = load_config(CN_1X, ["data.train.pipeline.3.img_scale=(640,640)", "optimizer.lr=0.01",
                              "lr_config.step=[4,6]", "runner.max_epochs=3", "data.train.filter_empty_gt=False",
                              "load_from=None", "optimizer_config.grad_clip.max_norm=10"])
    assert cfg["data"]["train"]["pipeline"][3] == {"type": "Resize", "img_scale": (640, 640), "keep_ratio": True}
    assert cfg["data"]["train"]["pipeline"][2]["type"] == "PhotoMetricDistortion"  # other items untouched
    assert cfg["optimizer"]["lr"] == 0.01 and cfg["optimizer"]["momentum"] == 0.9
    assert cfg["lr_config"]["step"] == [4, 6] and cfg["runner"]["max_epochs"] == 3
    assert cfg["data"]["train"]["filter_empty_gt"] is False and cfg["load_from"] is None
    assert cfg["optimizer_config"]["grad_clip"] == {"max_norm": 10, "norm_type": 2}


def test_cfg_options_as_mapping_and_bad_index() -> None:
    cfg = load_config(CN_1X, {"data.train.pipeline.0.type": "LoadImage", "seed": 7})
    assert cfg["data"]["train"]["pipeline"][0]["type"] == "LoadImage" and cfg["seed"] == 7
    with pytest.raises(ConfigError, match="index `42` is out of range for a list of length 9"):
        load_config(CN_1X, ["data.train.pipeline.42.type=X"])
    with pytest.raises(ConfigError, match="expected `key=value`"):
        load_config(CN_1X, ["optimizer.lr"])


@pytest.mark.parametrize(("text", "expected"), [
    ("1", 1), ("-3", -3), ("1e-3", 1e-3), ("0.5", 0.5), ("True", True), ("false", False), ("None", None),
    ("none", "none"), ("SGD", "SGD"), ("'a b'", "ab"), ("[1,2]", [1, 2]), ("(1,2)", (1, 2)), ("1,2", [1, 2]),
    ("[(1,2),(3,[4,x])]", [(1, 2), (3, [4, "x"])]), ("[]", []), ("()", ()),
])
def test_option_values_parse_like_mmcv_dictaction(text: str, expected: object) -> None:
    value = parse_option_value(text)
    assert value == expected and type(value) is type(expected)


def test_unbalanced_option_value() -> None:
    with pytest.raises(ConfigError, match="unbalanced brackets"):
        parse_option_value("[1,(2]")


def test_merge_into_non_dict_needs_delete() -> None:
    with pytest.raises(ConfigError, match="add `_delete_=True`"):
        merge_config({"a": {"b": 1}}, {"a": 3})
    assert merge_config({"a": {"_delete_": True, "b": 1}}, {"a": 3}) == {"a": {"b": 1}}


# ------------------------------------------------------------------------------------------- evaluation rules
def test_allowed_expressions(tmp_path: Path) -> None:
    path = _write(tmp_path, "ok.py", """'''docstring'''
a = 2
b = a ** 3 - -1 + 7 // 2 + 7 % 4 + 1 / 4
name = 'r%d_%s' % (50, 'fpn') + '_{}x'.format(a) + f"_{a:03d}"
base = dict(x=1, y=[1, 2])
d = dict(base, z=3, **dict(w=4))
e = {**base, 'x': 9}
t = tuple([1, 2]) + (3,)
l = list((1, 2)) + [*t]
p, q = (1, 2)
sq = [i * i for i in l]
m = {k: v for k, v in [('a', 1)]}
s = l[1:3] + l[-1:]
base['y'][0] = 5
n: int = 3
n += 1
""")
    cfg = load_config(path)
    assert cfg["b"] == 8 + 1 + 3 + 3 + 0.25
    assert cfg["name"] == "r50_fpn_2x_002"
    assert cfg["d"] == {"x": 1, "y": [5, 2], "z": 3, "w": 4} and cfg["e"] == {"x": 9, "y": [5, 2]}
    assert cfg["t"] == (1, 2, 3) and cfg["l"] == [1, 2, 1, 2, 3] and (cfg["p"], cfg["q"]) == (1, 2)
    assert cfg["sq"] == [1, 4, 1, 4, 9] and cfg["m"] == {"a": 1} and cfg["s"] == [2, 1, 3]
    assert cfg["n"] == 4 and "i" not in cfg and "k" not in cfg


def test_predefined_variables(tmp_path: Path) -> None:
    path = _write(tmp_path, "sub/my_cfg.py", "work_dir = './work_dirs/{{ fileBasenameNoExtension }}'\n"
                  "here = '{{fileDirname}}'\n")
    cfg = load_config(path)
    assert cfg["work_dir"] == "./work_dirs/my_cfg" and cfg["here"] == str(path.parent)


def test_yaml_and_json_bases(tmp_path: Path) -> None:
    _write(tmp_path, "a.json", '{"optimizer": {"type": "SGD", "lr": 0.1}}')
    _write(tmp_path, "b.yaml", "_base_: a.json\nrunner: {type: EpochBasedRunner, max_epochs: 2}\n")
    cfg = load_config(_write(tmp_path, "c.py", "_base_ = ['b.yaml']\noptimizer = dict(lr=0.2)\n"))
    assert cfg == {"optimizer": {"type": "SGD", "lr": 0.2}, "runner": {"type": "EpochBasedRunner", "max_epochs": 2}}


@pytest.mark.parametrize(("files", "match"), [
    ({"c.py": "_base_ = './missing.py'\n"}, r"missing.py \(a `_base_` of .*c.py\) does not exist"),
    ({"c.py": "_base_ = './d.py'\n", "d.py": "_base_ = './c.py'\n"}, "cyclic"),
    ({"c.py": "_base_ = ['a.py', 'b.py']\n", "a.py": "x = 1\n", "b.py": "x = 2\n"}, r"\['x'\].*more than one"),
    ({"c.py": "_base_ = 'a.py'\ny = x + 1\n", "a.py": "x = 1\n"}, r"c.py:2: name `x` is not defined.*_base_.x"),
    ({"c.py": "_base_ = 'a.py'\ny = {{_base_.nope}}\n", "a.py": "x = 1\n"}, r"c.py:2: .*`nope` is not in.*\['x'\]"),
    ({"c.py": "_base_ = 'mmdet::_base_/default_runtime.py'\n"}, "installed package"),
    ({"c.py": "x = (1,\n"}, "c.py:1: syntax error"),
    ({"c.py": "x = 1 / 0\n"}, "c.py:1: evaluating `1 / 0` failed: ZeroDivisionError"),
])
def test_errors_name_file_line_and_cause(tmp_path: Path, files: dict[str, str], match: str) -> None:
    for name, text in files.items():
        _write(tmp_path, name, text)
    with pytest.raises(ConfigError, match=match):
        load_config(tmp_path / "c.py")


UNSAFE = {
    "import": "import os\nos.system('touch {marker}')\n",
    "from_import": "from os import system\nsystem('touch {marker}')\n",
    "dunder_import": "__import__('os').system('touch {marker}')\n",
    "open": "open('{marker}', 'w').write('x')\n",
    "open_in_value": "log = open('{marker}', 'w')\n",
    "open_in_dict": "d = dict(f=open('{marker}', 'w'))\n",
    "exec": "exec(\"open('{marker}', 'w')\")\n",
    "eval": "x = eval(\"open('{marker}', 'w')\")\n",
    "lambda": "x = (lambda: open('{marker}', 'w'))()\n",
    "comprehension_call": "x = [open('{marker}', 'w') for _ in [1]]\n",
    "if": "if True:\n    open('{marker}', 'w')\n",
    "for": "for _ in [1]:\n    open('{marker}', 'w')\n",
    "with": "with open('{marker}', 'w'):\n    pass\n",
    "def": "def f():\n    open('{marker}', 'w')\nx = f()\n",
    "class": "class A:\n    open('{marker}', 'w')\n",
    "attribute": "x = ''.__class__.__mro__[1].__subclasses__()\nopen('{marker}', 'w')\n",
    "method_call": "x = [1].append(open('{marker}', 'w'))\n",
    "format_attribute": "x = '{{0.__class__}}'.format(1)\nopen('{marker}', 'w')\n",
    "walrus": "x = (y := open('{marker}', 'w'))\n",
    "shadowed_dict": "dict = 'str'\nx = dict(f='{marker}')\n",
    "huge_power": "x = 9 ** 9 ** 9\nopen('{marker}', 'w')\n",
    "huge_repeat": "x = 'a' * 10 ** 9\nopen('{marker}', 'w')\n",
    "huge_width": "x = '{{:>999999999}}'.format(1)\nopen('{marker}', 'w')\n",
}


@pytest.mark.parametrize("snippet", sorted(UNSAFE))
def test_unsafe_code_is_refused_without_running(tmp_path: Path, snippet: str) -> None:
    marker = tmp_path / "MARKER"
    path = _write(tmp_path, "evil.py", "a = 1\nb = dict(x=a)\n" + UNSAFE[snippet].format(marker=marker))
    with pytest.raises(ConfigError, match=r"evil\.py:\d+: .*not allowed.*Nothing in the file was executed") as err:
        load_config(path)
    assert ":3:" in str(err.value) or ":4:" in str(err.value)  # the offending line, after two valid ones
    assert not marker.exists()


@pytest.mark.parametrize("snippet", ["import", "dunder_import", "open"])
def test_unsafe_snippets_do_create_the_marker_when_executed(tmp_path: Path, snippet: str) -> None:
    """Control: the refused snippets are live code (running them with Python creates the marker)."""
    marker = tmp_path / "MARKER"
    path = _write(tmp_path, "evil.py", UNSAFE[snippet].format(marker=marker))
    subprocess.run([sys.executable, str(path)], check=True, timeout=30)
    assert marker.exists()


def test_unsafe_base_file_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    _write(tmp_path, "base.py", f"import os\nos.system('touch {marker}')\n")
    child = _write(tmp_path, "child.py", "_base_ = './base.py'\nx = 1\n")
    with pytest.raises(ConfigError, match=r"base\.py:1: an import"):
        load_config(child)
    assert not marker.exists()
