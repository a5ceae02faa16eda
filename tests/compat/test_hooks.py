"""mmcv-style hooks: priorities, building from dicts, the type registry, the standard-hook table and duck typing."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import random
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from toy_run import ToyModule, loader, make_trainer

import detlight.callbacks
from detlight.callbacks.mmcv_hooks import MMCVHooks
from detlight.compat import hook_registry
from detlight.compat.hook_base import PRIORITIES, Hook, get_priority
from detlight.compat.hook_registry import build_hook, register_hook, registered_hooks
from detlight.compat.hook_table import lookup_standard_hook, standard_hook_table
from detlight.exceptions import ConfigError, HookError
from detlight.module import DetectorModule

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _clean_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hook_registry, "_REGISTRY", dict(hook_registry._REGISTRY))


class Named(Hook):
    def __init__(self, name: str = "", log: list[str] | None = None) -> None:
        self.name, self.log = name, log if log is not None else []

    def before_run(self, runner: Any) -> None:
        self.log.append(self.name)


# ---------------------------------------------------------------------------------------------------- priorities
@pytest.mark.parametrize(("given", "expected"), [("normal", 50), ("VERY_LOW", 90), (0, 0), (100, 100), (37, 37),
                                                 (SimpleNamespace(value=30), 30)])
def test_get_priority(given: Any, expected: int) -> None:
    assert get_priority(given) == expected


@pytest.mark.parametrize("given", [101, -1, "MEDIUM", 1.5, True])
def test_get_priority_rejects(given: Any) -> None:
    with pytest.raises(ConfigError, match="priority") as err:
        get_priority(given)
    assert isinstance(err.value, ValueError)  # what mmcv raised, for code that catches it


def _mmcv_register_order(priorities: list[int]) -> list[int]:
    """mmcv's BaseRunner.register_hook insertion rule: after the last hook whose priority is <= the new one."""
    order: list[tuple[int, int]] = []
    for index, priority in enumerate(priorities):
        for i in range(len(order) - 1, -1, -1):
            if priority >= order[i][0]:
                order.insert(i + 1, (priority, index))
                break
        else:
            order.insert(0, (priority, index))
    return [index for _, index in order]


@pytest.mark.parametrize("seed", range(5))
def test_call_order_follows_mmcv_insertion_rule(seed: int) -> None:
    rng = random.Random(seed)
    choices = [*PRIORITIES, 10, 45, 50, 90]
    priorities = [rng.choice(choices) for _ in range(12)]
    log: list[str] = []
    cb = MMCVHooks(hooks=[{"class_path": f"{__name__}.Named", "name": str(i), "log": log, "priority": p}
                          for i, p in enumerate(priorities)])
    cb.call_hook("before_run")
    assert [int(n) for n in log] == _mmcv_register_order([get_priority(p) for p in priorities])
    assert cb.priorities == sorted(cb.priorities)


def test_priority_sources() -> None:
    class Own:
        priority = "LOW"

        def before_run(self, runner: Any) -> None:
            pass

    cb = MMCVHooks(hooks=[Own(), {"class_path": f"{__name__}.Named"}, {"class_path": f"{__name__}.Named",
                                                                       "priority": 5}])
    assert cb.priorities == [5, 50, 70]
    cb.register(Own(), priority="HIGHEST")
    assert cb.priorities == [0, 5, 50, 70]


# ---------------------------------------------------------------------------------------------------- stages
def test_generic_fallbacks_for_duck_typed_hooks() -> None:
    class Generic:
        def __init__(self) -> None:
            self.calls: list[str] = []

        def before_epoch(self, runner: Any) -> None:
            self.calls.append("before_epoch")

        def after_iter(self, runner: Any) -> None:
            self.calls.append("after_iter")

        def after_val_iter(self, runner: Any) -> None:
            self.calls.append("own after_val_iter")

    hook = Generic()
    cb = MMCVHooks(hooks=[hook])
    for stage in ("before_run", "before_train_epoch", "before_val_epoch", "after_train_iter", "after_val_iter"):
        cb.call_hook(stage)
    assert hook.calls == ["before_epoch", "before_epoch", "after_iter", "own after_val_iter"]


def test_hook_helpers_follow_mmcv() -> None:
    hook = Hook()
    runner = SimpleNamespace(epoch=3, iter=9, inner_iter=4, data_loader=[0] * 5, _max_epochs=4, _max_iters=10)
    assert hook.every_n_epochs(runner, 2) and not hook.every_n_epochs(runner, 3)
    assert hook.every_n_iters(runner, 5) and not hook.every_n_iters(runner, 3)
    assert hook.every_n_inner_iters(runner, 5) and not hook.every_n_inner_iters(runner, 0)
    assert hook.end_of_epoch(runner) and hook.is_last_epoch(runner) and hook.is_last_iter(runner)
    runner.epoch, runner.iter, runner.inner_iter = 1, 3, 1
    assert not (hook.end_of_epoch(runner) or hook.is_last_epoch(runner) or hook.is_last_iter(runner))


# ---------------------------------------------------------------------------------------------------- building
def test_build_from_registered_type_and_class_path() -> None:
    @register_hook
    class Scaled(Hook):
        def __init__(self, factor: int = 1) -> None:
            self.factor = factor

    register_hook(Scaled, name="ScaledAlias")
    assert registered_hooks()["Scaled"] is Scaled
    hook, priority = build_hook({"type": "Scaled", "factor": 3, "priority": "LOW"})
    assert isinstance(hook, Scaled) and hook.factor == 3 and priority == 70
    hook, priority = build_hook({"type": "ScaledAlias", "init_args": {"factor": 2}})
    assert hook.factor == 2 and priority == 50
    hook, _ = build_hook({"class_path": f"{__name__}.Named", "init_args": {"name": "x"}})
    assert isinstance(hook, Named) and hook.name == "x"
    hook, _ = build_hook({"type": f"{__name__}.Named"})  # an import path as mmcv `type`, as converted configs give
    assert isinstance(hook, Named)


def test_register_hook_refuses_a_taken_name() -> None:
    @register_hook(name="Taken")
    class First(Hook):
        pass

    class Second(Hook):
        pass

    with pytest.raises(HookError, match="already registered"):
        register_hook(Second, name="Taken")
    register_hook(Second, name="Taken", force=True)
    assert registered_hooks()["Taken"] is Second


def test_unknown_type_lists_registered_names() -> None:
    register_hook(Named, name="KnownOne")
    with pytest.raises(ConfigError, match=r"Unknown hook type `Nope`.*KnownOne.*register_hook"):
        build_hook({"type": "Nope"})


@pytest.mark.parametrize(("spec", "error", "match"), [
    ({"priority": "LOW"}, ConfigError, "exactly one of `type`"),
    ({"type": "X", "class_path": "a.B"}, ConfigError, "exactly one of `type`"),
    ({"class_path": "NoDots"}, ConfigError, "full import path"),
    ({"class_path": "detlight.compat.hook_base.Missing"}, ConfigError, "has no attribute `Missing`"),
    ({"class_path": "no_such_pkg.hooks.X"}, ConfigError, "No module named 'no_such_pkg'"),
    ({"class_path": f"{__name__}.Named", "bogus": 1}, ConfigError, "Cannot build hook .*bogus"),
    ({"class_path": "collections.OrderedDict"}, HookError, "not an mmcv-style hook"),
    ({"class_path": f"{__name__}.Named", "priority": "SOON"}, ConfigError, "SOON"),
])
def test_bad_hook_specs(spec: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        build_hook(spec)


def test_bad_hooks_argument() -> None:
    with pytest.raises(HookError, match="list of hooks"):
        MMCVHooks(hooks={"type": "X"})  # type: ignore[arg-type]
    with pytest.raises(HookError, match="not an mmcv-style hook"):
        MMCVHooks(hooks=[object()])


# ---------------------------------------------------------------------------------------------------- standard table
#: Every standard hook type of mmcv 1.7 and mmdet 2.28 (written out here, independent of the table).
STANDARD_TYPES = [
    *(f"{p}LrUpdaterHook" for p in ("Fixed", "Step", "Exp", "Poly", "Inv", "CosineAnnealing", "FlatCosineAnnealing",
                                    "CosineRestart", "Cyclic", "OneCycle", "LinearAnnealing")),
    *(f"{p}MomentumUpdaterHook" for p in ("Step", "CosineAnnealing", "LinearAnnealing", "Cyclic", "OneCycle")),
    "LrUpdaterHook", "MomentumUpdaterHook", "OptimizerHook", "Fp16OptimizerHook", "GradientCumulativeOptimizerHook",
    "GradientCumulativeFp16OptimizerHook", "CheckpointHook", "IterTimerHook", "LoggerHook", "TextLoggerHook",
    "TensorboardLoggerHook", "WandbLoggerHook", "MlflowLoggerHook", "NeptuneLoggerHook", "DvcliveLoggerHook",
    "PaviLoggerHook", "SegmindLoggerHook", "ClearMLLoggerHook", "MMDetWandbHook", "EvalHook", "DistEvalHook",
    "EMAHook", "ExpMomentumEMAHook", "LinearMomentumEMAHook", "NumClassCheckHook", "CheckInvalidLossHook",
    "EmptyCacheHook", "SyncBuffersHook", "SetEpochInfoHook", "DistSamplerSeedHook", "ClosureHook", "ProfilerHook",
    "SyncNormHook", "YOLOXModeSwitchHook", "YOLOXLrUpdaterHook", "MemoryProfilerHook", "Hook",
]


def _find_callback(path: str) -> type:
    """Resolve ``detlight.callbacks.X`` from the package, or from its submodules while exports are pending."""
    name = path.rpartition(".")[2]
    if hasattr(detlight.callbacks, name):
        return getattr(detlight.callbacks, name)
    for info in pkgutil.iter_modules(detlight.callbacks.__path__):
        module = importlib.import_module(f"detlight.callbacks.{info.name}")
        if isinstance(getattr(module, name, None), type):
            return getattr(module, name)
    raise AssertionError(f"{path} is neither exported by detlight.callbacks nor defined in one of its modules")


def test_table_covers_every_standard_type() -> None:
    assert set(STANDARD_TYPES) <= set(standard_hook_table())
    assert standard_hook_table() is not standard_hook_table()  # a copy: the converter may not edit ours


@pytest.mark.parametrize("hook_type", STANDARD_TYPES)
def test_standard_type_maps_or_refuses(hook_type: str) -> None:
    mapping = lookup_standard_hook(hook_type)
    assert mapping is not None
    if mapping.kind == "callback":
        assert issubclass(_find_callback(mapping.target), pl.Callback)
    elif mapping.kind == "trainer":
        names = [part.split(":")[0].strip() for part in mapping.target.split("+")]
        assert set(names) <= set(inspect.signature(pl.Trainer).parameters), names
    elif mapping.kind == "module":
        assert mapping.target in inspect.signature(DetectorModule).parameters
    else:
        assert mapping.note, f"{hook_type}: a refusal must say what to use instead"
    with pytest.raises(ValueError) as err:
        MMCVHooks(hooks=[{"type": hook_type, "priority": "NORMAL"}])
    message = str(err.value)
    assert f"mmcv hook `{hook_type}`" in message and "custom_hooks" in message
    if mapping.kind == "unsupported":
        assert "has no detlight counterpart; use " in message
    if mapping.target:
        assert mapping.target in message


def test_registered_name_wins_over_the_standard_table() -> None:
    """A user who registers their own `EMAHook` port gets it, not the refusal."""
    register_hook(Named, name="EMAHook")
    hook, _ = build_hook({"type": "EMAHook"})
    assert isinstance(hook, Named)


# ---------------------------------------------------------------------------------------------------- mmcv installed
_FAKE_MMCV_HOOK = '''
class Hook:
    """mmcv 1.7's Hook as far as these helpers go (private runner attributes included)."""
    def before_run(self, runner): pass
    def after_run(self, runner): pass
    def before_epoch(self, runner): pass
    def after_epoch(self, runner): pass
    def before_iter(self, runner): pass
    def after_iter(self, runner): pass
    def before_train_epoch(self, runner): self.before_epoch(runner)
    def before_val_epoch(self, runner): self.before_epoch(runner)
    def after_train_epoch(self, runner): self.after_epoch(runner)
    def after_val_epoch(self, runner): self.after_epoch(runner)
    def before_train_iter(self, runner): self.before_iter(runner)
    def before_val_iter(self, runner): self.before_iter(runner)
    def after_train_iter(self, runner): self.after_iter(runner)
    def after_val_iter(self, runner): self.after_iter(runner)
    def every_n_iters(self, runner, n): return (runner.iter + 1) % n == 0 if n > 0 else False
    def end_of_epoch(self, runner): return runner.inner_iter + 1 == len(runner.data_loader)
    def is_last_epoch(self, runner): return runner.epoch + 1 == runner._max_epochs
    def is_last_iter(self, runner): return runner.iter + 1 == runner._max_iters
'''


def test_hook_written_against_mmcv_runs_when_mmcv_is_importable(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "site" / "mmcv" / "runner"
    pkg.mkdir(parents=True)
    (pkg.parent / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("from .hook import Hook\n")
    (pkg / "hook.py").write_text(textwrap.dedent(_FAKE_MMCV_HOOK))
    (tmp_path / "site" / "user_hooks.py").write_text(textwrap.dedent('''
        from mmcv.runner import Hook

        class Flags(Hook):
            def __init__(self):
                self.flags = []

            def after_iter(self, runner):
                self.flags.append((self.end_of_epoch(runner), self.is_last_iter(runner), self.every_n_iters(runner, 2)))

            def after_epoch(self, runner):
                self.flags.append(("epoch_end", self.is_last_epoch(runner)))
    '''))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    for name in ("mmcv", "mmcv.runner", "mmcv.runner.hook", "user_hooks"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    try:
        cb = MMCVHooks(hooks=[{"class_path": "user_hooks.Flags"}])
        (hook,) = cb.hooks
        make_trainer(tmp_path, [cb], max_epochs=2).fit(ToyModule(), train_dataloaders=loader(2))
    finally:  # the stand-in mmcv must not outlive this test
        for name in ("mmcv", "mmcv.runner", "mmcv.runner.hook", "user_hooks"):
            sys.modules.pop(name, None)
    assert hook.flags == [(False, False, False), (True, False, True), ("epoch_end", False),
                          (False, False, False), (True, True, True), ("epoch_end", True)]


def test_package_exports_are_the_homes() -> None:
    import detlight.compat

    assert detlight.compat.MMCVHooks is detlight.callbacks.MMCVHooks is MMCVHooks
    assert detlight.compat.Hook is Hook
