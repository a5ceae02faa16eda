"""Distributed training: mmcv's ``init_dist`` / ``MMDistributedDataParallel`` / ``--launcher`` on Lightning's DDP.

Replaces: ``mmcv.runner.init_dist(launcher, **dist_params)``, ``MMDistributedDataParallel(broadcast_buffers=False,
find_unused_parameters=...)`` and the ``gpu_ids`` bookkeeping of mmdet's ``tools/train.py``. Processes are created by
``torchrun`` (Lightning's ``TorchElasticEnvironment``), by ``srun`` (``SLURMEnvironment``, with requeue on preemption)
or by Lightning itself (``devices=N`` on one node; ``NODE_RANK`` + ``MASTER_ADDR/PORT`` on several). Gradients are
reduced by torch's own ``DistributedDataParallel``; nothing here talks to the process group during training.

What this module adds on top of Lightning:

- :class:`DetDDPStrategy`: ``DDPStrategy`` with mmcv's defaults (buffers not re-broadcast at every forward), the
  backend named as in ``dist_params``, an explicit ``timeout_s`` and an explicit ``launcher`` choice.
- :func:`check_launch_environment`: compares ``devices x num_nodes`` with what the launcher started and checks the
  rendezvous variables *before* any process waits on another, raising :class:`LaunchConfigError` with the setting to
  change (a mismatch otherwise hangs until the DDP timeout, 30 minutes by default).
- :class:`DistConfig` (defined in :mod:`detlight.dist_config`, which imports no Lightning, re-exported here): maps
  mmcv's ``dist_params`` / ``launcher`` / ``gpu_ids`` / ``find_unused_parameters`` / ``SyncBN`` onto Trainer
  arguments, for the config converter and for users.
"""

from __future__ import annotations

import inspect
import os
import signal
import sys
from datetime import timedelta
from typing import Any, Literal

import torch
from lightning.fabric.plugins.environments import (
    ClusterEnvironment,
    LightningEnvironment,
    SLURMEnvironment,
    TorchElasticEnvironment,
)
from lightning.pytorch.strategies import DDPStrategy

from detlight.dist_config import DDP_STRATEGY_PATH, DEFAULT_TIMEOUT_S, DistSettings, has_sync_bn
from detlight.exceptions import ConfigError, LaunchConfigError
from detlight.launch_check import _DIST_STRATEGY_WORDS as _DIST_STRATEGY_WORDS
from detlight.launch_check import (
    _TORCHRUN_VARS,
    LaunchInfo,
    check_cli_trainer_config,
    check_launch_environment,
    detect_launcher,
)
from detlight.launch_check import _auto_device_count as _auto_device_count
from detlight.launch_check import _check_lightning_env as _check_lightning_env
from detlight.launch_check import _check_slurm as _check_slurm
from detlight.launch_check import _check_torchrun as _check_torchrun
from detlight.launch_check import _int_env as _int_env
from detlight.launch_check import _is_distributed_strategy as _is_distributed_strategy
from detlight.launch_check import resolve_devices as resolve_devices
from detlight.upstream_internals import strategy_ddp_kwargs

__all__ = [
    "DDP_STRATEGY_PATH",
    "DetDDPStrategy",
    "DistConfig",
    "LaunchConfigError",
    "LaunchInfo",
    "check_cli_trainer_config",
    "check_launch_environment",
    "ddp_strategy",
    "detect_launcher",
    "has_sync_bn",
]

Launcher = Literal["auto", "none", "pytorch", "slurm"]
StartMethod = Literal["popen", "spawn", "fork", "forkserver"]
_LOST_PEER_HINTS = ("connection closed", "connection reset", "timed out", "timeout", "broken pipe", "nccl", "gloo")


# ---------------------------------------------------------------------------------------------------------- strategy
class DetDDPStrategy(DDPStrategy):
    """Lightning ``DDPStrategy`` with mmcv's ``MMDistributedDataParallel`` defaults.

    Replaces: ``init_dist(launcher, backend=...)`` + ``MMDistributedDataParallel(broadcast_buffers=False,
    find_unused_parameters=cfg.find_unused_parameters)``. Buffers (BN running stats) are synced once when the model
    is wrapped but not at every forward, as MMDDP did; use ``sync_batchnorm`` or a ``SyncBuffers`` callback when
    ranks must agree on them. Any rank that stops with an error prints one rank-prefixed line saying so; the other
    ranks then fail at their next collective, or after ``timeout_s`` at the latest.

    Args:
        backend: ``dist_params.backend``: ``nccl``, ``gloo`` or ``mpi``; ``None`` lets Lightning pick (nccl on CUDA,
            gloo on CPU).
        find_unused_parameters: mmdet's ``find_unused_parameters`` (needed when some heads do not contribute to every
            step's loss).
        broadcast_buffers: re-broadcast rank 0's buffers at every forward (torch's default; mmcv used ``False``).
        timeout_s: Seconds a collective, and the initial rendezvous, may wait for the other ranks.
        static_graph: torch DDP ``static_graph`` (the graph is the same at every step).
        gradient_as_bucket_view: torch DDP ``gradient_as_bucket_view`` (saves one gradient copy).
        start_method: ``popen`` (re-runs the script; what ``detlight fit`` uses), ``fork`` (notebooks, as Lightning's
            ``ddp_notebook``), ``spawn`` or ``forkserver``.
        launcher: mmcv's ``--launcher``: ``auto`` detects torchrun / srun / neither; ``pytorch`` requires torchrun,
            ``slurm`` requires srun and ``none`` ignores both (processes started by Lightning or by hand).
        auto_requeue: with the SLURM launcher, save a checkpoint and ``scontrol requeue`` the job on ``SIGUSR1``
            (``#SBATCH --signal=SIGUSR1@90``); a requeued ``fit`` resumes from it.
        ddp_kwargs: Further ``torch.nn.parallel.DistributedDataParallel`` arguments (``bucket_cap_mb``, ...).

    Raises:
        LaunchConfigError: ``launcher`` names a launcher whose environment variables are absent.
        ValueError: ``timeout_s`` is not positive, or ``ddp_kwargs`` repeats an argument above.
    """

    def __init__(
        self,
        backend: str | None = None,
        find_unused_parameters: bool = False,
        broadcast_buffers: bool = False,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        static_graph: bool = False,
        gradient_as_bucket_view: bool = False,
        start_method: StartMethod = "popen",
        launcher: Launcher = "auto",
        auto_requeue: bool = True,
        ddp_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if not timeout_s > 0:
            raise ConfigError(f"Expected `timeout_s` > 0 (seconds a rank waits for the others), but got {timeout_s!r}.")
        extra = dict(ddp_kwargs or {})
        named = {"find_unused_parameters", "broadcast_buffers", "forward_sync_buffers", "static_graph",
                 "gradient_as_bucket_view"}
        clash = sorted(named & set(extra))
        if clash:
            raise ConfigError(f"`ddp_kwargs` repeats {clash}; set them as DetDDPStrategy arguments instead.")
        extra.update(find_unused_parameters=find_unused_parameters, static_graph=static_graph,
                     gradient_as_bucket_view=gradient_as_bucket_view, **_buffer_sync_kwargs(broadcast_buffers))
        super().__init__(
            cluster_environment=cluster_environment_for(launcher, auto_requeue),
            process_group_backend=backend,
            timeout=timedelta(seconds=float(timeout_s)),
            start_method=start_method,
            **extra,
        )
        self.backend = backend
        self.timeout_s = float(timeout_s)
        self.launcher_name: Launcher = launcher

    @property
    def ddp_kwargs(self) -> dict[str, Any]:
        """The keyword arguments handed to ``torch.nn.parallel.DistributedDataParallel``."""
        return strategy_ddp_kwargs(self)

    def on_exception(self, exception: BaseException) -> None:
        """Print which rank stopped and why before the exception propagates (Lightning adds its own hints)."""
        super().on_exception(exception)
        print(failure_message(self.global_rank, self.world_size, exception, self.timeout_s), file=sys.stderr,
              flush=True)


def ddp_strategy(
    backend: str | None = None,
    find_unused_parameters: bool = False,
    broadcast_buffers: bool = False,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    **kwargs: Any,
) -> DetDDPStrategy:
    """Python shortcut for :class:`DetDDPStrategy` (``Trainer(strategy=ddp_strategy(timeout_s=60))``)."""
    return DetDDPStrategy(backend=backend, find_unused_parameters=find_unused_parameters,
                          broadcast_buffers=broadcast_buffers, timeout_s=timeout_s, **kwargs)


def _buffer_sync_kwargs(broadcast_buffers: bool) -> dict[str, bool]:
    # torch >= 2.13 renamed per-forward buffer broadcasting to `forward_sync_buffers` and warns on the old name.
    params = inspect.signature(torch.nn.parallel.DistributedDataParallel.__init__).parameters
    if "forward_sync_buffers" in params:
        return {"forward_sync_buffers": broadcast_buffers}
    return {"broadcast_buffers": broadcast_buffers}


def cluster_environment_for(launcher: Launcher, auto_requeue: bool = True) -> ClusterEnvironment | None:
    """The Lightning cluster environment for mmcv's ``--launcher`` (``None`` for ``auto``: Lightning detects it).

    Raises:
        LaunchConfigError: ``pytorch`` outside torchrun, ``slurm`` outside srun, or an unknown name.
    """
    if launcher == "auto":
        return None
    if launcher == "none":
        return LightningEnvironment()
    if launcher == "pytorch":
        if not TorchElasticEnvironment.detect():
            missing = [v for v in ("TORCHELASTIC_RUN_ID", *_TORCHRUN_VARS) if v not in os.environ]
            raise LaunchConfigError(
                f"launcher='pytorch' expects a process started by torchrun, but {missing} are not set. Start it with "
                "`torchrun --nnodes=N --nproc_per_node=D ... -m detlight.cli fit ...` (configs/launch/torchrun.sh), "
                "or set trainer.strategy.init_args.launcher to 'auto' or 'none'."
            )
        return TorchElasticEnvironment()
    if launcher == "slurm":
        if "SLURM_NTASKS" not in os.environ:
            raise LaunchConfigError(
                "launcher='slurm' expects a process started by srun inside a SLURM job, but SLURM_NTASKS is not set. "
                "Submit configs/launch/slurm.sbatch with sbatch, or set trainer.strategy.init_args.launcher to 'auto'."
            )
        return SLURMEnvironment(auto_requeue=auto_requeue, requeue_signal=signal.SIGUSR1)
    raise LaunchConfigError(f"Unknown launcher {launcher!r}; expected one of 'auto', 'none', 'pytorch', 'slurm'.")


def failure_message(rank: int, world_size: int, exception: BaseException, timeout_s: float) -> str:
    """One rank-prefixed line telling whether this rank failed first or lost a peer that failed."""
    text = str(exception).strip().splitlines()[0] if str(exception).strip() else ""
    what = f"{type(exception).__name__}: {text}" if text else type(exception).__name__
    dist_error = isinstance(exception, getattr(torch.distributed, "DistError", ())) or (
        isinstance(exception, RuntimeError) and any(h in text.lower() for h in _LOST_PEER_HINTS))
    if dist_error:
        return (f"[rank {rank}/{world_size}] lost contact with the other ranks ({what}); another rank most likely "
                "failed first, its error is printed above or in its own log. Exiting.")
    return (f"[rank {rank}/{world_size}] failed with {what}. The other ranks stop at their next collective "
            f"operation, after at most timeout_s={timeout_s:g} s.")


class DistConfig(DistSettings):
    """mmcv's distributed settings (:class:`~detlight.dist_config.DistSettings`) plus the built DDP strategy.

    Example:
        >>> DistConfig(backend="gloo", gpu_ids=[0, 1]).trainer_kwargs()["devices"]
        [0, 1]
    """

    def trainer_kwargs(self) -> dict[str, Any]:
        """Same as :meth:`trainer_config` with the strategy built (``Trainer(**cfg.trainer_kwargs())``)."""
        out = self.trainer_config()
        if "strategy" in out:
            out["strategy"] = DetDDPStrategy(**out["strategy"]["init_args"])
        return out
