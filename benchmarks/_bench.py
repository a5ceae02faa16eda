"""Helpers shared by the benchmark scripts: markdown tables, machine description, robust statistics.

The scripts import this module as ``_bench`` (``python benchmarks/<script>.py`` puts ``benchmarks/`` on ``sys.path``).
"""

from __future__ import annotations

import datetime
import os
import platform
import resource
import statistics
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["load_average", "machine_info", "markdown_table", "median", "peak_rss_mb", "spread"]


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table; floats are printed as given (format them before), everything else with ``str``."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for row in rows:
        if len(row) != len(headers):
            raise ValueError(f"A table row has {len(row)} cells but the header has {len(headers)}: {list(row)}")
        lines.append("| " + " | ".join(str(cell) for cell in row) + " |")
    return "\n".join(lines)


def median(values: Sequence[float]) -> float:
    """Median of a non-empty sequence (``nan`` when empty, so a table can still be printed)."""
    return float(statistics.median(values)) if values else float("nan")


def spread(values: Sequence[float], fmt: str = "{:.3f}") -> str:
    """``median [min-max]`` of ``values`` formatted with ``fmt``."""
    if not values:
        return "n/a"
    return f"{fmt.format(median(values))} [{fmt.format(min(values))}-{fmt.format(max(values))}]"


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def load_average() -> str:
    """The 1/5/15-minute load averages, or ``n/a`` where the OS has none."""
    try:
        return "/".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: str = "cpu") -> str:
    """One line: date, CPU, core count, load average, python/torch/lightning versions and the accelerator."""
    import torch

    parts = [
        datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        f"{_cpu_model()} x{os.cpu_count()}",
        f"load {load_average()}",
        f"python {platform.python_version()}",
        f"torch {torch.__version__}",
    ]
    try:
        import lightning

        parts.append(f"lightning {lightning.__version__}")
    except ImportError:  # pragma: no cover - lightning is a dependency
        pass
    if device.startswith("cuda") and torch.cuda.is_available():
        parts.append(torch.cuda.get_device_name(0))
    return ", ".join(parts)
