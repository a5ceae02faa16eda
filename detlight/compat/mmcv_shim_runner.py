"""What the dependency-free ``mmcv`` shim serves: ports of the mmcv 1.7 runner pieces that hook files import.

Replaces: ``mmcv.runner.hooks.{checkpoint,optimizer,logger.base}`` and the small hooks (EMA, EmptyCache,
DistSamplerSeed, Closure, SyncBuffers), for users without mmcv (see :mod:`detlight.compat.mmcv_shim` for how they are
installed and their limits). The hook classes follow mmcv 1.7.2 (Copyright (c) OpenMMLab, Apache-2.0), reduced to
local files and a single optimizer. The LR updater hooks are in :mod:`detlight.compat.mmcv_shim_lr`, the
``mmcv.utils`` / dist helpers and ``HOOKS`` in :mod:`detlight.compat.mmcv_shim_utils`; every name is still
importable from here.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from detlight.compat.hook_base import Hook
from detlight.compat.mmcv_shim_lr import (
    CosineAnnealingLrUpdaterHook,
    ExpLrUpdaterHook,
    FixedLrUpdaterHook,
    InvLrUpdaterHook,
    LrUpdaterHook,
    PolyLrUpdaterHook,
    StepLrUpdaterHook,
    annealing_cos,
    annealing_linear,
)
from detlight.compat.mmcv_shim_utils import (
    HOOKS,
    Registry,
    allreduce_params,
    digit_version,
    get_dist_info,
    get_logger,
    is_list_of,
    is_module_wrapper,
    is_seq_of,
    is_str,
    master_only,
    print_log,
)
from detlight.exceptions import HookError

__all__ = [
    "HOOKS",
    "UNSERVED",
    "ClosureHook",
    "DistSamplerSeedHook",
    "EMAHook",
    "EmptyCacheHook",
    "SyncBuffersHook",
    "CheckpointHook",
    "CosineAnnealingLrUpdaterHook",
    "ExpLrUpdaterHook",
    "FixedLrUpdaterHook",
    "InvLrUpdaterHook",
    "LoggerHook",
    "LrUpdaterHook",
    "OptimizerHook",
    "PolyLrUpdaterHook",
    "Registry",
    "StepLrUpdaterHook",
    "allreduce_params",
    "annealing_cos",
    "annealing_linear",
    "digit_version",
    "get_dist_info",
    "get_logger",
    "is_list_of",
    "is_module_wrapper",
    "is_seq_of",
    "is_str",
    "master_only",
    "print_log",
]

# ---------------------------------------------------------------------------------------------------- optimizer
class OptimizerHook(Hook):
    """Importable for subclassing only: detlight's adapter refuses it, as Lightning owns backward and the step."""

    def __init__(self, grad_clip: dict[str, Any] | None = None, detect_anomalous_params: bool = False) -> None:
        self.grad_clip = grad_clip
        self.detect_anomalous_params = detect_anomalous_params

    def clip_grads(self, params: Any) -> Any:
        params = [p for p in params if p.requires_grad and p.grad is not None]
        if params and self.grad_clip is not None:
            return nn.utils.clip_grad_norm_(params, **self.grad_clip)
        return None

    def after_train_iter(self, runner: Any) -> None:
        raise HookError(f"{type(self).__name__}.after_train_iter: OptimizerHook cannot run under Lightning (see "
                        "detlight.compat.hook_table.OPTIMIZER_REFUSAL)")


# ---------------------------------------------------------------------------------------------------- checkpoint
class CheckpointHook(Hook):
    """mmcv 1.7's ``CheckpointHook`` on local files: ``runner.save_checkpoint`` every ``interval``, old files pruned."""

    def __init__(self, interval: int = -1, by_epoch: bool = True, save_optimizer: bool = True,
                 out_dir: str | None = None, max_keep_ckpts: int = -1, save_last: bool = True,
                 sync_buffer: bool = False, file_client_args: dict[str, Any] | None = None, **kwargs: Any) -> None:
        self.interval, self.by_epoch, self.save_optimizer = interval, by_epoch, save_optimizer
        self.out_dir, self.max_keep_ckpts, self.save_last = out_dir, max_keep_ckpts, save_last
        self.args, self.sync_buffer, self.file_client_args = kwargs, sync_buffer, file_client_args

    def before_run(self, runner: Any) -> None:
        if not self.out_dir:
            self.out_dir = runner.work_dir
        if self.out_dir != runner.work_dir:
            self.out_dir = os.path.join(self.out_dir, os.path.basename(runner.work_dir.rstrip(os.sep)))
        runner.logger.info(f"Checkpoints will be saved to {self.out_dir} by the local file system.")
        self.args.setdefault("create_symlink", True)

    def after_train_epoch(self, runner: Any) -> None:
        if not self.by_epoch:
            return
        if self.every_n_epochs(runner, self.interval) or (self.save_last and self.is_last_epoch(runner)):
            runner.logger.info(f"Saving checkpoint at {runner.epoch + 1} epochs")
            if self.sync_buffer:
                allreduce_params(runner.model.buffers())
            self._save_checkpoint(runner)

    def after_train_iter(self, runner: Any) -> None:
        if self.by_epoch:
            return
        if self.every_n_iters(runner, self.interval) or (self.save_last and self.is_last_iter(runner)):
            runner.logger.info(f"Saving checkpoint at {runner.iter + 1} iterations")
            if self.sync_buffer:
                allreduce_params(runner.model.buffers())
            self._save_checkpoint(runner)

    @master_only
    def _save_checkpoint(self, runner: Any) -> None:
        runner.save_checkpoint(self.out_dir, save_optimizer=self.save_optimizer, **self.args)
        name, current = ("epoch_{}.pth", runner.epoch + 1) if self.by_epoch else ("iter_{}.pth", runner.iter + 1)
        template = self.args.get("filename_tmpl", name)
        if runner.meta is not None:
            runner.meta.setdefault("hook_msgs", {})["last_ckpt"] = os.path.join(str(self.out_dir),
                                                                                template.format(current))
        if self.max_keep_ckpts > 0:
            for step in range(current - self.max_keep_ckpts * self.interval, 0, -self.interval):
                path = os.path.join(str(self.out_dir), template.format(step))
                if not os.path.isfile(path):
                    break
                os.remove(path)


# ---------------------------------------------------------------------------------------------------- logger base
class LoggerHook(Hook):
    """mmcv 1.7's ``LoggerHook`` base: averages ``runner.log_buffer`` every ``interval`` and calls :meth:`log`."""

    def __init__(self, interval: int = 10, ignore_last: bool = True, reset_flag: bool = False,
                 by_epoch: bool = True) -> None:
        self.interval, self.ignore_last, self.reset_flag, self.by_epoch = interval, ignore_last, reset_flag, by_epoch

    def log(self, runner: Any) -> None:
        raise NotImplementedError

    @staticmethod
    def is_scalar(val: Any, include_np: bool = True, include_torch: bool = True) -> bool:
        if isinstance(val, numbers.Number):
            return True
        if include_np and getattr(val, "ndim", None) == 0 and not isinstance(val, torch.Tensor):
            return True
        return include_torch and isinstance(val, torch.Tensor) and val.numel() == 1

    def get_mode(self, runner: Any) -> str:
        if runner.mode == "train":
            return "train" if "time" in runner.log_buffer.output else "val"
        if runner.mode == "val":
            return "val"
        raise ValueError(f"runner mode should be 'train' or 'val', but got {runner.mode}")

    def get_epoch(self, runner: Any) -> int:
        if runner.mode == "train":
            return runner.epoch + 1
        if runner.mode == "val":
            return runner.epoch
        raise ValueError(f"runner mode should be 'train' or 'val', but got {runner.mode}")

    def get_iter(self, runner: Any, inner_iter: bool = False) -> int:
        return runner.inner_iter + 1 if self.by_epoch and inner_iter else runner.iter + 1

    def get_lr_tags(self, runner: Any) -> dict[str, float]:
        return {"learning_rate": runner.current_lr()[0]}

    def get_momentum_tags(self, runner: Any) -> dict[str, float]:
        return {"momentum": runner.current_momentum()[0]}

    def get_loggable_tags(self, runner: Any, allow_scalar: bool = True, allow_text: bool = False,
                          add_mode: bool = True, tags_to_skip: tuple[str, ...] = ("time", "data_time")) -> dict:
        tags = {}
        for var, val in runner.log_buffer.output.items():
            if var in tags_to_skip or (self.is_scalar(val) and not allow_scalar):
                continue
            if isinstance(val, str) and not allow_text:
                continue
            tags[f"{self.get_mode(runner)}/{var}" if add_mode else var] = val
        tags.update(self.get_lr_tags(runner))
        tags.update(self.get_momentum_tags(runner))
        return tags

    def before_run(self, runner: Any) -> None:
        for hook in runner.hooks[::-1]:
            if isinstance(hook, LoggerHook):
                hook.reset_flag = True
                break

    def before_epoch(self, runner: Any) -> None:
        runner.log_buffer.clear()

    def after_train_iter(self, runner: Any) -> None:
        if self.by_epoch and self.every_n_inner_iters(runner, self.interval):
            runner.log_buffer.average(self.interval)
        elif not self.by_epoch and self.every_n_iters(runner, self.interval):
            runner.log_buffer.average(self.interval)
        elif self.end_of_epoch(runner) and not self.ignore_last:
            runner.log_buffer.average(self.interval)
        if runner.log_buffer.ready:
            self.log(runner)
            if self.reset_flag:
                runner.log_buffer.clear_output()

    def after_train_epoch(self, runner: Any) -> None:
        if runner.log_buffer.ready:
            self.log(runner)
            if self.reset_flag:
                runner.log_buffer.clear_output()

    def after_val_epoch(self, runner: Any) -> None:
        runner.log_buffer.average()
        self.log(runner)
        if self.reset_flag:
            runner.log_buffer.clear_output()


# ---------------------------------------------------------------------------------------------------- small hooks
class EMAHook(Hook):
    """mmcv 1.7's ``EMAHook`` (``ema_*`` buffers on the model, swapped in around each train epoch)."""

    def __init__(self, momentum: float = 0.0002, interval: int = 1, warm_up: int = 100,
                 resume_from: str | None = None) -> None:
        if not (isinstance(interval, int) and interval > 0 and 0 < momentum < 1):
            raise ValueError(f"EMAHook needs 0 < momentum < 1 and a positive int interval, got {momentum}, {interval}")
        if resume_from is not None:
            raise ValueError("EMAHook(resume_from=...) is not supported by detlight's mmcv shim; resume with "
                             "`fit(ckpt_path=...)`, which restores the ema_* buffers")
        self.warm_up, self.interval, self.momentum = warm_up, interval, momentum**interval

    def before_run(self, runner: Any) -> None:
        model = runner.model.module if is_module_wrapper(runner.model) else runner.model
        self.param_ema_buffer: dict[str, str] = {}
        self.model_parameters = dict(model.named_parameters(recurse=True))
        for name, value in self.model_parameters.items():
            buffer_name = f"ema_{name.replace('.', '_')}"
            self.param_ema_buffer[name] = buffer_name
            model.register_buffer(buffer_name, value.data.clone())
        self.model_buffers = dict(model.named_buffers(recurse=True))

    def after_train_iter(self, runner: Any) -> None:
        step = runner.iter
        momentum = min(self.momentum, (1 + step) / (self.warm_up + step))
        if step % self.interval != 0:
            return
        for name, parameter in self.model_parameters.items():
            self.model_buffers[self.param_ema_buffer[name]].mul_(1 - momentum).add_(parameter.data, alpha=momentum)

    def after_train_epoch(self, runner: Any) -> None:
        self._swap_ema_parameters()

    def before_train_epoch(self, runner: Any) -> None:
        self._swap_ema_parameters()

    def _swap_ema_parameters(self) -> None:
        for name, value in self.model_parameters.items():
            temp = value.data.clone()
            buffer = self.model_buffers[self.param_ema_buffer[name]]
            value.data.copy_(buffer.data)
            buffer.data.copy_(temp)


class EmptyCacheHook(Hook):
    def __init__(self, before_epoch: bool = False, after_epoch: bool = True, after_iter: bool = False) -> None:
        self._before_epoch, self._after_epoch, self._after_iter = before_epoch, after_epoch, after_iter

    def after_iter(self, runner: Any) -> None:
        if self._after_iter:
            torch.cuda.empty_cache()

    def before_epoch(self, runner: Any) -> None:
        if self._before_epoch:
            torch.cuda.empty_cache()

    def after_epoch(self, runner: Any) -> None:
        if self._after_epoch:
            torch.cuda.empty_cache()


class DistSamplerSeedHook(Hook):
    def before_epoch(self, runner: Any) -> None:
        if hasattr(runner.data_loader.sampler, "set_epoch"):
            runner.data_loader.sampler.set_epoch(runner.epoch)
        elif hasattr(runner.data_loader.batch_sampler.sampler, "set_epoch"):
            runner.data_loader.batch_sampler.sampler.set_epoch(runner.epoch)


class ClosureHook(Hook):
    def __init__(self, fn_name: str, fn: Callable[..., Any]) -> None:
        if not hasattr(self, fn_name) or not callable(fn):
            raise ValueError(f"ClosureHook needs a stage name and a callable, got {fn_name!r}, {fn!r}")
        setattr(self, fn_name, fn)


class SyncBuffersHook(Hook):
    def __init__(self, distributed: bool = True) -> None:
        self.distributed = distributed

    def after_epoch(self, runner: Any) -> None:
        if self.distributed:
            allreduce_params(runner.model.buffers())


# ---------------------------------------------------------------------------------------------------- not served
def _unserved(name: str, base: type, replacement: str) -> type:
    """A class hook files can import and subclass; building it raises with the replacement (or "install mmcv")."""

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        raise HookError(f"mmcv's `{name}` is not served by detlight's mmcv shim: {replacement}")

    return type(name, (base,), {"__init__": __init__, "__module__": __name__,
                                "__doc__": f"Placeholder for mmcv's ``{name}``: {replacement}."})


_INSTALL = "install mmcv 1.7 to run it unchanged, or use "
UNSERVED: dict[str, type] = {
    **{f"{p}LrUpdaterHook": _unserved(f"{p}LrUpdaterHook", LrUpdaterHook, _INSTALL + "detlight.callbacks.LrUpdater")
       for p in ("FlatCosineAnnealing", "CosineRestart", "Cyclic", "OneCycle", "LinearAnnealing")},
    **{f"{p}MomentumUpdaterHook": _unserved(f"{p}MomentumUpdaterHook", Hook,
                                            _INSTALL + "detlight.callbacks.MomentumUpdater")
       for p in ("", "Step", "CosineAnnealing", "LinearAnnealing", "Cyclic", "OneCycle")},
    **{name: _unserved(name, LoggerHook, "detlight.callbacks.TextLogger / IntervalLogger with a Lightning logger")
       for name in ("TextLoggerHook", "TensorboardLoggerHook", "WandbLoggerHook", "MlflowLoggerHook",
                    "NeptuneLoggerHook", "DvcliveLoggerHook", "PaviLoggerHook", "SegmindLoggerHook",
                    "ClearMLLoggerHook")},
    **{name: _unserved(name, OptimizerHook, "trainer.precision / trainer.accumulate_grad_batches")
       for name in ("Fp16OptimizerHook", "GradientCumulativeOptimizerHook", "GradientCumulativeFp16OptimizerHook")},
    "IterTimerHook": _unserved("IterTimerHook", Hook, "detlight.callbacks.IterTimer"),
    "EvalHook": _unserved("EvalHook", Hook, "detlight.callbacks.Evaluation"),
    "DistEvalHook": _unserved("DistEvalHook", Hook, "detlight.callbacks.Evaluation"),
    "ProfilerHook": _unserved("ProfilerHook", Hook, _INSTALL + "trainer.profiler: pytorch"),
}
globals().update(UNSERVED)  # importable as detlight.compat.mmcv_shim_runner.<Name> too (class_path)
