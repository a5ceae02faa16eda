"""Start-up time of ``detlight --help`` and ``import detlight`` against ``python -c "import lightning"``.

Each command runs in a fresh interpreter; the commands are interleaved (one of each per round, order rotated) after
one discarded warm-up round that fills the page cache, and the paired difference to ``import lightning`` within a
round is the robust figure (docs/lightning-notes.md B1/B2). Target: at most +0.5 s over ``import lightning``.

Usage::

    python benchmarks/startup.py --repeats 5
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _bench import machine_info, markdown_table, median, spread  # noqa: E402

BASELINE = "import lightning"
TARGET_EXTRA_S = 0.5


def commands() -> dict[str, list[str]]:
    """Label -> argv of each measured command (the ``detlight`` console script next to this interpreter if any)."""
    script = os.path.join(os.path.dirname(sys.executable), "detlight")
    if not os.path.isfile(script):
        script = shutil.which("detlight") or ""
    cli = [script, "--help"] if script else [sys.executable, "-m", "detlight.cli", "--help"]
    return {
        "python -c pass": [sys.executable, "-c", "pass"],
        "import torch": [sys.executable, "-c", "import torch"],
        BASELINE: [sys.executable, "-c", "import lightning"],
        "import detlight": [sys.executable, "-c", "import detlight"],
        "import detlight.module": [sys.executable, "-c", "import detlight.module"],
        "detlight --help": cli,
        "detlight fit --help": [*cli[:-1], "fit", "--help"],
    }


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_command(argv: Sequence[str]) -> tuple[float, float]:
    """Wall time and CPU time (user + system of the child) of one run, in seconds; output discarded.

    CPU time is what load from other processes on a shared host disturbs least.
    """
    cpu, start = _children_cpu(), time.perf_counter()
    proc = subprocess.run(list(argv), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    elapsed, cpu = time.perf_counter() - start, _children_cpu() - cpu
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed (exit {proc.returncode}): {proc.stderr.decode()[-2000:]}")
    return elapsed, cpu


def measure(labels: Sequence[str], repeats: int, warmup: bool = True) -> dict[str, list[tuple[float, float]]]:
    """Interleaved rounds; returns label -> ``(wall, cpu)`` seconds per measured round."""
    argvs = commands()
    unknown = set(labels) - set(argvs)
    if unknown:
        raise ValueError(f"Unknown command label(s) {sorted(unknown)}; known: {list(argvs)}")
    times: dict[str, list[tuple[float, float]]] = {label: [] for label in labels}
    for r in range(repeats + int(warmup)):
        shift = r % len(labels)
        for label in [*labels[shift:], *labels[:shift]]:
            elapsed = time_command(argvs[label])
            if not (warmup and r == 0):
                times[label].append(elapsed)
    return times


def summarise(times: dict[str, list[tuple[float, float]]]) -> str:
    """Markdown table (wall and CPU seconds, paired CPU difference to ``import lightning``) and the verdicts."""
    base = times.get(BASELINE)
    rows = []
    for label, values in times.items():
        wall, cpu = [v[0] for v in values], [v[1] for v in values]
        diffs = [v[1] - b[1] for v, b in zip(values, base)] if base else []
        rows.append([f"`{label}`", spread(wall, "{:.2f}"), spread(cpu, "{:.2f}"),
                     spread(diffs, "{:+.2f}") if base else "n/a"])
    lines = [markdown_table(["command", "wall s, median [min-max]", "CPU s", f"paired CPU s vs `{BASELINE}`"], rows),
             ""]
    if base:
        for label in ("import detlight", "detlight --help"):
            if label in times:
                extra = median([v[1] - b[1] for v, b in zip(times[label], base)])
                verdict = "met" if extra <= TARGET_EXTRA_S else "MISSED"
                lines.append(f"`{label}`: {extra:+.2f} s CPU over `{BASELINE}` (target <= +{TARGET_EXTRA_S} s): "
                             f"{verdict}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> str:
    """Run the measurement and print (and return) the markdown report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--commands", default=",".join(commands()), help="comma-separated labels to time")
    parser.add_argument("--no-warmup", action="store_true")
    args = parser.parse_args(argv)
    times = measure(args.commands.split(","), args.repeats, not args.no_warmup)
    report = (f"start-up: {args.repeats} interleaved rounds of fresh interpreters\nmachine: {machine_info()}\n\n"
              + summarise(times))
    print(report, flush=True)
    return report


if __name__ == "__main__":
    main()
