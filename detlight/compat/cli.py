"""``detlight convert``: an mmcv/mmdet ``.py`` config -> one flat LightningCLI YAML plus a mapping report.

Kept apart from :mod:`detlight.cli` so that ``detlight convert`` never builds the Lightning parsers.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["convert_main"]


def convert_main(argv: Sequence[str]) -> int:
    """Run ``detlight convert CONFIG.py [-o OUT.yaml] [--cfg-options k=v ...]``; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="detlight convert",
        description="Convert an mmdet/mmdet3d 1.x-era .py config into a detlight YAML. The config is read "
        "safely (parsed, never executed).",
    )
    parser.add_argument("config", help="path to the mmcv-style .py config")
    parser.add_argument("-o", "--out", help="output YAML path (default: print to stdout)")
    parser.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE",
                        help="dotted overrides applied after _base_ merging, e.g. optimizer.lr=0.01 "
                        "data.train.pipeline.1.type=Resize")
    parser.add_argument("--report", help="also write the mapping report to this file")
    args = parser.parse_args(list(argv))

    from detlight.compat.config import ConfigError
    from detlight.compat.convert import convert_file

    try:
        yaml_text, report = convert_file(args.config, out=args.out, cfg_options=args.cfg_options)
    except (ConfigError, FileNotFoundError, ValueError) as err:
        print(f"detlight convert: error: {err}", file=sys.stderr)
        return 2
    if args.out is None:
        sys.stdout.write(yaml_text)
    else:
        print(f"Wrote {args.out}", file=sys.stderr)
    if args.report:
        with open(args.report, "w") as f:
            f.write(report)
    print(report, file=sys.stderr)
    return 0
