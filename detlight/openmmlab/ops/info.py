"""Build information of ``mmcv._ext``: ``get_compiler_version`` / ``get_compiling_cuda_version`` (mmcv ``ops/info.py``).

Replaces mmcv-full's compiled answers to "which compiler / CUDA built the ops". mmcv's and mmdet's ``collect_env()``
call both when a training run logs its environment. detlight compiles nothing: the ops are torchvision kernels and
torch, so the honest answer names detlight.openmmlab and the compiler / CUDA that built the installed torch (which
built every kernel the ops run). Limits: the strings are informative only; they do not follow mmcv-full's bare
``"GCC 9.3"`` / ``"11.3"`` format, so a script that parses them as version numbers will not find one.
"""

from __future__ import annotations

import re

import torch

from detlight.openmmlab.ops import ext_op

__all__ = ["get_compiler_version", "get_compiling_cuda_version"]

_SERVED = "served by detlight.openmmlab"


def _torch_compiler() -> str:
    """The compiler line of ``torch.__config__.show()`` (e.g. ``GCC 13.3``), or ``unknown compiler``."""
    try:
        shown = torch.__config__.show()
    except Exception:  # noqa: BLE001  (a torch build without the config text)
        return "unknown compiler"
    match = re.search(r"^\s*-\s*((?:GCC|clang|MSVC)[^\n]*)$", shown, flags=re.MULTILINE | re.IGNORECASE)
    return match.group(1).strip() if match else "unknown compiler"


@ext_op(how="torch")
def get_compiler_version() -> str:
    """The compiler behind the served ops: torch's (e.g. ``"GCC 13.3 (torch 2.4.1 build; mmcv._ext served by ...)"``)."""
    return f"{_torch_compiler()} (torch {torch.__version__} build; mmcv._ext {_SERVED}, no compiled mmcv ops)"


@ext_op(how="torch")
def get_compiling_cuda_version() -> str:
    """The CUDA torch was built with (e.g. ``"12.1 (torch build; ...)"``), or ``"not available"`` for a CPU torch."""
    cuda = torch.version.cuda
    hip = getattr(torch.version, "hip", None)
    if cuda:
        return f"{cuda} (torch build; mmcv._ext {_SERVED})"
    if hip:
        return f"HIP {hip} (torch build; mmcv._ext {_SERVED})"
    return f"not available (CPU torch build; mmcv._ext {_SERVED})"
