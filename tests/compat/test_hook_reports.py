"""Hooks: what a failing hook is reported as, the shim's checkpoint helpers, hook_msgs at after_train_epoch, and
where the best checkpoint goes when mmcv's CheckpointHook replaces detlight's."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from torchmetrics import Metric

from detlight.callbacks.checkpoint import MMCheckpoint
from detlight.callbacks.evaluation import Evaluation
from detlight.callbacks.mmcv_hooks import MMCVHooks
from detlight.compat import hook_registry
from detlight.compat.hook_base import Hook
from detlight.compat.mmcv_shim import install_mmcv_shim, real_mmcv_available, uninstall_mmcv_shim
from detlight.exceptions import ConfigError
from detlight.testing import boring_loader, boring_module, boring_trainer

torch.set_num_threads(1)
no_real_mmcv = pytest.mark.skipif(real_mmcv_available(), reason="a real mmcv is installed: the shim stays off")


class Rising(Metric):
    """bbox_mAP 0.1, 0.2, ... on successive computes: every epoch is a new best."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.add_state("seen", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, preds: Any, batch: Any) -> None:
        self.seen += 1

    def compute(self) -> dict[str, torch.Tensor]:
        self.calls += 1
        return {"bbox_mAP": torch.tensor(0.1 * self.calls)}


class StrictHook(Hook):
    def __init__(self, momentum: float = 0.1) -> None:
        if not 0 < momentum < 1:
            raise ValueError(f"momentum must be in (0, 1), got {momentum}")


@pytest.fixture
def shim(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    monkeypatch.setattr(hook_registry, "_REGISTRY", dict(hook_registry._REGISTRY))
    monkeypatch.syspath_prepend(str(tmp_path))
    install_mmcv_shim()  # with a real mmcv installed, mmcv.runner is the real one
    yield tmp_path
    uninstall_mmcv_shim()


# ---------------------------------------------------------------------------------------------------- reports
def test_a_class_path_the_parser_could_not_build_shows_the_constructors_error() -> None:
    from jsonargparse import Namespace

    # What jsonargparse hands over when instantiating a class_path entry of `hooks: Sequence[Any]` failed.
    spec = Namespace(class_path=f"{__name__}.StrictHook", init_args=Namespace(momentum=2.0))
    with pytest.raises(ConfigError, match=r"Cannot build hook `.*StrictHook` with arguments \['momentum'\]: "
                                          r"ValueError: momentum must be in \(0, 1\), got 2\.0"):
        MMCVHooks(hooks=[spec])
    built = MMCVHooks(hooks=[Namespace(class_path=f"{__name__}.StrictHook", init_args=Namespace(momentum=0.5))])
    assert type(built.hooks[0]) is StrictHook


def test_the_cli_reports_the_constructors_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from detlight.cli import main

    config = tmp_path / "hooks.yaml"
    config.write_text(textwrap.dedent(f"""
        trainer:
          callbacks:
            - class_path: detlight.compat.MMCVHooks
              init_args:
                hooks:
                  - class_path: {__name__}.StrictHook
                    init_args:
                      momentum: 2.0
    """))
    quickstart = str(Path(__file__).parents[2] / "configs" / "quickstart.yaml")
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--config", quickstart, "--config", str(config), f"--trainer.default_root_dir={tmp_path}"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("detlight: error:")]
    assert exc.value.code == 2 and len(lines) == 1 and "Traceback" not in err, err[-2000:]
    assert "StrictHook` with arguments ['momentum']: ValueError: momentum must be in (0, 1), got 2.0" in lines[0]
    assert "not an mmcv-style hook" not in lines[0]


@no_real_mmcv
def test_a_name_the_shim_lacks_is_named(shim: Path) -> None:
    (shim / "needs_more.py").write_text("from mmcv.runner import Hook, init_dist\n\nclass H(Hook):\n    pass\n")
    with pytest.raises(ConfigError) as info:
        MMCVHooks(hooks=[{"class_path": "needs_more.H"}], mmcv_shim=True)
    message = str(info.value)
    assert "has no `mmcv.runner.init_dist`" in message and "load_checkpoint" in message
    assert "pass `mmcv_shim: true`" not in message  # it is already on


# ---------------------------------------------------------------------------------------------------- shim helpers
@no_real_mmcv
def test_the_shim_serves_the_checkpoint_helpers(shim: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mmcv.runner import (
        CheckpointLoader,
        get_state_dict,
        load_checkpoint,
        load_state_dict,
        save_checkpoint,
        weights_to_cpu,
    )
    from mmcv.runner.checkpoint import _load_checkpoint

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    model.CLASSES = ("a", "b")  # type: ignore[assignment]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    save_checkpoint(torch.nn.DataParallel(model), shim / "out" / "epoch_1.pth", optimizer=optimizer, meta={"e": 1})
    saved = _load_checkpoint(shim / "out" / "epoch_1.pth")
    assert saved["meta"]["e"] == 1 and saved["meta"]["CLASSES"] == ("a", "b") and "time" in saved["meta"]
    assert set(saved["state_dict"]) == set(model.state_dict()) and "optimizer" in saved  # no `module.` prefix
    fresh = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    assert load_checkpoint(fresh, str(shim / "out" / "epoch_1.pth"))["meta"]["e"] == 1
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values()))
    wrapped = {f"module.{k}": v for k, v in model.state_dict().items()}  # a DDP checkpoint: prefix dropped
    torch.save({"state_dict": wrapped}, shim / "ddp.pth")
    load_checkpoint(fresh, str(shim / "ddp.pth"), strict=True)
    assert CheckpointLoader.load_checkpoint(str(shim / "ddp.pth"))["state_dict"].keys() == wrapped.keys()
    assert all(v.device.type == "cpu" for v in weights_to_cpu(get_state_dict(model)).values())

    other = torch.nn.Sequential(torch.nn.Linear(3, 4))
    partial = {"0.weight": torch.zeros(2, 3), "extra": torch.zeros(1)}
    with pytest.raises(RuntimeError, match=r"(?s)unexpected key in source state_dict: extra.*missing keys in source "
                                           r"state_dict: 0\.bias.*size mismatch for 0\.weight"):
        load_state_dict(other, partial, strict=True)
    load_state_dict(other, partial)  # not strict: printed, nothing copied of the wrong shape
    assert "size mismatch for 0.weight" in capsys.readouterr().out and other[0].weight.shape == (4, 3)
    with pytest.raises(ValueError, match=r"local checkpoint files only, not `open-mmlab://`"):
        load_checkpoint(fresh, "open-mmlab://resnet50")
    with pytest.raises(FileNotFoundError, match="nothing.pth"):
        load_checkpoint(fresh, str(shim / "nothing.pth"))


# ---------------------------------------------------------------------------------------------------- hook_msgs
class SeesHookMsgs(Hook):
    def __init__(self) -> None:
        self.seen: list[tuple[int, dict[str, Any]]] = []

    def after_train_epoch(self, runner: Any) -> None:
        self.seen.append((runner.epoch, dict(runner.meta.get("hook_msgs", {}))))


def test_a_lowest_hook_sees_this_epochs_checkpoint_and_best(tmp_path: Path) -> None:
    normal = SeesHookMsgs()
    hooks = MMCVHooks(hooks=[{"class_path": f"{__name__}.SeesHookMsgs", "priority": "LOWEST"}, normal])
    lowest = hooks.hooks[1]
    assert hooks.priorities == [50, 100] and lowest is not normal
    trainer = boring_trainer(tmp_path, [MMCheckpoint(interval=1), Evaluation(save_best="bbox_mAP"), hooks],
                             max_epochs=2, logger=CSVLogger(str(tmp_path)), enable_checkpointing=True)
    trainer.fit(boring_module(evaluator=Rising()), boring_loader(2), boring_loader(1))
    run = Path(trainer.log_dir) / "checkpoints"
    assert [epoch for epoch, _ in lowest.seen] == [0, 1]  # runner.epoch is still the closing epoch, as in mmcv
    for epoch, msgs in lowest.seen:
        assert msgs["last_ckpt"] == str(run / f"epoch_{epoch + 1}.ckpt")
        assert msgs["best_ckpt"] == str(run / f"best_bbox_mAP_epoch_{epoch + 1}.ckpt")
        assert msgs["best_score"] == pytest.approx(0.1 * (epoch + 1))
        assert (run / f"epoch_{epoch + 1}.ckpt").is_file()  # written before the hook ran
    # NORMAL hooks run before the epoch's evaluation and checkpoint, as mmcv's hooks before its CheckpointHook
    assert [msgs.get("last_ckpt") for _, msgs in normal.seen] == [None, str(run / "epoch_1.ckpt")]


def test_with_mmcvs_checkpoint_hook_the_best_goes_to_the_runs_folder(shim: Path) -> None:
    from mmcv.runner import CheckpointHook

    root = shim / "work_dir"
    trainer = boring_trainer(root, [MMCheckpoint(interval=1), Evaluation(save_best="bbox_mAP"),
                                    MMCVHooks(hooks=[CheckpointHook(interval=1)])],
                             max_epochs=2, logger=CSVLogger(str(root)), enable_checkpointing=True)
    trainer.fit(boring_module(evaluator=Rising()), boring_loader(2), boring_loader(1))
    run = Path(trainer.log_dir)
    assert (run / "epoch_2.pth").is_file()  # mmcv's CheckpointHook: runner.work_dir is the run's folder
    assert sorted(p.name for p in run.glob("best_*")) == ["best_bbox_mAP_epoch_2.ckpt"]
    assert not list(root.glob("best_*"))


@no_real_mmcv
def test_checkpoint_meta_names_the_shims_version_without_mmcv(tmp_path: Path) -> None:
    from detlight import __version__
    from detlight.callbacks.run_meta import checkpoint_meta

    trainer = boring_trainer(tmp_path, [], max_epochs=1)
    meta = checkpoint_meta(trainer, by_epoch=True)
    assert meta["detlight_version"] == __version__ and meta["mmcv_version"] == __version__
    assert "mmcv" not in sys.modules or getattr(sys.modules["mmcv"], "__detlight_shim__", False)
