"""Run OpenMMLab's own code (mmcv 1.x, mmdet 2.x, mmdet3d 1.0) on a modern torch, under detlight.

Replaces: the compiled half of mmcv-full. mmcv's Python side loads every kernel from one compiled module,
``mmcv._ext``; :func:`install_ops` serves that module from torchvision's registered kernels and vectorised torch, so a
pure-Python mmcv (``MMCV_WITH_OPS=0 pip install mmcv==1.7.0``) imports ``mmcv.ops`` and mmdet's detectors without a
compiler. A real mmcv-full's ``_ext`` is always used when it is installed.

In your own scripts, one line before anything imports ``mmcv.ops``::

    import detlight.openmmlab; detlight.openmmlab.install_ops()

This package imports neither torch nor mmcv until an op is loaded.
"""

from __future__ import annotations

from detlight.openmmlab.provider import (
    OpNotProvidedError,
    install_ops,
    ops_installed,
    provided_ops,
    uninstall_ops,
)

__all__ = ["OpNotProvidedError", "install_ops", "ops_installed", "provided_ops", "uninstall_ops"]
