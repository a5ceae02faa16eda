"""detlight's dependency-free mmcv shim: what it serves, that it never shadows a real mmcv, and mmdet 2.28.2's own
hook files running unchanged through it (the same cases run with real mmcv in ``test_real_mmcv.py``)."""

from __future__ import annotations

import inspect
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from mmcv_hook_cases import CASES, FIXTURES, PKG

from detlight.compat import hook_registry
from detlight.compat.mmcv_shim import install_mmcv_shim, mmcv_shim_installed, real_mmcv_available, uninstall_mmcv_shim
from detlight.exceptions import ConfigError

torch.set_num_threads(1)
pytestmark = pytest.mark.skipif(real_mmcv_available(), reason="a real mmcv is installed: the shim stays off")


def _purge_fixture_modules() -> None:
    for name in [n for n in sys.modules if n == PKG or n.startswith(PKG + ".")]:
        del sys.modules[name]


@pytest.fixture
def shim(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(hook_registry, "_REGISTRY", dict(hook_registry._REGISTRY))
    monkeypatch.syspath_prepend(str(FIXTURES))
    _purge_fixture_modules()
    assert install_mmcv_shim() is True
    yield
    uninstall_mmcv_shim()
    _purge_fixture_modules()


@pytest.mark.parametrize("case", sorted(CASES))
def test_mmdet_and_mmcv_hooks_through_the_shim(case: str, shim: None, tmp_path: Path,
                                               request: pytest.FixtureRequest) -> None:
    fn = CASES[case]
    extra = {name: request.getfixturevalue(name) for name in inspect.signature(fn).parameters if name != "tmp_path"}
    fn(tmp_path, **extra)


def test_shim_serves_what_hook_files_import(shim: None) -> None:
    from mmcv.parallel import is_module_wrapper
    from mmcv.runner import (
        HOOKS,
        CheckpointHook,
        Hook,
        LrUpdaterHook,
        OptimizerHook,
        Priority,
        get_dist_info,
        get_priority,
        master_only,
    )
    from mmcv.runner.hooks.lr_updater import CosineAnnealingLrUpdaterHook, annealing_cos
    from mmcv.utils import digit_version

    import detlight.compat

    assert Hook is detlight.compat.Hook and get_dist_info() == (0, 1) and get_priority(Priority.LOW) == 70
    assert master_only(lambda: 3)() == 3 and annealing_cos(1.0, 0.0, 1.0) == 0.0
    assert issubclass(CosineAnnealingLrUpdaterHook, LrUpdaterHook) and issubclass(CheckpointHook, Hook)
    assert issubclass(OptimizerHook, Hook) and not is_module_wrapper(torch.nn.Linear(1, 1))
    assert digit_version(sys.modules["mmcv"].__version__) == (1, 7, 2, 0)

    @HOOKS.register_module()
    class UploadHook(Hook):
        pass

    assert hook_registry.registered_hooks()["UploadHook"] is UploadHook and HOOKS.get("UploadHook") is UploadHook
    with pytest.raises(ModuleNotFoundError, match=r"mmcv\.ops.*shim.*install mmcv 1\.x"):
        import mmcv.ops  # noqa: F401


def test_shim_is_opt_in_and_removable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert not mmcv_shim_installed()
    with pytest.raises(ImportError):
        import mmcv.runner  # noqa: F401
    monkeypatch.syspath_prepend(str(FIXTURES))
    _purge_fixture_modules()
    from detlight.callbacks.mmcv_hooks import MMCVHooks

    # Without the shim the reason is in the message (the CLI shows only the message).
    with pytest.raises(ConfigError, match=r"mmdet_hooks\.checkloss_hook.*No module named 'mmcv'.*mmcv_shim: true"):
        MMCVHooks(hooks=[{"class_path": f"{PKG}.checkloss_hook.CheckInvalidLossHook"}])
    _purge_fixture_modules()
    monkeypatch.setattr(hook_registry, "_REGISTRY", dict(hook_registry._REGISTRY))
    try:
        cb = MMCVHooks(hooks=[{"class_path": f"{PKG}.checkloss_hook.CheckInvalidLossHook"}], mmcv_shim=True)
        assert type(cb.hooks[0]).__name__ == "CheckInvalidLossHook" and mmcv_shim_installed()
    finally:
        uninstall_mmcv_shim()
        _purge_fixture_modules()
    assert "mmcv" not in sys.modules and not mmcv_shim_installed()


def test_shim_never_shadows_an_importable_mmcv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    site = tmp_path / "site"
    (site / "mmcv").mkdir(parents=True)
    (site / "mmcv" / "__init__.py").write_text(textwrap.dedent('__version__ = "1.7.2"\nREAL = True\n'))
    monkeypatch.syspath_prepend(str(site))
    assert real_mmcv_available()
    assert install_mmcv_shim() is False and not mmcv_shim_installed()
    import mmcv

    try:
        assert mmcv.REAL is True
    finally:
        del sys.modules["mmcv"]


@pytest.mark.slow
def test_every_standard_hook_runs_or_is_refused_through_the_shim(shim: None) -> None:
    from hook_matrix import matrix

    rows = matrix()
    outcomes = {name: outcome for name, _, outcome, _ in rows}
    assert len(rows) == 49
    assert all(o == "runs" or o.startswith("runs, replaces") or o == "refused" for o in outcomes.values()), outcomes
    assert sum(o.startswith("runs") for o in outcomes.values()) == 21  # 28 refused, each naming a replacement
    assert outcomes["YOLOXLrUpdaterHook"] == "runs, replaces LrUpdater" and outcomes["TextLoggerHook"] == "refused"


def test_custom_imports_register_type_names(shim: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_upload_hooks.py").write_text(textwrap.dedent('''
        from mmcv.runner import HOOKS, Hook

        @HOOKS.register_module()
        class UploadHook(Hook):
            def after_run(self, runner):
                runner.meta["uploaded"] = runner.iter
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    from detlight.callbacks.mmcv_hooks import MMCVHooks

    try:
        with pytest.raises(ConfigError, match=r"Unknown hook type `UploadHook`.*custom_imports"):
            MMCVHooks(hooks=[{"type": "UploadHook"}])
        with pytest.raises(ConfigError, match=r"Hook `UploadHook`: Unknown hook priority 'SOON'"):
            MMCVHooks(hooks=[{"type": "UploadHook", "priority": "SOON"}], custom_imports=["my_upload_hooks"])
        cb = MMCVHooks(hooks=[{"type": "UploadHook", "priority": "LOW"}], custom_imports=["my_upload_hooks"])
        assert type(cb.hooks[0]).__name__ == "UploadHook" and cb.priorities == [70]
    finally:
        sys.modules.pop("my_upload_hooks", None)
