"""Shared fixtures: an isolated dataset cache and a clean process state for every test."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory):
    """Generated datasets go to a per-session folder, never to the user's ~/.cache."""
    old = os.environ.get("DETLIGHT_CACHE")
    os.environ["DETLIGHT_CACHE"] = str(tmp_path_factory.mktemp("detlight_cache"))
    yield
    if old is None:
        os.environ.pop("DETLIGHT_CACHE", None)
    else:
        os.environ["DETLIGHT_CACHE"] = old


@pytest.fixture(autouse=True)
def _teardown_process_group():
    """A test that initialised torch.distributed must not leak the group into the next one."""
    yield
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
