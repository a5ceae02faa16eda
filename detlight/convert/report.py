"""The mapping report of ``detlight convert``: every key of an mmcv config, with what became of it.

Replaces: nothing in mmcv (mmdet's tools silently ignored keys they did not use); each key is *mapped* (same
behaviour), *approximated* (close, the note says how it differs) or *dropped* (with the reason).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["ConversionReport", "ReportEntry", "Status", "find_placeholders"]

#: the stand-ins a converted config gets where detlight has no model / dataset reader (their construction stops fit).
UNMAPPED_MODEL = "detlight.convert.unmapped_detector.UnmappedDetector"
UNMAPPED_DATA = "detlight.convert.unmapped_data.UnmappedDataModule"

Status = Literal["mapped", "approximated", "dropped"]


@dataclass(frozen=True)
class ReportEntry:
    """One line of the mapping report: an mmcv key and what became of it."""

    key: str
    status: Status
    target: str = ""
    note: str = ""


@dataclass
class ConversionReport:
    """Every key of the source config, with its status (mapped / approximated / dropped), target and note."""

    source: str
    entries: list[ReportEntry] = field(default_factory=list)
    #: text written, commented out, at the end of the YAML (e.g. a ``data:`` block for the user to fill).
    yaml_notes: list[str] = field(default_factory=list)
    #: ``{"model" | "data": why}`` for each part of the converted config that is no real model / data: absent
    #: (nothing written) or a stand-in that stops ``fit`` with that message. Empty: the YAML runs as converted.
    placeholders: dict[str, str] = field(default_factory=dict)

    def add(self, key: str, status: Status, target: str = "", note: str = "") -> None:
        """Record what became of ``key``."""
        self.entries.append(ReportEntry(key, status, target, note))

    def status_of(self, key: str) -> list[Status]:
        """Statuses recorded for ``key`` exactly."""
        return [e.status for e in self.entries if e.key == key]

    def covers(self, key: str) -> bool:
        """Whether ``key`` or one of its sub-keys (``key.x``) has an entry."""
        return any(e.key == key or e.key.startswith(key + ".") for e in self.entries)

    def unbacked(self, out: Mapping[str, Any]) -> list[ReportEntry]:
        """The *mapped* entries whose target is not in ``out`` (the converted config); empty for an honest report.

        A target is a dotted YAML path (``trainer.max_epochs``), a class path that must appear as a value
        (``detlight.callbacks.lr_updater.LrUpdater``), several of those joined by `` + `` or ``: ``, or a
        parenthesised phrase for behaviour that needs no YAML entry (``(Lightning automatic optimization)``).
        """
        values = set(_string_values(out))
        bad = []
        for entry in self.entries:
            if entry.status != "mapped":
                continue
            pieces = [p for p in re.split(r" \+ |: ", entry.target) if p and not p.startswith("(")]
            if not entry.target or any(not _present(out, values, p) for p in pieces):
                bad.append(entry)
        return bad

    def format(self) -> str:
        """A readable table: key | status | target | note."""
        rows = [("key", "status", "target", "note")] + [(e.key, e.status, e.target, e.note) for e in self.entries]
        widths = [min(max(len(r[i]) for r in rows), cap) for i, cap in enumerate((40, 12, 44))]
        lines = [f"Mapping report for {self.source}"]
        for n, row in enumerate(rows):
            cells = [row[i].ljust(widths[i]) for i in range(3)]
            lines.append(" | ".join([*cells, row[3]]).rstrip())
            if n == 0:
                lines.append("-+-".join("-" * w for w in widths) + "-+-" + "-" * 20)
        counts = {s: sum(e.status == s for e in self.entries) for s in ("mapped", "approximated", "dropped")}
        lines.append(", ".join(f"{v} {k}" for k, v in counts.items()))
        return "\n".join(lines)


def find_placeholders(out: Mapping[str, Any]) -> dict[str, str]:
    """``{"model" | "data": why}`` for the parts of a converted config that are no real model / data.

    Example:
        >>> find_placeholders({"model": {"model": {"class_path": "detlight.models.torchvision_detector"}}})
        {'data': 'no data section'}
    """
    found: dict[str, str] = {}
    model = dotted_get(out, "model.model")
    if not isinstance(model, Mapping):
        found["model"] = "no model.model"
    elif model.get("class_path") == UNMAPPED_MODEL:
        found["model"] = str(dotted_get(model, "init_args.message", "UnmappedDetector"))
    data = out.get("data")
    if not isinstance(data, Mapping):
        found["data"] = "no data section"
    elif data.get("class_path") == UNMAPPED_DATA:
        found["data"] = str(dotted_get(data, "init_args.message", "UnmappedDataModule"))
    return found


def _string_values(value: Any) -> Iterator[str]:
    if isinstance(value, Mapping):
        for item in value.values():
            yield from _string_values(item)
    elif isinstance(value, list):
        for item in value:
            yield from _string_values(item)
    elif isinstance(value, str):
        yield value


_MISSING = object()


def dotted_get(src: Any, dotted: str, default: Any = None) -> Any:
    """``src["a"]["b"][0]`` for ``"a.b.0"`` (mapping keys, list indices), or ``default`` where a part is missing."""
    node: Any = src
    for part in dotted.split("."):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return default
    return node


def _present(out: Mapping[str, Any], values: set[str], target: str) -> bool:
    if target.split(".")[0] in ("detlight", "lightning", "torch"):
        return target in values
    return dotted_get(out, target, _MISSING) is not _MISSING
