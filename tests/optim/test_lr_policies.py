"""LR policies against mmcv 1.7's observed values (docs/mmcv-semantics.md §2.1) and independent references."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch

from detlight.optim.lr import LR_POLICIES, Progress, build_lr_policy, policy_class_name


def run_values(cfg: dict[str, Any], base: float, iters: list[int], per_epoch: int, max_epochs: int) -> list[float]:
    policy = build_lr_policy(**cfg)
    max_iters = per_epoch * max_epochs
    bound = policy.bind(1, "SGD")
    base = bound[0] if bound is not None else base
    policy.check_run(max_epochs, max_iters)
    return [policy.value_at(base, Progress(i // per_epoch, i, max_epochs, max_iters, per_epoch)) for i in iters]


MMDET_1X = {"policy": "step", "step": [8, 11], "warmup": "linear", "warmup_iters": 500, "warmup_ratio": 0.001}
COSINE_3D = {"policy": "CosineAnnealing", "warmup": "linear", "warmup_iters": 1000, "warmup_ratio": 0.1,
             "min_lr_ratio": 1e-5}
CYCLIC_PP = {"policy": "cyclic", "target_ratio": (10, 1e-4), "cyclic_times": 1, "step_ratio_up": 0.4}

GOLDEN = [
    # (config, base lr, max_epochs, {iter: golden})
    (MMDET_1X, 0.02, 12, {0: "=2e-05", 1: "=5.996e-05", 250: "=0.01001", 499: "0.01996", 500: "=0.02", 799: "=0.02",
                          800: "=0.002", 1100: "=2e-4"}),
    ({**MMDET_1X, "warmup": "constant", "warmup_iters": 50, "warmup_ratio": 1 / 3}, 0.02, 12,
     {**{i: "0.0066667" for i in range(50)}, 50: "=0.02"}),
    ({**MMDET_1X, "warmup": "exp", "warmup_iters": 50}, 0.02, 12,
     {0: "=2e-05", 25: "6.32456e-04", 49: "0.0174193", 50: "=0.02"}),
    (COSINE_3D, 0.003, 40, {0: "=3e-4", 500: "1.5872e-3", 999: "2.63824e-3", 1000: "2.56066e-3", 2000: "1.50002e-3",
                            3999: "4.65395e-6"}),
    ({"policy": "CosineAnnealing", "by_epoch": False, "min_lr": 0.0}, 0.003, 40, {2000: "=0.0015", 3999: "4.63e-10"}),
    (CYCLIC_PP, 0.001, 80, {0: "=0.001", 1600: "=0.0055", 3199: ".01", 5600: "=0.00500005", 7999: "1.01e-7"}),
    ({"policy": "poly", "by_epoch": False, "power": 0.9, "min_lr": 1e-4}, 0.01, 10,
     {500: "5.40528e-3", 999: "1.19753e-4"}),
    ({"policy": "poly", "power": 1.0, "min_lr": 0.0}, 0.01, 10, {99: "=0.01", 100: "=0.009", 999: "=0.001"}),
]


@pytest.mark.parametrize(("cfg", "base", "max_epochs", "golden"), GOLDEN, ids=lambda x: str(x)[:40])
def test_golden_values_of_mmcv(
    cfg: dict[str, Any], base: float, max_epochs: int, golden: dict[int, str], check_golden: Callable[[float, str], None]
) -> None:
    iters = sorted(golden)
    for i, value in zip(iters, run_values(cfg, base, iters, 100, max_epochs)):
        check_golden(value, golden[i])


def test_cosine_epoch_value_is_used_after_warmup() -> None:
    # at it1000 mmcv writes the epoch-10 regular value (warm-up over, by_epoch)
    (value,) = run_values(COSINE_3D, 0.003, [1000], 100, 40)
    expected = 0.003 * 1e-5 + 0.5 * (0.003 - 0.003 * 1e-5) * (math.cos(math.pi * 10 / 40) + 1)
    assert value == pytest.approx(expected, rel=1e-12)


def _torch_schedule(make: Any, steps: int, lr: float = 1.0) -> list[float]:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr, momentum=0.9)
    sched = make(opt)
    values = []
    for _ in range(steps):
        values.append(opt.param_groups[0]["lr"])
        sched.step()
    return values


@pytest.mark.parametrize("three_phase", [False, True])
@pytest.mark.parametrize("strategy", ["cos", "linear"])
def test_one_cycle_matches_torch_one_cycle(three_phase: bool, strategy: str) -> None:
    steps = 50
    expected = _torch_schedule(
        lambda o: torch.optim.lr_scheduler.OneCycleLR(
            o, max_lr=0.1, total_steps=steps, pct_start=0.3, anneal_strategy=strategy, div_factor=25,
            final_div_factor=1e4, three_phase=three_phase, cycle_momentum=False),
        steps,
    )
    cfg = {"policy": "OneCycle", "max_lr": 0.1, "anneal_strategy": strategy, "three_phase": three_phase}
    got = run_values(cfg, 123.0, list(range(steps)), 10, 5)  # the optimizer's lr is ignored: base = max_lr / 25
    assert got == pytest.approx(expected, rel=1e-9)


def test_one_cycle_total_steps_longer_than_run() -> None:
    got = run_values({"policy": "OneCycle", "max_lr": 0.1, "total_steps": 100}, 1.0, [0, 29, 99], 10, 5)
    assert got[0] == pytest.approx(0.004) and got[1] == pytest.approx(0.1)  # peak at pct_start * 100 - 1
    assert got[2] < 0.1


def test_exp_inv_linear_flat_cosine_and_restart() -> None:
    def at(cfg: dict[str, Any], i: int, per_epoch: int = 1, epochs: int = 10) -> float:
        return run_values(cfg, 0.1, [i], per_epoch, epochs)[0]

    assert at({"policy": "exp", "gamma": 0.9}, 3) == pytest.approx(0.1 * 0.9**3)
    assert at({"policy": "inv", "gamma": 0.5, "power": 2.0}, 4) == pytest.approx(0.1 / 9)
    assert at({"policy": "LinearAnnealing", "min_lr": 0.0}, 5) == pytest.approx(0.05)
    assert at({"policy": "LinearAnnealing", "min_lr_ratio": 0.5}, 5) == pytest.approx(0.075)
    flat = {"policy": "FlatCosineAnnealing", "start_percent": 0.5, "min_lr": 0.0}
    assert at(flat, 4) == 0.1  # still flat before round(10 * 0.5) = 5
    assert at(flat, 5) == pytest.approx(0.1)
    assert at(flat, 7) == pytest.approx(0.05 * (math.cos(math.pi * 2 / 5) + 1))
    restart = {"policy": "CosineRestart", "periods": [4, 6], "restart_weights": [1.0, 0.5], "min_lr": 0.0}
    assert at(restart, 2) == pytest.approx(0.05)  # half way through the first period
    assert at(restart, 4) == pytest.approx(0.05)  # restart at weight 0.5
    assert at(restart, 7) == pytest.approx(0.025)


def test_step_int_and_min_lr() -> None:
    values = run_values({"policy": "step", "step": 3, "gamma": 0.5, "min_lr": 0.03}, 0.1, [0, 2, 3, 6, 9], 1, 10)
    assert values == pytest.approx([0.1, 0.1, 0.05, 0.03, 0.03])


def test_cyclic_gamma_shrinks_later_cycles() -> None:
    cfg = {"policy": "cyclic", "target_ratio": (10, 1.0), "cyclic_times": 2, "step_ratio_up": 0.5, "gamma": 0.5,
           "anneal_strategy": "linear"}
    # 20 iterations, cycles of 10 with 5 up: peak 10x in cycle 0, 1 + (10 - 1) * 0.5 = 5.5x in cycle 1
    values = run_values(cfg, 1.0, [0, 5, 10, 15, 19], 10, 2)
    assert values == pytest.approx([1.0, 10.0, 1.0, 5.5, 5.5 + (1 - 5.5) * 4 / 5])


def test_warmup_by_epoch_uses_epoch_length() -> None:
    cfg = {**MMDET_1X, "warmup_iters": 2, "warmup_by_epoch": True}
    values = run_values(cfg, 0.02, [0, 100, 199, 200], 100, 12)
    assert values[0] == pytest.approx(2e-5)
    assert values[1] == pytest.approx(0.02 * (1 - 0.5 * 0.999))
    assert values[3] == 0.02 and values[2] < 0.02


@pytest.mark.parametrize(("name", "expected"), [("step", "Step"), ("cyclic", "Cyclic"),
                                                ("CosineAnnealing", "CosineAnnealing"), ("OneCycle", "OneCycle")])
def test_policy_casing_rule(name: str, expected: str) -> None:
    assert policy_class_name(name) == expected
    assert expected in LR_POLICIES


@pytest.mark.parametrize(
    ("cfg", "match"),
    [
        ({"policy": "CosineAnnealing", "min_lr": 0.0, "min_lr_ratio": 0.1}, r"lr_config\.min_lr.*both"),
        ({"policy": "CosineAnnealing"}, r"lr_config\.min_lr_ratio.*neither"),
        ({"policy": "Cosine"}, r"lr_config\.policy.*unknown policy 'Cosine'"),
        ({"policy": "onecycle", "max_lr": 0.1}, r"write 'OneCycle'"),
        ({"policy": "cyclic", "by_epoch": True}, r"lr_config\.by_epoch"),
        ({"policy": "OneCycle", "max_lr": 0.1, "by_epoch": True}, r"lr_config\.by_epoch"),
        ({"policy": "step", "step": 2, "warmup": "linear", "warmup_iters": -5}, r"lr_config\.warmup_iters"),
        ({"policy": "step", "step": 2, "warmup": "linear", "warmup_iters": 5, "warmup_ratio": -0.1},
         r"lr_config\.warmup_ratio"),
        ({"policy": "step", "step": 2, "warmup": "cosine", "warmup_iters": 5}, r"lr_config\.warmup\b"),
        ({"policy": "step", "step": [2, 0]}, r"lr_config\.step"),
        ({"policy": "step"}, r"lr_config\.step.*required"),
        ({"policy": "step", "step": 2, "power": 1.0}, r"lr_config\.power.*not an argument of policy 'Step'"),
        ({"policy": "OneCycle", "max_lr": 0.1, "pct_start": 1}, r"lr_config\.pct_start"),
        ({"policy": "cyclic", "target_ratio": "big"}, r"lr_config\.target_ratio"),
        ({"by_epoch": True}, r"lr_config\.policy.*required"),
    ],
)
def test_config_errors_name_the_key(cfg: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_lr_policy(**cfg)


def test_run_length_errors() -> None:
    with pytest.raises(ValueError, match=r"lr_config\.total_steps"):
        build_lr_policy(policy="OneCycle", max_lr=0.1, total_steps=10).check_run(1, 20)
    with pytest.raises(ValueError, match=r"lr_config\.periods"):
        build_lr_policy(policy="CosineRestart", periods=[5], min_lr=0.0).check_run(10, 100)
