"""Sample-weighted history of logged values: the Lightning-side twin of mmcv's ``runner.log_buffer``.

Replaces: ``mmcv.runner.LogBuffer``. Same ``update`` / ``average`` / ``clear`` / ``clear_output`` semantics
(docs/mmcv-semantics.md §3.5), with one difference that matters for speed: values may stay as tensors on the device.
``update`` never calls ``.item()``; ``average`` is the only place that copies to the host, once for all keys.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

import torch

Number = float | int | torch.Tensor

__all__ = ["LogBuffer"]


class LogBuffer:
    """Per-key history of values and their counts (weights).

    Example:
        >>> buf = LogBuffer()
        >>> buf.update({"loss": 1.0}, count=1)
        >>> buf.update({"loss": 4.0}, count=3)
        >>> buf.average(2); buf.output["loss"]
        3.25
    """

    #: History kept per key; older entries are dropped in bulk (an iteration-based run has a single "epoch", so
    #: without a bound the history of a long run would grow without limit; mmcv's does).
    max_len: int = 10_000

    def __init__(self) -> None:
        self.val_history: OrderedDict[str, list[Number]] = OrderedDict()
        self.n_history: OrderedDict[str, list[int]] = OrderedDict()
        self.output: OrderedDict[str, float] = OrderedDict()
        self.ready = False

    def update(self, vars: Mapping[str, Number], count: int = 1) -> None:
        """Append one value per key, weighted by ``count`` (mmcv passes ``num_samples``)."""
        for key, value in vars.items():
            if isinstance(value, torch.Tensor):
                # Guarded: detach()/reshape() cost ~10 us each per key, and this runs every training step.
                if value.requires_grad:
                    value = value.detach()
                if value.dim() != 0:
                    if value.numel() != 1:
                        raise ValueError(f"LogBuffer expects scalar values, but `{key}` has shape {tuple(value.shape)}")
                    value = value.reshape(())
            history, counts = self.val_history.setdefault(key, []), self.n_history.setdefault(key, [])
            history.append(value)
            counts.append(int(count))
            if len(history) > 2 * self.max_len:
                del history[: -self.max_len], counts[: -self.max_len]

    def averages(self, n: int = 0) -> OrderedDict[str, float]:
        """Weighted mean over each key's last ``n`` entries (all entries when ``n == 0``), without side effects.

        Tensors are reduced on their device and copied to the host in a single transfer.
        """
        result: OrderedDict[str, float] = OrderedDict()
        pending: list[tuple[str, torch.Tensor]] = []
        for key, values in self.val_history.items():
            vals = values[-n:] if n > 0 else values
            counts = self.n_history[key][-n:] if n > 0 else self.n_history[key]
            if not vals:
                continue
            total = sum(counts)
            if any(isinstance(v, torch.Tensor) for v in vals):
                device = next(v.device for v in vals if isinstance(v, torch.Tensor))
                if all(isinstance(v, torch.Tensor) and v.device == device for v in vals):
                    stacked = torch.stack(vals).to(torch.float64)  # type: ignore[arg-type]
                else:  # mixed python numbers / devices: rare, convert one by one
                    stacked = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=device).reshape(())
                                           for v in vals])
                weights = torch.tensor(counts, dtype=torch.float64).to(device, non_blocking=True)
                pending.append((key, (stacked * weights).sum() / total))
                result[key] = 0.0  # placeholder keeps insertion order
            else:
                result[key] = sum(float(v) * c for v, c in zip(vals, counts)) / total
        if pending:
            by_device: dict[torch.device, list[tuple[str, torch.Tensor]]] = {}
            for key, tensor in pending:
                by_device.setdefault(tensor.device, []).append((key, tensor))
            for items in by_device.values():
                host = torch.stack([t for _, t in items]).tolist()
                for (key, _), value in zip(items, host):
                    result[key] = float(value)
        return result

    def average(self, n: int = 0) -> None:
        """mmcv's ``average``: fill ``output`` with the weighted means and mark the buffer ready."""
        self.output.update(self.averages(n))
        self.ready = True

    def clear(self) -> None:
        """Forget history and output (mmcv calls this at every epoch start)."""
        self.val_history.clear()
        self.n_history.clear()
        self.clear_output()

    def clear_output(self) -> None:
        """Forget the averaged output only."""
        self.output.clear()
        self.ready = False
