"""Which ``mmcv._ext`` names the installed mmcv asks for, and which of them detlight serves.

``python -m detlight.openmmlab.ops_table`` reads the installed mmcv's ``mmcv/ops/*.py`` statically (an AST scan for
``load_ext('_ext', [names])``; nothing of mmcv is imported or executed) and prints one row per requested name:
``provided`` with the family module and what computes it (a torchvision kernel or torch), or ``stub`` (importing works;
calling raises :class:`~detlight.openmmlab.OpNotProvidedError`). ``--markdown`` prints the table that
``docs/openmmlab-ops.md`` carries. The scan needs neither torch nor mmcv importable; the status column imports the
op families (torch).
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from detlight.exceptions import DetLightError

__all__ = ["OpRow", "find_mmcv_ops_dir", "main", "ops_table", "render_markdown", "render_text", "requested_ext_names"]

_HOW_TEXT = {"torchvision": "torchvision kernel", "torch": "torch", "spconv": "spconv"}


@dataclass(frozen=True)
class OpRow:
    """One ``_ext`` name requested by mmcv: the mmcv modules that load it and how detlight serves it."""

    name: str
    modules: tuple[str, ...]
    family: str | None
    how: str | None

    @property
    def provided(self) -> bool:
        """Whether detlight serves this name (else calling it raises OpNotProvidedError)."""
        return self.family is not None

    @property
    def status(self) -> str:
        """``provided (family, how)`` or ``stub``."""
        if self.family is None:
            return "stub"
        return f"provided ({self.family}, {_HOW_TEXT.get(self.how or '', self.how)})"


def find_mmcv_ops_dir() -> Path:
    """The installed mmcv's ``ops`` folder, located without importing mmcv.

    Raises:
        DetLightError: mmcv is not installed, or has no ``ops`` folder.
    """
    spec = importlib.util.find_spec("mmcv") if "mmcv" not in sys.modules else sys.modules["mmcv"].__spec__
    if spec is None or not spec.submodule_search_locations:
        raise DetLightError("ops_table: mmcv is not installed in this environment (pip install mmcv==1.7.0, or pass "
                            "--mmcv-ops <path to mmcv/ops>)")
    for folder in spec.submodule_search_locations:
        ops = Path(folder) / "ops"
        if ops.is_dir():
            return ops
    raise DetLightError(f"ops_table: mmcv at {list(spec.submodule_search_locations)} has no ops/ folder "
                        "(mmcv 1.x has mmcv/ops; mmcv-lite 2.x does not load _ext)")


def _literal_names(node: ast.expr) -> list[str]:
    if isinstance(node, (ast.List, ast.Tuple)):
        return [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
    return []


def requested_ext_names(ops_dir: Path) -> dict[str, tuple[str, ...]]:
    """``{_ext name: mmcv modules loading it}`` from every ``load_ext('_ext', [...])`` call under ``ops_dir``.

    Args:
        ops_dir: an mmcv ``ops`` folder (``mmcv/ops``).

    Returns:
        Names in sorted order; modules as dotted ``mmcv.ops.<file>`` names.
    """
    if not Path(ops_dir).is_dir():
        raise DetLightError(f"ops_table: {ops_dir} is not a folder (expected an mmcv/ops folder)")
    found: dict[str, set[str]] = {}
    for path in sorted(Path(ops_dir).rglob("*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        except (SyntaxError, UnicodeDecodeError) as err:
            raise DetLightError(f"ops_table: cannot parse {path}: {err}") from err
        rel = path.relative_to(Path(ops_dir).parent).with_suffix("")
        module = "mmcv." + ".".join(rel.parts)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            fname = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if fname != "load_ext" or len(node.args) < 2:
                continue
            first = node.args[0]
            if not (isinstance(first, ast.Constant) and first.value == "_ext"):
                continue
            for name in _literal_names(node.args[1]):
                found.setdefault(name, set()).add(module)
    return {name: tuple(sorted(mods)) for name, mods in sorted(found.items())}


def ops_table(ops_dir: Path | None = None) -> list[OpRow]:
    """Rows for every ``_ext`` name the installed (or given) mmcv requests, with detlight's status."""
    from detlight.openmmlab.provider import provided_ops

    requested = requested_ext_names(ops_dir or find_mmcv_ops_dir())
    served = provided_ops()
    rows = []
    for name, modules in requested.items():
        op = served.get(name)
        rows.append(OpRow(name, modules, op.family if op else None, op.how if op else None))
    return rows


def render_text(rows: Sequence[OpRow]) -> str:
    """Plain aligned columns plus a summary line."""
    width = max((len(r.name) for r in rows), default=4)
    lines = [f"{r.name:<{width}}  {r.status}" for r in rows]
    provided = sum(r.provided for r in rows)
    lines.append(f"{len(rows)} _ext names requested by mmcv.ops: {provided} provided, {len(rows) - provided} stubs")
    return "\n".join(lines)


def render_markdown(rows: Sequence[OpRow]) -> str:
    """The markdown table of ``docs/openmmlab-ops.md`` (name, status, family, computed by, mmcv modules)."""
    out = ["| `_ext` name | status | family | computed by | requested by |", "|---|---|---|---|---|"]
    for r in rows:
        mods = ", ".join(m.removeprefix("mmcv.ops.") for m in r.modules)
        if r.provided:
            out.append(f"| `{r.name}` | provided | `{r.family}` | {_HOW_TEXT.get(r.how or '', r.how)} | {mods} |")
        else:
            out.append(f"| `{r.name}` | stub | | | {mods} |")
    provided = sum(r.provided for r in rows)
    out.append("")
    out.append(f"{len(rows)} names: {provided} provided, {len(rows) - provided} stubs.")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: print the table; exit status 0 (1 when mmcv cannot be found)."""
    parser = argparse.ArgumentParser(prog="python -m detlight.openmmlab.ops_table", description=__doc__.split("\n")[0])
    parser.add_argument("--markdown", action="store_true", help="print the markdown table of docs/openmmlab-ops.md")
    parser.add_argument("--mmcv-ops", type=Path, default=None, help="scan this mmcv/ops folder instead")
    args = parser.parse_args(argv)
    try:
        rows = ops_table(args.mmcv_ops)
    except DetLightError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(render_markdown(rows) if args.markdown else render_text(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
