"""The same hook files and cases as ``test_mmcv_shim.py`` with a real mmcv 1.7.2 installed, plus mmcv's own hooks.

Marked ``mmcv``: deselected by the default ``make test``; ``make test-mmcv`` builds ``.venv-mmcv`` (mmcv 1.7.2
without ops, on top of the main venv's torch) and runs them.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest
import torch
from mmcv_hook_cases import CASES, FIXTURES, Detector, fit

from detlight.callbacks.lr_updater import LrUpdater
from detlight.callbacks.mmcv_hooks import MMCVHooks
from detlight.compat.mmcv_shim import install_mmcv_shim, mmcv_shim_installed, real_mmcv_available
from detlight.exceptions import HookError

torch.set_num_threads(1)
pytestmark = [pytest.mark.mmcv,
              pytest.mark.skipif(not real_mmcv_available(), reason="needs mmcv 1.7.2: run `make test-mmcv`")]


@pytest.fixture(autouse=True)
def _fixture_path(monkeypatch: pytest.MonkeyPatch) -> None:
    # Not purged between tests: mmcv's HOOKS registry refuses a second registration of the same name.
    monkeypatch.syspath_prepend(str(FIXTURES))


@pytest.mark.parametrize("case", sorted(CASES))
def test_mmdet_and_mmcv_hooks_with_real_mmcv(case: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    import mmcv

    assert not getattr(mmcv, "__detlight_shim__", False) and mmcv.__version__ == "1.7.2"
    fn = CASES[case]
    extra = {name: request.getfixturevalue(name) for name in inspect.signature(fn).parameters if name != "tmp_path"}
    fn(tmp_path, **extra)


def test_shim_stays_off_when_mmcv_is_installed() -> None:
    assert install_mmcv_shim() is False and not mmcv_shim_installed()
    MMCVHooks(hooks=[], mmcv_shim=True)
    assert not mmcv_shim_installed()


def test_type_names_resolve_through_mmcv_registry(tmp_path: Path) -> None:
    from mmcv.runner import HOOKS, Hook

    @HOOKS.register_module(force=True)
    class UploadHook(Hook):
        def after_run(self, runner: Any) -> None:
            runner.meta["uploaded"] = True

    trainer, _, cb = fit(tmp_path, [{"type": "UploadHook"}, {"type": "StepLrUpdaterHook", "step": [1]}],
                         extra=[LrUpdater(policy="fixed")])
    assert cb.runner.meta["uploaded"] is True
    assert not any(isinstance(c, LrUpdater) for c in trainer.callbacks)  # mmcv's StepLrUpdaterHook replaced it
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.01)  # 0.1 * 0.1 after epoch 1


@pytest.mark.parametrize(("name", "named"), [
    ("TextLoggerHook", "detlight.callbacks.TextLogger"), ("IterTimerHook", "detlight.callbacks.IterTimer"),
    ("TensorboardLoggerHook", "detlight.callbacks.IntervalLogger"), ("Fp16OptimizerHook", "configure_gradient_clip"),
    ("GradientCumulativeOptimizerHook", "accumulate_grad_batches"), ("OptimizerHook", "on_before_optimizer_step"),
])
def test_mmcv_hooks_that_cannot_run_are_refused_by_name(name: str, named: str) -> None:
    with pytest.raises(HookError, match=rf"`{name}` cannot run in detlight.*{named}"):
        MMCVHooks(hooks=[{"type": name}])


def test_save_checkpoint_is_readable_by_mmcv(tmp_path: Path) -> None:
    from mmcv.parallel import is_module_wrapper
    from mmcv.runner import CheckpointHook, Hook, load_checkpoint

    seen: dict[str, Any] = {}

    class Peek(Hook):
        def before_run(self, runner: Any) -> None:
            seen["wrapped"] = is_module_wrapper(runner.model)

    _, module, _ = fit(tmp_path, [CheckpointHook(interval=1), Peek()], max_epochs=1)
    model = Detector()
    checkpoint = load_checkpoint(model, str(tmp_path / "latest.pth"), map_location="cpu", strict=True)
    assert seen["wrapped"] is True and checkpoint["meta"]["epoch"] == 1
    assert torch.equal(model.fc.weight, module.model.fc.weight.detach())


def test_every_standard_hook_runs_or_is_refused() -> None:
    from hook_matrix import matrix

    rows = matrix()
    outcomes = {name: outcome for name, _, outcome, _ in rows}
    assert len(rows) == 49 and sum(o.startswith("runs") for o in outcomes.values()) == 32  # 17 refused
    assert all(o == "runs" or o.startswith("runs, replaces") or o == "refused" for o in outcomes.values()), outcomes
    assert outcomes["StepLrUpdaterHook"] == "runs, replaces LrUpdater" and outcomes["TextLoggerHook"] == "refused"
    assert outcomes["YOLOXModeSwitchHook"] == "runs" and outcomes["EMAHook"] == "runs, replaces EMA"


def test_checkpoint_meta_names_the_installed_mmcv(tmp_path: Path) -> None:
    import mmcv

    from detlight import __version__
    from detlight.callbacks.run_meta import checkpoint_meta
    from detlight.testing import boring_trainer

    meta = checkpoint_meta(boring_trainer(tmp_path, [], max_epochs=1), by_epoch=True)
    assert meta["mmcv_version"] == mmcv.__version__ == "1.7.2" and meta["detlight_version"] == __version__


def test_with_mmcvs_checkpoint_hook_the_best_goes_to_the_runs_folder(tmp_path: Path) -> None:
    from test_hook_reports import test_with_mmcvs_checkpoint_hook_the_best_goes_to_the_runs_folder as case

    case(tmp_path)


def test_a_lowest_hook_sees_this_epochs_hook_msgs(tmp_path: Path) -> None:
    from test_hook_reports import test_a_lowest_hook_sees_this_epochs_checkpoint_and_best as case

    case(tmp_path)


def test_the_logged_run_recording_is_current(tmp_path: Path) -> None:
    """``fixtures/mmcv_iter_run.json`` (replayed by test_mmcv_iter_logs.py) is what this mmcv writes today."""
    import json

    import record_mmcv_iter_run

    record_mmcv_iter_run.main(str(tmp_path / "run.json"))
    fresh = json.loads((tmp_path / "run.json").read_text())
    stored = json.loads((Path(__file__).parent / "fixtures" / "mmcv_iter_run.json").read_text())
    for kind in ("iter", "epoch"):
        for key in ("json_log", "text_log", "tensorboard", "hook_trace"):
            assert fresh[kind][key] == stored[kind][key], (kind, key)
        assert fresh[kind]["weights"] == pytest.approx(stored[kind]["weights"], abs=1e-5)
