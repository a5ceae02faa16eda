"""Record what real mmcv 1.7.2 logs for the toy IterBasedRunner run of ``iter_run_toy.py`` (and, for comparison, an
EpochBasedRunner run with a val workflow phase): json log, text log and TensorBoard ``add_scalar`` calls.

Run in the venv of ``make test-mmcv`` (mmcv 1.7.2, pure Python)::

    .venv-mmcv/bin/python tests/compat/record_mmcv_iter_run.py tests/compat/fixtures/mmcv_iter_run.json

Times (``time``, ``data_time``, ``eta``) are replaced by ``"<t>"`` and paths by ``"<work_dir>"``; everything else is
kept as mmcv wrote it.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
import iter_run_toy as toy  # noqa: E402

TIME_KEYS = ("time", "data_time")


def _json_records(path: Path) -> list[dict[str, Any]]:
    records = []
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if "epoch" not in record and "iter" not in record:
            continue  # the meta line
        records.append({k: ("<t>" if k in TIME_KEYS else v) for k, v in record.items()})
    return records


def _text_lines(path: Path, work_dir: str) -> list[str]:
    lines = []
    for line in path.read_text().splitlines():
        if " - INFO - " not in line:
            continue
        message = line.split(" - INFO - ", 1)[1].replace(work_dir, "<work_dir>")
        message = re.sub(r"(eta|time|data_time): [0-9:.]+(?: day[s]?, [0-9:]+)?", r"\1: <t>", message)
        lines.append(message)
    return lines


class _Calls:
    """The add_scalar calls of every SummaryWriter (mmcv's TensorboardLoggerHook)."""

    def __init__(self) -> None:
        self.calls: list[list[Any]] = []

    def install(self) -> None:
        from torch.utils.tensorboard import SummaryWriter

        calls = self.calls

        def add_scalar(self: Any, tag: str, value: Any, global_step: Any = None, *args: Any, **kwargs: Any) -> None:
            if tag not in TIME_KEYS and not tag.endswith(("/time", "/data_time")):
                calls.append([tag, round(float(value), 5), int(global_step)])

        SummaryWriter.add_scalar = add_scalar  # type: ignore[method-assign]


class _Trace:
    """A LOWEST-priority mmcv hook recording (stage, mode, epoch, iter, inner_iter) at every stage."""

    def __init__(self) -> None:
        self.trace: list[list[Any]] = []


def _tracer() -> Any:
    from mmcv.runner import Hook

    stages = ("before_run", "before_train_epoch", "before_train_iter", "after_train_iter", "after_train_epoch",
              "before_val_epoch", "before_val_iter", "after_val_iter", "after_val_epoch", "after_run",
              "before_epoch", "after_epoch")

    class Tracer(Hook):
        def __init__(self) -> None:
            self.trace: list[list[Any]] = []

    for stage in stages:
        def method(self: Any, runner: Any, stage: str = stage) -> None:
            self.trace.append([stage, runner.mode, runner.epoch, runner.iter, runner.inner_iter])
        setattr(Tracer, stage, method)
    return Tracer()


def run(kind: str, work_dir: Path, calls: _Calls) -> dict[str, Any]:
    from mmcv.runner import EpochBasedRunner, EvalHook, IterBasedRunner
    from mmcv.utils import get_logger

    calls.calls.clear()
    model = toy.ToyDetector()
    optimizer = torch.optim.SGD(model.parameters(), lr=toy.LR, momentum=toy.MOMENTUM)
    timestamp = "20240101_000000"
    logger = get_logger(f"mmdet.{kind}", log_file=str(work_dir / f"{timestamp}.log"), log_level=logging.INFO)
    by_epoch = kind == "epoch"
    if by_epoch:
        runner: Any = EpochBasedRunner(model, optimizer=optimizer, work_dir=str(work_dir), logger=logger,
                                       max_epochs=2)
    else:
        runner = IterBasedRunner(model, optimizer=optimizer, work_dir=str(work_dir), logger=logger,
                                 max_iters=toy.MAX_ITERS)
    runner.timestamp = timestamp
    log_config = {"interval": toy.LOG_INTERVAL,
                  "hooks": [{"type": "TextLoggerHook", "by_epoch": by_epoch},
                            {"type": "TensorboardLoggerHook", "by_epoch": by_epoch}]}
    runner.register_training_hooks(lr_config=None, optimizer_config={"grad_clip": None}, checkpoint_config=None,
                                   log_config=log_config)
    if by_epoch:
        runner.register_hook(EvalHook(toy.val_loader(), interval=1, by_epoch=True, save_best="acc"),
                             priority="LOW")
    else:
        runner.register_hook(EvalHook(toy.val_loader(), interval=toy.EVAL_INTERVAL, by_epoch=False,
                                      save_best="acc"), priority="LOW")
    tracer = _tracer()
    runner.register_hook(tracer, priority="LOWEST")
    workflow = [("train", 1), ("val", 1)] if by_epoch else toy.WORKFLOW
    runner.run([toy.train_loader(), toy.val_loader()], workflow)
    for handler in list(logger.handlers):
        handler.flush()
    return {"json_log": _json_records(work_dir / f"{timestamp}.log.json"),
            "text_log": _text_lines(work_dir / f"{timestamp}.log", str(work_dir)),
            "tensorboard": list(calls.calls), "hook_trace": tracer.trace,
            "weights": [round(float(v), 6) for v in model.fc.weight.detach().reshape(-1)]}


def main(out: str) -> None:
    import mmcv

    torch.set_num_threads(1)
    calls = _Calls()
    calls.install()
    recording: dict[str, Any] = {"mmcv_version": mmcv.__version__, "torch_version": torch.__version__.split("+")[0]}
    for kind in ("iter", "epoch"):
        with tempfile.TemporaryDirectory() as tmp:
            recording[kind] = run(kind, Path(tmp), calls)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(recording, indent=1) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
