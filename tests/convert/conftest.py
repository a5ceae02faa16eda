"""Shared fixtures of the converter tests."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from pathlib import Path

import pytest

from detlight.exceptions import ConfigError


def _print_config(yaml_path: str | Path, subcommand: str = "fit") -> str:
    """``detlight <subcommand> --config yaml_path --print_config`` in this process; its stdout, or ConfigError."""
    from detlight.cli import main

    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main([subcommand, "--config", str(yaml_path), "--print_config"])
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise ConfigError(f"`detlight {subcommand} --print_config` rejected {yaml_path}:\n{err.getvalue()}") from None
    return out.getvalue()


@pytest.fixture
def print_config() -> Callable[..., str]:
    """Parse a YAML with the real CLI (jsonargparse checks every class_path and init arg) without training."""
    return _print_config
