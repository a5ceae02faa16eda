"""Build a ``torch.optim`` optimizer from an mmcv ``optimizer`` dict, param-wise multipliers included.

Replaces: mmcv's ``build_optimizer`` and ``DefaultOptimizerConstructor`` (``mmcv/runner/optimizer/``), and mmdet's
``auto_scale_lr``. The param groups, their order and their ``lr`` / ``weight_decay`` entries are the ones mmcv builds
for the same model and config (docs/mmcv-semantics.md §1, ``optimizer`` and ``auto_scale_lr`` rows).

Example:
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    >>> cfg = {"type": "SGD", "lr": 0.02, "momentum": 0.9, "weight_decay": 1e-4,
    ...        "paramwise_cfg": {"norm_decay_mult": 0.0, "bias_lr_mult": 2.0}}
    >>> opt = build_optimizer(model, cfg)
    >>> [(g.get("lr"), g["weight_decay"]) for g in opt.param_groups]
    [(0.02, 0.0001), (0.04, 0.0001), (0.02, 0.0), (0.02, 0.0)]
"""

from __future__ import annotations

import copy
import importlib
import inspect
import logging
import warnings
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm

from detlight.exceptions import ConfigError

__all__ = ["PARAMWISE_KEYS", "build_optimizer", "optimizer_class", "param_groups", "scale_lr", "torch_optimizers"]

log = logging.getLogger(__name__)

#: Keys of mmcv's ``paramwise_cfg`` (DefaultOptimizerConstructor); anything else is rejected as a likely typo.
PARAMWISE_KEYS = (
    "custom_keys", "bias_lr_mult", "bias_decay_mult", "norm_decay_mult", "dwconv_decay_mult", "dcn_offset_lr_mult",
    "bypass_duplicate",
)
_CUSTOM_KEY_KEYS = ("lr_mult", "decay_mult")
_NORM_TYPES = (_BatchNorm, _InstanceNorm, nn.GroupNorm, nn.LayerNorm)
# mmcv.ops' DeformConv2d / ModulatedDeformConv2d (and their *Pack subclasses); torchvision's DeformConv2d too.
_DCN_NAMES = frozenset({"DeformConv2d", "ModulatedDeformConv2d"})


def torch_optimizers() -> list[str]:
    """Names of the optimizer classes in ``torch.optim`` (what mmcv auto-registers)."""
    return sorted(
        name for name, obj in vars(torch.optim).items()
        if inspect.isclass(obj) and issubclass(obj, torch.optim.Optimizer) and obj is not torch.optim.Optimizer
    )


def optimizer_class(type_name: str, key: str = "model.optimizer.type") -> type[torch.optim.Optimizer]:
    """Resolve ``'SGD'`` (a ``torch.optim`` name) or ``'pkg.module.Class'`` (an import path) to a class.

    Raises:
        ValueError: If the name resolves to nothing, or to something that is not an optimizer class.
    """
    if not isinstance(type_name, str) or not type_name:
        raise ConfigError(f"`{key}` must be an optimizer name such as 'SGD', got {type_name!r}")
    if "." not in type_name:
        obj = getattr(torch.optim, type_name, None)
    else:
        module_name, _, attr = type_name.rpartition(".")
        try:
            obj = getattr(importlib.import_module(module_name), attr, None)
        except ImportError:
            obj = None
    if not (inspect.isclass(obj) and issubclass(obj, torch.optim.Optimizer)):
        raise ConfigError(
            f"`{key}`: {type_name!r} is not an optimizer class; use a torch.optim name ({', '.join(torch_optimizers())})"
            " or the import path of a torch.optim.Optimizer subclass"
        )
    return obj


def _check_kwargs(cls: type, kwargs: Mapping[str, Any], key: str) -> None:
    params = inspect.signature(cls).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    accepted = [name for name in params if name not in ("self", "params")]
    for name in kwargs:
        if name not in accepted:
            raise ConfigError(f"`{key}.{name}` is not an argument of {cls.__name__}; it accepts {accepted}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, torch.Tensor)) and not isinstance(value, bool)


def _check_numbers(cls: type, kwargs: Mapping[str, Any], key: str) -> None:
    """A value for an argument whose default is a number (or a tuple of numbers) must be one too."""
    params = inspect.signature(cls).parameters
    for name, value in kwargs.items():
        default = params[name].default if name in params else inspect.Parameter.empty
        if _is_number(default) and not _is_number(value):
            raise ConfigError(f"`{key}.{name}`: expected a number ({type(default).__name__}, e.g. {default!r}), got "
                              f"{value!r}")
        if isinstance(default, tuple) and default and all(_is_number(d) for d in default) and not (
                isinstance(value, (list, tuple)) and len(value) == len(default) and all(_is_number(v) for v in value)):
            raise ConfigError(f"`{key}.{name}`: expected {len(default)} numbers (e.g. {list(default)}), got {value!r}")


def _check_paramwise(paramwise: Mapping[str, Any], base_lr: float | None, base_wd: float | None, key: str) -> None:
    """mmcv ``DefaultOptimizerConstructor._validate_cfg``, plus a check for unknown keys."""
    if not isinstance(paramwise, Mapping):
        raise ConfigError(f"`{key}.paramwise_cfg` must be a dict, got {type(paramwise).__name__}")
    for name in paramwise:
        if name not in PARAMWISE_KEYS:
            raise ConfigError(f"`{key}.paramwise_cfg.{name}` is not a paramwise_cfg key; known keys: {PARAMWISE_KEYS}")
    custom = paramwise.get("custom_keys", {})
    if not isinstance(custom, Mapping):
        raise ConfigError(f"`{key}.paramwise_cfg.custom_keys` must be a dict of {{name: {{lr_mult, decay_mult}}}}")
    for name, mults in custom.items():
        if not isinstance(mults, Mapping) or any(k not in _CUSTOM_KEY_KEYS for k in mults):
            raise ConfigError(
                f"`{key}.paramwise_cfg.custom_keys.{name}` must be a dict with keys among {_CUSTOM_KEY_KEYS}, "
                f"got {mults!r}"
            )
        if "decay_mult" in mults and base_wd is None:
            raise ConfigError(f"`{key}.paramwise_cfg.custom_keys.{name}.decay_mult` needs `{key}.weight_decay`")
    for name in ("bias_decay_mult", "norm_decay_mult", "dwconv_decay_mult"):
        if name in paramwise and base_wd is None:
            raise ConfigError(f"`{key}.paramwise_cfg.{name}` needs `{key}.weight_decay`")
    if base_lr is None and (custom or any(n in paramwise for n in ("bias_lr_mult", "dcn_offset_lr_mult"))):
        raise ConfigError(f"`{key}.paramwise_cfg` lr multipliers need `{key}.lr`")


def _is_dcn(module: nn.Module) -> bool:
    return any(klass.__name__ in _DCN_NAMES for klass in type(module).__mro__)


def param_groups(
    model: nn.Module, paramwise: Mapping[str, Any], base_lr: float | None, base_wd: float | None
) -> list[dict[str, Any]]:
    """One param group per parameter, in mmcv's order and with mmcv's ``lr`` / ``weight_decay`` rules.

    A custom key matches when it is a substring of ``'<module prefix>.<param name>'``; keys are tried longest first
    (ties alphabetically) and the first match wins over the bias / norm / depth-wise rules.
    """
    custom: Mapping[str, Mapping[str, float]] = paramwise.get("custom_keys", {})
    sorted_keys = sorted(sorted(custom), key=len, reverse=True)
    mults = {name: paramwise.get(name, 1.0) for name in PARAMWISE_KEYS if name.endswith("_mult")}
    bypass_duplicate = bool(paramwise.get("bypass_duplicate", False))
    groups: list[dict[str, Any]] = []
    seen: set[int] = set()

    def add(module: nn.Module, prefix: str, in_dcn: bool) -> None:
        is_norm = isinstance(module, _NORM_TYPES)
        is_dwconv = isinstance(module, nn.Conv2d) and module.in_channels == module.groups
        for name, param in module.named_parameters(recurse=False):
            group: dict[str, Any] = {"params": [param]}
            # mmcv tests requires_grad first, so a frozen tied parameter is added twice and torch raises; skipping
            # it here only changes what would otherwise be that error
            if bypass_duplicate and id(param) in seen:
                warnings.warn(f"{prefix} is duplicate. It is skipped since bypass_duplicate=True", stacklevel=2)
                continue
            seen.add(id(param))
            if not param.requires_grad:
                groups.append(group)
                continue
            match = next((k for k in sorted_keys if k in f"{prefix}.{name}"), None)
            if match is not None:
                group["lr"] = base_lr * custom[match].get("lr_mult", 1.0)  # type: ignore[operator]
                if base_wd is not None:
                    group["weight_decay"] = base_wd * custom[match].get("decay_mult", 1.0)
            else:
                _default_rules(group, name, prefix, module, is_norm, is_dwconv, in_dcn, mults, base_lr, base_wd)
            groups.append(group)
        # mmcv passes "is this module a DCN" to the children, so that its conv_offset gets dcn_offset_lr_mult
        for child_name, child in module.named_children():
            add(child, f"{prefix}.{child_name}" if prefix else child_name, _is_dcn(module))

    add(model, "", False)
    return groups


def _default_rules(
    group: dict[str, Any],
    name: str,
    prefix: str,
    module: nn.Module,
    is_norm: bool,
    is_dwconv: bool,
    in_dcn: bool,
    mults: Mapping[str, float],
    base_lr: float | None,
    base_wd: float | None,
) -> None:
    if name == "bias" and not (is_norm or in_dcn) and "bias_lr_mult" in mults and base_lr is not None:
        group["lr"] = base_lr * mults["bias_lr_mult"]
    if "conv_offset" in prefix and in_dcn and isinstance(module, nn.Conv2d) and base_lr is not None:
        group["lr"] = base_lr * mults["dcn_offset_lr_mult"]
    if base_wd is None:
        return
    if is_norm:
        group["weight_decay"] = base_wd * mults["norm_decay_mult"]
    elif is_dwconv:
        group["weight_decay"] = base_wd * mults["dwconv_decay_mult"]
    elif name == "bias" and not in_dcn:
        group["weight_decay"] = base_wd * mults["bias_decay_mult"]


def build_optimizer(
    model: nn.Module, cfg: Mapping[str, Any], lr_scale: float = 1.0, key: str = "model.optimizer"
) -> torch.optim.Optimizer:
    """Build the optimizer an mmcv ``optimizer`` dict describes.

    Args:
        model: The model (a ``.module`` wrapper such as DDP is unwrapped, as mmcv does).
        cfg: ``{type: 'SGD' | 'torch.optim.AdamW' | import path, lr, ..., paramwise_cfg: {...}}``. ``class_path``
            (+ ``init_args``) is accepted in place of ``type``; ``constructor`` may only name mmcv's default.
        lr_scale: Factor applied to ``lr`` before the param groups are made (``auto_scale_lr``; see :func:`scale_lr`).
        key: Config path used in error messages.

    Raises:
        ValueError: For an unknown optimizer, an argument the class does not take or a bad ``paramwise_cfg``.
    """
    cfg = dict(copy.deepcopy(cfg))
    if "class_path" in cfg:
        cfg["type"] = cfg.pop("class_path")
        cfg.update(cfg.pop("init_args", None) or {})
    if "type" not in cfg:
        raise ConfigError(f"`{key}` needs a `type` key, e.g. {{type: SGD, lr: 0.02, momentum: 0.9}}")
    constructor = cfg.pop("constructor", "DefaultOptimizerConstructor")
    if constructor != "DefaultOptimizerConstructor":
        raise ConfigError(f"`{key}.constructor`: only 'DefaultOptimizerConstructor' is supported, got {constructor!r}")
    cls = optimizer_class(cfg.pop("type"), f"{key}.type")
    paramwise = cfg.pop("paramwise_cfg", None) or {}
    _check_kwargs(cls, cfg, key)
    _check_numbers(cls, cfg, key)
    if lr_scale != 1.0:
        if "lr" not in cfg:
            raise ConfigError(f"`{key}.lr` is needed to scale the learning rate (auto_scale_lr)")
        cfg["lr"] = lr_scale * cfg["lr"]
    _check_paramwise(paramwise, cfg.get("lr"), cfg.get("weight_decay"), key)
    module = model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model
    if not any(p.requires_grad for p in module.parameters()):
        what = "no parameters" if not list(module.parameters()) else "no parameter with requires_grad=True"
        raise ConfigError(f"the model {type(module).__module__}.{type(module).__qualname__} has {what}, so `{key}` "
                          "has nothing to optimize; give `model.model` a detector with trainable parameters")
    params: Any = module.parameters() if not paramwise else param_groups(
        module, paramwise, cfg.get("lr"), cfg.get("weight_decay")
    )
    return cls(params, **cfg)


def scale_lr(
    cfg: Mapping[str, Any], auto_scale_lr: Mapping[str, Any] | None, world_size: int, samples_per_gpu: int
) -> tuple[dict[str, Any], float]:
    """mmdet ``auto_scale_lr``: ``lr *= world_size * samples_per_gpu / base_batch_size`` when enabled.

    Args:
        cfg: The mmcv ``optimizer`` dict (not modified).
        auto_scale_lr: ``{enable, base_batch_size}``; ``None`` or ``enable: False`` leaves the lr alone.
        world_size: Number of training processes.
        samples_per_gpu: Batch size per process.

    Returns:
        A copy of ``cfg`` with the scaled ``lr``, and the factor applied (1.0 when nothing changed).

    Raises:
        ValueError: For unknown keys, a non-positive ``base_batch_size`` or an optimizer dict without ``lr``.
    """
    new_cfg = dict(copy.deepcopy(cfg))
    if not auto_scale_lr or not auto_scale_lr.get("enable", False):
        log.info("Automatic scaling of learning rate (LR) has not been activated.")
        return new_cfg, 1.0
    unknown = sorted(set(auto_scale_lr) - {"enable", "base_batch_size"})
    if unknown:
        raise ConfigError(f"`auto_scale_lr.{unknown[0]}` is not a key of auto_scale_lr; use enable, base_batch_size")
    base_batch_size = auto_scale_lr.get("base_batch_size")
    if base_batch_size is None:
        # mmdet returns silently in this case
        return new_cfg, 1.0
    if not isinstance(base_batch_size, int) or base_batch_size <= 0:
        raise ConfigError(f"`auto_scale_lr.base_batch_size` must be a positive int, got {base_batch_size!r}")
    if "lr" not in new_cfg:
        raise ConfigError("`auto_scale_lr` needs `optimizer.lr` to scale")
    if not _is_number(new_cfg["lr"]):
        raise ConfigError(f"`model.optimizer.lr`: expected a number (float, e.g. 0.02), got {new_cfg['lr']!r}")
    batch_size = world_size * samples_per_gpu
    log.info(
        "Training with %d GPU(s) with %d samples per GPU. The total batch size is %d.",
        world_size, samples_per_gpu, batch_size,
    )
    if batch_size == base_batch_size:
        log.info("The batch size matches the base batch size %d; the LR (%s) is not scaled.", base_batch_size,
                 new_cfg["lr"])
        return new_cfg, 1.0
    factor = batch_size / base_batch_size
    scaled = factor * new_cfg["lr"]
    log.info("LR has been automatically scaled from %s to %s", new_cfg["lr"], scaled)
    new_cfg["lr"] = scaled
    return new_cfg, factor
