"""The typed public API: each package's lazy ``_EXPORTS`` table, its ``if TYPE_CHECKING:`` imports and ``__all__``
name the same objects, and every public callback is exported from :mod:`detlight.callbacks`."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import detlight

ROOT = Path(detlight.__file__).parent
PACKAGE_INITS = sorted(ROOT.rglob("__init__.py"))


def _package(init: Path) -> str:
    return ".".join(init.parent.relative_to(ROOT.parent).parts)


def _absolute(package: str, module: str | None, level: int) -> str:
    if level == 0:
        return module or ""
    base = package.split(".")[: len(package.split(".")) - level + 1]
    return ".".join([*base, *([module] if module else [])])


def _parse(init: Path) -> tuple[dict[str, str], dict[str, str], list[str]]:
    """``(lazy table, TYPE_CHECKING imports, __all__)`` of one ``__init__.py``, names mapped to absolute modules."""
    package = _package(init)
    lazy: dict[str, str] = {}
    typed: dict[str, str] = {}
    names: list[str] = []
    for node in ast.parse(init.read_text()).body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == "_EXPORTS":
            table = ast.literal_eval(node.value)
            lazy = {k: v if v.startswith("detlight.") else f"{package}.{v}" for k, v in table.items()}
        elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            names = ast.literal_eval(node.value)
        elif isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for imp in node.body:
                assert isinstance(imp, ast.ImportFrom), f"{init}: only `from x import y` belongs under TYPE_CHECKING"
                for alias in imp.names:
                    assert alias.asname is None, f"{init}: {alias.name} imported under another name"
                    typed[alias.name] = _absolute(package, imp.module, imp.level)
    return lazy, typed, names


def _expected_block(lazy: dict[str, str]) -> str:
    """The ``if TYPE_CHECKING:`` block and ``__all__`` that match ``lazy`` (pasted into a failure message)."""
    by_module: dict[str, list[str]] = {}
    for name, module in lazy.items():
        by_module.setdefault(module, []).append(name)
    lines = ["if TYPE_CHECKING:"]
    for module, names in sorted(by_module.items()):
        if len(names) == 1:
            lines.append(f"    from {module} import {names[0]}")
        else:
            lines += [f"    from {module} import (", *(f"        {n}," for n in sorted(names)), "    )"]
    return "\n".join(lines)


@pytest.mark.parametrize("init", PACKAGE_INITS, ids=_package)
def test_lazy_table_typed_imports_and_all_agree(init: Path) -> None:
    lazy, typed, names = _parse(init)
    assert lazy, f"{init} has no _EXPORTS table"
    assert typed == lazy, f"{init}: TYPE_CHECKING imports differ from _EXPORTS: " \
        f"only typed {sorted(typed.keys() - lazy.keys())}, only lazy {sorted(lazy.keys() - typed.keys())}, " \
        f"other module {sorted(k for k in typed.keys() & lazy.keys() if typed[k] != lazy[k])}; expected:\n" \
        f"{_expected_block(lazy)}"
    public = sorted(set(names) - {"__version__"})
    assert public == sorted(lazy), f"{init}: __all__ differs from _EXPORTS: only in __all__ " \
        f"{sorted(set(public) - lazy.keys())}, missing {sorted(lazy.keys() - set(public))}"
    assert names == sorted(names), f"{init}: keep __all__ sorted (one name per line eases merges)"
    assert list(lazy) == sorted(lazy), f"{init}: keep _EXPORTS sorted (one name per line eases merges)"


@pytest.mark.parametrize("init", PACKAGE_INITS, ids=_package)
def test_each_lazy_name_resolves_to_an_object_of_the_named_module(init: Path) -> None:
    package = importlib.import_module(_package(init))
    lazy, _, _ = _parse(init)
    for name, module in lazy.items():
        importlib.import_module(module)  # a submodule import must not shadow an export of the same name
        obj = getattr(package, name)
        assert getattr(obj, "__module__", None) == module, f"{package.__name__}.{name} is {obj!r}, not from {module}"
    assert sorted(dir(package)) == sorted(lazy)
    with pytest.raises(AttributeError, match="DoesNotExist"):
        package.DoesNotExist  # noqa: B018


def test_every_public_callback_is_exported_from_detlight_callbacks() -> None:
    from lightning.pytorch.callbacks import Callback

    import detlight.callbacks

    missing = []
    for info in pkgutil.walk_packages([str(ROOT)], prefix="detlight."):
        if info.name.split(".")[-1].startswith("_"):
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if inspect.isclass(obj) and issubclass(obj, Callback) and obj.__module__ == info.name \
                    and not name.startswith("_") and getattr(detlight.callbacks, name, None) is not obj:
                missing.append(f"{info.name}.{name}")
    assert not missing, f"public callbacks not exported from detlight.callbacks: {missing}"


def test_importing_a_package_does_not_import_torch() -> None:
    code = ("import sys, detlight, detlight.callbacks, detlight.compat, detlight.data, detlight.metrics, "
            "detlight.models, detlight.optim; print(sorted(m for m in ('torch', 'lightning') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
