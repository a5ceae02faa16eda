"""``benchmarks/openmmlab_zoo.py`` as a module, for the tests that use the zoo's own config adaptation."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any


def zoo_module() -> Any:
    """The zoo benchmark module (loaded once, registered as ``openmmlab_zoo``)."""
    if "openmmlab_zoo" in sys.modules:
        return sys.modules["openmmlab_zoo"]
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "openmmlab_zoo.py"
    spec = importlib.util.spec_from_file_location("openmmlab_zoo", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["openmmlab_zoo"] = module
    spec.loader.exec_module(module)
    return module
