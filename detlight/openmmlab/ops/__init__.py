"""The kernels behind ``mmcv._ext``: one module per op family, each registering its functions with :func:`ext_op`.

A family module (``nms``, ``roi_align``, ``voxelize``, ...) defines plain functions named and called exactly as
mmcv's wrappers call ``ext_module.<name>(...)`` and decorates each with ``@ext_op(how=...)``; :func:`collect` imports
every family and returns the table the provider serves. Adding a family is adding a file. Modules whose names start
with ``_`` are shared helpers, not families.

Names are imported on first access (see :mod:`detlight._lazy`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from detlight._lazy import lazy_exports

if TYPE_CHECKING:
    from detlight.openmmlab.ops._registry import (
        ExtOp,
        collect,
        ext_op,
    )

_EXPORTS: dict[str, str] = {
    "ExtOp": "_registry",
    "collect": "_registry",
    "ext_op": "_registry",
}

__all__ = [
    "ExtOp",
    "collect",
    "ext_op",
]

if not TYPE_CHECKING:  # type checkers read the imports above
    __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
