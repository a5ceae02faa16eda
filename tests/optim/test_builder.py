"""build_optimizer / scale_lr: mmcv DefaultOptimizerConstructor rules and mmdet auto_scale_lr."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import torch
from torch import nn

from detlight.optim.builder import build_optimizer, scale_lr, torch_optimizers


class DeformConv2d(nn.Module):
    """Stand-in named like mmcv.ops' DCN (the constructor recognises DCN modules by class name)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(4, 4, 3, 3))
        self.conv_offset = nn.Conv2d(4, 18, 3)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        self.dw = nn.Conv2d(4, 4, 3, groups=4)
        self.dcn = DeformConv2d()
        self.neck = nn.Linear(4, 4)
        self.head = nn.Linear(4, 2)
        self.head_norm = nn.GroupNorm(1, 2)


def groups_by_name(model: nn.Module, opt: torch.optim.Optimizer) -> dict[str, dict[str, Any]]:
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(g["params"][0])]: g for g in opt.param_groups}


BASE = {"type": "SGD", "lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4}


def test_plain_config_makes_one_group() -> None:
    model = Net()
    opt = build_optimizer(model, {**BASE, "type": "torch.optim.SGD"})
    assert isinstance(opt, torch.optim.SGD) and len(opt.param_groups) == 1
    assert opt.param_groups[0]["params"] == list(model.parameters())


def test_paramwise_rules() -> None:
    model = Net()
    paramwise = {"bias_lr_mult": 2.0, "bias_decay_mult": 0.5, "norm_decay_mult": 0.0, "dwconv_decay_mult": 0.1,
                 "dcn_offset_lr_mult": 0.1}
    groups = groups_by_name(model, build_optimizer(model, {**BASE, "paramwise_cfg": paramwise}))
    assert list(groups) == [n for n, _ in model.named_parameters()]  # one group per param, in module order
    lr_wd = {n: (g["lr"], g["weight_decay"]) for n, g in groups.items()}
    assert lr_wd["backbone.0.weight"] == pytest.approx((0.01, 1e-4))
    assert lr_wd["backbone.0.bias"] == pytest.approx((0.02, 0.5e-4))
    assert lr_wd["backbone.1.weight"] == pytest.approx((0.01, 0.0))  # norm: decay mult, no bias lr mult
    assert lr_wd["backbone.1.bias"] == pytest.approx((0.01, 0.0))
    assert lr_wd["dw.weight"] == pytest.approx((0.01, 1e-5))
    assert lr_wd["dw.bias"] == pytest.approx((0.02, 1e-5))  # depth-wise decay wins over the bias decay
    assert lr_wd["dcn.weight"] == pytest.approx((0.01, 1e-4))
    assert lr_wd["dcn.conv_offset.weight"] == pytest.approx((0.001, 1e-4))
    assert lr_wd["dcn.conv_offset.bias"] == pytest.approx((0.001, 1e-4))  # inside a DCN: no bias mults
    assert lr_wd["head_norm.weight"] == pytest.approx((0.01, 0.0))


def test_custom_keys_longest_match_first_and_override_other_rules() -> None:
    model = Net()
    custom = {"head": {"lr_mult": 0.5}, "head_norm": {"lr_mult": 3.0, "decay_mult": 2.0}, "backbone": {"lr_mult": 0.1},
              "backbone.0": {"decay_mult": 0.0}}
    cfg = {**BASE, "paramwise_cfg": {"custom_keys": custom, "norm_decay_mult": 0.0, "bias_lr_mult": 2.0}}
    lr_wd = {n: (g["lr"], g["weight_decay"]) for n, g in groups_by_name(model, build_optimizer(model, cfg)).items()}
    assert lr_wd["head_norm.weight"] == pytest.approx((0.03, 2e-4))  # 'head_norm' is longer than 'head'
    assert lr_wd["head.bias"] == pytest.approx((0.005, 1e-4))  # custom key: no bias_lr_mult
    assert lr_wd["backbone.0.bias"] == pytest.approx((0.01, 0.0))  # 'backbone.0' beats 'backbone'
    assert lr_wd["backbone.1.weight"] == pytest.approx((0.001, 1e-4))  # custom key: norm_decay_mult skipped
    assert lr_wd["neck.bias"] == pytest.approx((0.02, 1e-4))


def test_frozen_params_keep_their_group_and_duplicates_are_bypassed() -> None:
    model = Net()
    model.neck.weight.requires_grad_(False)
    model.head.weight = model.neck.weight  # tied: appears twice in the module walk
    model.head.bias = model.neck.bias
    cfg = {**BASE, "paramwise_cfg": {"bypass_duplicate": True}}
    with pytest.warns(UserWarning, match="duplicate"):
        opt = build_optimizer(model, cfg)
    params = [p for g in opt.param_groups for p in g["params"]]
    assert len(params) == len({id(p) for p in params})
    assert any(p is model.neck.weight for p in params)
    with pytest.raises(ValueError, match="more than one parameter group"):
        build_optimizer(model, {**BASE, "paramwise_cfg": {"norm_decay_mult": 0.0}})


def test_lr_scale_and_adam_kwargs() -> None:
    model = Net()
    opt = build_optimizer(model, {"type": "AdamW", "lr": 0.001, "betas": (0.95, 0.99), "weight_decay": 0.01,
                                  "paramwise_cfg": {"custom_keys": {"head": {"lr_mult": 0.1}}}}, lr_scale=2.0)
    assert isinstance(opt, torch.optim.AdamW)
    assert opt.defaults["lr"] == pytest.approx(0.002)
    assert groups_by_name(model, opt)["head.weight"]["lr"] == pytest.approx(0.0002)


def test_class_path_form() -> None:
    opt = build_optimizer(Net(), {"class_path": "torch.optim.RMSprop", "init_args": {"lr": 0.1, "alpha": 0.9}})
    assert isinstance(opt, torch.optim.RMSprop) and opt.defaults["alpha"] == 0.9


@pytest.mark.parametrize(
    ("cfg", "match"),
    [
        ({"type": "SGDD", "lr": 0.1}, r"model\.optimizer\.type.*'SGDD'.*AdamW.*SGD"),
        ({"type": "torch.nn.Linear", "lr": 0.1}, r"model\.optimizer\.type"),
        ({"type": "SGD", "lr": 0.1, "betas": (0.9, 0.99)}, r"model\.optimizer\.betas.*not an argument of SGD.*momentum"),
        ({"lr": 0.1}, r"model\.optimizer.*type"),
        ({**BASE, "paramwise_cfg": {"norm_decay_mul": 0.0}}, r"paramwise_cfg\.norm_decay_mul.*not a paramwise_cfg"),
        ({"type": "SGD", "lr": 0.1, "paramwise_cfg": {"norm_decay_mult": 0.0}}, r"norm_decay_mult.*weight_decay"),
        ({**BASE, "paramwise_cfg": {"custom_keys": {"head": {"lr": 0.1}}}}, r"custom_keys\.head"),
        ({**BASE, "constructor": "LayerDecayOptimizerConstructor"}, r"model\.optimizer\.constructor"),
    ],
)
def test_errors_name_the_key(cfg: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_optimizer(Net(), cfg)


def test_torch_optimizers_lists_torch_optim() -> None:
    names = torch_optimizers()
    assert {"SGD", "Adam", "AdamW"} <= set(names) and "Optimizer" not in names


def test_scale_lr(caplog: pytest.LogCaptureFixture) -> None:
    cfg = {"type": "SGD", "lr": 0.02}
    with caplog.at_level(logging.INFO, logger="detlight.optim.builder"):
        new_cfg, factor = scale_lr(cfg, {"enable": True, "base_batch_size": 16}, world_size=2, samples_per_gpu=2)
    assert factor == 0.25 and new_cfg["lr"] == pytest.approx(0.005) and cfg["lr"] == 0.02
    assert "scaled from 0.02 to 0.005" in caplog.text and "total batch size is 4" in caplog.text
    assert scale_lr(cfg, {"enable": False, "base_batch_size": 16}, 2, 2) == (cfg, 1.0)
    assert scale_lr(cfg, None, 2, 2) == (cfg, 1.0)
    assert scale_lr(cfg, {"enable": True, "base_batch_size": 16}, 8, 2)[1] == 1.0
    with pytest.raises(ValueError, match=r"auto_scale_lr\.base_batch_size"):
        scale_lr(cfg, {"enable": True, "base_batch_size": 0}, 1, 2)
    with pytest.raises(ValueError, match=r"auto_scale_lr\.enabled"):
        scale_lr(cfg, {"enable": True, "enabled": True}, 1, 2)
