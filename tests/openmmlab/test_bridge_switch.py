"""The OpenMMLab bridge's switch, fallback and pure helpers: no mmcv / mmdet needed (default suite)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from detlight.exceptions import CheckpointError, ConfigError, DatasetError
from detlight.openmmlab import switch
from detlight.openmmlab.switch import parse_mode, pop_cli_switch, resolve_bridge, set_cli_mode

CONFIG = """
model = dict(type='RetinaNet', backbone=dict(type='ResNet', depth=18, init_cfg=None),
             bbox_head=dict(type='RetinaHead', num_classes=4, in_channels=32))
data = dict(samples_per_gpu=2, workers_per_gpu=0,
            train=dict(type='CocoDataset', ann_file='a.json', img_prefix='imgs/', pipeline=[]),
            val=dict(type='CocoDataset', ann_file='b.json', img_prefix='imgs/', pipeline=[]))
evaluation = dict(interval=1, metric='bbox', classwise=True)
optimizer = dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0001)
optimizer_config = dict(grad_clip=None)
lr_config = dict(policy='step', step=[8, 11])
runner = dict(type='EpochBasedRunner', max_epochs=12)
custom_imports = dict(imports=['my_pkg.heads'])
custom_hooks = [dict(type='MyHook')]
"""


@pytest.fixture(autouse=True)
def _no_cli_mode(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(switch.ENV_VAR, raising=False)
    set_cli_mode(None)
    yield
    set_cli_mode(None)


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend mmcv / mmdet are installed (the conversion itself imports neither)."""
    monkeypatch.setattr(switch, "missing_packages", lambda scope: [])


@pytest.fixture
def absent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(switch, "missing_packages", lambda scope: ["mmcv", "mmdet"])


def test_parse_mode_and_cli_option() -> None:
    assert [parse_mode(v, "x") for v in ("true", "1", "False", "off", "auto", True, False)] == \
        ["true", "true", "false", "false", "auto", "true", "false"]
    with pytest.raises(ConfigError, match=r"`--openmmlab` must be true, false or auto.*'maybe'"):
        parse_mode("maybe", "--openmmlab")
    assert pop_cli_switch(["fit", "--openmmlab=false", "--config", "a.py"]) == ["fit", "--config", "a.py"]
    assert switch._cli_mode == "false"
    with pytest.raises(ConfigError, match="needs a value"):
        pop_cli_switch(["fit", "--openmmlab"])


def test_auto_uses_openmmlab_only_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(switch, "missing_packages", lambda scope: [])
    assert resolve_bridge({"model": {}}) is True
    monkeypatch.setattr(switch, "missing_packages", lambda scope: ["mmdet"])
    assert resolve_bridge({"model": {}}) is False


def test_order_cli_then_config_key_then_environment(installed: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(switch.ENV_VAR, "0")
    assert resolve_bridge({}) is False
    assert resolve_bridge({"openmmlab": True}) is True  # the config's own key wins over the environment
    set_cli_mode("false")
    assert resolve_bridge({"openmmlab": True}) is False  # the command line wins over both


def test_true_without_mmdet_says_how_to_install(absent: None) -> None:
    set_cli_mode("true")
    with pytest.raises(ConfigError, match=r"--openmmlab asks for OpenMMLab.*mmcv, mmdet are not installed.*"
                                          r"make openmmlab.*--openmmlab false"):
        resolve_bridge({"model": {}})


def test_3d_config_needs_mmdet3d(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []
    monkeypatch.setattr(switch, "missing_packages", lambda scope: seen.append(scope) or [])
    resolve_bridge({"model": {"type": "VoxelNet", "voxel_layer": {}}, "point_cloud_range": [0, 0, 0, 1, 1, 1]})
    assert seen == ["mmdet3d"]


def test_missing_packages_asks_importlib_without_importing() -> None:
    assert set(switch.missing_packages("mmdet3d")) <= {"mmcv", "mmdet", "mmdet3d"}
    assert "mmdet3d" not in switch.missing_packages("mmdet")


def _convert(tmp_path: Path, text: str = CONFIG):
    from detlight.convert.entry import convert_to_yaml

    path = tmp_path / "retinanet_tiny.py"
    path.write_text(text)
    return convert_to_yaml(path)


def test_without_mmdet_conversion_is_todays(absent: None, tmp_path: Path) -> None:
    from detlight.convert.config import load_config
    from detlight.convert.converter import convert_config

    text, report = _convert(tmp_path)
    cfg = load_config(tmp_path / "retinanet_tiny.py")
    today, today_report = convert_config(cfg, str(tmp_path / "retinanet_tiny.py"))
    assert "detlight.openmmlab" not in text
    assert today["model"]["model"]["class_path"] in text
    assert [(e.key, e.status) for e in report.entries] == [(e.key, e.status) for e in today_report.entries]


def test_bridged_yaml_carries_the_configs_own_dicts(installed: None, tmp_path: Path) -> None:
    import yaml

    text, report = _convert(tmp_path)
    out = yaml.safe_load(text)
    model = out["model"]["model"]
    assert model["class_path"] == "detlight.openmmlab.openmmlab_detector"
    assert model["init_args"]["model"]["bbox_head"] == {"type": "RetinaHead", "num_classes": 4, "in_channels": 32}
    assert model["init_args"]["custom_imports"] == {"imports": ["my_pkg.heads"]}
    assert out["data"]["class_path"] == "detlight.openmmlab.OpenMMLabDataModule"
    assert out["data"]["init_args"]["data"]["train"]["ann_file"] == "a.json"
    assert out["model"]["evaluator"] == {"class_path": "detlight.openmmlab.DatasetEvaluator",
                                         "init_args": {"metric": "bbox", "eval_kwargs": {"classwise": True}}}
    hooks = [cb for cb in out["trainer"]["callbacks"] if cb["class_path"].endswith("MMCVHooks")]
    assert hooks and hooks[0]["init_args"]["custom_imports"] == ["my_pkg.heads"]
    exact = {e.key: e for e in report.entries if e.note.startswith("exact")}
    assert {"model.type", "model.backbone", "model.bbox_head", "data.train", "data.val", "evaluation.metric",
            "custom_imports"} <= set(exact)
    assert all(e.status == "mapped" for e in exact.values())
    assert not report.unbacked(out)
    assert not [e for e in report.entries if e.key.startswith("model") and e.status != "mapped"]


def test_config_key_false_keeps_the_look_alike(installed: None, tmp_path: Path) -> None:
    text, _ = _convert(tmp_path, CONFIG + "\nopenmmlab = False\n")
    assert "detlight.openmmlab" not in text


def test_cli_rejects_a_bad_switch_value_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from detlight.cli import main

    with pytest.raises(SystemExit) as info:
        main(["convert", "x.py", "--openmmlab", "sometimes"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("detlight: error: `--openmmlab` must be true, false or auto") and "\n" not in err


# ---------------------------------------------------------------------------------------------------- pure helpers
def test_remote_and_missing_init_checkpoints_name_their_key(tmp_path: Path) -> None:
    from detlight.openmmlab.detector import check_init_checkpoints, remote_checkpoints

    model = {"backbone": {"init_cfg": {"type": "Pretrained", "checkpoint": "open-mmlab://resnet50_caffe"}},
             "neck": [{"pretrained": "https://x/y.pth"}]}
    assert list(remote_checkpoints(model)) == [("model.backbone.init_cfg.checkpoint", "open-mmlab://resnet50_caffe"),
                                               ("model.neck.0.pretrained", "https://x/y.pth")]
    with pytest.raises(CheckpointError, match=r"^`model.backbone.init_cfg.checkpoint` is 'open-mmlab://resnet50_caffe'"
                                              r": detlight does not download weights, the files must be local"):
        check_init_checkpoints(model)
    with pytest.raises(CheckpointError, match=r"`model.backbone.pretrained` checkpoint not found: .*nope.pth"):
        check_init_checkpoints({"backbone": {"pretrained": str(tmp_path / "nope.pth")}})
    (tmp_path / "w.pth").write_bytes(b"")
    check_init_checkpoints({"backbone": {"init_cfg": {"checkpoint": str(tmp_path / "w.pth")}}})


def test_mmcv_containers_restores_pairs_as_tuples() -> None:
    from detlight.openmmlab.detector import mmcv_containers

    cfg = {"img_scale": [[1333, 640], [1333, 800]], "max_voxels": [16000, 40000], "flag": [True, False],
           "ratios": [0.5, 1.0, 2.0], "keys": ["img", "gt"]}
    assert mmcv_containers(cfg) == {"img_scale": [(1333, 640), (1333, 800)], "max_voxels": (16000, 40000),
                                    "flag": [True, False], "ratios": [0.5, 1.0, 2.0], "keys": ["img", "gt"]}


def test_group_sampler_batches_stay_in_one_group_and_ranks_split_the_epoch() -> None:
    from detlight.openmmlab.data import GroupSampler

    flag = np.array([0] * 5 + [1] * 8)
    world, spg = 2, 3
    samplers = [GroupSampler(flag, spg, seed=1, rank=r, world_size=world) for r in range(world)]
    parts = [list(s) for s in samplers]
    assert all(len(p) == len(samplers[0]) == 9 for p in parts)  # ceil(5/6)*3 + ceil(8/6)*3
    for part in parts:
        for i in range(0, len(part), spg):
            assert len({int(flag[j]) for j in part[i:i + spg]}) == 1
    assert set(parts[0]) | set(parts[1]) == set(range(13))
    again = GroupSampler(flag, spg, seed=1, rank=0, world_size=world)
    assert list(again) == parts[0]
    again.set_epoch(1)
    assert list(again) != parts[0]
    again.skip = 4
    assert list(again) == again.indices()[4:]


class FakeContainer:
    """Duck-typed mmcv DataContainer."""

    def __init__(self, data, stack: bool = False, cpu_only: bool = False) -> None:
        self.data, self.stack, self.cpu_only = data, stack, cpu_only


def test_unwrap_batch_scatters_like_mmdataparallel() -> None:
    from detlight.openmmlab.data import unwrap_batch

    img = torch.zeros(2, 3, 4, 4)
    metas = [{"filename": "a"}, {"filename": "b"}]
    boxes = [torch.zeros(1, 4), torch.zeros(2, 4)]
    train = unwrap_batch({"img": FakeContainer([img], stack=True), "img_metas": FakeContainer([metas], cpu_only=True),
                          "gt_bboxes": FakeContainer([boxes])}, torch.device("cpu"))
    assert train["img"] is img and train["img_metas"] is metas and train["gt_bboxes"] == boxes
    test = unwrap_batch({"img": [FakeContainer([img], stack=True)], "img_metas": [FakeContainer([metas], cpu_only=True)]})
    assert test["img"] is img and test["img_metas"] is metas  # one augmentation: flattened to the train layout
    two = unwrap_batch({"img": [img, img], "img_metas": [FakeContainer([metas], cpu_only=True)] * 2})
    assert isinstance(two["img"], list) and len(two["img_metas"]) == 2


def test_missing_dataset_files_name_path_and_key(tmp_path: Path) -> None:
    from detlight.openmmlab.data import check_dataset_files

    (tmp_path / "ann.json").write_text("{}")
    (tmp_path / "imgs").mkdir()
    check_dataset_files({"ann_file": "ann.json", "img_prefix": "imgs/", "data_root": str(tmp_path)}, "data.train")
    with pytest.raises(DatasetError, match=r"`data.train.dataset.ann_file`: annotation file not found: .*gone.json"):
        check_dataset_files({"type": "RepeatDataset", "dataset": {"ann_file": str(tmp_path / "gone.json")}},
                            "data.train")
    with pytest.raises(DatasetError, match=r"`data.val.img_prefix`: image folder not found"):
        check_dataset_files({"ann_file": str(tmp_path / "ann.json"), "img_prefix": str(tmp_path / "no")}, "data.val")


def test_ordered_results_drop_padding_and_fill_the_unpredicted() -> None:
    from detlight.openmmlab.evaluator import empty_like, ordered_results

    a, b = [np.ones((2, 5), np.float32)], [np.ones((1, 5), np.float32)]
    results, missing = ordered_results([(1, b), (0, a), (0, a)], 3)
    assert missing == 1 and results[0] is a and results[1] is b and results[2][0].shape == (0, 5)
    mask = ([np.ones((1, 5))], [[object()]])
    assert empty_like(mask)[0][0].shape == (0, 5) and empty_like(mask)[1] == [[]]


def test_custom_imports_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from detlight.openmmlab.imports import CustomImportError, import_custom_modules, registry_errors

    (tmp_path / "bridge_ok_mod.py").write_text("X = 1\n")
    (tmp_path / "bridge_bad_mod.py").write_text("import not_a_module_anywhere\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    caplog.set_level(logging.INFO, logger="detlight.openmmlab")
    assert import_custom_modules({"imports": ["bridge_ok_mod"]}) == ["bridge_ok_mod"]
    assert "custom_imports: imported bridge_ok_mod" in caplog.text
    with pytest.raises(CustomImportError, match=r"importing `bridge_bad_mod` failed: ModuleNotFoundError"):
        import_custom_modules(["bridge_ok_mod", "bridge_bad_mod"])
    assert import_custom_modules({"imports": ["bridge_bad_mod"], "allow_failed_imports": True}) == []
    with pytest.raises(ConfigError, match=r"RetinaNet: MyHead is not in the models registry\. If `MyHead` is your own "
                                          r"class, decorate it with @MODELS.register_module\(\).*now: \['a.b'\]"):
        with registry_errors("building `model`", ["a.b"]):
            raise KeyError("RetinaNet: MyHead is not in the models registry")
    with pytest.raises(KeyError, match="other"):
        with registry_errors("building `model`"):
            raise KeyError("other")


def test_a_val_workflow_phase_is_reported_and_not_run(installed: None, tmp_path: Path) -> None:
    import yaml

    text, report = _convert(tmp_path, CONFIG + "\nworkflow = [('train', 1), ('val', 1)]\n")
    callbacks = [cb["class_path"] for cb in yaml.safe_load(text)["trainer"]["callbacks"]]
    assert not any(path.endswith("Workflow") for path in callbacks)
    [entry] = [e for e in report.entries if e.key == "workflow"]
    assert entry.status == "approximated" and "not run for OpenMMLab datasets" in entry.note


def test_a_url_load_from_names_the_key_in_one_line() -> None:
    from torch import nn

    from detlight.module import load_weights

    with pytest.raises(CheckpointError, match=r"^`load_from` is 'https://download.openmmlab.com/x.pth': detlight does "
                                              r"not download checkpoints, the file must be local"):
        load_weights(nn.Linear(1, 1), "https://download.openmmlab.com/x.pth")


def test_tuples_of_the_py_config_survive_the_yaml_round_trip_exactly() -> None:
    """SECOND's ``SparseEncoder(order=(...))`` needs a tuple and PartA2's ``neg_piece_fractions`` a list of two
    numbers: the bridged YAML records the config's tuple paths, and only those come back as tuples."""
    import yaml

    from detlight.openmmlab.detector import mmcv_containers, tuple_paths

    section = {"model": {"middle_encoder": {"order": ("conv", "norm", "act"), "sparse_shape": [41, 1600, 1408]},
                         "voxel_layer": {"max_voxels": (16000, 40000), "voxel_size": [0.05, 0.05, 0.1]},
                         "train_cfg": {"sampler": {"neg_piece_fractions": [0.8, 0.2]}},
                         "pipeline": [{"img_scale": [(1333, 640), (1333, 800)]}]}}
    paths = tuple_paths(section)
    assert paths == ["model.middle_encoder.order", "model.voxel_layer.max_voxels", "model.pipeline.0.img_scale.0",
                     "model.pipeline.0.img_scale.1"]
    read_back = yaml.safe_load(yaml.safe_dump(mmcv_containers(section, tuples=[])))  # what YAML gives: lists only
    assert mmcv_containers(read_back, tuples=paths) == section
    guessed = mmcv_containers(read_back)  # without the record, pairs of numbers are guessed to be tuples
    assert guessed["model"]["train_cfg"]["sampler"]["neg_piece_fractions"] == (0.8, 0.2)
    assert guessed["model"]["middle_encoder"]["order"] == ["conv", "norm", "act"]
