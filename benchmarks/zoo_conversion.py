"""How the mmdet 2.28.2 / mmdet3d 1.0.0rc6 zoo configs convert without mmdet: what runs, what is swapped, what not.

Run:  python benchmarks/zoo_conversion.py --mmdet <mmdet>/.mim/configs --mmdet3d <mmdet3d>/.mim/configs [--build]
Each leaf config (not under ``_base_``) is read safely, converted, written to a temporary YAML and parsed by one
``detlight fit`` parser (what ``--print_config`` checks: every class_path and init arg), all in this process.

Per folder: runnable (a real model and real data, the YAML parses), placeholder model (``UnmappedDetector``: no
detlight counterpart, or refused with the reason, e.g. C4 / DC5), placeholder data (``UnmappedDataModule``: a dataset
without a detlight reader). Per family (the mmdet detector type, or the detlight model it maps to): configs, real
models that parse, with ``--build`` how many of them build (each distinct ``model.model`` spec is built once), the
configs whose report names a swap of each kind (backbone / neck / head / loss / scale), and the refusals by reason.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import importlib
import io
import json
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SWAPS = ("backbone", "neck", "head", "loss", "scale")


@dataclass
class Row:
    """What became of one config."""

    config: str
    family: str
    parses: bool
    placeholders: tuple[str, ...]
    swaps: set[str] = field(default_factory=set)
    refused: str = ""
    spec: str = ""
    builds: bool | None = None

    @property
    def runs(self) -> str:
        if not self.parses:
            return "rejected"
        return "placeholder " + "+".join(self.placeholders) if self.placeholders else "runnable"


def _parser() -> Any:
    from detlight.cli import DetLightCLI
    from detlight.errors import FriendlyArgumentParser

    class ParseOnly(DetLightCLI):
        def before_instantiate_classes(self) -> None:
            pass

        def instantiate_classes(self) -> None:
            pass

    quickstart = Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"
    # run=False: the parser of one run (trainer, model, data), the same groups `detlight fit` parses
    cli = ParseOnly(args=["--config", str(quickstart)], run=False, parser_class=FriendlyArgumentParser)
    return cli.parser


def _family(cfg: dict[str, Any], spec: dict[str, Any]) -> str:
    from detlight.convert.model_map import model_kind

    model = cfg.get("model") if isinstance(cfg.get("model"), dict) else {}
    kind = model_kind(model)
    if kind is not None:
        return kind
    target = str(spec.get("class_path", ""))
    if target.endswith((".PointPillars", ".CenterNet")):
        return f"{model.get('type')} -> detlight {target.rsplit('.', 1)[1]}"
    return "no counterpart"


def survey(root: Path, parser: Any) -> list[Row]:
    from detlight.convert import convert_config
    from detlight.convert.config import load_config
    from detlight.convert.report import find_placeholders

    rows = []
    for path in sorted(p for p in root.rglob("*.py") if "_base_" not in p.relative_to(root).parts):
        name = str(path.relative_to(root))
        try:
            cfg = load_config(path)
            out, report = convert_config(cfg, str(path))
        except Exception as err:  # noqa: BLE001 - a refusal is a row of the table
            rows.append(Row(name, "unreadable", False, ("model", "data"), refused=type(err).__name__))
            continue
        spec = (out.get("model") or {}).get("model") or {}
        found = find_placeholders(out)
        placeholders = tuple(found)
        with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
            yaml.safe_dump({k: v for k, v in out.items() if k != "ckpt_path"}, f)  # ckpt_path: a fit-only key
            f.flush()
            try:
                with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
                    parser.parse_args(["--config", f.name])
                ok = True
            except (SystemExit, Exception):  # noqa: BLE001
                ok = False
        note = next((e.note for e in report.entries if e.key == "model"), "")
        row = Row(name, _family(cfg, spec), ok, placeholders)
        row.swaps = {part.split(":")[0].removeprefix("swapped ") for part in note.split("; ")
                     if part.startswith("swapped ")}
        if "model" in found:
            refused = found["model"].split(" is not built")[0].split(" (")[0] if " is not built" in found["model"] else ""
            row.refused = refused or ("no model.model" if found["model"] == "no model.model" else "no counterpart")
        elif spec:
            row.spec = json.dumps(spec, sort_keys=True)
        rows.append(row)
    return rows


def build_specs(rows: list[Row]) -> None:
    """Build each distinct real-model spec once (CPU, random weights); set ``Row.builds``."""
    import torch

    torch.set_num_threads(1)
    result: dict[str, bool] = {}
    for spec in sorted({r.spec for r in rows if r.spec}):
        loaded = json.loads(spec)
        module, _, attr = loaded["class_path"].rpartition(".")
        try:
            getattr(importlib.import_module(module), attr)(**loaded.get("init_args", {}))
            result[spec] = True
        except Exception as err:  # noqa: BLE001
            print(f"  does not build: {loaded}: {type(err).__name__}: {err}", file=sys.stderr)
            result[spec] = False
    for row in rows:
        row.builds = result.get(row.spec) if row.spec else None
    print(f"  {sum(result.values())} of {len(result)} distinct real-model specs build")


def report(name: str, rows: list[Row]) -> None:
    runs = collections.Counter(r.runs for r in rows)
    both = runs["placeholder model+data"]
    print(f"\n## {name}: {len(rows)} leaf configs\n")
    print("| runnable (real model and real data) | placeholder model | placeholder data | of which both | rejected |")
    print("|---:|---:|---:|---:|---:|")
    print(f"| {runs['runnable']} | {runs['placeholder model'] + both} | {runs['placeholder data'] + both} | {both} "
          f"| {runs['rejected']} |\n")
    families = sorted({r.family for r in rows}, key=lambda f: (f == "no counterpart", f))
    print("| family | configs | real model (parses) | builds | " + " | ".join(f"swapped {s}" for s in SWAPS)
          + " | refused / placeholder model (reason) |")
    print("|---|---:|---:|---:|" + "---:|" * len(SWAPS) + "---|")
    for family in families:
        group = [r for r in rows if r.family == family]
        real = [r for r in group if r.spec and r.parses]
        builds = sum(bool(r.builds) for r in real) if any(r.builds is not None for r in real) else "-"
        reasons = collections.Counter(r.refused for r in group if r.refused)
        print(f"| {family} | {len(group)} | {len(real)} | {builds} | "
              + " | ".join(str(sum(s in r.swaps for r in real)) for s in SWAPS) + " | "
              + ", ".join(f"{n} {why}" for why, n in reasons.most_common()) + " |")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mmdet", type=Path)
    parser.add_argument("--mmdet3d", type=Path)
    parser.add_argument("--build", action="store_true", help="build each distinct real-model spec (minutes on CPU)")
    parser.add_argument("--rows", type=Path, help="write every config's row to this tsv")
    args = parser.parse_args()
    cli_parser = _parser()
    lines = []
    for name, root in (("mmdet", args.mmdet), ("mmdet3d", args.mmdet3d)):
        if root is None:
            continue
        rows = survey(root, cli_parser)
        if args.build:
            build_specs(rows)
        report(name, rows)
        lines += ["\t".join((name, r.config, r.family, r.runs, ",".join(sorted(r.swaps)), r.refused)) for r in rows]
    if args.rows:
        args.rows.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
