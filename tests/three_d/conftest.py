"""Shared fixtures for the 3D tests: one tiny synthetic KITTI set per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from detlight.data.synthetic_lidar import SyntheticLidarSpec, ensure_synthetic_kitti

TINY_SPEC = SyntheticLidarSpec(num_train=6, num_val=3, seed=7, objects_per_scene=(3, 6), clutter_per_scene=(0, 1))
TINY_RANGE = [0.0, -20.48, -3.0, 40.96, 20.48, 1.0]


@pytest.fixture(scope="session")
def tiny_spec() -> SyntheticLidarSpec:
    return TINY_SPEC


@pytest.fixture(scope="session")
def tiny_range() -> list[float]:
    return list(TINY_RANGE)


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("detlight_cache")


@pytest.fixture(scope="session")
def tiny_kitti(tiny_cache: Path) -> Path:
    return ensure_synthetic_kitti(TINY_SPEC, tiny_cache)
