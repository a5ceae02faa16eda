"""Replays the logs real mmcv 1.7.2 wrote for a toy IterBasedRunner run with a val phase and an EvalHook
(``fixtures/mmcv_iter_run.json``, made by ``record_mmcv_iter_run.py``) against detlight's logs of the same run,
record by record: the json log, the text log lines and the TensorBoard scalars (and the hook trace).

Where detlight differs on purpose, the test asserts both values (docs/mmcv-semantics.md §4.4 explains each).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import iter_run_toy as toy
import pytest
import torch
from lightning.pytorch.loggers import Logger
from torchmetrics import Metric

from detlight.callbacks import Evaluation, IntervalLogger, IterTimer, TextLogger
from detlight.callbacks.mmcv_hooks import MMCVHooks
from detlight.callbacks.workflow import Workflow
from detlight.module import DetectorModule
from detlight.testing import boring_trainer

RECORDING = json.loads((Path(__file__).parent / "fixtures" / "mmcv_iter_run.json").read_text())
TIME_KEYS = ("time", "data_time")
STAGES = ("before_run", "before_train_epoch", "before_train_iter", "after_train_iter", "after_train_epoch",
          "before_val_epoch", "before_val_iter", "after_val_iter", "after_val_epoch", "after_run", "before_epoch",
          "after_epoch")


class MeanScore(Metric):
    """The toy dataset's ``evaluate`` as a metric: ``acc`` = mean box score over the val images."""

    def __init__(self) -> None:
        super().__init__()
        self.add_state("scores", default=[], dist_reduce_fx="cat")

    def update(self, preds: list[dict[str, Any]], batch: Any) -> None:
        self.scores.extend(p["scores"].reshape(-1) for p in preds)

    def compute(self) -> dict[str, torch.Tensor]:
        return {"acc": torch.cat(self.scores).mean()}


class Scalars(Logger):
    """A Lightning logger keeping every ``log_metrics`` call as ``[tag, value, step]`` rows."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[list[Any]] = []

    @property
    def name(self) -> str:
        return "scalars"

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.calls += [[tag, round(float(value), 5), step] for tag, value in metrics.items()
                       if tag not in TIME_KEYS and not tag.endswith(("/time", "/data_time"))]


class Tracer:
    def __init__(self) -> None:
        self.trace: list[list[Any]] = []


for _stage in STAGES:
    def _method(self: Tracer, runner: Any, stage: str = _stage) -> None:
        self.trace.append([stage, runner.mode, runner.epoch, runner.iter, runner.inner_iter])
    setattr(Tracer, _stage, _method)


def _detlight_run(tmp_path: Path, kind: str) -> dict[str, Any]:
    torch.set_num_threads(1)
    by_epoch = kind == "epoch"
    scalars = Scalars()
    runner = {"type": "EpochBasedRunner", "max_epochs": 2} if by_epoch else {"type": "IterBasedRunner",
                                                                             "max_iters": toy.MAX_ITERS}
    workflow = [("train", 1), ("val", 1)] if by_epoch else toy.WORKFLOW
    text = TextLogger(interval=toy.LOG_INTERVAL, by_epoch=by_epoch, timestamp="20240101_000000", console=False)
    callbacks = [Workflow(workflow=workflow, runner=runner), IterTimer(), text,
                 IntervalLogger(interval=toy.LOG_INTERVAL, by_epoch=by_epoch),
                 Evaluation(interval=1 if by_epoch else toy.EVAL_INTERVAL, by_epoch=by_epoch, save_best="acc"),
                 MMCVHooks(hooks=[{"class_path": f"{__name__}.Tracer", "priority": "LOWEST"}])]
    module = DetectorModule(toy.ToyDetector(), optimizer={"type": "SGD", "lr": toy.LR, "momentum": toy.MOMENTUM},
                            evaluator=MeanScore())
    trainer = boring_trainer(tmp_path, callbacks, max_epochs=None, limit_batches=None, logger=scalars,
                             enable_checkpointing=True)
    trainer.fit(module, toy.train_loader(), toy.val_loader())
    records = [{k: ("<t>" if k in TIME_KEYS else v) for k, v in json.loads(line).items()}
               for line in Path(text.json_log_path).read_text().splitlines()]
    lines = [line.split(" - INFO - ", 1)[1].replace(str(tmp_path), "<work_dir>")
             for line in Path(text.log_path).read_text().splitlines() if " - INFO - " in line]
    lines = [re.sub(r"(eta|time|data_time): [0-9:.]+", r"\1: <t>", line) for line in lines]
    hooks = trainer.callbacks[[type(c) for c in trainer.callbacks].index(MMCVHooks)]
    return {"json_log": [r for r in records if "epoch" in r], "text_log": lines, "tensorboard": scalars.calls,
            "hook_trace": hooks.hooks[0].trace,
            "weights": [round(float(v), 6) for v in module.model.fc.weight.detach().reshape(-1)]}


@pytest.fixture(scope="module")
def iter_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _detlight_run(tmp_path_factory.mktemp("iter"), "iter")


@pytest.fixture(scope="module")
def epoch_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _detlight_run(tmp_path_factory.mktemp("epoch"), "epoch")


def test_the_recording_is_real_mmcvs() -> None:
    assert RECORDING["mmcv_version"] == "1.7.2"
    assert [r["mode"] for r in RECORDING["iter"]["json_log"]] == ["train", "val"] * 3


def test_same_training(iter_run: dict[str, Any]) -> None:
    assert iter_run["weights"] == pytest.approx(RECORDING["iter"]["weights"], abs=1e-5)


# ---------------------------------------------------------------------------------------------------- documented
#: IterBasedRunner: the train record after each val phase. mmcv averages the last `interval` entries of a log buffer
#: that the val phase also filled (its last val batch and train iteration 4); detlight averages train iterations 3-4.
MMCV_TRAIN_AFTER_VAL = {"loss_cls": 0.04885, "loss_reg": 0.10385, "loss": 0.15269}
DETLIGHT_TRAIN_AFTER_VAL = {"loss_cls": 0.09736, "loss_reg": 0.14156, "loss": 0.23892}


def _is_val_losses(record: dict[str, Any]) -> bool:
    return record.get("mode") == "val" and "loss" in record


def _mmcv_text(lines: list[str], drop_val_losses: bool) -> list[str]:
    """detlight's text lines in mmcv's terms: no ``Exp name`` line after the preamble (mmcv prints it only with an
    ``exp_name`` in ``runner.meta``), ``.pth`` best files beside the run (detlight: ``.ckpt`` in ``checkpoints/``)."""
    out: list[str] = []
    for line in lines:
        if line.startswith("Exp name: "):
            continue
        if drop_val_losses and "(val)" in line and "loss" in line:
            continue
        out.append(line.replace("<work_dir>/checkpoints/", "<work_dir>/").replace(".ckpt", ".pth"))
    return out


def test_iter_run_json_log(iter_run: dict[str, Any]) -> None:
    mmcv, ours = RECORDING["iter"]["json_log"], iter_run["json_log"]
    # detlight writes each val phase's losses as a val record (mmcv: none, they go into the next train average)
    val_losses = [r for r in ours if _is_val_losses(r)]
    assert [(r["epoch"], r["iter"]) for r in val_losses] == [(1, 2), (2, 3), (2, 2)]  # 3: the phase shared an eval
    assert list(val_losses[0]) == ["mode", "epoch", "iter", "lr", "data_time", "loss_cls", "loss_reg", "loss", "time"]
    ours = [r for r in ours if not _is_val_losses(r)]
    assert len(ours) == len(mmcv) == 6
    for i, (theirs, mine) in enumerate(zip(mmcv, ours)):
        if i == 2:  # the train record after the first val phase
            assert {k: theirs[k] for k in MMCV_TRAIN_AFTER_VAL} == MMCV_TRAIN_AFTER_VAL
            assert {k: mine[k] for k in DETLIGHT_TRAIN_AFTER_VAL} == DETLIGHT_TRAIN_AFTER_VAL
            theirs = {k: v for k, v in theirs.items() if k not in MMCV_TRAIN_AFTER_VAL}
            mine = {k: v for k, v in mine.items() if k not in DETLIGHT_TRAIN_AFTER_VAL}
        assert mine == theirs, i
    # the evaluations saw the whole val loader (3 batches), as mmcv's EvalHook did, not the val phase's 2
    assert [r["iter"] for r in ours if r["mode"] == "val"] == [3, 3, 3]


def test_iter_run_text_log(iter_run: dict[str, Any]) -> None:
    mmcv = RECORDING["iter"]["text_log"]
    ours = _mmcv_text(iter_run["text_log"], drop_val_losses=True)
    assert len(ours) == len(mmcv)
    after_val = "loss_cls: {loss_cls:.4f}, loss_reg: {loss_reg:.4f}, loss: {loss:.4f}"
    for theirs, mine in zip(mmcv, ours):
        if theirs.startswith("Iter [4/7]"):
            assert theirs.endswith(after_val.format(**MMCV_TRAIN_AFTER_VAL))
            assert mine.endswith(after_val.format(**DETLIGHT_TRAIN_AFTER_VAL))
            continue
        assert mine == theirs


def test_iter_run_tensorboard(iter_run: dict[str, Any]) -> None:
    mmcv = RECORDING["iter"]["tensorboard"]
    ours, val_losses, skip = [], [], 0
    for row in iter_run["tensorboard"]:
        if skip:  # the lr / momentum rows written with a val-loss record
            skip -= 1
            val_losses.append(row)
        elif row[0].startswith("val/loss"):
            val_losses.append(row)
            skip = 2 if row[0] == "val/loss" else 0
        else:
            ours.append(row)
    assert [(tag, step) for tag, _, step in val_losses if tag.startswith("val/")] == [
        (f"val/{k}", step) for step in (3, 6, 7) for k in ("loss_cls", "loss_reg", "loss")]
    assert len(ours) == len(mmcv)
    for theirs, mine in zip(mmcv, ours):
        if theirs[2] == 4 and theirs[0] in ("train/loss_cls", "train/loss_reg", "train/loss"):
            key = theirs[0].split("/")[1]
            assert (theirs[1], mine[1]) == (MMCV_TRAIN_AFTER_VAL[key], DETLIGHT_TRAIN_AFTER_VAL[key])
            assert mine[::2] == theirs[::2]
            continue
        assert mine == theirs


def test_iter_run_hook_trace(iter_run: dict[str, Any]) -> None:
    assert iter_run["hook_trace"] == RECORDING["iter"]["hook_trace"]


def test_epoch_run_matches(epoch_run: dict[str, Any]) -> None:
    mmcv = RECORDING["epoch"]
    assert epoch_run["weights"] == pytest.approx(mmcv["weights"], abs=1e-5)
    assert epoch_run["json_log"] == mmcv["json_log"]  # val-loss records with time / data_time, as mmcv's
    assert epoch_run["tensorboard"] == mmcv["tensorboard"]
    assert epoch_run["hook_trace"] == mmcv["hook_trace"]
    assert _mmcv_text(epoch_run["text_log"], drop_val_losses=False) == mmcv["text_log"]
