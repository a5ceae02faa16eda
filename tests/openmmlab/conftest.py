"""Shared fixtures of the OpenMMLab-bridge tests."""

from __future__ import annotations

import importlib
import sys
import textwrap
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest


@pytest.fixture
def make_fake_mmcv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Mapping[str, str]], Path]]:
    """``make(ops)``: a pure-Python ``mmcv`` package (``mmcv/ops/<name>.py`` from ``ops``) first on ``sys.path``.

    The real ``mmcv`` modules and detlight's op provider are set aside while it is in use and restored afterwards
    (the provider re-installed if the session had it serving ``mmcv._ext``).
    """
    import detlight.openmmlab as dom
    from detlight.openmmlab.provider import EXT_NAME

    saved = {k: v for k, v in sys.modules.items() if k == "mmcv" or k.startswith("mmcv.")}

    def make(ops: Mapping[str, str]) -> Path:
        for k in saved:
            sys.modules.pop(k, None)
        dom.uninstall_ops()
        pkg = tmp_path / "mmcv"
        (pkg / "ops").mkdir(parents=True)
        (pkg / "__init__.py").write_text("__version__ = '1.7.0'\n")
        (pkg / "ops" / "__init__.py").write_text("")
        for name, source in ops.items():
            (pkg / "ops" / f"{name}.py").write_text(textwrap.dedent(source))
        monkeypatch.syspath_prepend(str(tmp_path))
        importlib.invalidate_caches()
        return pkg

    yield make
    dom.uninstall_ops()
    for k in [k for k in sys.modules if k == "mmcv" or k.startswith("mmcv.")]:
        del sys.modules[k]
    sys.modules.update(saved)
    if getattr(saved.get(EXT_NAME), "__detlight_ops__", False):
        dom.install_ops()  # the session's real mmcv (other test modules) as it was
