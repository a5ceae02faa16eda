"""Tiny runs of the scripts in ``benchmarks/`` so they keep working; no timing is asserted."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

BENCH_DIR = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch):
    """Import a benchmark script as a module (they import each other as top-level ``_bench`` / ``step_overhead``)."""
    monkeypatch.syspath_prepend(str(BENCH_DIR))

    def load(name: str) -> ModuleType:
        return importlib.import_module(name)

    yield load
    for name in ("_bench", "step_overhead", "host_syncs", "startup", "eval_map", "data_throughput", "convert_speed"):
        sys.modules.pop(name, None)


def test_markdown_table_rejects_ragged_rows(bench) -> None:
    _bench = bench("_bench")
    assert _bench.markdown_table(["a", "b"], [[1, 2]]).splitlines() == ["| a | b |", "|---|---|", "| 1 | 2 |"]
    with pytest.raises(ValueError, match="3 cells but the header has 2"):
        _bench.markdown_table(["a", "b"], [[1, 2, 3]])


def test_step_overhead_variants_do_the_same_work(bench, tmp_path: Path) -> None:
    step_overhead = bench("step_overhead")
    cfg = step_overhead.BenchConfig(steps=6, batch_size=1, num_batches=2, log_interval=3, drop=2, warmup_iters=2,
                                    refresh_rate=3, num_train=4)
    rounds = step_overhead.run_rounds(cfg, step_overhead.VARIANTS, repeats=1, warmup=False, isolate=False,
                                      root=tmp_path)
    results = rounds[0]
    assert set(results) == set(step_overhead.VARIANTS)
    for result in results.values():
        assert result["iterations"] == cfg.steps
        assert len(result["steps_ms"]) == cfg.steps - cfg.drop
    # Same initial weights, batches, optimizer, clip and lr schedule: the runs must end in the same state.
    losses = [r["final_loss"] for r in results.values()]
    assert max(losses) - min(losses) <= 1e-5 * abs(losses[0])
    assert [r["final_lr"] for r in results.values()] == pytest.approx([results["plain"]["final_lr"]] * len(results), rel=1e-9)
    report = step_overhead.summarise(rounds, step_overhead.VARIANTS)
    assert "detlight / plain" in report and "detlight - lightning" in report
    assert list((tmp_path / "round0" / "plain").glob("plain.log.json"))  # the hand-written loop logged


def test_step_overhead_lr_matches_detlight_schedule(bench) -> None:
    step_overhead = bench("step_overhead")
    from detlight.optim.lr import Progress, build_lr_policy

    cfg = step_overhead.BenchConfig(steps=40, warmup_iters=10)
    policy = build_lr_policy(policy="CosineAnnealing", by_epoch=False, warmup="linear", warmup_iters=10,
                             warmup_ratio=cfg.warmup_ratio, min_lr_ratio=cfg.min_lr_ratio)
    for it in (0, 5, 10, 39):
        expected = policy.value_at(cfg.lr, Progress(0, it, 1, cfg.steps, cfg.steps))
        assert step_overhead.lr_at(cfg.lr, it, cfg) == pytest.approx(expected, rel=1e-12)


def test_host_sync_counter_records_and_restores(bench) -> None:
    host_syncs = bench("host_syncs")
    original = torch.Tensor.item
    events: list = []
    with host_syncs.record_cpu(events):
        torch.ones(()).item()
        float(torch.ones(()))
    assert [e.what for e in events] == ["item", "float"]
    assert all("test_benchmarks_smoke.py" in e.site and not e.host_only for e in events)
    assert torch.Tensor.item is original


def test_host_syncs_detlight_has_none_between_log_steps(bench, tmp_path: Path) -> None:
    host_syncs = bench("host_syncs")
    cfg = host_syncs.BenchConfig(steps=7, batch_size=1, num_batches=2, log_interval=3, drop=0, warmup_iters=2,
                                 refresh_rate=3, num_train=4)
    groups, steps = host_syncs.count_variant("detlight", cfg, tmp_path)
    assert steps == cfg.steps
    device_syncs = {i: [e for e in groups.get(i, []) if not e.host_only] for i in range(steps)}
    log_steps = [i for i in range(1, steps) if host_syncs.step_kind(i, cfg.log_interval) == "log"]
    assert log_steps == [2, 5]
    assert all(device_syncs[i] for i in log_steps)  # the logging step copies the averages to the host once
    assert all(not device_syncs[i] for i in range(1, steps) if i not in log_steps), device_syncs


def test_startup_measures_fresh_interpreters(bench) -> None:
    startup = bench("startup")
    times = startup.measure(["python -c pass", "import detlight"], repeats=1, warmup=False)
    assert all(len(v) == 1 and v[0][0] > 0 and v[0][1] > 0 for v in times.values())
    verdicts = startup.summarise({"import lightning": [(5.0, 3.0)], "import detlight": [(5.0, 3.2)],
                                  "detlight --help": [(4.0, 4.0)]})
    assert "`import detlight`: +0.20 s CPU" in verdicts and "met" in verdicts
    assert "`detlight --help`: +1.00 s CPU" in verdicts and "MISSED" in verdicts
    with pytest.raises(ValueError, match="Unknown command label"):
        startup.measure(["import nothing"], repeats=1)


def test_eval_map_backends_agree(bench) -> None:
    eval_map = bench("eval_map")
    rows = eval_map.run([40], repeats=1)
    assert [r[1] for r in rows] == list(eval_map.BACKENDS)
    assert rows[0][4] == rows[1][4] and 0.0 < float(rows[0][4]) < 1.0
    assert float(rows[1][6]) < 1e-6


def test_data_throughput_rates(bench) -> None:
    data_throughput = bench("data_throughput")
    result = data_throughput.loader_rate(workers=0, batch_size=2, epochs=1, num_train=6)
    assert result["first_batch_s"] > 0 and result["images_per_s"] > 0
    assert data_throughput.training_rate(batch_size=2, steps=1, threads=1, num_train=6) > 0


def test_convert_speed_runs_on_the_fixture_configs(bench) -> None:
    convert_speed = bench("convert_speed")
    report = convert_speed.main(["--zoo", str(Path(__file__).resolve().parent / "convert" / "configs" / "zoo_like"),
                                 "--sample", "0"])
    assert "6 configs (6 converted, 0 refused)" in report and "| in-process load + convert | 6 |" in report
    assert convert_speed.detlight_argv()[-1].endswith(("detlight", "detlight.cli"))


def test_ops_2d_benchmark_quick(bench) -> None:
    ops_2d = bench("ops_2d")
    text = ops_2d.main(["--quick", "--softnms", "200"])
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) == len(ops_2d.build_cases("cpu", quick=True)) + 1
    nms_row = next(r for r in rows if r.startswith("| nms (offset 0)"))
    assert float(nms_row.split("|")[-2]) > 0  # a ratio was measured
    assert rows[-1].startswith("| softnms (gaussian) | 10 boxes")
