"""Run OpenMMLab's own code (mmcv 1.x, mmdet 2.x, mmdet3d 1.0) on a modern torch, under detlight.

Replaces: the compiled half of mmcv-full, and mmdet's ``tools/train.py`` model / data building. mmcv's Python side
loads every kernel from one compiled module, ``mmcv._ext``; :func:`install_ops` serves that module from torchvision's
registered kernels and vectorised torch, so a pure-Python mmcv (``MMCV_WITH_OPS=0 pip install mmcv==1.7.0``) imports
``mmcv.ops`` and mmdet's detectors without a compiler. A real mmcv-full's ``_ext`` is always used when it is installed.

On top of it, ``detlight fit --config <mmdet config>.py`` trains the config's own detector
(:func:`openmmlab_detector`), datasets and pipelines (:class:`OpenMMLabDataModule`) and evaluates with the dataset's
own ``evaluate`` (:class:`DatasetEvaluator`); :mod:`detlight.openmmlab.switch` decides when (``--openmmlab``).

In your own scripts, one line before anything imports ``mmcv.ops``::

    import detlight.openmmlab; detlight.openmmlab.install_ops()

Names are imported on first access (see :mod:`detlight._lazy`): this package imports neither torch nor mmcv until
one is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from detlight._lazy import lazy_exports

if TYPE_CHECKING:
    from detlight.openmmlab.checkpoint import (
        MMCVResume,
        export_pth,
    )
    from detlight.openmmlab.data import OpenMMLabDataModule
    from detlight.openmmlab.detector import openmmlab_detector
    from detlight.openmmlab.evaluator import DatasetEvaluator
    from detlight.openmmlab.provider import (
        OpNotProvidedError,
        install_ops,
        ops_installed,
        provided_ops,
        uninstall_ops,
    )

_EXPORTS: dict[str, str] = {
    "DatasetEvaluator": "evaluator",
    "MMCVResume": "checkpoint",
    "OpNotProvidedError": "provider",
    "OpenMMLabDataModule": "data",
    "export_pth": "checkpoint",
    "install_ops": "provider",
    "openmmlab_detector": "detector",
    "ops_installed": "provider",
    "provided_ops": "provider",
    "uninstall_ops": "provider",
}

__all__ = [
    "DatasetEvaluator",
    "MMCVResume",
    "OpNotProvidedError",
    "OpenMMLabDataModule",
    "export_pth",
    "install_ops",
    "openmmlab_detector",
    "ops_installed",
    "provided_ops",
    "uninstall_ops",
]

if not TYPE_CHECKING:  # type checkers read the imports above
    __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
