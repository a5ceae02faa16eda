"""``detlight convert``: mmcv/mmdet ``.py`` configs -> flat LightningCLI YAML files plus mapping reports.

Replaces: nothing in mmdet (its tools ran the ``.py`` config directly); this is the migration step. Kept apart from
:mod:`detlight.cli` and free of Lightning and torch imports, so converting one config takes well under a second and a
whole config folder (``detlight convert DIR -o OUTDIR``) converts in one process with a summary table.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ConvertResult", "convert_folder", "convert_main", "format_summary"]


@dataclass(frozen=True)
class ConvertResult:
    """What became of one config of a folder conversion."""

    config: str
    status: str  # "converted" | "refused" | "crashed"
    seconds: float
    mapped: int = 0
    approximated: int = 0
    dropped: int = 0
    message: str = ""
    #: the parts that are placeholders (``"model"``, ``"data"``): see :attr:`ConversionReport.placeholders`.
    placeholders: tuple[str, ...] = ()

    @property
    def runs(self) -> str:
        """``runnable`` (a real model and real data), ``placeholder model|data|model+data``, or ``-``."""
        if self.status != "converted":
            return "-"
        return "placeholder " + "+".join(self.placeholders) if self.placeholders else "runnable"


def convert_main(argv: Sequence[str]) -> int:
    """Run ``detlight convert CONFIG.py|DIR [-o OUT] [--cfg-options k=v ...]``; returns the exit status.

    With a folder, every ``.py`` config below it (``_base_`` folders excepted) is converted into the same relative
    path under ``-o OUTDIR`` (``.yaml``, with the report next to it as ``.report.txt``) and a summary table is
    printed; the status is 1 when any config was refused or crashed.
    """
    parser = argparse.ArgumentParser(
        prog="detlight convert",
        description="Convert mmdet/mmdet3d 1.x-era .py configs into detlight YAML. Configs are read safely (parsed, "
        "never executed). Give one config, or a folder of configs with -o OUTDIR.",
    )
    parser.add_argument("config", help="path to the mmcv-style .py config, or a folder of them")
    parser.add_argument("-o", "--out", help="output YAML path (default: print to stdout); for a folder: output folder")
    parser.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE",
                        help="dotted overrides applied after _base_ merging, e.g. optimizer.lr=0.01 "
                        "data.train.pipeline.1.type=Resize")
    parser.add_argument("--report", help="also write the mapping report to this file (one config only)")
    args = parser.parse_args(list(argv))

    from detlight.convert.entry import convert_file
    from detlight.exceptions import DetLightError

    if Path(args.config).is_dir():
        if not args.out:
            print("detlight convert: error: converting a folder needs -o OUTDIR (where the YAML files go).",
                  file=sys.stderr)
            return 2
        results = convert_folder(args.config, args.out, args.cfg_options)
        print(format_summary(results))
        return 0 if all(r.status == "converted" for r in results) else 1
    try:
        yaml_text, report = convert_file(args.config, out=args.out, cfg_options=args.cfg_options)
    except (DetLightError, FileNotFoundError) as err:
        print(f"detlight convert: error: {err}", file=sys.stderr)
        return 2
    if args.out is None:
        sys.stdout.write(yaml_text)
    else:
        print(f"Wrote {args.out}", file=sys.stderr)
    if args.report:
        Path(args.report).write_text(report, encoding="utf-8")
    print(report, file=sys.stderr)
    return 0


def convert_folder(folder: str | Path, out_dir: str | Path, cfg_options: Sequence[str] = ()) -> list[ConvertResult]:
    """Convert every leaf ``.py`` config under ``folder`` (not those in ``_base_`` folders) into ``out_dir``.

    A config detlight refuses (a :class:`~detlight.exceptions.ConfigError`) or that crashes the converter is recorded
    and the others still convert.
    """
    from detlight.convert.entry import convert_to_yaml
    from detlight.exceptions import DetLightError

    root, out_root = Path(folder), Path(out_dir)
    results = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if "_base_" in rel.parts or path.name.startswith("__"):
            continue
        start = time.perf_counter()
        target = (out_root / rel).with_suffix(".yaml")
        try:
            _, report = convert_to_yaml(path, target, cfg_options)
        except DetLightError as err:
            results.append(ConvertResult(str(rel), "refused", time.perf_counter() - start, message=str(err)))
            continue
        except Exception as err:  # a converter bug: keep going, show where
            where = traceback.extract_tb(err.__traceback__)[-1]
            results.append(ConvertResult(str(rel), "crashed", time.perf_counter() - start, message=(
                f"{type(err).__name__}: {err} ({Path(where.filename).name}:{where.lineno})")))
            continue
        target.with_suffix(".report.txt").write_text(report.format() + "\n", encoding="utf-8")
        mapped, approximated, dropped = (sum(e.status == s for e in report.entries)
                                         for s in ("mapped", "approximated", "dropped"))
        parts = tuple(sorted(report.placeholders, key=("model", "data").index))
        why = "; ".join(f"{part}: {report.placeholders[part]}" for part in parts)
        results.append(ConvertResult(str(rel), "converted", time.perf_counter() - start, mapped, approximated, dropped,
                                     why, parts))
    return results


def format_summary(results: Sequence[ConvertResult]) -> str:
    """One row per config (status, whether it runs, report counts, seconds, why not / the error) and the totals.

    "runs" separates the converted configs that train as written (``runnable``: a real model and a real datamodule)
    from those with a placeholder model (no detlight counterpart, or refused with the reason), placeholder data (a
    dataset type without a detlight reader) or both; the message says why.
    """
    rows = [("config", "status", "runs", "mapped", "approx.", "dropped", "s", "message")]
    for r in results:
        rows.append((r.config, r.status, r.runs, str(r.mapped), str(r.approximated), str(r.dropped),
                     f"{r.seconds:.3f}", r.message.splitlines()[0][:160] if r.message else ""))
    widths = [max(len(row[i]) for row in rows) for i in range(7)]
    lines = [" | ".join(row[i].ljust(widths[i]) for i in range(7)) + " | " + row[7] for row in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths) + "-+-" + "-" * 7)
    totals = {s: sum(r.status == s for r in results) for s in ("converted", "refused", "crashed")}
    runs = {s: sum(r.runs == s for r in results) for s in ("runnable", "placeholder model", "placeholder data",
                                                          "placeholder model+data")}
    times = sorted(r.seconds for r in results)
    median = times[len(times) // 2] if times else 0.0
    lines.append(f"{totals['converted']} converted: {runs['runnable']} runnable (real model and real data), "
                 f"{runs['placeholder model'] + runs['placeholder model+data']} with a placeholder model, "
                 f"{runs['placeholder data'] + runs['placeholder model+data']} with placeholder data "
                 f"({runs['placeholder model+data']} both)")
    lines.append(f"{len(results)} configs: " + ", ".join(f"{v} {k}" for k, v in totals.items()) +
                 f"; median {median:.3f} s per config")
    return "\n".join(line.rstrip() for line in lines)
