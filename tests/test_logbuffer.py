"""LogBuffer: mmcv's sample-weighted averages, kept on the device until averaged."""

from __future__ import annotations

import pytest
import torch

from detlight.logbuffer import LogBuffer


def test_weighted_average_over_the_last_n_entries():
    buf = LogBuffer()
    for value, count in [(10.0, 1), (1.0, 2), (4.0, 6)]:
        buf.update({"loss": torch.tensor(value), "time": value}, count)
    assert buf.averages(2)["loss"] == pytest.approx((1.0 * 2 + 4.0 * 6) / 8)
    assert buf.averages(0)["loss"] == pytest.approx((10 + 2 + 24) / 9)
    assert buf.averages(2)["time"] == pytest.approx((1.0 * 2 + 4.0 * 6) / 8)  # python floats take the same rule
    assert list(buf.averages()) == ["loss", "time"]


def test_keys_seen_in_some_iterations_average_over_their_own_entries():
    buf = LogBuffer()
    buf.update({"loss": torch.tensor(1.0)}, 1)
    buf.update({"loss": torch.tensor(3.0), "grad_norm": torch.tensor(5.0)}, 1)
    out = buf.averages(2)
    assert out == {"loss": 2.0, "grad_norm": 5.0}


def test_average_fills_output_and_clear_output_keeps_history():
    buf = LogBuffer()
    buf.update({"loss": torch.tensor(2.0)})
    buf.average()
    assert buf.ready and buf.output == {"loss": 2.0}
    buf.clear_output()
    assert not buf.ready and not buf.output and buf.val_history["loss"]
    buf.clear()
    assert not buf.val_history and not buf.n_history


def test_update_detaches_and_rejects_non_scalars():
    w = torch.tensor(2.0, requires_grad=True)
    buf = LogBuffer()
    buf.update({"loss": w * 3, "one": torch.tensor([7.0])})
    assert not buf.val_history["loss"][0].requires_grad
    assert buf.val_history["one"][0].dim() == 0
    with pytest.raises(ValueError, match="`bad` has shape \\(2,\\)"):
        buf.update({"bad": torch.ones(2)})


def test_history_is_bounded(monkeypatch):
    monkeypatch.setattr(LogBuffer, "max_len", 5)
    buf = LogBuffer()
    for i in range(11):
        buf.update({"x": float(i)})
    assert len(buf.val_history["x"]) <= 10 and buf.val_history["x"][-1] == 10.0
    assert buf.averages(3)["x"] == pytest.approx(9.0)


def test_update_never_copies_to_the_host(monkeypatch):
    calls: list[str] = []
    for name in ("item", "tolist", "cpu", "__float__", "__bool__"):
        original = getattr(torch.Tensor, name)

        def spy(self, *args, _n=name, _o=original, **kwargs):
            calls.append(_n)
            return _o(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, spy)
    buf = LogBuffer()
    for _ in range(5):
        buf.update({"loss": torch.tensor(1.0, requires_grad=True) * 2, "acc": torch.tensor(0.5)}, 4)
    assert calls == []
    buf.averages(5)
    assert calls == ["tolist"]  # one transfer for all keys
