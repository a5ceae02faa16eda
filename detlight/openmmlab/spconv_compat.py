"""Which sparse convolution mmdet3d uses: spconv 2.x (CUDA) or mmcv's ``SubMConv3d`` & co. served by detlight.

mmdet3d 1.0 decides once, when ``mmdet3d.ops.spconv`` is imported: if ``import spconv`` succeeds (version >= 2) it sets
``IS_SPCONV2_AVAILABLE = True`` and registers spconv's layers over mmcv's in ``CONV_LAYERS``; ``sparse_block``,
``SparseEncoder``, ``SparseUNet`` and PartA2's head then import spconv's ``SparseConvTensor`` / ``SparseSequential``.
That is the right choice with spconv's CUDA build on a GPU, and a broken one otherwise: spconv's CPU build
(``pip install spconv``) runs the forward but its backward calls ``torch.cuda.current_stream()`` and raises "Found no
NVIDIA driver", so SECOND / CenterPoint cannot train on CPU.

:func:`select_sparse_backend` makes the choice explicit (``install_ops`` calls it):

- ``"spconv"``: leave mmdet3d as it is (spconv 2.x layers);
- ``"torch"``: mmdet3d uses mmcv's sparse layers, whose ``mmcv._ext`` kernels detlight serves with torch
  (:mod:`detlight.openmmlab.ops.sparse_conv`); if spconv is installed, an import hook lets ``mmdet3d.ops.spconv`` run
  and then sets its ``IS_SPCONV2_AVAILABLE`` to False and puts mmcv's classes back in ``CONV_LAYERS``.

The choice comes from ``DETLIGHT_SPARSE_CONV`` (``auto`` by default, ``torch`` or ``spconv``). ``auto`` picks
``spconv`` only when spconv >= 2 is importable, is a CUDA build (``spconv.cppconstants.CPU_ONLY_BUILD`` is False) and
``torch.cuda.is_available()``; otherwise ``torch``. Without spconv installed nothing is imported or hooked.

Limits: the hook must be in place before ``mmdet3d.ops`` is first imported; afterwards a switch to ``torch`` raises
(the modules already hold spconv's classes). Checkpoints keep mmcv's weight layout ``(*kernel, in, out)`` under
``torch``; mmdet3d's spconv 2 loader converts that layout when ``spconv`` is chosen.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import types
from collections.abc import Sequence
from typing import Literal

from detlight.exceptions import DetLightError

__all__ = ["ENV_VAR", "SparseBackend", "SparseBackendError", "select_sparse_backend", "sparse_conv_backend"]

ENV_VAR = "DETLIGHT_SPARSE_CONV"
SparseBackend = Literal["torch", "spconv"]
_TARGET = "mmdet3d.ops.spconv"
_MMCV_SPARSE_LAYERS = ("SparseConv2d", "SparseConv3d", "SparseConv4d", "SparseConvTranspose2d",
                       "SparseConvTranspose3d", "SparseInverseConv2d", "SparseInverseConv3d", "SubMConv2d",
                       "SubMConv3d", "SubMConv4d")


class SparseBackendError(DetLightError, ValueError):
    """The requested sparse convolution backend is unknown, not installed, or chosen too late."""


def _spconv_installed() -> bool:
    try:
        return importlib.util.find_spec("spconv") is not None
    except (ImportError, ValueError):
        return False


def _spconv_has_cuda() -> bool:
    import torch

    if not torch.cuda.is_available():
        return False
    try:
        from spconv.cppconstants import CPU_ONLY_BUILD  # type: ignore[import-not-found]
    except ImportError:
        return False
    return not bool(CPU_ONLY_BUILD)


def sparse_conv_backend(prefer: str | None = None) -> SparseBackend:
    """The backend mmdet3d's sparse layers should use here (see the module docstring for the rule).

    Args:
        prefer: ``"auto"``, ``"torch"`` or ``"spconv"``; default: ``$DETLIGHT_SPARSE_CONV`` or ``"auto"``.

    Raises:
        SparseBackendError: an unknown value, or ``"spconv"`` without spconv installed.
    """
    choice = (prefer if prefer is not None else os.environ.get(ENV_VAR, "auto")).strip().lower()
    if choice not in {"auto", "torch", "spconv"}:
        raise SparseBackendError(f"{ENV_VAR}={choice!r} is not a sparse conv backend; use auto, torch or spconv")
    if choice == "torch":
        return "torch"
    if choice == "spconv":
        if not _spconv_installed():
            raise SparseBackendError(f"{ENV_VAR}=spconv but spconv is not installed (pip install spconv-cu1xx for "
                                     "CUDA); use auto or torch to run mmcv's sparse layers on detlight's kernels")
        return "spconv"
    return "spconv" if _spconv_installed() and _spconv_has_cuda() else "torch"


def _restore_mmcv_layers(module: types.ModuleType) -> None:
    """Undo ``register_spconv2``: mmdet3d reads the flag, ``build_conv_layer`` gets mmcv's classes again."""
    module.IS_SPCONV2_AVAILABLE = False  # type: ignore[attr-defined]
    from mmcv.cnn.bricks.registry import CONV_LAYERS
    from mmcv.ops import sparse_conv

    for name in _MMCV_SPARSE_LAYERS:
        layer = getattr(sparse_conv, name, None)
        if layer is not None:
            CONV_LAYERS.register_module(name=name, force=True, module=layer)


class _TorchBackendLoader(importlib.abc.Loader):
    def __init__(self, inner: importlib.abc.Loader) -> None:
        self.inner = inner

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return self.inner.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        self.inner.exec_module(module)
        _restore_mmcv_layers(module)


class _TorchBackendFinder(importlib.abc.MetaPathFinder):
    """Answers ``mmdet3d.ops.spconv`` only: the real module, with mmcv's sparse layers chosen after it ran."""

    detlight_sparse_backend = True

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None,
                  ) -> importlib.machinery.ModuleSpec | None:
        if fullname != _TARGET:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        spec.loader = _TorchBackendLoader(spec.loader)
        return spec


_FINDER = _TorchBackendFinder()


def select_sparse_backend(prefer: str | None = None) -> SparseBackend:
    """Decide the backend (:func:`sparse_conv_backend`) and make mmdet3d follow it; idempotent.

    Call it before anything imports ``mmdet3d.ops`` (``detlight.openmmlab.install_ops()`` does).

    Returns:
        ``"torch"`` or ``"spconv"``.

    Raises:
        SparseBackendError: ``torch`` is chosen but mmdet3d already imported spconv's layers.
    """
    backend = sparse_conv_backend(prefer)
    if backend == "spconv":
        if _FINDER in sys.meta_path:
            sys.meta_path.remove(_FINDER)
        return backend
    loaded = sys.modules.get(_TARGET)
    if loaded is not None:
        if getattr(loaded, "IS_SPCONV2_AVAILABLE", False):
            raise SparseBackendError(
                "mmdet3d was imported with spconv 2.x layers before detlight chose the torch sparse conv backend; "
                "call detlight.openmmlab.install_ops() before importing mmdet3d (or set "
                f"{ENV_VAR}=spconv on a CUDA machine)")
        return backend
    if _spconv_installed() and _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
    return backend
