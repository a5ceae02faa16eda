"""Old import paths (``detlight._aliases.ALIASES``): each resolves to its new home, warns, and is no file in the tree."""

from __future__ import annotations

import importlib
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from detlight import _aliases as aliases
from detlight._aliases import _MISSING, ALIASES, resolve_alias

ROOT = Path(__file__).resolve().parents[1]


def _new_home(target: str) -> object:
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError:
        module, _, name = target.rpartition(".")
        return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("old", sorted(ALIASES))
def test_each_old_path_is_no_file_and_resolves_to_its_new_home(old: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aliases, "_warned", set())  # the note is given once per path and process
    relative = Path(*old.split("."))
    assert not (ROOT / relative.with_suffix(".py")).exists() and not (ROOT / relative / "__init__.py").exists(), \
        f"{old} is a real module: the table is for paths that moved"
    with pytest.warns(FutureWarning, match=f"write `{ALIASES[old]}`"):
        value = resolve_alias(old)
    assert value is not _MISSING and value is _new_home(ALIASES[old])


def test_old_modules_import_and_their_names_are_the_new_objects() -> None:
    from detlight.callbacks.check_invalid_loss import CheckInvalidLoss
    from detlight.callbacks.workflow import Workflow
    from detlight.compat.hook_base import Hook
    from detlight.convert.unmapped_data import UnmappedDataModule

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        old_workflow = importlib.import_module("detlight.workflow")
        old_misc = importlib.import_module("detlight.callbacks.misc")
        old_hooks = importlib.import_module("detlight.compat.hooks")
        old_data = importlib.import_module("detlight.compat.unmapped_data")
        assert old_workflow.Workflow is Workflow and old_misc.CheckInvalidLoss is CheckInvalidLoss
        assert old_hooks.Hook is Hook and old_data.UnmappedDataModule is UnmappedDataModule
        import detlight.compat

        assert detlight.compat.convert_file is importlib.import_module("detlight.convert").convert_file
    with pytest.raises(AttributeError, match=r"old path.*no attribute 'Nope'.*detlight\.callbacks\.workflow"):
        _ = old_workflow.Nope
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("detlight.no_such_module")


def test_old_class_path_in_a_yaml_builds_the_new_class_with_a_note(tmp_path: Path) -> None:
    """A YAML written for the old layout parses and its classes are checked (jsonargparse imports each class_path
    through the alias finder); the note on stderr says what to write instead."""
    config = tmp_path / "old.yaml"
    config.write_text(
        "trainer:\n  callbacks:\n"
        "    - class_path: detlight.workflow.Workflow\n      init_args: {workflow: [[train, 1]]}\n"
        "    - class_path: detlight.callbacks.misc.EmptyCache\n"
        "    - class_path: detlight.compat.hooks.MMCVHooks\n"
        "      init_args: {hooks: [{class_path: detlight.compat.hooks.Hook}]}\n"
        "model:\n  model: {class_path: detlight.compat.unmapped_detector.UnmappedDetector,\n"
        "          init_args: {mmdet_type: ATSS, message: not built}}\n"
        "data: {class_path: detlight.compat.unmapped_data.UnmappedDataModule, init_args: {dataset_type: LVISDataset, message: not read}}\n",
        encoding="utf-8")
    code = "from detlight.cli import main; import sys; main(sys.argv[1:])"
    done = subprocess.run([sys.executable, "-c", code, "fit", "--config", str(config), "--print_config"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-2000:]
    for old in ("detlight.workflow.Workflow", "detlight.callbacks.misc.EmptyCache", "detlight.compat.hooks.MMCVHooks",
                "detlight.compat.unmapped_detector.UnmappedDetector", "detlight.compat.unmapped_data.UnmappedDataModule"):
        assert f"`{old}` is an old path of `{ALIASES.get(old) or _moved(old)}`" in done.stderr, old
    assert "init_args:\n      before_epoch: false" in done.stdout  # EmptyCache's own defaults: the class was read


def _moved(old: str) -> str:
    module, _, name = old.rpartition(".")
    return f"{ALIASES[module]}.{name}"
