"""Shared helpers of the optimizer / schedule tests."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import pytest


def _check_golden(value: float, golden: str) -> None:
    """Exact goldens (``=`` prefix) to relative 1e-9; others to the significant digits written."""
    if golden.startswith("="):
        assert value == pytest.approx(float(golden[1:]), rel=1e-9, abs=0), golden
        return
    dec = Decimal(golden)
    # half a unit in the last written digit
    tol = 0.5 * 10.0 ** dec.as_tuple().exponent * (1 + 1e-9)
    assert abs(value - float(dec)) <= tol, f"{value!r} does not round to {golden}"


@pytest.fixture
def check_golden() -> Callable[[float, str], None]:
    """Compare a value with a golden string from docs/mmcv-semantics.md §2.1."""
    return _check_golden
