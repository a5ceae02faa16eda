"""An opt-in, dependency-free ``mmcv`` for hook files written against mmcv 1.x, used only when mmcv is not installed.

Replaces: the parts of ``mmcv`` (1.7) that users' hook files import, so the same file runs with a real mmcv or
without one. :func:`install_mmcv_shim` (or ``MMCVHooks(mmcv_shim=True)``) appends an import finder to the *end* of
``sys.meta_path``: a real mmcv anywhere on ``sys.path`` is always found first and is never shadowed; the finder is
not installed at all when mmcv is importable. Nothing happens unless asked.

Served modules and names (the classes are ports of mmcv 1.7.2 in :mod:`detlight.compat.mmcv_shim_runner`):

- ``mmcv.runner`` / ``mmcv.runner.hooks``: ``Hook``, ``HOOKS``, ``Priority``, ``get_priority``, ``master_only``,
  ``get_dist_info``, ``allreduce_params``, ``OptimizerHook``, ``CheckpointHook``, ``LoggerHook``, ``EMAHook``,
  ``EmptyCacheHook``, ``DistSamplerSeedHook``, ``ClosureHook``, ``SyncBuffersHook``, ``LrUpdaterHook`` and its
  ``Fixed`` / ``Step`` / ``Exp`` / ``Poly`` / ``Inv`` / ``CosineAnnealing`` policies; also the submodules
  ``hooks.hook``, ``hooks.lr_updater`` (with ``annealing_cos`` / ``annealing_linear``), ``hooks.checkpoint``,
  ``hooks.optimizer``, ``hooks.logger`` (``.base``, ``.text``, ``.wandb``), ``hooks.ema``, ``hooks.evaluation``,
  ``priority`` and ``dist_utils``.
- ``mmcv.runner`` / ``mmcv.runner.checkpoint``: ``load_state_dict``, ``load_checkpoint``, ``_load_checkpoint``,
  ``save_checkpoint``, ``weights_to_cpu``, ``get_state_dict``, ``CheckpointLoader`` (local files,
  :mod:`detlight.compat.mmcv_shim_checkpoint`). Counted over 385 files importing from ``mmcv.runner`` (mmdet 2.28,
  mmdet3d 1.0, mmseg 0.30, BEVFormer, BEVDet, BEVDepth, bevfusion, TransFusion), the names imported most are
  ``BaseModule`` 164, ``force_fp32`` 124, ``auto_fp16`` 62 (model code, not hooks), ``get_dist_info`` 39,
  ``load_checkpoint`` 33, ``init_dist`` 17, ``wrap_fp16_model`` 17, ``load_state_dict`` 9, ``CheckpointLoader`` 8,
  ``_load_checkpoint`` 5, ``save_checkpoint`` 5; the 17 hook files among them import ``HOOKS``, ``Hook``,
  ``get_dist_info``, ``master_only`` and standard hooks, all served.
- Importable placeholders for mmcv's other standard hooks (the other LR policies, the momentum updaters, the
  concrete loggers, the fp16 / cumulative optimizer hooks, ``IterTimerHook``, ``EvalHook``, ``ProfilerHook``): a file
  that imports or subclasses them loads; building one raises a ``HookError`` naming detlight's replacement.
- ``mmcv.parallel``: ``is_module_wrapper``. ``mmcv.utils`` (and ``mmcv``): ``Registry``, ``digit_version``,
  ``is_str``, ``is_seq_of``, ``is_list_of``, ``get_logger``, ``print_log``; ``mmcv.__version__`` is ``"1.7.2"``.

Limits: no ``BaseModule``, fp16 decorators or ``init_dist`` (model and launch code, not hook code), no ``mmcv.cnn``, ``mmcv.ops``, ``mmcv.fileio``, ``mmcv.image``, runners or other hooks (importing any other
``mmcv`` submodule raises an ``ImportError`` that says so); ``HOOKS`` is detlight's registry and does not hold
mmcv's standard hooks, so ``{type: StepLrUpdaterHook}`` gets the sentence naming detlight's counterpart while an
*instance* of the shim's ``StepLrUpdaterHook`` (or a subclass of ``LrUpdaterHook``) runs in place of ``LrUpdater``;
``OptimizerHook`` can be subclassed but :class:`~detlight.callbacks.mmcv_hooks.MMCVHooks` refuses it;
``CheckpointHook`` writes local files only; LR updaters drive a single optimizer (mmcv's dict of optimizers is not
supported).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import types
from collections.abc import Sequence
from typing import Any

from detlight.compat.hook_registry import real_mmcv_available

__all__ = ["SHIM_MMCV_VERSION", "install_mmcv_shim", "mmcv_shim_installed", "real_mmcv_available",
           "uninstall_mmcv_shim"]

#: ``mmcv.__version__`` of the shim: the mmcv release whose behaviour it follows.
SHIM_MMCV_VERSION = "1.7.2"
_UNSERVED_NAMES = ("FlatCosineAnnealingLrUpdaterHook", "CosineRestartLrUpdaterHook", "CyclicLrUpdaterHook",
                   "OneCycleLrUpdaterHook", "LinearAnnealingLrUpdaterHook", "MomentumUpdaterHook",
                   "StepMomentumUpdaterHook", "CosineAnnealingMomentumUpdaterHook",
                   "LinearAnnealingMomentumUpdaterHook", "CyclicMomentumUpdaterHook", "OneCycleMomentumUpdaterHook",
                   "TextLoggerHook", "TensorboardLoggerHook", "WandbLoggerHook", "MlflowLoggerHook",
                   "NeptuneLoggerHook", "DvcliveLoggerHook", "PaviLoggerHook", "SegmindLoggerHook",
                   "ClearMLLoggerHook", "Fp16OptimizerHook", "GradientCumulativeOptimizerHook",
                   "GradientCumulativeFp16OptimizerHook", "IterTimerHook", "EvalHook", "DistEvalHook", "ProfilerHook")
#: mmcv.runner's checkpoint helpers, the ones most imported from ``mmcv.runner`` after BaseModule / fp16 decorators /
#: dist helpers (see detlight.compat.mmcv_shim_checkpoint).
_CHECKPOINT_NAMES = ("load_state_dict", "load_checkpoint", "_load_checkpoint", "save_checkpoint", "weights_to_cpu",
                     "get_state_dict", "CheckpointLoader")
_RUNNER_NAMES = ("Hook", "HOOKS", "Priority", "get_priority", "master_only", "get_dist_info", "allreduce_params",
                 "OptimizerHook", "CheckpointHook", "LoggerHook", "LrUpdaterHook", "FixedLrUpdaterHook",
                 "StepLrUpdaterHook", "ExpLrUpdaterHook", "PolyLrUpdaterHook", "InvLrUpdaterHook",
                 "CosineAnnealingLrUpdaterHook", "EMAHook", "EmptyCacheHook", "DistSamplerSeedHook", "ClosureHook",
                 "SyncBuffersHook", *_UNSERVED_NAMES, *_CHECKPOINT_NAMES)
_UTILS_NAMES = ("Registry", "digit_version", "is_str", "is_seq_of", "is_list_of", "get_logger", "print_log")
#: module name -> (is a package, names it exports)
_MODULES: dict[str, tuple[bool, tuple[str, ...]]] = {
    "mmcv": (True, _UTILS_NAMES),
    "mmcv.utils": (True, _UTILS_NAMES),
    "mmcv.parallel": (True, ("is_module_wrapper",)),
    "mmcv.runner": (True, _RUNNER_NAMES),
    "mmcv.runner.hooks": (True, _RUNNER_NAMES),
    "mmcv.runner.hooks.hook": (False, ("Hook", "HOOKS")),
    "mmcv.runner.hooks.lr_updater": (False, ("HOOKS", "Hook", "LrUpdaterHook", "FixedLrUpdaterHook",
                                             "StepLrUpdaterHook", "ExpLrUpdaterHook", "PolyLrUpdaterHook",
                                             "InvLrUpdaterHook", "CosineAnnealingLrUpdaterHook", "annealing_cos",
                                             "annealing_linear")),
    "mmcv.runner.hooks.checkpoint": (False, ("HOOKS", "Hook", "CheckpointHook")),
    "mmcv.runner.hooks.optimizer": (False, ("HOOKS", "Hook", "OptimizerHook")),
    "mmcv.runner.hooks.logger": (True, ("LoggerHook", *[n for n in _UNSERVED_NAMES if n.endswith("LoggerHook")])),
    "mmcv.runner.hooks.logger.wandb": (False, ("WandbLoggerHook",)),
    "mmcv.runner.hooks.logger.text": (False, ("TextLoggerHook",)),
    "mmcv.runner.hooks.ema": (False, ("EMAHook",)),
    "mmcv.runner.hooks.evaluation": (False, ("EvalHook", "DistEvalHook")),
    "mmcv.runner.hooks.logger.base": (False, ("Hook", "LoggerHook")),
    "mmcv.runner.priority": (False, ("Priority", "get_priority")),
    "mmcv.runner.dist_utils": (False, ("get_dist_info", "master_only", "allreduce_params")),
    "mmcv.runner.checkpoint": (False, _CHECKPOINT_NAMES),
}


def _value(name: str) -> Any:
    from detlight.compat import hook_base, mmcv_shim_checkpoint, mmcv_shim_runner

    if name in mmcv_shim_runner.UNSERVED:
        return mmcv_shim_runner.UNSERVED[name]
    if name in _CHECKPOINT_NAMES:
        return getattr(mmcv_shim_checkpoint, name)
    return getattr(hook_base, name, None) or getattr(mmcv_shim_runner, name)


class _ShimLoader(importlib.abc.Loader):
    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return None  # the default module object

    def exec_module(self, module: types.ModuleType) -> None:
        is_package, names = _MODULES[module.__name__]
        for name in names:
            setattr(module, name, _value(name))
        module.__detlight_shim__ = True  # type: ignore[attr-defined]
        module.__all__ = list(names)  # type: ignore[attr-defined]
        if module.__name__ == "mmcv":
            module.__version__ = SHIM_MMCV_VERSION  # type: ignore[attr-defined]


class _ShimFinder(importlib.abc.MetaPathFinder):
    """Serves the modules in ``_MODULES``; refuses other ``mmcv.*`` names with a message saying what it has."""

    detlight_mmcv_shim = True  # real_mmcv_available() skips this finder

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None,
                  ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "mmcv" and not fullname.startswith("mmcv."):
            return None
        root = sys.modules.get("mmcv")
        if root is not None and not getattr(root, "__detlight_shim__", False):
            return None  # a real mmcv is loaded: leave its submodules to it
        if fullname not in _MODULES:
            raise ModuleNotFoundError(
                f"No module named '{fullname}': detlight's mmcv shim (mmcv is not installed) provides only "
                f"{sorted(_MODULES)}; install mmcv 1.x for the rest", name=fullname)
        is_package = _MODULES[fullname][0]
        return importlib.machinery.ModuleSpec(fullname, _ShimLoader(), is_package=is_package)


_FINDER = _ShimFinder()



def mmcv_shim_installed() -> bool:
    """Whether :func:`install_mmcv_shim` is in effect."""
    return _FINDER in sys.meta_path


def install_mmcv_shim() -> bool:
    """Make ``import mmcv.runner`` etc. work without mmcv (see the module docstring for what is served).

    Idempotent. Does nothing when a real mmcv is importable: the real one is always used.

    Returns:
        True if the shim is in effect after the call, False if a real mmcv is used instead.

    Example:
        >>> import detlight.compat
        >>> if detlight.compat.install_mmcv_shim():
        ...     from mmcv.runner import HOOKS, Hook
        ...     assert Hook is detlight.compat.Hook
        >>> uninstall_mmcv_shim()
    """
    if mmcv_shim_installed():
        return True
    if real_mmcv_available():
        return False
    sys.meta_path.append(_FINDER)
    return True


def uninstall_mmcv_shim() -> None:
    """Remove the finder and every ``mmcv`` module it served (for tests; classes already imported stay usable).

    A real mmcv's modules are left alone.
    """
    if _FINDER in sys.meta_path:
        sys.meta_path.remove(_FINDER)
    for name in [n for n in sys.modules if n == "mmcv" or n.startswith("mmcv.")]:
        if getattr(sys.modules[name], "__detlight_shim__", False):
            del sys.modules[name]
