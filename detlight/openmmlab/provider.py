"""Serve ``mmcv._ext`` (mmcv-full's one compiled module) from :mod:`detlight.openmmlab.ops`.

mmcv 1.x loads its kernels with ``mmcv.utils.ext_loader.load_ext('_ext', [names])``: it imports ``mmcv._ext`` and
asserts ``hasattr`` for each name. :func:`install_ops` appends an import finder to the *end* of ``sys.meta_path`` that
answers for ``mmcv._ext`` only, with a real spec and loader (``mmcv.ops.check_ops_exist()`` looks for one):

- a compiled ``_ext`` shipped inside the installed mmcv (mmcv-full) is found by Python's own finders first, and
  :func:`install_ops` does not install anything when it sees one: a real mmcv-full always wins;
- names detlight provides are the functions registered in :mod:`detlight.openmmlab.ops`;
- any other name resolves to a function that raises :class:`OpNotProvidedError` when called, naming the op and the
  mmcv code that called it; importing never fails, only using an op that is not there;
- the few ``mmcv.ops`` wrappers that allocate on CUDA before calling ``_ext`` get device-agnostic versions when their
  module is imported (:mod:`detlight.openmmlab.cpu_wrappers`), so they run on CPU tensors too.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from detlight.exceptions import DetLightError

__all__ = ["EXT_NAME", "OpNotProvidedError", "install_ops", "ops_installed", "provided_ops", "uninstall_ops"]

EXT_NAME = "mmcv._ext"


class OpNotProvidedError(DetLightError, NotImplementedError):
    """An ``mmcv._ext`` op that detlight's provider does not serve was called (the message names op and caller)."""


def _caller() -> str:
    """The mmcv / OpenMMLab code that called the missing op: the nearest ``mmcv.*`` frame and the nn.Module above."""
    frame = sys._getframe(2)
    where, module_cls = "", ""
    while frame is not None and not (where and module_cls):
        mod = frame.f_globals.get("__name__", "")
        if not where and mod.split(".")[0] in {"mmcv", "mmdet", "mmdet3d", "mmseg"}:
            where = f"{mod}.{getattr(frame.f_code, 'co_qualname', frame.f_code.co_name)}"
        owner = frame.f_locals.get("self")
        if not module_cls and owner is not None and type(owner).__module__.split(".")[0] != "torch" \
                and hasattr(owner, "forward") and hasattr(owner, "parameters"):
            module_cls = f"{type(owner).__module__}.{type(owner).__qualname__}"
        frame = frame.f_back  # type: ignore[assignment]
    parts = [p for p in (where, f"in module {module_cls}" if module_cls else "") if p]
    return " ".join(parts) or "user code"


def _missing(name: str) -> Callable[..., Any]:
    def missing_op(*args: Any, **kwargs: Any) -> Any:
        raise OpNotProvidedError(
            f"mmcv op `{name}` (called by {_caller()}) is not provided by detlight.openmmlab, which serves mmcv._ext "
            "without mmcv-full's compiled kernels; provided ops: `python -m detlight.openmmlab.ops_table`. Use a "
            "layer/config without this op, or install an mmcv-full built for this torch (then it is used instead)")

    missing_op.__name__ = missing_op.__qualname__ = name
    missing_op.detlight_missing_op = True  # type: ignore[attr-defined]
    return missing_op


class _ExtModule(types.ModuleType):
    """``mmcv._ext``: registered ops as attributes; any other public name is a function raising at call time."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        stub = _missing(name)
        setattr(self, name, stub)
        return stub


class _ExtLoader(importlib.abc.Loader):
    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return _ExtModule(spec.name)

    def exec_module(self, module: types.ModuleType) -> None:
        for name, op in provided_ops().items():
            setattr(module, name, op.fn)
        module.__detlight_ops__ = True  # type: ignore[attr-defined]
        module.__doc__ = "mmcv._ext served by detlight.openmmlab (torchvision kernels and torch)"


class _ExtFinder(importlib.abc.MetaPathFinder):
    """Answers ``find_spec('mmcv._ext')`` only; every other import goes to the finders before it."""

    detlight_ops_provider = True

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None,
                  ) -> importlib.machinery.ModuleSpec | None:
        if fullname != EXT_NAME:
            return None
        return importlib.machinery.ModuleSpec(fullname, _ExtLoader(), origin="detlight.openmmlab")


_FINDER = _ExtFinder()


def provided_ops() -> dict[str, Any]:
    """``{ext name: ExtOp}`` for every op detlight serves (imports the op families, which import torch)."""
    from detlight.openmmlab.ops import collect

    return collect()


def _compiled_ext(mmcv_dirs: Sequence[str]) -> Path | None:
    for folder in mmcv_dirs:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            candidate = Path(folder) / f"_ext{suffix}"
            if candidate.is_file():
                return candidate
    return None


def ops_installed() -> bool:
    """Whether :func:`install_ops` is in effect (detlight serves ``mmcv._ext``)."""
    return _FINDER in sys.meta_path


def install_ops() -> bool:
    """Serve ``mmcv._ext`` from torchvision and torch, so ``import mmcv.ops`` works with a pure-Python mmcv.

    Idempotent and cheap (imports neither mmcv nor torch unless spconv is installed: then it checks for CUDA to
    choose mmdet3d's sparse conv backend, see :mod:`detlight.openmmlab.spconv_compat`). Call it before anything
    imports ``mmcv.ops`` or ``mmdet3d`` (detlight's entry points that build OpenMMLab code call it for you).

    Returns:
        True if detlight serves ``mmcv._ext`` after the call; False when mmcv is not installed or ships a compiled
        ``_ext`` of its own (mmcv-full), which is then used as is.
    """
    if ops_installed():
        return True
    loaded = sys.modules.get(EXT_NAME)
    if loaded is not None and not getattr(loaded, "__detlight_ops__", False):
        return False  # a real _ext is already imported
    spec = importlib.util.find_spec("mmcv") if "mmcv" not in sys.modules else sys.modules["mmcv"].__spec__
    if spec is None or not spec.submodule_search_locations:
        return False
    if getattr(sys.modules.get("mmcv"), "__detlight_shim__", False):
        return False  # detlight's hook shim stands in for mmcv: there is no mmcv.ops to serve
    if _compiled_ext(list(spec.submodule_search_locations)) is not None:
        return False
    sys.meta_path.append(_FINDER)
    from detlight.openmmlab.cpu_wrappers import install_cpu_wrappers

    install_cpu_wrappers()  # mmcv.ops wrappers that allocate on CUDA before calling _ext: device-agnostic versions
    from detlight.openmmlab.spconv_compat import select_sparse_backend

    select_sparse_backend()  # mmdet3d's sparse layers: spconv 2.x only where it can train (CUDA build + GPU)
    return True


def uninstall_ops() -> None:
    """Remove the finder and the served ``mmcv._ext`` (for tests; modules that already hold its functions keep them)."""
    if _FINDER in sys.meta_path:
        sys.meta_path.remove(_FINDER)
    from detlight.openmmlab.cpu_wrappers import uninstall_cpu_wrappers

    uninstall_cpu_wrappers()
    loaded = sys.modules.get(EXT_NAME)
    if loaded is not None and getattr(loaded, "__detlight_ops__", False):
        del sys.modules[EXT_NAME]
