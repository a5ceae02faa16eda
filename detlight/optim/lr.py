"""Learning-rate policies with mmcv's per-iteration values, as pure functions of the training position.

Replaces: the ``<Policy>LrUpdaterHook`` classes of mmcv 1.7 (``mmcv/runner/hooks/lr_updater.py``). Each policy is
built from the keyword arguments of an mmcv ``lr_config`` dict (validated here, with errors that name the key) and
answers two questions for a :class:`Progress`: the regular value (``get_regular``) and the value mmcv writes into the
optimizer before that iteration, warm-up included (``value_at``). Nothing here knows about Lightning; the callbacks in
:mod:`detlight.callbacks.lr_updater` drive these objects.


This module holds the registry of LR policies and its builder; the policies live by family in
:mod:`detlight.optim.lr_step`, :mod:`detlight.optim.lr_annealing`, :mod:`detlight.optim.lr_cyclic` and
:mod:`detlight.optim.lr_yolox`, their shared base in :mod:`detlight.optim.policy`. Every name that used to be defined
here is still importable from here.

Example:
    >>> policy = build_lr_policy(policy="step", step=[8, 11], warmup="linear", warmup_iters=500, warmup_ratio=0.001)
    >>> p = Progress(epoch=0, iter=0, max_epochs=12, max_iters=1200, iters_per_epoch=100)
    >>> round(policy.value_at(0.02, p), 10)
    2e-05
"""

from __future__ import annotations

from typing import Any

from detlight.optim.lr_annealing import (
    CosineAnnealingLr,
    CosineRestartLr,
    FlatCosineAnnealingLr,
    LinearAnnealingLr,
    _TargetLr,
)
from detlight.optim.lr_cyclic import CyclicLr, CyclicPhases, OneCycleLr
from detlight.optim.lr_step import ExpLr, FixedLr, InvLr, PolyLr, StepLr
from detlight.optim.lr_yolox import YoloxLr
from detlight.optim.policy import (
    AnnealStrategy,
    LrPolicy,
    Progress,
    WarmupKind,
    _fail,
    _is_number,
    _Policy,
    accepted_args,
    anneal,
    annealing_cos,
    annealing_linear,
    build_policy,
    check_anneal,
    check_one_of,
    check_pct_start,
    check_step,
    check_target_ratio,
    cyclic_value,
    per_group,
    policy_class_name,
    step_exponent,
)

__all__ = [
    "LR_POLICIES",
    "AnnealStrategy",
    "CosineAnnealingLr",
    "CosineRestartLr",
    "CyclicLr",
    "CyclicPhases",
    "ExpLr",
    "FixedLr",
    "FlatCosineAnnealingLr",
    "InvLr",
    "LinearAnnealingLr",
    "LrPolicy",
    "OneCycleLr",
    "PolyLr",
    "Progress",
    "StepLr",
    "WarmupKind",
    "YoloxLr",
    "_Policy",
    "_TargetLr",
    "_fail",
    "_is_number",
    "accepted_args",
    "anneal",
    "annealing_cos",
    "annealing_linear",
    "build_lr_policy",
    "build_policy",
    "check_anneal",
    "check_one_of",
    "check_pct_start",
    "check_step",
    "check_target_ratio",
    "cyclic_value",
    "per_group",
    "policy_class_name",
    "step_exponent",
]


LR_POLICIES: dict[str, type[LrPolicy]] = {
    cls.name: cls
    for cls in (
        FixedLr, StepLr, ExpLr, PolyLr, InvLr, CosineAnnealingLr, FlatCosineAnnealingLr, CosineRestartLr, CyclicLr,
        OneCycleLr, LinearAnnealingLr, YoloxLr,
    )
}


def build_lr_policy(**lr_config: Any) -> LrPolicy:
    """Build an LR policy from the keys of an mmcv ``lr_config`` (``policy`` plus its arguments).

    Raises:
        ValueError: For an unknown policy, an argument the policy does not take, a missing required argument,
            both ``min_lr`` and ``min_lr_ratio``, ``by_epoch=True`` for Cyclic / OneCycle, or a bad warm-up.
    """
    policy: LrPolicy = build_policy(LR_POLICIES, "lr_config", lr_config)
    return policy
