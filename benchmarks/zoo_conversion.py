"""How many mmdet 2.28.2 / mmdet3d 1.0.0rc6 zoo configs convert to a YAML the CLI accepts with a real model.model.

Run:  python benchmarks/zoo_conversion.py --mmdet <mmdet>/.mim/configs --mmdet3d <mmdet3d>/.mim/configs
Each leaf config (not under ``_base_``) is read safely, converted, written to a temporary YAML and parsed by one
``detlight fit`` parser (what ``--print_config`` checks: every class_path and init arg), all in this process.
"Real model" means ``model.model`` is a class detlight builds, not ``UnmappedDetector``, and ``data`` is not
``UnmappedDataModule`` (a dataset type without a detlight reader: counted apart, as ``fit`` stops there).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

FAMILIES = ("RetinaNet", "FCOS", "FasterRCNN", "MaskRCNN", "SSD")


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


def survey(root: Path, parser: Any) -> tuple[collections.Counter, list[tuple[str, str, str]]]:
    from detlight.convert import convert_config
    from detlight.convert.config import load_config
    from detlight.convert.model_map import model_kind
    from detlight.convert.sections import UNMAPPED_DATA

    counts: collections.Counter = collections.Counter()
    rows = []
    for path in sorted(p for p in root.rglob("*.py") if "_base_" not in p.parts):
        try:
            cfg = load_config(path)
        except Exception as err:  # noqa: BLE001 - a reader failure is a row of the table
            rows.append((str(path), "?", f"read: {type(err).__name__}"))
            counts["read error"] += 1
            continue
        model = cfg.get("model") if isinstance(cfg.get("model"), dict) else {}
        kind = model_kind(model) or str(model.get("type"))
        out, _ = convert_config(cfg, str(path))
        target = ((out.get("model") or {}).get("model") or {}).get("class_path", "none")
        no_reader = (out.get("data") or {}).get("class_path") == UNMAPPED_DATA
        with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
            yaml.safe_dump({k: v for k, v in out.items() if k != "ckpt_path"}, f)  # ckpt_path: a fit-only key
            f.flush()
            try:
                with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
                    parser.parse_args(["--config", f.name])
                ok = True
            except (SystemExit, Exception) as err:  # noqa: BLE001
                ok, why = False, f"{type(err).__name__}: {str(err).splitlines()[0][:100] if str(err) else ''}"
        real = ok and not target.endswith("UnmappedDetector") and target != "none"
        status = "real model" if real else ("parsed, unmapped" if ok else f"rejected ({why})")
        if ok and no_reader:  # parses, but `fit` stops at the datamodule: counted apart, never as "real model"
            real, status = False, "parsed, no data reader" + (" (real model)" if status == "real model" else "")
        counts[status if not status.startswith(("rejected", "parsed, no data")) else status.split(" (")[0]] += 1
        if status.endswith("(real model)"):
            counts[status] += 1
        if kind in FAMILIES:
            counts[f"family {kind}: {'real' if real else 'not'}"] += 1
        rows.append((str(path.relative_to(root)), kind, status))
    return counts, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mmdet", type=Path)
    parser.add_argument("--mmdet3d", type=Path)
    parser.add_argument("--rows", type=Path, help="write every config's row to this tsv")
    args = parser.parse_args()
    cli_parser = _parser()
    all_rows = []
    for name, root in (("mmdet", args.mmdet), ("mmdet3d", args.mmdet3d)):
        if root is None:
            continue
        counts, rows = survey(root, cli_parser)
        all_rows += [(name, *r) for r in rows]
        total = len(rows)
        print(f"## {name}: {total} leaf configs; {counts['real model']} ({100 * counts['real model'] / total:.1f} %) "
              f"parse with a real model.model; {counts['parsed, unmapped']} parse with UnmappedDetector; "
              f"{counts['parsed, no data reader']} parse but name a dataset without a detlight reader (of which "
              f"{counts['parsed, no data reader (real model)']} with a real model); {counts['rejected']} rejected; "
              f"{counts['read error']} unreadable")
        for key in sorted(k for k in counts if k.startswith("family")):
            print(f"  {key}: {counts[key]}")
        sys.stdout.flush()
    if args.rows:
        args.rows.write_text("\n".join("\t".join(r) for r in all_rows) + "\n")


if __name__ == "__main__":
    main()
