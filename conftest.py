"""pytest set-up at the repository root: the examples in ``detlight/``'s docstrings run as doctests.

``pytest -q`` collects ``tests/`` and ``detlight/`` (``testpaths`` in pyproject.toml). Each module of the package is
collected for its doctests only; ``tests/`` is not (``--doctest-modules`` would import its helper modules and
conftest a second time under another name). A module whose import needs an optional package that is not installed
is skipped, so the suite runs with the core dependencies alone.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from _pytest.doctest import DoctestModule

PACKAGE = Path(__file__).parent / "detlight"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _missing_optional_dependency(name: str) -> str | None:
    """The optional package that importing module ``name`` lacks, or None when it imports."""
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name and err.name.split(".")[0] != "detlight":
            return err.name
        raise
    return None


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.suffix != ".py" or PACKAGE not in file_path.parents or parent.config.option.doctestmodules:
        return None
    if _missing_optional_dependency(_module_name(file_path)) is not None:
        return None
    return DoctestModule.from_parent(parent, path=file_path)
