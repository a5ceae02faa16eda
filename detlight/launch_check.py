"""Pre-flight check of a distributed launch: does the world the launcher started match ``devices x num_nodes``?

Replaces: the checks mmcv's ``init_dist`` left to the process group (a mismatch there hangs until the DDP timeout, 30
minutes by default). :func:`check_launch_environment` compares ``devices x num_nodes`` with what torchrun, ``srun``
or Lightning's own environment variables describe and checks the rendezvous variables *before* any process waits on
another, raising :class:`~detlight.exceptions.LaunchConfigError` with the setting to change. :mod:`detlight.dist`
re-exports everything here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch

from detlight.exceptions import LaunchConfigError

__all__ = ["LaunchInfo", "check_cli_trainer_config", "check_launch_environment", "detect_launcher", "resolve_devices"]

_TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT")
_DIST_STRATEGY_WORDS = ("ddp", "fsdp", "deepspeed")


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
