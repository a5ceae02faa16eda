"""RunnerView counters and attributes on a real Trainer, checked against mmcv's runner traces (docs/mmcv-semantics.md §3.2-3.3)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from toy_run import Recorder, ToyModule, loader, make_trainer, mmcv_epoch_trace, mmcv_iter_trace

from detlight.callbacks.mmcv_hooks import MMCVHooks
from detlight.callbacks.workflow import Workflow
from detlight.compat.hook_base import Hook
from detlight.exceptions import HookError

torch.set_num_threads(1)


def test_reference_loops_reproduce_the_documented_traces() -> None:
    """The reference loops in toy_run give the entries the semantics doc lists for both runners."""
    epoch = mmcv_epoch_trace([("train", 2), ("val", 1)], max_epochs=3, train_len=2, val_len=2)
    assert epoch[0] == ("before_run", None, 0, 0, 0)
    assert epoch[1] == ("before_train_epoch", "train", 0, 0, 0)
    assert ("after_train_epoch", "train", 0, 2, 1) in epoch
    assert ("before_train_epoch", "train", 1, 2, 1) in epoch  # inner_iter keeps its value until the first batch
    assert ("before_val_epoch", "val", 2, 4, 1) in epoch and ("after_val_epoch", "val", 2, 4, 1) in epoch
    assert ("before_val_epoch", "val", 3, 6, 1) in epoch  # the final val phase after the last train epoch
    assert epoch[-1] == ("after_run", "val", 3, 6, 1)

    it = mmcv_iter_trace([("train", 3), ("val", 2)], max_iters=5, train_len=2, val_len=2)
    train_epochs = [(rec[3], rec[2]) for rec in it if rec[0] == "before_train_iter"]
    assert train_epochs == [(0, 0), (1, 0), (2, 0), (3, 1), (4, 1)]
    vals = [rec for rec in it if rec[0] == "before_val_iter"]
    assert [(r[3], r[4]) for r in vals] == [(3, 0), (3, 1), (5, 0), (5, 1)]
    assert ("before_train_iter", "train", 1, 3, 0) in it  # inner_iter restarts with each phase
    assert it[-1] == ("after_run", "val", 1, 5, 2)


def test_epoch_workflow_trace_matches_mmcv(tmp_path: Path) -> None:
    """workflow [('train', 2), ('val', 1)], 3 epochs, 2 batches per loader: the stage trace equals mmcv's.

    Every entry matches, including the order after_train_epoch -> val phase (MMCVHooks fires after_train_epoch from
    the last batch's on_train_batch_end, before Lightning's validation loop), ``epoch`` = finished epochs inside the
    val phase, and the final val phase after epoch 3 (3 % 2 != 0). The one order difference is Lightning-level and
    does not show here: a native Lightning callback's ``on_train_epoch_end`` runs after the val phase.
    """
    recorder = Recorder()
    workflow = [("train", 2), ("val", 1)]
    callbacks = [Workflow(workflow=workflow, runner={"type": "EpochBasedRunner", "max_epochs": 3}),
                 MMCVHooks(hooks=[recorder])]
    trainer = make_trainer(tmp_path, callbacks)
    trainer.fit(ToyModule(), train_dataloaders=loader(2), val_dataloaders=loader(2))
    assert recorder.trace == mmcv_epoch_trace(workflow, max_epochs=3, train_len=2, val_len=2)


@pytest.mark.parametrize("by_epoch", [True, False])
def test_an_evaluation_between_val_phases_calls_no_val_stage(tmp_path: Path, by_epoch: bool) -> None:
    """mmcv's EvalHook evaluates inside after_train_epoch / after_train_iter and calls no val stage: an
    evaluation-only validation run is not a val phase (the trace stays mmcv's, with a val epoch only where the
    workflow has one)."""
    from detlight.callbacks import Evaluation

    recorder = Recorder()
    if by_epoch:
        workflow, runner = [("train", 2), ("val", 1)], {"type": "EpochBasedRunner", "max_epochs": 3}
    else:
        workflow, runner = [("train", 3), ("val", 2)], {"type": "IterBasedRunner", "max_iters": 5}
    callbacks = [Workflow(workflow=workflow, runner=runner), Evaluation(interval=1, by_epoch=by_epoch),
                 MMCVHooks(hooks=[recorder])]
    trainer = make_trainer(tmp_path, callbacks, enable_checkpointing=True)
    trainer.fit(ToyModule(), train_dataloaders=loader(2), val_dataloaders=loader(3))
    reference = (mmcv_epoch_trace(workflow, max_epochs=3, train_len=2, val_len=3) if by_epoch else
                 mmcv_iter_trace(workflow, max_iters=5, train_len=2, val_len=2))
    assert recorder.trace == reference


def test_iter_workflow_trace_matches_mmcv(tmp_path: Path) -> None:
    """IterBasedRunner, workflow [('train', 3), ('val', 2)], max_iters=5, 2 batches per loader (§3.3).

    Matches mmcv entry for entry: ``epoch`` is IterLoader's (the epoch before the fetch that exhausts the loader),
    ``inner_iter`` restarts with every phase, ``before_epoch``/``after_epoch`` are called once, and a final val
    phase follows iteration 5 although 5 % 3 != 0.
    """
    recorder = Recorder()
    workflow = [("train", 3), ("val", 2)]
    callbacks = [Workflow(workflow=workflow, runner={"type": "IterBasedRunner", "max_iters": 5}),
                 MMCVHooks(hooks=[recorder])]
    trainer = make_trainer(tmp_path, callbacks)
    trainer.fit(ToyModule(), train_dataloaders=loader(2), val_dataloaders=loader(2))
    assert recorder.trace == mmcv_iter_trace(workflow, max_iters=5, train_len=2, val_len=2)


class Inspect(Hook):
    """Reads the runner attributes the §2.10 table lists, at the stages where hooks read them."""

    def __init__(self) -> None:
        self.seen: dict[str, Any] = {}

    def before_run(self, runner: Any) -> None:
        self.seen["run"] = dict(max_epochs=runner.max_epochs, max_iters=runner.max_iters, work_dir=runner.work_dir,
                                rank=runner.rank, world_size=runner.world_size, timestamp=runner.timestamp,
                                hooks=list(runner.hooks), logger=runner.logger)
        runner.meta.setdefault("hook_msgs", {})["seen"] = 1

    def after_train_iter(self, runner: Any) -> None:
        self.seen.setdefault("iter", dict(model=runner.model, optimizer=runner.optimizer, outputs=runner.outputs,
                                          log_buffer=runner.log_buffer, lr=runner.current_lr(),
                                          momentum=runner.current_momentum(), batch=runner.data_batch,
                                          end=[], loader_len=len(runner.data_loader)))
        self.seen["iter"]["end"].append(self.end_of_epoch(runner))

    def after_val_epoch(self, runner: Any) -> None:
        self.seen["val"] = dict(buffer=runner.log_buffer, outputs=runner.outputs, loader_len=len(runner.data_loader),
                                keys=list(runner.log_buffer.val_history))

    def after_train_epoch(self, runner: Any) -> None:
        self.seen.setdefault("last", []).append(self.is_last_epoch(runner))


def test_runner_view_attributes(tmp_path: Path) -> None:
    hook = Inspect()
    module = ToyModule()
    callbacks = [Workflow(workflow=[("train", 1), ("val", 1)], runner={"type": "EpochBasedRunner", "max_epochs": 2}),
                 MMCVHooks(hooks=[hook], timestamp="20240101_000000")]
    trainer = make_trainer(tmp_path, callbacks, limit_train_batches=3)
    trainer.fit(module, train_dataloaders=loader(5), val_dataloaders=loader(2))
    run, it, val = hook.seen["run"], hook.seen["iter"], hook.seen["val"]
    assert run["max_epochs"] == 2 and run["max_iters"] == 2 * 3  # limit_train_batches counts, not len(loader)
    assert run["work_dir"] == str(tmp_path) and (run["rank"], run["world_size"]) == (0, 1)
    assert run["timestamp"] == "20240101_000000" and run["hooks"] == [hook] and run["logger"].name == "detlight"
    assert it["model"].module is module.model and it["optimizer"] is trainer.optimizers[0]
    assert it["log_buffer"] is module.log_buffer and "loss_cls" in it["log_buffer"].val_history
    assert it["outputs"]["num_samples"] == 2 and set(it["outputs"]) >= {"loss", "log_vars"}
    assert it["lr"] == [0.1] and it["momentum"] == [0.9] and it["batch"]["img"].shape == (2, 3, 8, 8)
    assert it["loader_len"] == 3 and it["end"] == [False, False, True] * 2
    assert hook.seen["last"] == [False, True]
    assert val["buffer"] is module.val_log_buffer and val["keys"] == ["loss_cls", "acc", "loss"]
    assert val["outputs"] is module.last_val_outputs and val["loader_len"] == 2
    assert "val/loss_cls" in trainer.callback_metrics


def test_meta_is_saved_in_the_checkpoint(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, [MMCVHooks(hooks=[Inspect()], meta={"seed": 0, "lr": torch.tensor(0.5)})],
                           max_epochs=1)
    trainer.fit(ToyModule(), train_dataloaders=loader(2))
    path = tmp_path / "run.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=True)
    (state,) = [v for k, v in ckpt["callbacks"].items() if k.startswith("MMCVHooks")]
    assert state["meta"] == {"seed": 0, "lr": 0.5, "hook_msgs": {"seen": 1}}
    restored = MMCVHooks()
    restored.load_state_dict(state)
    assert restored.runner.meta == state["meta"]


def test_meta_with_an_object_fails_with_the_key(tmp_path: Path) -> None:
    cb = MMCVHooks(meta={"fp16": {"scaler": object()}})
    with pytest.raises(HookError, match=r"runner\.meta\['fp16'\]\['scaler'\]"):
        cb.state_dict()


def test_val_stages_skip_sanity_check_and_plain_validation(tmp_path: Path) -> None:
    """Without a ('val', n) phase mmcv never calls val stages; neither does MMCVHooks (unless asked)."""
    class Loud(Recorder):
        pass

    quiet, loud = Recorder(), Loud()
    trainer = make_trainer(tmp_path, [MMCVHooks(hooks=[quiet]), MMCVHooks(hooks=[loud], val_stages=True)],
                           max_epochs=1, num_sanity_val_steps=1)
    trainer.fit(ToyModule(), train_dataloaders=loader(1), val_dataloaders=loader(1))
    assert not [r for r in quiet.trace if "val" in r[0]]
    assert [r[0] for r in loud.trace if "val" in r[0]] == ["before_val_epoch", "before_val_iter", "after_val_iter",
                                                          "after_val_epoch"]
