"""Momentum policies against mmcv's observed values (docs/mmcv-semantics.md §2.2) and torch's OneCycleLR momentum."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch

from detlight.optim.lr import Progress
from detlight.optim.momentum import MOMENTUM_POLICIES, build_momentum_policy


def values(cfg: dict[str, Any], base: float, iters: list[int], per_epoch: int, max_epochs: int) -> list[float]:
    policy = build_momentum_policy(**cfg)
    max_iters = per_epoch * max_epochs
    bound = policy.bind(1, "SGD")
    base = bound[0] if bound is not None else base
    policy.check_run(max_epochs, max_iters)
    return [policy.value_at(base, Progress(i // per_epoch, i, max_epochs, max_iters, per_epoch)) for i in iters]


def test_pointpillars_cyclic_beta1_golden(check_golden: Callable[[float, str], None]) -> None:
    cfg = {"policy": "cyclic", "target_ratio": (0.85 / 0.95, 1), "cyclic_times": 1, "step_ratio_up": 0.4}
    golden = {0: "=0.95", 1600: "=0.90", 3199: ".85", 5600: "=0.90", 7999: ".95"}
    iters = sorted(golden)
    for i, value in zip(iters, values(cfg, 0.95, iters, 100, 80)):
        check_golden(value, golden[i])


@pytest.mark.parametrize("three_phase", [False, True])
def test_one_cycle_momentum_matches_torch(three_phase: bool) -> None:
    steps = 40
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=steps, three_phase=three_phase)
    expected = []
    for _ in range(steps):
        expected.append(opt.param_groups[0]["momentum"])
        sched.step()
    cfg = {"policy": "OneCycle", "three_phase": three_phase}
    assert values(cfg, 0.9, list(range(steps)), 10, 4) == pytest.approx(expected, rel=1e-9)


def test_step_cosine_linear() -> None:
    assert values({"policy": "step", "step": [2, 4], "min_momentum": 0.3}, 0.9, [0, 2, 4], 1, 6) == pytest.approx(
        [0.9, 0.45, 0.3]
    )
    cos = values({"policy": "CosineAnnealing", "min_momentum_ratio": 0.5}, 0.9, [0, 2], 1, 4)
    assert cos == pytest.approx([0.9, 0.45 + 0.5 * 0.45 * (math.cos(math.pi / 2) + 1)])
    assert values({"policy": "LinearAnnealing", "min_momentum": 0.5}, 0.9, [1], 1, 4) == pytest.approx([0.8])


@pytest.mark.parametrize(
    ("warmup", "factor"),
    [("constant", lambda i: 0.8), ("linear", lambda i: 1 - (1 - i / 10) * 0.2), ("exp", lambda i: 0.8 ** (1 - i / 10))],
)
def test_warmup_divides_the_regular_momentum(warmup: str, factor: Any) -> None:
    cfg = {"policy": "LinearAnnealing", "min_momentum_ratio": 0.5, "by_epoch": False, "warmup": warmup,
           "warmup_iters": 10, "warmup_ratio": 0.8}
    got = values(cfg, 0.9, [0, 5, 10], 10, 10)
    regular = [0.9 + (0.45 - 0.9) * i / 100 for i in (0, 5, 10)]
    assert got[:2] == pytest.approx([regular[0] / factor(0), regular[1] / factor(5)])
    assert got[2] == pytest.approx(regular[2])


def test_registry_and_errors() -> None:
    assert sorted(MOMENTUM_POLICIES) == ["CosineAnnealing", "Cyclic", "LinearAnnealing", "OneCycle", "Step"]
    with pytest.raises(ValueError, match=r"momentum_config\.min_momentum.*both"):
        build_momentum_policy(policy="CosineAnnealing", min_momentum=0.8, min_momentum_ratio=0.9)
    with pytest.raises(ValueError, match=r"momentum_config\.warmup_by_epoch.*not an argument"):
        build_momentum_policy(policy="step", step=2, warmup_by_epoch=True)
    with pytest.raises(ValueError, match=r"momentum_config\.by_epoch"):
        build_momentum_policy(policy="cyclic", by_epoch=True)
    with pytest.raises(ValueError, match=r"momentum_config\.policy.*unknown policy 'poly'"):
        build_momentum_policy(policy="poly")
    policy = build_momentum_policy(policy="OneCycle", base_momentum=[0.8, 0.85])
    with pytest.raises(ValueError, match=r"momentum_config\.base_momentum.*expected 3 values"):
        policy.bind(3, "SGD")
    assert build_momentum_policy(policy="OneCycle", max_momentum={"AdamW": 0.99}).bind(2, "AdamW") == [0.99, 0.99]
