"""Count device -> host synchronisations per training step of the step-overhead variants.

On CUDA, ``torch.cuda.set_sync_debug_mode("warn")`` makes every synchronising CUDA call warn; each warning is one
sync. On CPU nothing synchronises, so the Tensor methods that would sync on a device are instrumented instead:
``.item()``, ``.tolist()``, ``.cpu()``, ``.numpy()``, ``float()``, ``int()`` and ``bool()`` of a tensor. Two kinds
of CPU call are reported apart, as they stay on the host under CUDA too: the optimizer's step counters
(``torch/optim``; non-capturable optimizers keep ``step`` as a CPU tensor) and label range checks that the model
only runs for CPU tensors (:data:`HOST_ONLY_SITES`).

Each event is attributed to the iteration in which it happened (between two consecutive iteration ends, as in
``step_overhead.py``; events before the first end belong to iteration 0, events after the last to ``teardown``).
Target: 0 syncs on iterations that do not log.

Usage::

    python benchmarks/host_syncs.py --steps 25 --log-interval 10
    python benchmarks/host_syncs.py --device cuda --precision bf16-mixed
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import os
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _bench import machine_info, markdown_table  # noqa: E402
from step_overhead import RUNNERS, BenchConfig, build_model, make_batches, run_plain  # noqa: E402

#: Call sites that stay on the host on every device: (path fragment, function name or None for any).
HOST_ONLY_SITES: tuple[tuple[str, str | None], ...] = (
    (os.path.join("torch", "optim", ""), None),
    (os.path.join("detlight", "models", "centernet.py"), "_check_labels"),
)
INSTRUMENTED = ("item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__")
_SKIP_FILES = (os.path.abspath(__file__), os.path.join("torch", "_tensor.py"), os.path.join("torch", "overrides.py"))


@dataclass
class Event:
    """One (potential) synchronisation: when, what and where (first frame outside torch's tensor plumbing)."""

    t: float
    what: str
    site: str
    host_only: bool


def _site(frame: Any) -> tuple[str, bool]:
    """``file:line function`` of the first frame that is not this module or torch's tensor wrappers."""
    while frame is not None and frame.f_code.co_filename.endswith(_SKIP_FILES):
        frame = frame.f_back
    if frame is None:
        return "?", False
    path, func = frame.f_code.co_filename, frame.f_code.co_name
    host_only = any(fragment in path and (name is None or name == func) for fragment, name in HOST_ONLY_SITES)
    short = os.path.join(*Path(path).parts[-2:])
    return f"{short}:{frame.f_lineno} {func}", host_only


@contextlib.contextmanager
def record_cpu(events: list[Event]) -> Iterator[None]:
    """Record every call of the instrumented Tensor methods into ``events``."""
    originals: dict[str, Callable[..., Any]] = {name: getattr(torch.Tensor, name) for name in INSTRUMENTED}

    def wrap(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def counted(self: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            site, host_only = _site(sys._getframe(1))
            events.append(Event(time.perf_counter(), name.strip("_"), site, host_only))
            return original(self, *args, **kwargs)

        return counted

    try:
        for name, original in originals.items():
            setattr(torch.Tensor, name, wrap(name, original))
        yield
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


@contextlib.contextmanager
def record_cuda(events: list[Event]) -> Iterator[None]:
    """Record every synchronising CUDA call (``set_sync_debug_mode("warn")``) into ``events``."""
    previous = torch.cuda.get_sync_debug_mode()

    def show(message: Any, category: type[Warning], filename: str, lineno: int, file: Any = None,
             line: Any = None) -> None:
        if "synchroniz" in str(message):
            short = os.path.join(*Path(filename).parts[-2:])
            events.append(Event(time.perf_counter(), "cuda sync", f"{short}:{lineno}", False))

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield
        finally:
            torch.cuda.set_sync_debug_mode(previous)


def attribute(events: Sequence[Event], ends: Sequence[float]) -> dict[int | str, list[Event]]:
    """Group events by iteration index (``teardown`` after the last iteration end)."""
    groups: dict[int | str, list[Event]] = {}
    for event in events:
        index = bisect.bisect_left(ends, event.t)
        groups.setdefault(index if index < len(ends) else "teardown", []).append(event)
    return groups


def step_kind(index: int | str, interval: int) -> str:
    """``first`` (includes set-up), ``log`` (an interval boundary), ``no-log`` or ``teardown``."""
    if index == "teardown":
        return "teardown"
    if index == 0:
        return "first (incl. set-up)"
    return "log" if (int(index) + 1) % interval == 0 else "no-log"


def count_variant(variant: str, cfg: BenchConfig, work_dir: Path) -> tuple[dict[int | str, list[Event]], int]:
    """Train ``variant`` under instrumentation; returns the events per iteration and the number of iterations."""
    if variant not in RUNNERS:
        raise ValueError(f"Unknown variant {variant!r}; choose from {list(RUNNERS)}")
    torch.set_num_threads(cfg.threads)
    batches, model, device = make_batches(cfg), build_model(cfg.model), torch.device(cfg.device)
    events: list[Event] = []
    recorder = record_cuda if device.type == "cuda" else record_cpu
    work_dir.mkdir(parents=True, exist_ok=True)
    with recorder(events):
        if variant == "plain":
            ends, _, _ = run_plain(cfg, batches, model, work_dir, device)
        else:
            ends, _, _ = RUNNERS[variant](cfg, batches, model, work_dir)
    return attribute(events, [wall for wall, _ in ends]), len(ends)


def summarise(variant: str, groups: dict[int | str, list[Event]], steps: int, interval: int) -> list[list[Any]]:
    """Table rows per step kind: iterations, syncs per iteration (device / host-only) and the sites."""
    kinds: dict[str, list[int | str]] = {}
    for index in [*range(steps), "teardown"]:
        kinds.setdefault(step_kind(index, interval), []).append(index)
    rows = []
    for kind, indices in kinds.items():
        device_counts = [sum(not e.host_only for e in groups.get(i, [])) for i in indices]
        host_counts = [sum(e.host_only for e in groups.get(i, [])) for i in indices]
        sites = Counter(f"{e.site} ({e.what})" for i in indices for e in groups.get(i, []) if not e.host_only)
        per_step = len(indices)
        site_text = "; ".join(f"{site} x{n / per_step:g}" for site, n in sites.most_common(6)) or "-"
        rows.append([variant, kind, per_step, f"{min(device_counts)}-{max(device_counts)}",
                     f"{max(host_counts)}", site_text])
    return rows


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--log-interval", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=["32-true", "bf16-mixed"], default="32-true")
    parser.add_argument("--variants", default="detlight,plain,lightning", help="comma-separated subset")
    args = parser.parse_args(argv)
    if args.steps < 2 * args.log_interval:
        parser.error(f"--steps ({args.steps}) should cover at least two log intervals ({2 * args.log_interval})")
    return args


def main(argv: Sequence[str] | None = None) -> str:
    """Run the count and print (and return) the markdown report."""
    args = parse_args(argv)
    cfg = BenchConfig(steps=args.steps, batch_size=args.batch_size, num_batches=4, log_interval=args.log_interval,
                      drop=0, device=args.device, precision=args.precision, threads=1,
                      warmup_iters=min(BenchConfig.warmup_iters, args.steps // 3), refresh_rate=args.log_interval)
    rows: list[list[Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for variant in args.variants.split(","):
            # The progress bar and log lines of the runs would end up in the table's output.
            with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                groups, steps = count_variant(variant, cfg, Path(tmp) / variant)
            rows += summarise(variant, groups, steps, cfg.log_interval)
    mode = "torch.cuda.set_sync_debug_mode('warn')" if args.device.startswith("cuda") else (
        "instrumented " + ", ".join(INSTRUMENTED))
    report = (f"host syncs per training iteration: {args.steps} iterations, log every {args.log_interval}, "
              f"{args.device} {args.precision}, counted with {mode}\nmachine: {machine_info(args.device)}\n\n"
              + markdown_table(["variant", "iteration kind", "iterations", "device syncs / iteration (min-max)",
                                "host-only / iteration (max)", "device-sync sites (calls per iteration)"], rows))
    print(report, flush=True)
    return report


if __name__ == "__main__":
    main()
