"""mmdet 2.x / mmdet3d 1.0 code on today's stack: the two assumptions of 2022 that no longer hold here.

Replaces: nothing of detlight's; it adapts the users' installed OpenMMLab code in place, at run time, and only where
that code cannot run as written:

- **``device='cuda'`` defaults on a machine without CUDA.** mmdet's prior generators, ``get_anchors`` and friends
  default their ``device`` argument to ``'cuda'``; most callers pass the feature map's device, a few do not
  (RepPoints' ``valid_flags`` call, for one), and on a CPU-only machine that call fails with "Found no NVIDIA
  driver". :func:`cpu_device_defaults` rewrites those defaults to ``'cpu'`` in the loaded ``mmdet`` / ``mmdet3d``
  modules, and only when ``torch.cuda.is_available()`` is false (where ``'cuda'`` can never work). A value the
  caller passes is never touched; on a machine with CUDA nothing changes.
- **``.cuda()`` inside mmdet3d's SASSD.** ``SparseEncoderSASSD.get_auxiliary_targets`` and
  ``calculate_pts_offsets`` move their tensors with ``.cuda()`` (the only two such calls in mmdet / mmdet3d
  models); without CUDA, :func:`cpu_device_defaults` makes ``Tensor.cuda`` return the tensor unchanged while those
  two methods run, so the auxiliary loss is computed where the model is.
- **Ragged ``np.array`` (numpy >= 1.24).** mmdet's ``eval_recalls`` (the ``proposal_fast`` metric of RPN configs)
  stacks one IoU matrix per image with ``np.array(list)``; numpy used to make an object array of differently shaped
  matrices and now raises "inhomogeneous shape". :func:`ragged_numpy_arrays` gives that module a ``np`` whose
  ``array`` of a list of arrays with different shapes is the object array numpy 1.23 built (everything else is
  numpy itself), so the recalls are mmdet's own computation.
- **Removed numpy aliases (numpy >= 1.24).** ``np.int``, ``np.float``, ``np.bool``, ... are gone; mmdet's
  ``CustomDataset.get_cat_ids`` (every ``ClassBalancedDataset``), Libra R-CNN's sampler and mmdet3d's
  ``ObjectRangeFilter`` still use them. :func:`legacy_numpy` gives every loaded mmdet / mmdet3d module the same
  ``np`` (numpy's namespace plus those aliases as Python's types, and the ragged ``array``); modules with numba
  functions keep the real numpy, which numba compiles against. Both changes only touch calls that raise on today's
  numpy.

Both are idempotent and applied by the bridge (:func:`detlight.openmmlab.detector.openmmlab_detector` and the
datamodule's evaluator) after mmdet is imported. Imports neither torch nor numpy at module import.
"""

from __future__ import annotations

import functools
import logging
import sys
import types
from typing import Any

__all__ = ["apply_legacy_fixes", "cpu_device_defaults", "legacy_numpy", "ragged_numpy_arrays"]

log = logging.getLogger(__name__)

_PACKAGES = ("mmdet", "mmdet3d")
_RECALL_MODULE = "mmdet.core.evaluation.recall"


def _patch_defaults(fn: Any) -> bool:
    """Rewrite a ``device='cuda'`` default of ``fn`` (positional or keyword-only) to ``'cpu'``; whether it changed."""
    if not isinstance(fn, types.FunctionType):  # numba dispatchers, builtins, partials: left alone
        return False
    code = fn.__code__
    changed = False
    defaults = fn.__defaults__
    if defaults:
        names = code.co_varnames[: code.co_argcount][-len(defaults):]
        new = tuple("cpu" if name == "device" and value == "cuda" else value for name, value in zip(names, defaults))
        if new != defaults:
            fn.__defaults__ = new
            changed = True
    kw = fn.__kwdefaults__
    if kw and kw.get("device") == "cuda":
        fn.__kwdefaults__ = {**kw, "device": "cpu"}
        changed = True
    return changed


def _functions(module: types.ModuleType) -> Any:
    """The functions defined in ``module``: its own functions and the methods of its own classes, unwrapped."""
    for value in list(vars(module).values()):
        if getattr(value, "__module__", None) != module.__name__:
            continue
        members = vars(value).values() if isinstance(value, type) else (value,)
        for member in members:
            fn = getattr(member, "__func__", member)  # staticmethod / classmethod
            seen = 0
            while callable(fn) and seen < 8:  # decorators written with functools.wraps keep the original's defaults
                yield fn
                fn, seen = getattr(fn, "__wrapped__", None), seen + 1


def cpu_device_defaults(packages: tuple[str, ...] = _PACKAGES) -> list[str]:
    """On a machine without CUDA, ``device='cuda'`` defaults of the loaded ``packages`` become ``'cpu'`` and the
    methods of ``_CUDA_CALLS`` run with ``Tensor.cuda`` as the identity.

    Returns:
        The qualified names changed by this call (empty with CUDA, or when an earlier call changed them already).
    """
    import torch

    if torch.cuda.is_available():
        return []
    changed = []
    for name, module in list(sys.modules.items()):
        if not isinstance(module, types.ModuleType) or name.split(".", 1)[0] not in packages:
            continue
        for fn in _functions(module):
            if _patch_defaults(fn):
                changed.append(f"{name}.{getattr(fn, '__qualname__', fn)}")
    changed += _cuda_calls_stay()
    if changed:
        log.info("No CUDA here: %d `device='cuda'` defaults and `.cuda()` calls of mmdet / mmdet3d stay on the CPU",
                 len(changed))
    return changed


#: methods of mmdet / mmdet3d that call ``Tensor.cuda()`` on their own tensors: (module, class, methods)
_CUDA_CALLS = (("mmdet3d.models.middle_encoders.sparse_encoder", "SparseEncoderSASSD",
                ("get_auxiliary_targets", "calculate_pts_offsets")),)
_MARK = "__detlight_cuda_stays__"


def _tensor_cuda_stays(method: Any) -> Any:
    """``method`` with ``Tensor.cuda`` returning the tensor itself while it runs (machines without CUDA only)."""
    import torch

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        original = torch.Tensor.cuda
        torch.Tensor.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
        try:
            return method(*args, **kwargs)
        finally:
            torch.Tensor.cuda = original  # type: ignore[method-assign]

    setattr(wrapper, _MARK, True)
    return wrapper


def _cuda_calls_stay() -> list[str]:
    changed = []
    for module_name, class_name, methods in _CUDA_CALLS:
        cls = getattr(sys.modules.get(module_name), class_name, None)
        for name in methods if isinstance(cls, type) else ():
            method = cls.__dict__.get(name)
            if callable(method) and not getattr(method, _MARK, False):
                setattr(cls, name, _tensor_cuda_stays(method))
                changed.append(f"{module_name}.{class_name}.{name}")
    return changed


#: names numpy 1.24 removed (deprecated aliases of Python's types) that mmdet / mmdet3d still use: ``np.int`` in
#: ``CustomDataset.get_cat_ids`` (``ClassBalancedDataset``) and Libra R-CNN's sampler, ``np.bool`` in mmdet3d's
#: ``ObjectRangeFilter``, ...
_REMOVED_ALIASES = {"int": int, "float": float, "bool": bool, "object": object, "str": str, "complex": complex}


class _LegacyNumpy(types.ModuleType):
    """numpy as mmdet 2.x was written against (numpy < 1.24): ``array`` of a list of arrays with different shapes is an
    object array, and the removed aliases ``np.int``, ``np.float``, ``np.bool``, ... are Python's types. Everything
    else is numpy's own object (its namespace is copied, so attribute access costs what numpy's does)."""

    def __init__(self, numpy: types.ModuleType) -> None:
        super().__init__("numpy")
        self.__dict__.update({k: v for k, v in vars(numpy).items() if k not in ("__name__", "__spec__", "__loader__")})
        for name, value in _REMOVED_ALIASES.items():
            if name not in vars(numpy):
                setattr(self, name, value)
        self._numpy = numpy
        self.array = self._array

    def __getattr__(self, name: str) -> Any:  # numpy's lazily loaded names
        return getattr(self._numpy, name)

    def _array(self, obj: Any, *args: Any, **kwargs: Any) -> Any:
        np = self._numpy
        if (not args and not kwargs and isinstance(obj, (list, tuple)) and len(obj) > 1
                and all(isinstance(o, np.ndarray) for o in obj) and len({o.shape for o in obj}) > 1):
            out = np.empty(len(obj), dtype=object)
            for i, o in enumerate(obj):
                out[i] = o
            return out
        return np.array(obj, *args, **kwargs)


def _uses_numba(module: types.ModuleType) -> bool:
    """numba compiles functions against the real numpy module: such modules keep it."""
    return any(type(v).__module__.startswith("numba") or getattr(v, "__name__", "") == "numba"
               for v in list(vars(module).values()))


def legacy_numpy(packages: tuple[str, ...] = _PACKAGES) -> list[str]:
    """Every loaded module of ``packages`` that uses numpy as ``np`` (and no numba) gets :class:`_LegacyNumpy`.

    Returns:
        The modules changed by this call.
    """
    import numpy

    shared: _LegacyNumpy | None = None
    changed = []
    for name, module in list(sys.modules.items()):
        if (not isinstance(module, types.ModuleType) or name.split(".", 1)[0] not in packages
                or vars(module).get("np") is not numpy or _uses_numba(module)):
            continue
        shared = shared or _LegacyNumpy(numpy)
        module.np = shared  # type: ignore[attr-defined]
        changed.append(name)
    return changed


def ragged_numpy_arrays() -> bool:
    """mmdet's ``eval_recalls`` module gets the numpy of :class:`_LegacyNumpy`; whether it was patched now."""
    module = sys.modules.get(_RECALL_MODULE)
    if module is None:
        try:
            import importlib

            module = importlib.import_module(_RECALL_MODULE)
        except ImportError:
            return False
    current = getattr(module, "np", None)
    if current is None or isinstance(current, _LegacyNumpy):
        return False
    module.np = _LegacyNumpy(current)  # type: ignore[attr-defined]
    return True


def apply_legacy_fixes() -> None:
    """The fixes of this module (see its docstring)."""
    cpu_device_defaults()
    if "mmdet" in sys.modules:
        ragged_numpy_arrays()
    legacy_numpy()
