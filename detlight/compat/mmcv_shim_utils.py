"""The helpers of the dependency-free ``mmcv`` shim: ``mmcv.utils`` pieces, the ``HOOKS`` registry, dist utilities.

Replaces: ``mmcv.utils.{is_str,is_seq_of,is_list_of,digit_version,get_logger,print_log,Registry}``,
``mmcv.runner.dist_utils.{get_dist_info,master_only,allreduce_params}`` and ``mmcv.parallel.is_module_wrapper``
(mmcv 1.7.2, Copyright (c) OpenMMLab, Apache-2.0), as far as users' hook files import them. ``HOOKS`` is detlight's
hook registry (:func:`detlight.compat.register_hook`), so ``@HOOKS.register_module()`` makes ``{type: Name}`` work.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from torch import distributed as dist
from torch import nn

from detlight.compat import hook_registry

__all__ = [
    "HOOKS",
    "Registry",
    "allreduce_params",
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


# ---------------------------------------------------------------------------------------------------- mmcv.utils
def is_str(x: Any) -> bool:
    return isinstance(x, str)


def is_seq_of(seq: Any, expected_type: type | tuple[type, ...], seq_type: type | None = None) -> bool:
    if not isinstance(seq, seq_type or Sequence) or not isinstance(seq, Iterable):
        return False
    return all(isinstance(item, expected_type) for item in seq)


def is_list_of(seq: Any, expected_type: type | tuple[type, ...]) -> bool:
    return is_seq_of(seq, expected_type, seq_type=list)


def digit_version(version_str: str, length: int = 4) -> tuple[int, ...]:
    """A comparable tuple for a version string (mmcv's ``digit_version``, pre-release parts ignored)."""
    from packaging.version import Version

    release = list(Version(version_str).release)[:length]
    return tuple(release + [0] * (length - len(release)))


def get_logger(name: str, log_file: str | None = None, log_level: int = logging.INFO, file_mode: str = "w") -> Any:
    """A standard :mod:`logging` logger (mmcv adds rank-aware handlers; detlight's own logging covers that)."""
    logger = logging.getLogger(name)
    logger.setLevel(log_level)
    return logger


def print_log(msg: str, logger: Any = None, level: int = logging.INFO) -> None:
    if logger is None:
        print(msg)
    elif isinstance(logger, logging.Logger):
        logger.log(level, msg)
    elif logger != "silent":
        logging.getLogger(str(logger)).log(level, msg)


class Registry:
    """mmcv's ``Registry`` as far as hook files use it: ``register_module``, ``get``, ``module_dict``, ``build``."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._own: dict[str, type] = {}

    @property
    def name(self) -> str:
        return self._name

    @property
    def module_dict(self) -> dict[str, type]:
        return self._own

    def __len__(self) -> int:
        return len(self.module_dict)

    def __contains__(self, key: str) -> bool:
        return key in self.module_dict

    def get(self, key: str) -> type | None:
        return self.module_dict.get(key)

    def _add(self, cls: type, name: str, force: bool) -> None:
        if name in self.module_dict and self.module_dict[name] is not cls and not force:
            raise KeyError(f"{name} is already registered in {self.name}")
        self.module_dict[name] = cls

    def register_module(self, name: str | list[str] | None = None, force: bool = False,
                        module: type | None = None) -> Any:
        def _register(cls: type) -> type:
            names = [cls.__name__] if name is None else [name] if isinstance(name, str) else list(name)
            for key in names:
                self._add(cls, key, force)
            return cls

        return _register(module) if module is not None else _register

    def build(self, cfg: dict[str, Any], **default_args: Any) -> Any:
        args = dict(cfg)
        kind = args.pop("type")
        cls = self.get(kind) if isinstance(kind, str) else kind
        if cls is None:
            raise KeyError(f"{kind} is not in the {self.name} registry")
        for key, value in default_args.items():
            args.setdefault(key, value)
        return cls(**args)


class _HookRegistry(Registry):
    """``HOOKS``: detlight's hook registry seen through mmcv's ``Registry`` interface."""

    @property
    def module_dict(self) -> dict[str, type]:
        return hook_registry._REGISTRY

    def _add(self, cls: type, name: str, force: bool) -> None:
        hook_registry.register_hook(cls, name=name, force=force)


HOOKS = _HookRegistry("hook")


# ---------------------------------------------------------------------------------------------------- dist / parallel
def get_dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def master_only(func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        rank, _ = get_dist_info()
        if rank == 0:
            return func(*args, **kwargs)
        return None

    return wrapper


def allreduce_params(params: Any, coalesce: bool = True, bucket_size_mb: int = -1) -> None:
    """Average ``params`` (tensors or parameters) over ranks; nothing on a single process."""
    _, world_size = get_dist_info()
    if world_size == 1:
        return
    for tensor in params:
        data = getattr(tensor, "data", tensor)
        dist.all_reduce(data.div_(world_size))


def is_module_wrapper(module: Any) -> bool:
    """True for DataParallel / DistributedDataParallel and the wrapper detlight's runner view gives as ``model``."""
    from detlight.compat.runner import ModelWrapper

    return isinstance(module, (nn.DataParallel, nn.parallel.DistributedDataParallel, ModelWrapper))

