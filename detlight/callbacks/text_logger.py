"""mmcv's text log (``{timestamp}.log``) and json log (``{timestamp}.log.json``) for Lightning runs."""

from __future__ import annotations

import datetime
import json as jsonlib
import logging
import math
import os
import sys
import time
from collections import OrderedDict
from typing import Any

import lightning.pytorch as pl
import torch

from detlight.callbacks._reduce import reduce_max
from detlight.callbacks.logger_callback import (
    LoggerCallback,
    completed_iters,
    current_lrs,
    max_iters,
)
from detlight.callbacks.progress_bar import TqdmLoggingHandler, in_notebook
from detlight.callbacks.run_meta import run_meta
from detlight.exceptions import ConfigError

__all__ = ["TextLogger", "preamble", "read_json_log", "run_meta"]

#: mmcv ``Priority`` names of the hooks detlight's callbacks stand for (docs/mmcv-semantics.md §2.0); others show ``NORMAL``.
PRIORITY_OF = {"LrUpdater": "VERY_HIGH", "MomentumUpdater": "HIGH", "MMCheckpoint": "NORMAL", "IterTimer": "LOW",
               "Evaluation": "LOW", "TextLogger": "VERY_LOW", "IntervalLogger": "VERY_LOW"}
#: mmcv hook stage -> the Lightning hooks that play it
STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("before_run", ("on_train_start",)),
    ("before_train_epoch", ("on_train_epoch_start",)),
    ("before_train_iter", ("on_train_batch_start",)),
    ("after_train_iter", ("on_train_batch_end",)),
    ("after_train_epoch", ("on_train_epoch_end",)),
    ("before_val_epoch", ("on_validation_start", "on_validation_epoch_start")),
    ("before_val_iter", ("on_validation_batch_start",)),
    ("after_val_iter", ("on_validation_batch_end",)),
    ("after_val_epoch", ("on_validation_epoch_end", "on_validation_end")),
    ("after_run", ("on_train_end",)),
)

#: The python logger the text lines go to; the ``.log`` file handler sits on it, so ``detlight.*`` messages land
#: in the file too (mmdet's ``get_root_logger`` played this role).
LOGGER_NAME = "detlight"
LOG_FORMAT = "%(asctime)s - %(name)s - %(levelname)s - %(message)s"
#: log_dict keys that the head of the text line already shows (mmcv ``TextLoggerHook._log_info``).
HEAD_KEYS = ("mode", "Epoch", "iter", "lr", "time", "data_time", "memory", "epoch")


class TextLogger(LoggerCallback):
    """Replaces mmcv's ``TextLoggerHook``: the text log line and the json log, in mmcv's formats.

    Every ``interval`` iterations (see :class:`~detlight.callbacks.interval_logger.LoggerCallback` for when) rank 0
    writes, through the ``detlight`` python logger (console, and ``{timestamp}.log`` in the run directory)::

        Epoch [1][50/625]\\tlr: 2.000e-02, eta: 1:02:03, time: 0.412, data_time: 0.031, [memory: 3121, ]loss_cls: 0.5213, ...

    (``Iter [50/15000]`` when not ``by_epoch``) and appends one json object per line to ``{timestamp}.log.json``:
    ``{"mode": "train", "epoch", "iter", "lr", ["memory",] "data_time", <log_vars>, ["grad_norm",] "time"}`` with
    floats rounded to 5 decimals. The first json line is the meta dict (``seed`` from ``PL_GLOBAL_SEED``,
    ``exp_name`` = name of the run directory, ``config`` = the ``config.yaml`` the CLI saved there, then ``meta``;
    ``iters_per_epoch`` = train batches per epoch, by epoch only, for :func:`detlight.plotting.load_curves`),
    which has no ``epoch`` key so mmdet3d's ``tools/analysis_tools/analyze_logs.py`` skips it. After each validation
    inside ``fit`` it writes ``Epoch(val) [E][N]\\tbbox_mAP: 0.3120, ...`` and
    ``{"mode": "val", "epoch": E, "iter": N, "lr": ..., <metrics>}``, N being the number of validation batches; the
    validation losses of a ``('val', n)`` workflow phase (the module's ``val_log_buffer``) follow as a second line.

    At train start it writes mmcv's preamble (:func:`preamble`): ``Start running, host: ..., work_dir: ...``, the
    hook-order table by stage (the Trainer's callbacks in the order they run, each with the mmcv priority it stands
    for), ``workflow: [('train', 1)], max: 12 epochs`` and ``Checkpoints will be saved to ... by
    HardDiskBackend.``, then ``Exp name: ...`` once. In a notebook the hook table goes to the ``.log`` file only.

    ``memory`` is ``torch.cuda.max_memory_allocated`` in MB (maximum over ranks), only when the module is on CUDA.
    ETA is mmcv's: the running mean of ``time`` (times ``interval`` per log) times the iterations left to
    ``max_epochs * num_training_batches`` or ``max_steps``. Files go to ``trainer.log_dir`` (``default_root_dir``
    without a logger).

    Args:
        interval: log every this many iterations (mmcv default 10).
        ignore_last: skip the last, incomplete interval of an epoch.
        by_epoch: count iterations within the epoch rather than over the run.
        interval_exp_name: print ``Exp name: <exp_name>`` every this many iterations (it is also printed once
            after the preamble; mmcv repeated it at every epoch's evaluation too).
        json: also write ``{timestamp}.log.json``.
        meta: extra json-serialisable entries for the meta line (they win over the defaults).
        timestamp: the ``%Y%m%d_%H%M%S`` stem of the files; by default the time the training starts.
        console: add a stderr handler to the ``detlight`` logger when no handler would otherwise print its lines;
            it writes through ``tqdm.write``, so the lines appear above the progress bar, not on its line.
    """

    def __init__(
        self,
        interval: int = 10,
        ignore_last: bool = True,
        by_epoch: bool = True,
        interval_exp_name: int = 1000,
        json: bool = True,
        meta: dict[str, Any] | None = None,
        timestamp: str | None = None,
        console: bool = True,
    ) -> None:
        super().__init__(interval, ignore_last, by_epoch)
        if isinstance(interval_exp_name, bool) or not isinstance(interval_exp_name, int):
            raise ConfigError(f"`interval_exp_name` must be an integer, got {interval_exp_name!r}")
        if meta is not None:
            try:
                jsonlib.dumps(meta)
            except (TypeError, ValueError) as err:
                raise ConfigError(f"`meta` must be json-serialisable for the .log.json meta line: {err}") from None
        self.interval_exp_name = interval_exp_name
        self.json = bool(json)
        self.meta = dict(meta or {})
        self.console = bool(console)
        self._fixed_timestamp = timestamp
        self.timestamp: str | None = None
        self.log_path: str | None = None
        self.json_log_path: str | None = None
        self.exp_name: str | None = None
        self._handlers: list[logging.Handler] = []
        self._old_level: int | None = None
        self._start_iter = 0
        self._time_sec_tot = 0.0

    # ------------------------------------------------------------------ run set-up / tear-down
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._start_iter = completed_iters(trainer)
        self._time_sec_tot = 0.0
        log_dir = trainer.log_dir or trainer.default_root_dir  # a collective under DDP: every rank asks
        if not trainer.is_global_zero:
            return
        self._close()
        self.timestamp = self._fixed_timestamp or time.strftime("%Y%m%d_%H%M%S", time.localtime())
        os.makedirs(log_dir, exist_ok=True)
        self.log_path = os.path.join(log_dir, f"{self.timestamp}.log")
        self.json_log_path = os.path.join(log_dir, f"{self.timestamp}.log.json") if self.json else None
        self._open_log_file(self.log_path)
        meta = run_meta(log_dir)
        meta.update(self.meta)
        meta.setdefault("hook_msgs", {})  # mmcv's runner.meta always has it (empty before any checkpoint)
        batches = trainer.num_training_batches
        if self.by_epoch and isinstance(batches, int) and batches > 0:
            # Not in mmcv's meta line: curves (detlight.plotting) need it when the interval does not divide an epoch.
            meta.setdefault("iters_per_epoch", batches)
        self.exp_name = meta.get("exp_name")
        self._dump(meta)
        for line in preamble(trainer, log_dir):
            # The hook table is long: in a notebook it goes to the .log file only .
            long = line.startswith("Hooks will be executed")
            logging.getLogger(LOGGER_NAME).info(line, extra={"detlight_file_only": long and in_notebook()})
        self._exp_name_line(True)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._close()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._close()

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._close()

    def _open_log_file(self, path: str) -> None:
        logger = logging.getLogger(LOGGER_NAME)
        if self.console and not logger.hasHandlers():
            console = TqdmLoggingHandler(sys.stderr)  # printed above an active progress bar
            console.addFilter(lambda record: not getattr(record, "detlight_file_only", False))
            self._handlers.append(console)
        self._handlers.append(logging.FileHandler(path, mode="a", encoding="utf-8"))
        for handler in self._handlers:
            handler.setFormatter(logging.Formatter(LOG_FORMAT))
            logger.addHandler(handler)
        if logger.getEffectiveLevel() > logging.INFO:
            self._old_level = logger.level
            logger.setLevel(logging.INFO)

    def _close(self) -> None:
        logger = logging.getLogger(LOGGER_NAME)
        for handler in self._handlers:
            logger.removeHandler(handler)
            handler.close()
        self._handlers = []
        if self._old_level is not None:
            logger.setLevel(self._old_level)
            self._old_level = None

    # ------------------------------------------------------------------ logging
    def log_train(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        values: OrderedDict[str, float],
        batch_idx: int,
        iteration: int,
    ) -> None:
        log_dict: OrderedDict[str, Any] = OrderedDict(
            mode="train",
            epoch=trainer.current_epoch + 1,
            iter=batch_idx + 1 if self.by_epoch else iteration + 1,
        )
        lrs = current_lrs(trainer)
        if lrs:
            log_dict["lr"] = lrs[0]
        if "time" in values and pl_module.device.type == "cuda":
            log_dict["memory"] = reduce_max(int(torch.cuda.max_memory_allocated(pl_module.device) / (1024 * 1024)))
        log_dict.update(values)
        if not trainer.is_global_zero:
            return
        exp_due = (iteration + 1) % self.interval_exp_name == 0 if self.interval_exp_name > 0 else False
        self._exp_name_line(exp_due)
        self._info(self._train_head(trainer, log_dict, iteration) + _items(log_dict))
        self._dump(log_dict)

    def log_eval(self, trainer: pl.Trainer, pl_module: pl.LightningModule, results: OrderedDict[str, float]) -> None:
        if not trainer.is_global_zero:
            return
        log_dict: OrderedDict[str, Any] = OrderedDict(
            mode="val", epoch=trainer.current_epoch + 1, iter=int(sum(trainer.num_val_batches))
        )
        lrs = current_lrs(trainer)
        if lrs:
            log_dict["lr"] = lrs[0]
        log_dict.update((k, float(v)) for k, v in results.items())
        head = f"Epoch(val) [{log_dict['epoch']}][{log_dict['iter']}]\t" if self.by_epoch else (
            f"Iter(val) [{log_dict['iter']}]\t")
        self._info(head + _items(log_dict))
        self._dump(log_dict)

    def _train_head(self, trainer: pl.Trainer, log_dict: OrderedDict[str, Any], iteration: int) -> str:
        total = max_iters(trainer)
        if self.by_epoch:
            batches = trainer.num_training_batches
            head = f"Epoch [{log_dict['epoch']}][{log_dict['iter']}/{int(batches) if math.isfinite(batches) else '?'}]\t"
        else:
            head = f"Iter [{log_dict['iter']}/{total if total is not None else '?'}]\t"
        if "lr" in log_dict:
            head += f"lr: {log_dict['lr']:.3e}, "
        if "time" in log_dict:
            self._time_sec_tot += log_dict["time"] * self.interval
            if total is not None:
                time_sec_avg = self._time_sec_tot / max(1, iteration - self._start_iter + 1)
                eta_sec = max(0.0, time_sec_avg * (total - iteration - 1))
                head += f"eta: {datetime.timedelta(seconds=int(eta_sec))}, "
            head += f"time: {log_dict['time']:.3f}, "
            if "data_time" in log_dict:
                head += f"data_time: {log_dict['data_time']:.3f}, "
            if "memory" in log_dict:
                head += f"memory: {log_dict['memory']}, "
        return head

    def _exp_name_line(self, due: bool) -> None:
        if due and self.exp_name:
            self._info(f"Exp name: {self.exp_name}")

    @staticmethod
    def _info(message: str) -> None:
        logging.getLogger(LOGGER_NAME).info(message)

    def _dump(self, record: dict[str, Any]) -> None:
        if self.json_log_path is None:
            return
        with open(self.json_log_path, "a+", encoding="utf-8") as f:
            f.write(jsonlib.dumps(OrderedDict((k, _round_float(v)) for k, v in record.items()), default=str) + "\n")


def read_json_log(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a ``.log.json`` as mmdet3d's ``analyze_logs.py`` does: one object per line, lines without ``epoch``
    (the meta line) skipped. Returns the records in file order.

    Example:
        >>> import tempfile
        >>> with tempfile.NamedTemporaryFile("w", suffix=".log.json", delete=False) as f:
        ...     _ = f.write('{"seed": 0}\\n{"mode": "train", "epoch": 1, "iter": 10, "loss": 0.5}\\n')
        >>> read_json_log(f.name)
        [{'mode': 'train', 'epoch': 1, 'iter': 10, 'loss': 0.5}]
    """
    records: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = jsonlib.loads(line)
            except jsonlib.JSONDecodeError as err:
                raise ValueError(f"{path}:{line_no} is not a json object ({err.msg}): {line.strip()[:80]!r}") from None
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{line_no} holds a {type(record).__name__}, expected one json object")
            if "epoch" in record:
                records.append(record)
    return records


def _items(log_dict: OrderedDict[str, Any]) -> str:
    """mmcv's ``key: value`` list: floats as ``%.4f``, head keys left out."""
    return ", ".join(f"{k}: {f'{v:.4f}' if isinstance(v, float) else v}" for k, v in log_dict.items()
                     if k not in HEAD_KEYS)


def _round_float(value: Any) -> Any:
    if isinstance(value, list):
        return [_round_float(v) for v in value]
    if isinstance(value, float):
        return round(value, 5)
    return value


def preamble(trainer: pl.Trainer, work_dir: str) -> list[str]:
    """mmcv's start-of-run lines: host and work_dir, hook order by stage, workflow and length, checkpoint folder."""
    lines = [f"Start running, host: {_host()}, work_dir: {os.path.abspath(work_dir)}",
             "Hooks will be executed in the following order:\n" + hook_table(trainer)]
    workflow = next((cb for cb in trainer.callbacks if type(cb).__name__ == "Workflow"), None)  # type: ignore[attr-defined]
    flow = getattr(workflow, "workflow", [("train", 1)])
    if workflow is not None and not getattr(workflow, "by_epoch", True):
        lines.append(f"workflow: {flow}, max: {getattr(workflow, 'max_iters', None)} iters")
    elif trainer.max_epochs is not None and trainer.max_epochs > 0:
        lines.append(f"workflow: {flow}, max: {trainer.max_epochs} epochs")
    elif trainer.max_steps is not None and trainer.max_steps > 0:
        lines.append(f"workflow: {flow}, max: {trainer.max_steps} iters")
    for cb in trainer.callbacks:  # type: ignore[attr-defined]
        if type(cb).__name__ == "MMCheckpoint" and getattr(cb, "dirpath", None):
            lines.append(f"Checkpoints will be saved to {cb.dirpath} by HardDiskBackend.")
    return lines


def hook_table(trainer: pl.Trainer) -> str:
    """mmcv's ``runner.get_hook_info()``: per stage, ``(PRIORITY    ) ClassName`` of every callback acting there.

    A callback acts at a stage when it overrides one of the Lightning hooks that play it (see :data:`STAGES`), or,
    when its class declares ``MMCV_STAGES``, when the stage is listed there. Progress bars are left out.
    """
    from lightning.pytorch.callbacks import Callback, ProgressBar

    blocks = []
    for stage, hooks in STAGES:
        rows = []
        for cb in trainer.callbacks:  # type: ignore[attr-defined]
            cls = type(cb)
            if isinstance(cb, ProgressBar):  # terminal output, not a hook
                continue
            declared = getattr(cls, "MMCV_STAGES", None)
            acts = stage in declared if declared is not None else any(
                getattr(cls, h, None) is not getattr(Callback, h) for h in hooks)
            if acts:
                priority = PRIORITY_OF.get(cls.__name__, "NORMAL")
                rows.append(f"({priority:<12}) {cls.__name__:<35}")
        if rows:
            blocks.append(f"{stage}:\n" + "\n".join(rows) + "\n -------------------- ")
    return "\n".join(blocks)


def _host() -> str:
    """mmcv ``get_host_info``: ``user@hostname``."""
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in some containers
        user = "?"
    return f"{user}@{socket.gethostname()}"
