"""Every mmcv 1.7.2 standard hook and every mmdet 2.28.2 ``mmdet/core/hook`` hook through MMCVHooks: runs or refused.

:func:`matrix` builds each class (mmcv's from its ``HOOKS`` registry or ``mmcv.runner``, mmdet's from the copied files
in ``fixtures/mmdet_hooks``), gives it to :class:`MMCVHooks` next to detlight's counterpart, and runs two epochs of two
batches. A row is ``(hook, source, outcome, detail)`` with outcome ``runs``, ``runs, replaces X`` or ``refused``
(detail: the replacement named in the message). Any other exception is a crash and fails the tests that use it.
Run ``python tests/compat/hook_matrix.py`` (with or without mmcv; without it the shim is installed) for the table.
"""

from __future__ import annotations

import importlib
import sys
import tempfile
import types
from pathlib import Path
from typing import Any

from mmcv_hook_cases import PKG, fit

from detlight.callbacks import CheckInvalidLoss, EmptyCache, SetEpochInfo, SyncBuffers
from detlight.callbacks.checkpoint import MMCheckpoint
from detlight.callbacks.ema import EMA
from detlight.callbacks.lr_updater import LrUpdater, MomentumUpdater
from detlight.compat.hook_table import standard_base, standard_hook_table
from detlight.exceptions import HookError

#: mmdet 2.28.2 mmdet/core/hook/*.py: class -> file (MMDetWandbHook's file needs mmdet itself; see README there).
MMDET_HOOKS = {
    "CheckInvalidLossHook": "checkloss_hook", "ExpMomentumEMAHook": "ema", "LinearMomentumEMAHook": "ema",
    "MemoryProfilerHook": "memory_profiler_hook", "SetEpochInfoHook": "set_epoch_info_hook",
    "SyncNormHook": "sync_norm_hook", "SyncRandomSizeHook": "sync_random_size_hook",
    "YOLOXLrUpdaterHook": "yolox_lrupdater_hook", "YOLOXModeSwitchHook": "yolox_mode_switch_hook",
    "MMDetWandbHook": "",
}
ARGS: dict[str, dict[str, Any]] = {
    "CosineAnnealingLrUpdaterHook": {"min_lr": 0.0}, "CosineRestartLrUpdaterHook": {"periods": [2], "min_lr": 0.0},
    "CyclicLrUpdaterHook": {"by_epoch": False}, "ExpLrUpdaterHook": {"gamma": 0.9},
    "FlatCosineAnnealingLrUpdaterHook": {"min_lr": 0.0}, "InvLrUpdaterHook": {"gamma": 0.1},
    "LinearAnnealingLrUpdaterHook": {"min_lr": 0.0}, "OneCycleLrUpdaterHook": {"max_lr": 0.2, "by_epoch": False},
    "StepLrUpdaterHook": {"step": [1]}, "CosineAnnealingMomentumUpdaterHook": {"min_momentum": 0.8},
    "CyclicMomentumUpdaterHook": {"by_epoch": False}, "LinearAnnealingMomentumUpdaterHook": {"min_momentum": 0.8},
    "OneCycleMomentumUpdaterHook": {"by_epoch": False}, "StepMomentumUpdaterHook": {"step": [1]},
    "ClosureHook": {"fn_name": "after_train_iter", "fn": lambda runner: None},
    "ProfilerHook": {"activities": ["cpu"], "profile_iters": 1, "on_trace_ready": None},
    "CheckpointHook": {"interval": 1}, "CheckInvalidLossHook": {"interval": 1},
    "SyncRandomSizeHook": {"device": "cpu"}, "YOLOXLrUpdaterHook": {"num_last_epochs": 1, "min_lr_ratio": 0.05},
    "YOLOXModeSwitchHook": {"num_last_epochs": 1}, "MemoryProfilerHook": {"interval": 1},
}
#: detlight's counterpart added to the Trainer, to show that a replacing hook removes it.
COUNTERPARTS = {"LrUpdater": lambda: LrUpdater(policy="fixed"), "MomentumUpdater": lambda: MomentumUpdater(
    policy="step", step=[1]), "MMCheckpoint": lambda: MMCheckpoint(interval=1), "EMA": EMA,
    "CheckInvalidLoss": CheckInvalidLoss, "EmptyCache": EmptyCache, "SyncBuffers": SyncBuffers,
    "SetEpochInfo": SetEpochInfo}


def _class(name: str) -> tuple[type | None, str]:
    if name in MMDET_HOOKS:
        if not MMDET_HOOKS[name]:  # stands for the file that needs mmdet: the refusal is decided by the name
            return type(name, (importlib.import_module("mmcv.runner").Hook,), {}), "mmdet (name only)"
        return getattr(importlib.import_module(f"{PKG}.{MMDET_HOOKS[name]}"), name), "mmdet file"
    runner = importlib.import_module("mmcv.runner")
    registry = getattr(runner, "HOOKS", None)
    cls = getattr(runner, name, None) or (registry.get(name) if registry is not None else None)
    if cls is None:
        mod = importlib.import_module("mmcv.runner.hooks")
        cls = getattr(mod, name, None)
    return cls, "mmcv" if cls is not None else "absent"


def row(name: str, tmp: Path) -> tuple[str, str, str, str]:
    cls, source = _class(name)
    if cls is None:
        return name, source, "unavailable", "not served by this mmcv"
    if name == "MemoryProfilerHook" and "memory_profiler" not in sys.modules:
        fake = types.ModuleType("memory_profiler")
        fake.memory_usage = lambda: [0.0]  # type: ignore[attr-defined]
        sys.modules["memory_profiler"] = fake
    spec = {"class_path": f"{cls.__module__}.{cls.__qualname__}", **ARGS.get(name, {})}
    if source == "mmdet (name only)":
        spec = cls()
    mapping = standard_hook_table()[standard_base(cls) or name]
    target = mapping.target.rpartition(".")[2]
    extra = [COUNTERPARTS[target]()] if mapping.as_user_hook == "replace" and target in COUNTERPARTS else []
    try:
        trainer, _, _ = fit(tmp, [spec], extra=extra, enable_checkpointing=True)
    except HookError as err:
        text = str(err)
        if "not served by detlight's mmcv shim" in text:
            return name, source, "refused", text.rpartition(": ")[2]
        if "cannot run in detlight" not in text:
            raise
        return name, source, "refused", mapping.target or mapping.note
    if extra:
        assert not any(type(c) is type(extra[0]) for c in trainer.callbacks), f"{name} left {target} in place"
        return name, source, f"runs, replaces {target}", ""
    return name, source, "runs", ""


def matrix() -> list[tuple[str, str, str, str]]:
    names = sorted(set(standard_hook_table()) - {"Hook", "LrUpdaterHook", "MomentumUpdaterHook", "LoggerHook",
                                                  "EvalHook", "DistEvalHook", "NumClassCheckHook"})
    names += ["EvalHook", "DistEvalHook"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, name in enumerate(names):
            rows.append(row(name, Path(tmp) / str(i)))
    return rows


if __name__ == "__main__":  # pragma: no cover - prints the table for the docs
    import logging
    import warnings

    sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parent / "fixtures")]
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    from detlight.compat.mmcv_shim import install_mmcv_shim

    shim = install_mmcv_shim()
    print(f"| hook | from | {'shim' if shim else 'mmcv ' + importlib.import_module('mmcv').__version__} | named |")
    print("|---|---|---|---|")
    for hook, source, outcome, detail in matrix():
        print(f"| {hook} | {source} | {outcome} | {detail} |")
