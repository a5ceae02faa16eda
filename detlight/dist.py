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
from collections.abc import Mapping
from dataclasses import dataclass
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
_TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT")
_DIST_STRATEGY_WORDS = ("ddp", "fsdp", "deepspeed")
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


# ---------------------------------------------------------------------------------------------------------- preflight
@dataclass(frozen=True)
class LaunchInfo:
    """What :func:`check_launch_environment` found: the launcher and the world it implies."""

    launcher: Literal["torchrun", "slurm", "lightning", "none"]
    devices: int | None
    num_nodes: int
    world_size: int | None
    node_rank: int | None


def detect_launcher(env: Mapping[str, str] | None = None) -> Literal["torchrun", "slurm", "lightning", "none"]:
    """Which launcher started this process, with Lightning's precedence (torchrun > SLURM > Lightning's own env).

    ``lightning`` means ``LOCAL_RANK`` is set without torchrun or srun: a child started by Lightning's launcher or
    a process started by hand; ``none`` means a plain ``python``/``detlight`` process.
    """
    env = os.environ if env is None else env
    if "TORCHELASTIC_RUN_ID" in env:
        return "torchrun"
    if "SLURM_NTASKS" in env and env.get("SLURM_JOB_NAME") not in ("bash", "interactive"):
        return "slurm"
    if "LOCAL_RANK" in env:
        return "lightning"
    return "none"


def resolve_devices(devices: Any, accelerator: Any = "auto") -> int | None:
    """Processes per node that Lightning derives from ``trainer.devices`` (``None`` when it cannot be told here)."""
    if isinstance(devices, bool):
        return None
    if isinstance(devices, (list, tuple)):
        return len(devices)
    if isinstance(devices, str):
        text = devices.strip()
        if "," in text:
            return len([d for d in text.split(",") if d.strip()])
        if text.lstrip("-").isdigit():
            devices = int(text)
        elif text == "auto":
            devices = -1
        else:
            return None
    if isinstance(devices, int):
        if devices > 0:
            return devices
        if devices == -1:
            return _auto_device_count(str(getattr(accelerator, "value", accelerator) or "auto").lower())
    return None


def _auto_device_count(accelerator: str) -> int | None:
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return torch.cuda.device_count()
    if accelerator in ("cpu", "auto"):
        return 1  # Lightning runs one CPU process for devices="auto" (and num_processes for -1 is not inferred)
    return None


def _is_distributed_strategy(strategy: Any) -> bool:
    if strategy is None:
        return False
    if isinstance(strategy, str):
        return any(word in strategy.lower() for word in _DIST_STRATEGY_WORDS)
    if isinstance(strategy, Mapping):
        return _is_distributed_strategy(strategy.get("class_path"))
    name = getattr(strategy, "class_path", None) or type(strategy).__name__
    return any(word in str(name).lower() for word in _DIST_STRATEGY_WORDS)


def check_launch_environment(
    devices: Any = "auto",
    num_nodes: int = 1,
    accelerator: Any = "auto",
    strategy: Any = "auto",
    env: Mapping[str, str] | None = None,
) -> LaunchInfo:
    """Fail fast when ``devices x num_nodes`` does not fit the launcher, or rendezvous variables are missing.

    Call it before the Trainer starts its processes (``detlight fit`` does, from
    :meth:`detlight.cli.DetLightCLI.before_instantiate_classes`). Checked:

    - torchrun: ``WORLD_SIZE == devices x num_nodes``, ``LOCAL_WORLD_SIZE`` (``--nproc_per_node``) ``== devices``,
      ``GROUP_WORLD_SIZE`` (``--nnodes``) ``== num_nodes``;
    - srun: ``SLURM_NTASKS_PER_NODE == devices``, ``SLURM_NNODES == num_nodes``, ``SLURM_NTASKS`` == the product;
    - Lightning's own launcher on several nodes: ``MASTER_ADDR``, ``MASTER_PORT`` and ``NODE_RANK`` set (without
      ``MASTER_PORT`` every node picks its own random port and waits forever), ``NODE_RANK < num_nodes``, and a
      ``WORLD_SIZE`` given to a hand-started process equal to the product.

    Args:
        devices: ``trainer.devices``.
        num_nodes: ``trainer.num_nodes``.
        accelerator: ``trainer.accelerator`` (used to resolve ``devices="auto"``).
        strategy: ``trainer.strategy`` (a name, an instance or a ``class_path`` mapping).
        env: Environment to read; ``os.environ`` by default.

    Raises:
        LaunchConfigError: naming the Trainer setting or launcher flag to change.
    """
    env = os.environ if env is None else env
    if isinstance(num_nodes, bool) or not isinstance(num_nodes, int) or num_nodes < 1:
        raise LaunchConfigError(f"Expected `trainer.num_nodes` to be an int >= 1, but got {num_nodes!r}.")
    per_node = resolve_devices(devices, accelerator)
    launcher = detect_launcher(env)
    expected = per_node * num_nodes if per_node is not None else None
    if launcher == "torchrun":
        world = _check_torchrun(env, per_node, num_nodes, expected)
        return LaunchInfo(launcher, per_node, num_nodes, world, _int_env(env, "GROUP_RANK"))
    if launcher == "slurm":
        world = _check_slurm(env, per_node, num_nodes, expected)
        return LaunchInfo(launcher, per_node, num_nodes, world, _int_env(env, "SLURM_NODEID"))
    multi = num_nodes > 1 or (expected or 1) > 1 or _is_distributed_strategy(strategy)
    if not multi:
        return LaunchInfo(launcher, per_node, num_nodes, expected, None)
    node_rank = _check_lightning_env(env, launcher, num_nodes, expected)
    return LaunchInfo(launcher, per_node, num_nodes, expected, node_rank)


def _int_env(env: Mapping[str, str], name: str) -> int | None:
    value = env.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise LaunchConfigError(f"Environment variable {name}={value!r} is not an integer.") from None


def _check_torchrun(env: Mapping[str, str], per_node: int | None, num_nodes: int, expected: int | None) -> int | None:
    world = _int_env(env, "WORLD_SIZE")
    local_world = _int_env(env, "LOCAL_WORLD_SIZE")
    nodes = _int_env(env, "GROUP_WORLD_SIZE")
    flags = f"torchrun --nnodes={nodes if nodes is not None else '?'} --nproc_per_node={local_world or '?'}"
    if local_world is not None and per_node is not None and local_world != per_node:
        raise LaunchConfigError(
            f"{flags} started {local_world} process(es) per node, but trainer.devices={per_node}. Set "
            f"--trainer.devices={local_world}, or start torchrun with --nproc_per_node={per_node}."
        )
    if nodes is not None and nodes != num_nodes:
        raise LaunchConfigError(
            f"{flags} runs on {nodes} node(s), but trainer.num_nodes={num_nodes}. Set --trainer.num_nodes={nodes}, "
            f"or start torchrun with --nnodes={num_nodes} on each node."
        )
    if world is not None and expected is not None and world != expected:
        raise LaunchConfigError(
            f"torchrun's WORLD_SIZE={world} differs from trainer.devices x trainer.num_nodes = {per_node} x "
            f"{num_nodes} = {expected}. Make trainer.devices equal --nproc_per_node and trainer.num_nodes equal "
            "--nnodes."
        )
    missing = [v for v in ("MASTER_ADDR", "MASTER_PORT") if not env.get(v)]
    if missing:
        raise LaunchConfigError(f"torchrun did not set {missing}; pass --master_addr/--master_port (or --rdzv_endpoint).")
    return world


def _check_slurm(env: Mapping[str, str], per_node: int | None, num_nodes: int, expected: int | None) -> int | None:
    per_node_slurm = _int_env(env, "SLURM_NTASKS_PER_NODE")
    nodes = _int_env(env, "SLURM_NNODES") or _int_env(env, "SLURM_JOB_NUM_NODES")
    ntasks = _int_env(env, "SLURM_NTASKS")
    if per_node_slurm is not None and per_node is not None and per_node_slurm != per_node:
        raise LaunchConfigError(
            f"SLURM runs --ntasks-per-node={per_node_slurm} task(s) per node, but trainer.devices={per_node}. Set "
            f"--trainer.devices={per_node_slurm} (one task per device), or #SBATCH --ntasks-per-node={per_node}."
        )
    if nodes is not None and nodes != num_nodes:
        raise LaunchConfigError(
            f"SLURM allocated --nodes={nodes}, but trainer.num_nodes={num_nodes}. Set --trainer.num_nodes={nodes}, "
            f"or #SBATCH --nodes={num_nodes}."
        )
    if ntasks is not None and expected is not None and ntasks != expected:
        raise LaunchConfigError(
            f"SLURM runs {ntasks} task(s) (SLURM_NTASKS), but trainer.devices x trainer.num_nodes = {per_node} x "
            f"{num_nodes} = {expected}. Use #SBATCH --ntasks-per-node=<devices> with --nodes=<num_nodes> and start "
            "python with srun (one task per device)."
        )
    return ntasks


def _check_lightning_env(env: Mapping[str, str], launcher: str, num_nodes: int, expected: int | None) -> int | None:
    world = _int_env(env, "WORLD_SIZE")
    if launcher == "lightning" and world is not None and expected is not None and world != expected:
        raise LaunchConfigError(
            f"WORLD_SIZE={world} is set in the environment, but trainer.devices x trainer.num_nodes = {expected}. "
            "Unset WORLD_SIZE (and LOCAL_RANK) to let Lightning start the processes, or make the two agree."
        )
    node_rank = _int_env(env, "NODE_RANK")
    if node_rank is None:
        node_rank = _int_env(env, "GROUP_RANK")
    if num_nodes == 1:
        if node_rank:
            raise LaunchConfigError(f"NODE_RANK={node_rank} is set but trainer.num_nodes=1; unset NODE_RANK.")
        return node_rank
    missing = [v for v in ("MASTER_ADDR", "MASTER_PORT") if not env.get(v)]
    if node_rank is None:
        missing.append("NODE_RANK")
    if missing or node_rank is None:
        raise LaunchConfigError(
            f"trainer.num_nodes={num_nodes} without torchrun or srun needs {missing} in the environment of every "
            "node: MASTER_ADDR/MASTER_PORT = the address and a free port of node 0 (the same on all nodes), "
            "NODE_RANK = 0..num_nodes-1. Or launch with configs/launch/torchrun.sh or configs/launch/slurm.sbatch."
        )
    if not 0 <= node_rank < num_nodes:
        raise LaunchConfigError(f"NODE_RANK={node_rank} is outside [0, trainer.num_nodes={num_nodes}).")
    return node_rank


def check_cli_trainer_config(trainer_cfg: Any, env: Mapping[str, str] | None = None) -> LaunchInfo:
    """:func:`check_launch_environment` on the parsed ``trainer`` section of a LightningCLI config (Namespace/dict)."""
    def get(key: str, default: Any) -> Any:
        value = trainer_cfg.get(key, default) if hasattr(trainer_cfg, "get") else getattr(trainer_cfg, key, default)
        return default if value is None else value

    return check_launch_environment(devices=get("devices", "auto"), num_nodes=get("num_nodes", 1),
                                    accelerator=get("accelerator", "auto"), strategy=get("strategy", "auto"), env=env)


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
