"""mmcv/mmdet/mmdet3d 1.x-era ``.py`` config -> one flat LightningCLI YAML for ``detlight fit --config``.

Replaces: what mmdet's ``tools/train.py`` + ``train_detector`` did with the runtime keys of a config (runner, hooks,
optimizer, dist settings). Each key is reported as *mapped* (same behaviour), *approximated* (close, the note says
how it differs) or *dropped* (with the reason and, where there is one, what to write instead). The config is read
with :func:`detlight.convert.config.load_config`, so nothing in it is executed.

The per-section work is :func:`detlight.convert.converter.convert_config`; the target schema (class paths and the init
args each target accepts) is in :mod:`detlight.convert.targets`, the one place to edit when a detlight class moves;
the report classes are in :mod:`detlight.convert.report`.

Example:
    >>> cfg = dict(runner=dict(type="EpochBasedRunner", max_epochs=12), optimizer_config=dict(grad_clip=None),
    ...            lr_config=dict(policy="step", step=[8, 11]))
    >>> out, report = convert_config(cfg, "configs/retinanet_1x.py")
    >>> out["trainer"]["max_epochs"], out["trainer"]["callbacks"][0]["init_args"]["step"]
    (12, [8, 11])
    >>> [e.status for e in report.entries if e.key == "runner"]
    ['mapped']
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from detlight.convert.config import EvalNote, load_config
from detlight.convert.converter import convert_config
from detlight.convert.report import ConversionReport, find_placeholders

__all__ = ["convert_file", "convert_py_configs", "convert_to_yaml"]


def convert_file(
    path: str | Path, out: str | Path | None = None, cfg_options: Sequence[str] | Mapping[str, Any] | None = None
) -> tuple[str, str]:
    """Read ``path`` safely, convert it, optionally write the YAML to ``out``; return ``(yaml_text, report_text)``."""
    text, report = convert_to_yaml(path, out, cfg_options)
    return text, report.format()


def convert_to_yaml(
    path: str | Path, out: str | Path | None = None, cfg_options: Sequence[str] | Mapping[str, Any] | None = None
) -> tuple[str, ConversionReport]:
    """As :func:`convert_file`, returning the :class:`ConversionReport` itself (for counts and checks)."""
    notes: list[EvalNote] = []
    cfg = load_config(path, cfg_options, notes=notes)
    from detlight.openmmlab.convert import convert_config_bridged  # mmdet's own model and data when installed

    result, report = convert_config_bridged(cfg, str(path), convert_config)
    report.placeholders = find_placeholders(result)
    for note in notes:
        report.add(note.key or "(expression)", "approximated", "(evaluated by detlight)", f"{note.where}: {note.text}")
    header = [
        f"# Converted by `detlight convert` from {path}",
        f"# Run: detlight fit --config {out if out is not None else '<this file>'}",
        "# Keys that were approximated or dropped are listed in the mapping report.",
    ]
    missing = [e for e in report.entries if e.key == "model" and e.status == "dropped"]
    if missing:
        header.append("# model.model is missing: add `model: {model: {class_path: my_pkg.MyDetector}}`.")
    text = "\n".join(header) + "\n" + yaml.safe_dump(result, sort_keys=False, default_flow_style=None, width=120)
    for block in report.yaml_notes:
        text += "\n" + "".join(f"# {line}\n" for line in block.rstrip().splitlines())
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text, encoding="utf-8")
    return text, report


def convert_py_configs(argv: Sequence[str]) -> list[str]:
    """Replace each ``--config x.py`` (or ``--config=x.py``, ``-c x.py``) in ``argv`` by a YAML converted from it.

    This is what ``detlight fit --config x.py``, :mod:`detlight.api` and ``detlight check`` do with mmcv configs: the
    config is read safely (nothing executed), converted, the mapping report is printed to stderr, and the YAML goes
    to a temporary file that is deleted when the process exits. Other arguments are returned unchanged.

    Example:
        >>> convert_py_configs(["fit", "--config", "run.yaml", "--trainer.max_epochs=2"])
        ['fit', '--config', 'run.yaml', '--trainer.max_epochs=2']
    """
    argv = list(argv)
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        value = None
        if arg in ("--config", "-c") and i + 1 < len(argv):
            value, step = argv[i + 1], 2
        elif arg.startswith("--config="):
            value, step = arg.split("=", 1)[1], 1
        if value is not None and value.endswith(".py"):
            yaml_text, report = convert_file(value)
            fd, path = tempfile.mkstemp(prefix=os.path.basename(value)[:-3] + ".", suffix=".yaml")
            with os.fdopen(fd, "w") as f:
                f.write(yaml_text)
            atexit.register(_remove, path)
            print(report, file=sys.stderr)
            out += ["--config", path]
            i += step
            continue
        out.append(arg)
        i += 1
    return out


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.remove(path)
