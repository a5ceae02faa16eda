"""Interval averages of the log buffer, reduced across ranks once per log interval.

Replaces the per-step ``all_reduce`` of every log value in mmdet's ``_parse_losses`` for logging purposes. mmdet
reduces each key at every iteration and asserts that all ranks hold the same number of keys; a key that only some
ranks produce (a loss computed only when a rank's batch holds a given class, say) makes that collective wait forever.
Here each rank averages its own history, and at a logging step the ranks

1. ``all_gather_object`` their key lists (a few strings, once per interval),
2. lay the union out in one identical order (first appearance over ranks 0..W-1, so rank 0's own order leads),
3. run ONE ``all_reduce`` of a float64 ``[K, 2]`` tensor holding ``[weighted sum, count]`` per key (a key a rank
   lacks contributes ``0 / 0``),

which gives the global sample-weighted mean of every key over the last ``n`` entries of every rank. A key missing on
some ranks is reported with a warning naming it and the ranks that logged it, never waited on.

The result is cached per ``(iteration, n)`` so that several logger callbacks at the same step share one reduction
(and one host copy). Every rank must call :func:`cached_averages` at the same steps with the same ``n``; the logger
callbacks decide from counters that are equal on all ranks.
"""

from __future__ import annotations

import warnings
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist

from detlight.exceptions import ModelContractError
from detlight.logbuffer import LogBuffer

__all__ = ["cached_averages", "dist_active", "invalidate", "log_buffer_of", "reduce_averages", "reduce_max"]

_CACHE: weakref.WeakKeyDictionary[LogBuffer, tuple[tuple[int, int], OrderedDict[str, float]]] = (
    weakref.WeakKeyDictionary()
)
_WARNED: set[tuple[str, tuple[int, ...]]] = set()


def log_buffer_of(pl_module: Any, caller: str) -> LogBuffer:
    """Return ``pl_module.log_buffer`` or raise a clear error naming ``caller`` and what it needs."""
    buffer = getattr(pl_module, "log_buffer", None)
    if not isinstance(buffer, LogBuffer):
        found = "has none" if buffer is None else f"has one of type {type(buffer).__name__}"
        raise ModelContractError(
            f"{caller} needs a LightningModule with a `log_buffer` attribute (a detlight.logbuffer.LogBuffer), but "
            f"{type(pl_module).__name__} {found}. Use detlight.module.DetectorModule, or set "
            "`self.log_buffer = LogBuffer()` in __init__ and call `self.log_buffer.update(log_vars, num_samples)` "
            "in training_step."
        )
    return buffer


def dist_active() -> bool:
    """True when torch.distributed is initialised with more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def reduce_averages(log_buffer: LogBuffer, n: int = 0) -> OrderedDict[str, float]:
    """Sample-weighted means over each key's last ``n`` entries (all when ``n == 0``), global across ranks.

    Without an initialised process group of more than one rank this is ``log_buffer.averages(n)``. Otherwise it is
    a collective: every rank must call it. Keys follow rank 0's insertion order, then keys only other ranks have.

    Args:
        log_buffer: the buffer to average.
        n: how many of the latest entries per key to average.

    The reduction tensor lives on the current CUDA device under NCCL and on the CPU otherwise (gloo).
    """
    if not dist_active():
        return log_buffer.averages(n)
    local = _local_sums(log_buffer, n)
    gathered: list[list[str] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, list(local))
    per_rank = [list(keys or []) for keys in gathered]
    union = list(OrderedDict.fromkeys(key for keys in per_rank for key in keys))
    if not union:
        return OrderedDict()
    _warn_partial_keys(union, per_rank)
    comm = _comm_device()
    zero = torch.zeros((), dtype=torch.float64, device=comm)
    sums = torch.stack([torch.as_tensor(local[k][0], dtype=torch.float64).to(comm) if k in local else zero
                        for k in union])
    counts = torch.tensor([float(local[k][1]) if k in local else 0.0 for k in union], dtype=torch.float64, device=comm)
    payload = torch.stack([sums, counts], dim=1)
    dist.all_reduce(payload, op=dist.ReduceOp.SUM)
    result: OrderedDict[str, float] = OrderedDict()
    for key, (total, count) in zip(union, payload.tolist()):
        result[key] = total / count if count > 0 else float("nan")
    return result


def cached_averages(log_buffer: LogBuffer, n: int, iteration: int) -> OrderedDict[str, float]:
    """:func:`reduce_averages`, computed once per ``(iteration, n)`` and buffer; later calls get a copy."""
    key = (iteration, n)
    hit = _CACHE.get(log_buffer)
    if hit is not None and hit[0] == key:
        return OrderedDict(hit[1])
    result = reduce_averages(log_buffer, n)
    _CACHE[log_buffer] = (key, result)
    return OrderedDict(result)


def invalidate(log_buffer: LogBuffer) -> None:
    """Forget the cached averages of ``log_buffer`` (call whenever its history is cleared)."""
    _CACHE.pop(log_buffer, None)


def reduce_max(value: int) -> int:
    """Maximum of an integer over all ranks (mmcv reduces ``memory`` this way); ``value`` when not distributed."""
    if not dist_active():
        return value
    tensor = torch.tensor([value], dtype=torch.int64, device=_comm_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return int(tensor.tolist()[0])


def _local_sums(log_buffer: LogBuffer, n: int) -> OrderedDict[str, tuple[torch.Tensor | float, int]]:
    """Per key: (sample-weighted sum, total count) over the last ``n`` entries; tensors stay on their device."""
    sums: OrderedDict[str, tuple[torch.Tensor | float, int]] = OrderedDict()
    for key, values in log_buffer.val_history.items():
        vals = values[-n:] if n > 0 else values
        counts = log_buffer.n_history[key][-n:] if n > 0 else log_buffer.n_history[key]
        if not vals:
            continue
        tensor = next((v for v in vals if isinstance(v, torch.Tensor)), None)
        if tensor is None:
            sums[key] = (sum(float(v) * c for v, c in zip(vals, counts)), sum(counts))
            continue
        stacked = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=tensor.device).reshape(()) for v in vals])
        weights = torch.tensor(counts, dtype=torch.float64, device=tensor.device)
        sums[key] = ((stacked.to(torch.float64) * weights).sum(), sum(counts))
    return sums


def _comm_device() -> torch.device:
    if "nccl" in str(dist.get_backend()).lower():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _warn_partial_keys(union: Sequence[str], per_rank: Sequence[Sequence[str]]) -> None:
    if dist.get_rank() != 0:
        return
    world = len(per_rank)
    for key in union:
        ranks = tuple(r for r, keys in enumerate(per_rank) if key in keys)
        if len(ranks) == world or (key, ranks) in _WARNED:
            continue
        _WARNED.add((key, ranks))
        missing = [r for r in range(world) if r not in ranks]
        warnings.warn(
            f"Log key {key!r} was logged by rank(s) {list(ranks)} but not by rank(s) {missing} in this log interval; "
            "it is reported as the sample-weighted mean over the ranks that logged it. Make every rank return the "
            "same loss keys (e.g. a zero loss) if the mean should include all ranks.",
            UserWarning,
            stacklevel=2,
        )
