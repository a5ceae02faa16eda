"""Whether a converted mmdet / mmdet3d ``.py`` config trains OpenMMLab's own code or detlight's torchvision look-alike.

Replaces: nothing in mmdet (``tools/train.py`` always ran mmdet's code); this is the switch between the two ways
detlight runs an mmcv config. Pure Python: it imports neither torch nor mmcv, only asks whether they are installed.

The mode, first one set wins:

1. ``--openmmlab true|false|auto`` on the ``detlight fit|validate|test|predict|check|convert`` command line;
2. ``openmmlab = True|False`` in the ``.py`` config itself;
3. the ``DETLIGHT_OPENMMLAB`` environment variable (``1``/``0``/``auto``, also ``true``/``false``);
4. ``auto``: OpenMMLab's code when the packages the config needs are importable (mmdet, plus mmdet3d for a 3D config),
   else today's conversion (torchvision / detlight families), unchanged.

``true`` with the packages missing is an error that says how to install them (``make openmmlab``).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from detlight.exceptions import ConfigError

__all__ = ["CONFIG_KEY", "ENV_VAR", "INSTALL_HINT", "OPTION", "Mode", "config_scope", "missing_packages",
           "parse_mode", "pop_cli_switch", "resolve_bridge", "set_cli_mode"]

Mode = Literal["true", "false", "auto"]
OPTION = "--openmmlab"
ENV_VAR = "DETLIGHT_OPENMMLAB"
CONFIG_KEY = "openmmlab"
INSTALL_HINT = ("install them with `make openmmlab` (a .venv-openmmlab with mmcv 1.7.0 without compiled ops, "
                "mmdet 2.28.2 and mmdet3d 1.0.0rc6; detlight serves mmcv's ops) or `MMCV_WITH_OPS=0 pip install "
                "mmcv==1.7.0 && pip install --no-deps mmdet==2.28.2`")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_cli_mode: Mode | None = None
# Strings that only a point-cloud (mmdet3d) config holds.
_3D_MARKERS = ("LoadPointsFromFile", "LoadPointsFromMultiSweeps", "voxel_layer", "DefaultFormatBundle3D",
               "point_cloud_range")


def parse_mode(value: Any, where: str) -> Mode:
    """``True``/``False``/``"auto"`` and their spellings -> ``"true"``/``"false"``/``"auto"``.

    Raises:
        ConfigError: any other value; the message names ``where`` and the accepted values.

    Example:
        >>> parse_mode("0", "DETLIGHT_OPENMMLAB"), parse_mode(True, "openmmlab"), parse_mode("AUTO", "--openmmlab")
        ('false', 'true', 'auto')
    """
    text = str(value).strip().lower()
    if text in _TRUE:
        return "true"
    if text in _FALSE:
        return "false"
    if text == "auto":
        return "auto"
    raise ConfigError(f"`{where}` must be true, false or auto (OpenMMLab's own model and data, detlight's "
                      f"torchvision look-alike, or the first when mmdet is installed); got {value!r}")


def pop_cli_switch(argv: Sequence[str]) -> list[str]:
    """Remove ``--openmmlab X`` / ``--openmmlab=X`` from ``argv`` and remember its mode (see :func:`set_cli_mode`).

    Example:
        >>> pop_cli_switch(["fit", "--config", "a.py", "--openmmlab", "false"])
        ['fit', '--config', 'a.py']
        >>> set_cli_mode(None)
    """
    out: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == OPTION:
            if i + 1 >= len(args):
                raise ConfigError(f"`{OPTION}` needs a value: true, false or auto")
            set_cli_mode(parse_mode(args[i + 1], OPTION))
            i += 2
            continue
        if arg.startswith(OPTION + "="):
            set_cli_mode(parse_mode(arg.split("=", 1)[1], OPTION))
            i += 1
            continue
        out.append(arg)
        i += 1
    return out


def set_cli_mode(mode: Mode | None) -> None:
    """Set (or clear, with ``None``) the mode given on the command line for this process."""
    global _cli_mode
    _cli_mode = mode


def config_scope(cfg: Mapping[str, Any]) -> Literal["mmdet", "mmdet3d"]:
    """``"mmdet3d"`` for a point-cloud config (its pipelines load points, its model voxelizes), else ``"mmdet"``.

    Example:
        >>> config_scope({"model": {"type": "VoxelNet", "voxel_layer": {}}}), config_scope({"model": {}})
        ('mmdet3d', 'mmdet')
    """
    if cfg.get("point_cloud_range") is not None:
        return "mmdet3d"
    text = repr([cfg.get(k) for k in ("model", "data", "train_pipeline")])
    return "mmdet3d" if any(marker in text for marker in _3D_MARKERS) else "mmdet"


def missing_packages(scope: str) -> list[str]:
    """The packages ``scope`` needs that are not importable (``mmcv``, ``mmdet``, ``mmdet3d``), without importing."""
    needed = ["mmcv", "mmdet"] + (["mmdet3d"] if scope == "mmdet3d" else [])
    return [name for name in needed if importlib.util.find_spec(name) is None]


def resolve_bridge(cfg: Mapping[str, Any], source: str = "the config") -> bool:
    """Whether ``cfg`` trains OpenMMLab's own code (see the module docstring for the order of the settings).

    Raises:
        ConfigError: the mode is ``true`` but mmcv / mmdet (/ mmdet3d) are not installed; the message says how to
            install them, or how to use the torchvision look-alike instead.
    """
    mode: Mode
    if _cli_mode is not None:
        mode, where = _cli_mode, OPTION
    elif cfg.get(CONFIG_KEY) is not None:
        mode, where = parse_mode(cfg[CONFIG_KEY], f"{CONFIG_KEY} in {source}"), f"`{CONFIG_KEY}` in {source}"
    elif os.environ.get(ENV_VAR, "").strip():
        mode, where = parse_mode(os.environ[ENV_VAR], ENV_VAR), ENV_VAR
    else:
        mode, where = "auto", "auto"
    if mode == "false":
        return False
    missing = missing_packages(config_scope(cfg))
    if not missing:
        return True
    if mode == "auto":
        return False
    raise ConfigError(f"{where} asks for OpenMMLab's own model and data, but {', '.join(missing)} "
                      f"{'is' if len(missing) == 1 else 'are'} not installed: {INSTALL_HINT}; or pass "
                      f"`{OPTION} false` to train detlight's torchvision look-alike of the config")
