"""Reading and converting mmcv / mmdet / mmdet3d 1.x-era ``.py`` configs: ``detlight convert`` and ``--config x.py``.

Replaces: mmcv's ``Config.fromfile`` (read safely, never executed: :mod:`detlight.convert.config` and
:mod:`detlight.convert.safe_eval`) and what mmdet's ``tools/train.py`` did with a config (one flat LightningCLI YAML
plus a mapping report: :mod:`detlight.convert.converter` per section, :mod:`detlight.convert.model_map` for mmdet
model types without mmdet installed, :mod:`detlight.convert.entry` for files and ``argv``). Running users' own
mmcv-style hooks is :mod:`detlight.compat`.

Names are imported on first access (see :mod:`detlight._lazy`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from detlight._lazy import lazy_exports

if TYPE_CHECKING:
    from detlight.convert.config import load_config
    from detlight.convert.converter import convert_config
    from detlight.convert.entry import (
        convert_file,
        convert_py_configs,
        convert_to_yaml,
    )
    from detlight.convert.report import (
        ConversionReport,
        ReportEntry,
    )

_EXPORTS: dict[str, str] = {
    "ConversionReport": "report",
    "ReportEntry": "report",
    "convert_config": "converter",
    "convert_file": "entry",
    "convert_py_configs": "entry",
    "convert_to_yaml": "entry",
    "load_config": "config",
}

__all__ = [
    "ConversionReport",
    "ReportEntry",
    "convert_config",
    "convert_file",
    "convert_py_configs",
    "convert_to_yaml",
    "load_config",
]

if not TYPE_CHECKING:  # type checkers read the imports above
    __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
