"""Time of ``detlight convert`` per config, fresh process and in-process, against ``python -c "import lightning"``.

What ``detlight convert`` costs a user: each sampled config is converted by a fresh ``detlight convert CFG -o X``
process (interpreter start-up included); the baselines are ``python -c pass`` and ``python -c "import lightning"``
(what every conversion cost while the converter imported Lightning), interleaved with the conversions. Every leaf
config of the folders is also converted in this process (``load_config`` + ``convert_config``) for the time of the
conversion itself. Target: <= 0.5 s median per config for the fresh process.

Usage::

    python benchmarks/convert_speed.py --zoo /path/to/mmdet/.mim/configs --zoo /path/to/mmdet3d/.mim/configs --sample 20

Without ``--zoo``, ``$DETLIGHT_MMDET_ZOO`` (``:``-separated) or the test fixtures under ``tests/convert/configs`` are used.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _bench import machine_info, markdown_table, median  # noqa: E402
from startup import time_command  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 0.5


def leaf_configs(folders: Sequence[Path]) -> list[Path]:
    """Every ``.py`` config under the folders, except those in ``_base_`` folders."""
    found = []
    for folder in folders:
        found += [p for p in sorted(folder.rglob("*.py")) if "_base_" not in p.relative_to(folder).parts]
    return found


def detlight_argv() -> list[str]:
    """The ``detlight`` console script next to this interpreter (or ``python -m detlight.cli``)."""
    script = Path(sys.executable).parent / "detlight"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "detlight.cli"]


def in_process(configs: Sequence[Path]) -> tuple[list[float], int, int]:
    """Seconds per config of ``load_config`` + ``convert_config``; also the converted and refused counts."""
    from detlight.convert import convert_config
    from detlight.convert.config import load_config
    from detlight.exceptions import ConfigError

    times, converted, refused = [], 0, 0
    for path in configs:
        start = time.perf_counter()
        try:
            convert_config(load_config(path), str(path))
            converted += 1
        except ConfigError:
            refused += 1
        times.append(time.perf_counter() - start)
    return times, converted, refused


def fresh_processes(sample: Sequence[Path], out_dir: Path) -> dict[str, list[float]]:
    """Wall seconds of ``detlight convert`` per sampled config, with the two baselines run in the same rounds."""
    base = {"python -c pass": [sys.executable, "-c", "pass"],
            'python -c "import lightning"': [sys.executable, "-c", "import lightning"]}
    times: dict[str, list[float]] = {"detlight convert CFG -o X": [], **{k: [] for k in base}}
    time_command([*detlight_argv(), "--version"])  # warm the page cache
    for i, path in enumerate(sample):
        times["detlight convert CFG -o X"].append(
            time_command([*detlight_argv(), "convert", str(path), "-o", str(out_dir / f"{i}.yaml")])[0])
        for label, argv in base.items():
            times[label].append(time_command(argv)[0])
    return times


def main(argv: Sequence[str] | None = None) -> str:
    """Run the measurement; print and return the markdown report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", action="append", type=Path, help="config folder (repeatable)")
    parser.add_argument("--sample", type=int, default=20, help="configs converted in fresh processes (0: none)")
    args = parser.parse_args(argv)
    env = os.environ.get("DETLIGHT_MMDET_ZOO")
    folders = args.zoo or ([Path(p) for p in env.split(":")] if env else [ROOT / "tests" / "convert" / "configs"])
    configs = leaf_configs(folders)
    if not configs:
        raise SystemExit(f"no .py configs under {[str(f) for f in folders]}")
    step = max(1, len(configs) // max(1, args.sample))
    sample = configs[::step][: args.sample]
    inproc, converted, refused = in_process(configs)
    rows = [["in-process load + convert", len(configs), f"{median(inproc):.4f}", f"{max(inproc):.4f}", "n/a"]]
    verdict = "fresh processes not measured (--sample 0)"
    if sample:
        with tempfile.TemporaryDirectory() as tmp:
            fresh = fresh_processes(sample, Path(tmp))
        lightning = fresh['python -c "import lightning"']
        for label, values in fresh.items():
            ratio = median(values) / median(lightning)
            rows.append([f"`{label}`", len(values), f"{median(values):.3f}", f"{max(values):.3f}", f"{ratio:.2f}"])
        convert = median(fresh["detlight convert CFG -o X"])
        verdict = (f"`detlight convert` median {convert:.3f} s per config (target <= {TARGET_S} s): "
                   + ("met" if convert <= TARGET_S else "MISSED"))
    report = (f"convert speed: {len(configs)} configs ({converted} converted, {refused} refused) from "
              f"{', '.join(str(f) for f in folders)}; {len(sample)} sampled for fresh processes\n"
              f"machine: {machine_info()}\n\n"
              + markdown_table(["what", "n", "median s", "max s", "ratio to import lightning"], rows)
              + f"\n\n{verdict}")
    print(report, flush=True)
    return report


if __name__ == "__main__":
    main()
