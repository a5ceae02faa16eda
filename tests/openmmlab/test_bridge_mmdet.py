"""mmdet's own RetinaNet trained by ``detlight fit`` on an mmdet ``.py`` config (needs the OpenMMLab venv).

Run: ``.venv-openmmlab/bin/python -m pytest -q -m openmmlab tests/openmmlab/test_bridge_mmdet.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import detlight.openmmlab

pytestmark = pytest.mark.openmmlab

mmdet = pytest.importorskip("mmdet")
detlight.openmmlab.install_ops()  # before anything imports mmcv.ops


@pytest.fixture(scope="module")
def retina_run(tmp_path_factory: pytest.TempPathFactory):
    """One ``detlight fit`` of the tiny RetinaNet config: 2 iterations, then 1 val step over the 2 val images."""
    from detlight.api import fit
    from detlight.openmmlab.samples import write_config

    tmp = tmp_path_factory.mktemp("retina")
    config = write_config(tmp / "retina_tiny.py", "retinanet", root=tmp / "data", num_train=4, num_val=2,
                          image_size=64, samples_per_gpu=2, val_samples_per_gpu=2)
    run = fit(str(config), overrides={"trainer.default_root_dir": str(tmp / "work"), "trainer.max_steps": 2,
                                      "trainer.enable_progress_bar": False})
    return config, tmp, run


def test_fit_trains_mmdets_own_detector_and_evaluates_with_the_dataset(retina_run) -> None:
    from mmdet.datasets import CocoDataset
    from mmdet.models.detectors import RetinaNet

    from detlight.openmmlab import DatasetEvaluator, OpenMMLabDataModule

    _, tmp, run = retina_run
    trainer, module = run
    assert isinstance(module.model, RetinaNet)  # mmdet's class itself, not a look-alike
    assert isinstance(trainer.datamodule, OpenMMLabDataModule)
    assert isinstance(trainer.datamodule.dataset("train"), CocoDataset)
    assert trainer.global_step == 2
    assert isinstance(module.evaluator, DatasetEvaluator) and isinstance(module.evaluator.dataset, CocoDataset)
    # mmdet's CocoDataset.evaluate keys, numbers only (bbox_mAP_copypaste is a string and only logged)
    assert list(module.eval_results)[:3] == ["bbox_mAP", "bbox_mAP_50", "bbox_mAP_75"]
    assert "bbox_mAP_copypaste" not in module.eval_results
    assert all(-1.0 <= v <= 1.0 for v in module.eval_results.values())
    assert "val/bbox_mAP" in trainer.callback_metrics
    # mmdet's loss keys reach the text/json log
    logs = list(Path(trainer.default_root_dir).rglob("*.log.json"))
    assert logs, "TextLogger wrote no json log"
    lines = [json.loads(line) for line in logs[0].read_text().splitlines() if line.strip()]
    train_lines = [line for line in lines if line.get("mode") == "train"]
    assert train_lines and {"loss_cls", "loss_bbox", "loss"} <= set(train_lines[0])
    val_lines = [line for line in lines if line.get("mode") == "val"]
    assert val_lines and "bbox_mAP" in val_lines[-1]


def test_detlight_checkpoint_exports_a_pth_that_init_detector_loads(retina_run) -> None:
    from mmdet.apis import init_detector

    from detlight.openmmlab import export_pth

    config, tmp, run = retina_run
    trainer, module = run
    ckpt = next(Path(trainer.default_root_dir).rglob("epoch_1.ckpt"))
    pth = export_pth(str(ckpt), str(tmp / "exported.pth"), classes=trainer.datamodule.CLASSES)
    detector = init_detector(str(config), pth, device="cpu")
    ours = {k: v for k, v in module.model.state_dict().items()}
    theirs = detector.state_dict()
    assert set(ours) == set(theirs)
    for key, value in ours.items():
        assert torch.equal(value.cpu(), theirs[key]), key
    assert detector.CLASSES == list(trainer.datamodule.CLASSES)
    # and the .pth loads back as load_from (mmdet's keys, no prefix)
    from mmcv import Config

    from detlight.module import load_weights
    from detlight.openmmlab.detector import openmmlab_detector

    cfg = Config.fromfile(str(config))
    fresh = openmmlab_detector(cfg.model.to_dict())
    assert not torch.equal(fresh.bbox_head.retina_cls.weight, module.model.bbox_head.retina_cls.weight)
    load_weights(fresh, pth)
    assert torch.equal(fresh.bbox_head.retina_cls.weight, module.model.bbox_head.retina_cls.weight)


def test_resume_from_an_mmcv_pth_restores_weights_optimizer_and_epoch(retina_run, tmp_path: Path) -> None:
    from detlight.api import fit
    from detlight.openmmlab import export_pth

    config, tmp, run = retina_run
    trainer, module = run
    ckpt = next(Path(trainer.default_root_dir).rglob("epoch_1.ckpt"))
    pth = export_pth(str(ckpt), str(tmp_path / "epoch_1.pth"))
    text = Path(config).read_text().replace("resume_from = None", f"resume_from = {pth!r}").replace(
        "max_epochs=1", "max_epochs=2")
    resumed_cfg = tmp_path / "resume.py"
    resumed_cfg.write_text(text)
    saved = torch.load(pth, weights_only=True)
    assert saved["meta"]["epoch"] == 1 and saved["optimizer"]["state"]
    again = fit(str(resumed_cfg), overrides={"trainer.default_root_dir": str(tmp_path / "work"),
                                             "trainer.limit_train_batches": 0, "trainer.limit_val_batches": 0,
                                             "trainer.enable_progress_bar": False})
    resumed_trainer, resumed = again
    assert resumed_trainer.current_epoch >= 1  # epoch 1 was done: training went on from epoch 2
    for key, value in module.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    momentum = [s["momentum_buffer"] for s in resumed_trainer.optimizers[0].state.values() if "momentum_buffer" in s]
    assert momentum and any(float(m.abs().sum()) > 0 for m in momentum)


def test_group_sampler_matches_mmdets_distributed_group_sampler() -> None:
    from mmdet.datasets.samplers import DistributedGroupSampler

    from detlight.openmmlab.data import GroupSampler

    rng = np.random.default_rng(0)

    class Flags:
        def __init__(self, flag: np.ndarray) -> None:
            self.flag = flag

        def __len__(self) -> int:
            return len(self.flag)

    for size, spg, world in ((7, 2, 1), (13, 3, 2), (10, 2, 4), (5, 1, 3)):
        flag = rng.integers(0, 2, size).astype(np.uint8)
        for rank in range(world):
            for epoch in (0, 3):
                theirs = DistributedGroupSampler(Flags(flag), spg, num_replicas=world, rank=rank, seed=5)
                ours = GroupSampler(flag, spg, seed=5, rank=rank, world_size=world)
                theirs.set_epoch(epoch)
                ours.set_epoch(epoch)
                assert list(ours) == list(theirs) and len(ours) == len(theirs), (size, spg, world, rank, epoch)


def _write(tmp: Path, text: str) -> Path:
    path = tmp / "cfg.py"
    path.write_text(text)
    return path


def test_unregistered_type_names_the_registry_and_custom_imports(tmp_path: Path) -> None:
    from detlight.api import fit
    from detlight.exceptions import ConfigError
    from detlight.openmmlab.samples import write_config

    config = write_config(tmp_path / "c.py", root=tmp_path / "data")
    _write(tmp_path, config.read_text().replace("type='RetinaHead'", "type='MyHead'"))
    with pytest.raises(ConfigError, match=r"MyHead is not in the models registry.*custom_imports"):
        fit(str(tmp_path / "cfg.py"), overrides={"trainer.default_root_dir": str(tmp_path / "w")})


def test_custom_imports_register_the_users_head_and_hook_and_a_failing_module_is_named(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from detlight.api import fit
    from detlight.openmmlab.imports import CustomImportError
    from detlight.openmmlab.samples import write_config

    pkg = tmp_path / "userpkg_bridge"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "heads.py").write_text(
        "from mmdet.models import HEADS\nfrom mmdet.models.dense_heads import RetinaHead\n\n"
        "@HEADS.register_module()\nclass BridgeTestHead(RetinaHead):\n    calls = 0\n\n"
        "    def forward_train(self, *args, **kwargs):\n        type(self).calls += 1\n"
        "        return super().forward_train(*args, **kwargs)\n\n"
        "from mmcv.runner import HOOKS, Hook\n\n"
        "@HOOKS.register_module()\nclass BridgeTestHook(Hook):\n    seen = []\n\n"
        "    def after_train_iter(self, runner):\n        type(self).seen.append(runner.model.module)\n")
    (pkg / "broken.py").write_text("raise RuntimeError('boom in user code')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    config = write_config(tmp_path / "c.py", root=tmp_path / "data")
    text = config.read_text().replace("type='RetinaHead'", "type='BridgeTestHead'")
    good = _write(tmp_path, text + "\ncustom_imports = dict(imports=['userpkg_bridge.heads'])\n"
                  "custom_hooks = [dict(type='BridgeTestHook', priority='NORMAL')]\n")
    caplog.set_level("INFO", logger="detlight.openmmlab")
    _, module = fit(str(good), overrides={"trainer.default_root_dir": str(tmp_path / "w"), "trainer.max_steps": 1,
                                          "trainer.limit_val_batches": 0, "trainer.enable_progress_bar": False})
    assert type(module.model.bbox_head).__name__ == "BridgeTestHead" and type(module.model.bbox_head).calls == 1
    assert "custom_imports: imported userpkg_bridge.heads" in caplog.text
    from userpkg_bridge.heads import BridgeTestHook

    assert BridgeTestHook.seen == [module.model]  # the custom hook ran with mmdet's own detector as runner.model
    bad = _write(tmp_path, text + "\ncustom_imports = dict(imports=['userpkg_bridge.broken'])\n")
    with pytest.raises(CustomImportError, match=r"`userpkg_bridge.broken` failed: RuntimeError: boom in user code"):
        fit(str(bad), overrides={"trainer.default_root_dir": str(tmp_path / "w2")})


def test_url_init_cfg_and_missing_dataset_file_name_their_keys(tmp_path: Path) -> None:
    from detlight.api import fit
    from detlight.exceptions import CheckpointError, DatasetError
    from detlight.openmmlab.samples import write_config

    config = write_config(tmp_path / "c.py", root=tmp_path / "data")
    url = _write(tmp_path, config.read_text().replace(
        "init_cfg=None", "init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet18')"))
    with pytest.raises(CheckpointError, match=r"`model.backbone.init_cfg.checkpoint` is 'torchvision://resnet18'.*"
                                              r"must be local"):
        fit(str(url), overrides={"trainer.default_root_dir": str(tmp_path / "w")})
    text = config.read_text()
    ann = str(next(p for p in (tmp_path / "data").rglob("train.json")))
    missing = _write(tmp_path, text.replace(ann, ann + ".missing"))
    with pytest.raises(DatasetError, match=r"`data.train.ann_file`: annotation file not found: .*train.json.missing"):
        fit(str(missing), overrides={"trainer.default_root_dir": str(tmp_path / "w")})
    assert os.path.isfile(ann)


def test_openmmlab_false_trains_the_torchvision_look_alike(tmp_path: Path) -> None:
    from detlight.convert.entry import convert_to_yaml
    from detlight.openmmlab.samples import write_config
    from detlight.openmmlab.switch import set_cli_mode

    config = write_config(tmp_path / "c.py", root=tmp_path / "data")
    bridged, report = convert_to_yaml(config)
    assert "detlight.openmmlab.openmmlab_detector" in bridged
    assert [e.note for e in report.entries if e.key == "model.bbox_head"] == ["exact: mmdet.models.build_detector"]
    set_cli_mode("false")
    try:
        plain, _ = convert_to_yaml(config)
    finally:
        set_cli_mode(None)
    assert "detlight.openmmlab" not in plain and "torchvision_detector" in plain


def test_mid_epoch_resume_replays_the_same_batches_and_losses(tmp_path: Path) -> None:
    from lightning.pytorch.callbacks import Callback

    from detlight.api import fit
    from detlight.openmmlab.samples import write_config

    class Losses(Callback):
        def __init__(self) -> None:
            self.rows: list[tuple[int, float, tuple[str, ...]]] = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            names = tuple(m["ori_filename"] for m in batch["img_metas"])
            self.rows.append((trainer.global_step, float(outputs["loss"]), names))

    config = write_config(tmp_path / "c.py", root=tmp_path / "data", num_train=10, samples_per_gpu=2)
    text = config.read_text().replace("checkpoint_config = dict(interval=1)",
                                      "checkpoint_config = dict(interval=2, by_epoch=False)")
    config.write_text(text)
    common = {"trainer.limit_val_batches": 0, "trainer.enable_progress_bar": False}
    straight = Losses()
    fit(str(config), overrides={**common, "trainer.default_root_dir": str(tmp_path / "a"), "trainer.max_steps": 4},
        callbacks=[straight])
    first = Losses()
    fit(str(config), overrides={**common, "trainer.default_root_dir": str(tmp_path / "b"), "trainer.max_steps": 2},
        callbacks=[first])
    ckpt = next((tmp_path / "b").rglob("iter_2.ckpt"))
    resumed = Losses()
    fit(str(config), overrides={**common, "trainer.default_root_dir": str(tmp_path / "c"), "trainer.max_steps": 4},
        callbacks=[resumed], ckpt_path=str(ckpt))
    assert first.rows == straight.rows[:2]
    assert resumed.rows == straight.rows[2:]  # same images, same flips (RNG state restored), same losses


def test_check_runs_one_batch_of_a_bridged_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``detlight check`` on an mmdet ``.py`` config: mmcv's DataContainers are unwrapped as in training."""
    from detlight.cli import main
    from detlight.openmmlab.samples import write_config

    config = write_config(tmp_path / "c.py", root=tmp_path / "data", num_train=4, num_val=2, image_size=64,
                          samples_per_gpu=2)
    with pytest.raises(SystemExit) as exc:
        main(["check", "--config", str(config), f"--trainer.default_root_dir={tmp_path / 'w'}"])
    out = capsys.readouterr().out
    assert "one batch: loss_cls=" in out and "loss_bbox=" in out, out
    assert "one training batch failed" not in out, out
    assert exc.value.code in (0, 1)
