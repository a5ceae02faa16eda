"""The registry of ``mmcv._ext`` functions: :func:`ext_op` registers, :func:`collect` imports every family.

Every public module in :mod:`detlight.openmmlab.ops` is a family (``nms``, ``roi_align``, ...). A family module defines plain functions
named and called exactly as mmcv's wrappers call ``ext_module.<name>(...)`` (output tensors filled in place, keyword
arguments as in ``mmcv/ops/<op>.py``) and decorates each with ``@ext_op(how=...)``, where ``how`` says what computes
it (``"torchvision"``: a compiled torchvision kernel; ``"torch"``: vectorised torch). :func:`collect` imports every
family and returns the table the provider serves; adding a family is adding a file.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

__all__ = ["ExtOp", "collect", "ext_op"]

F = TypeVar("F", bound=Callable[..., Any])
How = Literal["torchvision", "torch", "spconv"]


@dataclass(frozen=True)
class ExtOp:
    """One served ``mmcv._ext`` name: the function, its family module and what computes it."""

    name: str
    fn: Callable[..., Any]
    family: str
    how: How


_REGISTRY: dict[str, ExtOp] = {}


def ext_op(how: How, name: str | None = None) -> Callable[[F], F]:
    """Register the decorated function as ``mmcv._ext.<name>`` (default: the function's own name).

    Args:
        how: what computes it: ``"torchvision"`` (a registered torchvision kernel), ``"torch"`` (torch ops) or
            ``"spconv"``.
        name: the ``_ext`` name when it differs from the function's name.
    """

    def register(fn: F) -> F:
        key = name or fn.__name__
        family = fn.__module__.rsplit(".", 1)[-1]
        if key in _REGISTRY and _REGISTRY[key].fn is not fn:
            raise RuntimeError(f"mmcv._ext.{key} is registered twice: by {_REGISTRY[key].family} and {family}")
        _REGISTRY[key] = ExtOp(key, fn, family, how)
        return fn

    return register


def collect() -> dict[str, ExtOp]:
    """Import every family module of this package and return ``{ext name: ExtOp}``."""
    package = importlib.import_module(__name__.rpartition(".")[0])
    for info in pkgutil.iter_modules(package.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package.__name__}.{info.name}")
    return dict(_REGISTRY)
