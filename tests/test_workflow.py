"""mmcv runner / workflow config -> Trainer settings, the ('val', n) phase and its final-cycle validation."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
import yaml
from jsonargparse import ArgumentParser

from detlight.callbacks.mmcv_hooks import MMCVHooks
from detlight.callbacks.workflow import Workflow

torch.set_num_threads(1)


def _toy_run() -> Any:
    """The tiny detector and loaders shared with tests/compat (loaded by path: tests/ is not a package)."""
    if "toy_run" not in sys.modules:
        spec = importlib.util.spec_from_file_location("toy_run", Path(__file__).parent / "compat" / "toy_run.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["toy_run"] = module
        spec.loader.exec_module(module)
    return sys.modules["toy_run"]


toy = _toy_run()
EPOCH3 = {"type": "EpochBasedRunner", "max_epochs": 3}


# ---------------------------------------------------------------------------------------------------- parsing
@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({}, ValueError, "needs `runner`"),
    ({"runner": {"type": "EpochBasedRunner"}}, ValueError, "needs `max_epochs`"),
    ({"runner": {"type": "IterBasedRunner", "max_epochs": 2}}, ValueError, "needs `max_iters`"),
    ({"runner": {"type": "EpochBasedRunner", "max_epochs": 2, "max_iters": 9}}, ValueError, "Only one of"),
    ({"runner": {"type": "DynamicRunner", "max_epochs": 2}}, ValueError, "Unknown `runner.type` 'DynamicRunner'"),
    ({"runner": {**EPOCH3, "constructor": "X"}}, ValueError, r"Unknown key\(s\) \['constructor'\]"),
    ({"runner": {"type": "EpochBasedRunner", "max_epochs": 0}}, ValueError, "runner.max_epochs"),
    ({"runner": {"type": "EpochBasedRunner", "max_epochs": "3"}}, ValueError, "positive int"),
    ({"runner": [3]}, TypeError, "`runner` to be a dict"),
    ({"runner": EPOCH3, "total_epochs": 4}, ValueError, "disagree"),
    ({"runner": EPOCH3, "workflow": "train"}, TypeError, "list of \\(mode, n\\) pairs"),
    ({"runner": EPOCH3, "workflow": [("train",)]}, ValueError, r"workflow\[0\]"),
    ({"runner": EPOCH3, "workflow": [("test", 1)]}, ValueError, "mode 'test'"),
    ({"runner": EPOCH3, "workflow": [("train", 0)]}, ValueError, r"workflow\[0\]\[1\]"),
    ({"runner": EPOCH3, "workflow": [("val", 1), ("train", 1)]}, ValueError, "Unsupported workflow"),
    ({"runner": EPOCH3, "workflow": [("train", 1), ("train", 1)]}, ValueError, "Unsupported workflow"),
    ({"runner": EPOCH3, "workflow": [("train", 1), ("val", 2)]}, ValueError, r"\('val', 1\)"),
])
def test_bad_inputs_are_named(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        Workflow(**kwargs)


def test_trainer_kwargs() -> None:
    assert Workflow(runner=EPOCH3).trainer_kwargs() == {"max_epochs": 3, "max_steps": -1}
    assert Workflow(total_epochs=5).max_epochs == 5
    iters = Workflow(workflow=[["train", 100], ["val", 4]], runner={"type": "IterBasedRunner", "max_iters": 250})
    assert iters.trainer_kwargs() == {"max_steps": 250, "max_epochs": -1, "check_val_every_n_epoch": None,
                                      "val_check_interval": 100, "num_sanity_val_steps": 0}
    cfg = {"workflow": [("train", 1)], "runner": {"type": "IterBasedRunner", "max_iters": 7}, "total_epochs": None}
    assert Workflow.from_mmcv_config(cfg).trainer_kwargs() == {"max_steps": 7, "max_epochs": -1}
    # mmdet's compat path: no runner, only the legacy total_epochs
    assert Workflow.from_mmcv_config({"total_epochs": 2}).trainer_kwargs()["max_epochs"] == 2


def test_usable_from_yaml_as_a_callback() -> None:
    parser = ArgumentParser()
    parser.add_argument("--callbacks", type=list[pl.Callback])
    cfg = yaml.safe_load("""
        callbacks:
          - class_path: detlight.callbacks.workflow.Workflow
            init_args:
              workflow: [[train, 2], [val, 1]]
              runner: {type: EpochBasedRunner, max_epochs: 3}
          - class_path: detlight.callbacks.MMCVHooks
            init_args:
              hooks: [{class_path: detlight.compat.Hook, priority: LOW}]
    """)
    workflow, hooks = parser.instantiate(parser.parse_object(cfg)).callbacks
    assert isinstance(workflow, Workflow) and workflow.workflow == [("train", 2), ("val", 1)]
    assert workflow.max_epochs == 3 and isinstance(hooks, MMCVHooks) and hooks.priorities == [70]


# ---------------------------------------------------------------------------------------------------- runs
class ValRecorder(pl.Callback):
    def __init__(self) -> None:
        self.epochs: list[int] = []
        self.steps: list[int] = []

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.epochs.append(trainer.current_epoch)
        self.steps.append(trainer.global_step)


def _mmcv_val_after_epochs(max_epochs: int, every: int) -> list[int]:
    """0-based train epochs after which mmcv's EpochBasedRunner runs the val phase (reference loop in toy_run)."""
    trace = toy.mmcv_epoch_trace([("train", every), ("val", 1)], max_epochs, train_len=1, val_len=1)
    return [epoch - 1 for stage, _, epoch, _, _ in trace if stage == "before_val_epoch"]


@pytest.mark.parametrize(("max_epochs", "every"), [(3, 2), (1, 3)])
def test_epoch_val_phase_includes_the_final_cycle(tmp_path: Path, max_epochs: int, every: int) -> None:
    seen = ValRecorder()
    module = toy.ToyModule()
    wf = Workflow(workflow=[("train", every), ("val", 1)], runner={"type": "EpochBasedRunner",
                                                                   "max_epochs": max_epochs})
    trainer = toy.make_trainer(tmp_path, [wf, seen], num_sanity_val_steps=2)
    trainer.fit(module, train_dataloaders=toy.loader(1), val_dataloaders=toy.loader(2))
    assert seen.epochs == _mmcv_val_after_epochs(max_epochs, every)
    assert trainer.current_epoch == max_epochs and trainer.num_sanity_val_steps == 0
    assert trainer.check_val_every_n_epoch == every  # restored after the forced final validation
    assert module.val_losses and {"val/loss", "val/loss_cls", "val/acc"} <= set(trainer.callback_metrics)


@pytest.mark.parametrize(("max_iters", "every", "expected"), [(5, 3, [3, 5]), (6, 3, [3, 6])])
def test_iter_val_phase_includes_the_final_cycle(tmp_path: Path, max_iters: int, every: int,
                                                 expected: list[int]) -> None:
    seen = ValRecorder()
    hooks = MMCVHooks()
    wf = Workflow(workflow=[("train", every), ("val", 1)], runner={"type": "IterBasedRunner", "max_iters": max_iters})
    trainer = toy.make_trainer(tmp_path, [wf, seen, hooks], max_epochs=7)
    trainer.fit(toy.ToyModule(), train_dataloaders=toy.loader(2), val_dataloaders=toy.loader(3))
    assert seen.steps == expected and trainer.global_step == max_iters
    assert trainer.num_val_batches == [1]  # ('val', 1): one batch per phase
    assert hooks.by_epoch is False and hooks.runner.max_iters == max_iters


def test_val_phase_needs_a_module_switch(tmp_path: Path) -> None:
    class Plain(pl.LightningModule):
        pass

    wf = Workflow(workflow=[("train", 1), ("val", 1)], runner=EPOCH3)
    trainer = toy.make_trainer(tmp_path, [wf])
    with pytest.raises(TypeError, match="val_losses"):
        wf.setup(trainer, Plain(), "fit")


def test_iter_runner_rejects_gradient_accumulation(tmp_path: Path) -> None:
    wf = Workflow(runner={"type": "IterBasedRunner", "max_iters": 4})
    trainer = toy.make_trainer(tmp_path, [wf], accumulate_grad_batches=2)
    with pytest.raises(ValueError, match="accumulate_grad_batches"):
        trainer.fit(toy.ToyModule(), train_dataloaders=toy.loader(2))


def test_runner_length_overrides_the_trainer_with_a_warning(tmp_path: Path) -> None:
    trainer = toy.make_trainer(tmp_path, [Workflow(runner={"type": "EpochBasedRunner", "max_epochs": 1})],
                               max_epochs=4)
    with pytest.warns(UserWarning, match="overrides trainer.max_epochs=4"):
        trainer.fit(toy.ToyModule(), train_dataloaders=toy.loader(1))
    assert trainer.current_epoch == 1


class PhaseRecorder(pl.Callback):
    """Per validation run: (global step, losses computed, metrics computed)."""

    def __init__(self) -> None:
        self.runs: list[tuple[int, bool, bool]] = []

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int,
                                dataloader_idx: int = 0) -> None:
        if batch_idx == 0:
            self.runs.append((trainer.global_step, bool(pl_module.val_losses), bool(pl_module.evaluate)))


def test_epoch_val_phase_keeps_its_cadence_next_to_the_evaluation(tmp_path: Path) -> None:
    from detlight.callbacks import Evaluation

    seen = PhaseRecorder()
    wf = Workflow(workflow=[("train", 2), ("val", 1)], runner=EPOCH3)
    trainer = toy.make_trainer(tmp_path, [wf, Evaluation(interval=1), seen])
    module = toy.ToyModule()
    calls = []
    original = module.adapter.val_losses
    module.adapter.val_losses = lambda batch: calls.append(1) or original(batch)  # type: ignore[method-assign]
    trainer.fit(module, train_dataloaders=toy.loader(1), val_dataloaders=toy.loader(3))
    # mmcv: EvalHook after every epoch; the val phase after epochs 2 and 3 only: 2 x 3 val_step calls
    assert seen.runs == [(1, False, True), (2, True, True), (3, True, True)]
    assert len(calls) == 6


def test_iter_val_phase_keeps_its_cadence_next_to_the_evaluation(tmp_path: Path) -> None:
    from detlight.callbacks import Evaluation

    seen = PhaseRecorder()
    wf = Workflow(workflow=[("train", 3), ("val", 1)], runner={"type": "IterBasedRunner", "max_iters": 7})
    trainer = toy.make_trainer(tmp_path, [wf, Evaluation(interval=2, by_epoch=False), seen], max_epochs=7)
    trainer.fit(toy.ToyModule(), train_dataloaders=toy.loader(2), val_dataloaders=toy.loader(3))
    # mmcv: val phases after iterations 3, 6 and 7 (final cycle); evaluations after 2, 4 and 6
    assert seen.runs == [(2, False, True), (3, True, False), (4, False, True), (6, True, True), (7, True, False)]
