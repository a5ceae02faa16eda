"""mmcv's fp16 loss_scale forms: static float, 'dynamic', GradScaler kwargs; ints refused."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from detlight.precision import MMFp16Precision, StaticGradScaler, build_scaler
from detlight.testing import boring_loader, boring_module, boring_trainer


def test_static_scale_survives_overflow_and_skips_the_step():
    scaler = StaticGradScaler(512.0, device="cpu")
    w = nn.Parameter(torch.ones(2))
    opt = torch.optim.SGD([w], lr=1.0)
    scaler.scale((w * float("inf")).sum()).backward()
    scaler.step(opt)  # overflow: skipped
    scaler.update()
    assert torch.equal(w.detach(), torch.ones(2))
    assert scaler.get_scale() == 512.0  # a dynamic scaler would have halved it
    opt.zero_grad()
    scaler.scale(w.sum()).backward()
    scaler.step(opt)
    scaler.update()
    assert torch.allclose(w.detach(), torch.zeros(2))
    assert scaler.get_scale() == 512.0


def test_dynamic_and_kwargs_forms():
    assert type(build_scaler("dynamic", "cpu")) is torch.amp.GradScaler
    scaler = build_scaler({"init_scale": 8.0, "growth_interval": 3}, "cpu")
    assert scaler.get_scale() == 8.0 and scaler.get_growth_interval() == 3


@pytest.mark.parametrize("bad", [512, "static", -1.0, [512.0]])
def test_invalid_loss_scale_is_refused_with_the_key(bad):
    with pytest.raises(ValueError, match="fp16.loss_scale"):
        build_scaler(bad, "cpu")


def test_plugin_trains_with_a_fixed_scale(tmp_path):
    plugin = MMFp16Precision(loss_scale=128.0, device="cpu")
    trainer = boring_trainer(tmp_path, max_epochs=None, max_steps=3, limit_batches=None, plugins=[plugin])
    trainer.fit(boring_module(), boring_loader(2, batch_size=4))
    assert trainer.global_step == 3
    assert plugin.scaler.get_scale() == 128.0
