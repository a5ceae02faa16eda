"""mmcv's distributed settings as data: ``dist_params``, ``find_unused_parameters``, ``gpu_ids``, SyncBN -> Trainer args.

Replaces: the part of mmdet's ``tools/train.py`` / ``init_dist`` that reads those config keys. Kept apart from
:mod:`detlight.dist` (the DDP strategy and launch checks) because it imports neither torch nor Lightning, so the
config converter can use it and stay fast. :class:`detlight.dist.DistConfig` is :class:`DistSettings` plus the
built strategy (``trainer_kwargs``); :mod:`detlight.dist` re-exports the other names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from typing_extensions import Self

from detlight.exceptions import ConfigError

__all__ = ["DDP_STRATEGY_PATH", "DEFAULT_TIMEOUT_S", "SYNC_BN_TYPES", "DistSettings", "has_sync_bn"]

#: ``class_path`` of :class:`detlight.dist.DetDDPStrategy`, for YAML written by the converter.
DDP_STRATEGY_PATH = "detlight.dist.DetDDPStrategy"
#: torch's default process-group timeout (also mmcv's).
DEFAULT_TIMEOUT_S = 1800.0
#: ``norm_cfg`` types that synchronise batch statistics across processes (mmcv, mmdet and mmdet3d registry names).
SYNC_BN_TYPES = frozenset({"SyncBN", "MMSyncBN", "NaiveSyncBN", "naiveSyncBN1d", "naiveSyncBN2d", "naiveSyncBN3d"})


def has_sync_bn(cfg: Any) -> bool:
    """True when an mmcv model config uses ``norm_cfg=dict(type='SyncBN')`` anywhere (nested dicts and lists)."""
    if isinstance(cfg, Mapping):
        norm = cfg.get("norm_cfg")
        if isinstance(norm, Mapping) and norm.get("type") in SYNC_BN_TYPES:
            return True
        return any(has_sync_bn(v) for v in cfg.values())
    if isinstance(cfg, (list, tuple)):
        return any(has_sync_bn(v) for v in cfg)
    return False


@dataclass
class DistSettings:
    """mmcv's distributed settings, and the Trainer arguments they become.

    Replaces: ``dist_params``, ``--launcher``, ``gpu_ids``, ``find_unused_parameters`` and per-layer ``SyncBN``.

    Args:
        backend: ``dist_params.backend``.
        port: ``dist_params.port`` (mmcv used it for SLURM only); becomes ``MASTER_PORT`` (see :meth:`env`).
        launcher: ``none`` / ``pytorch`` / ``slurm`` (mmcv's ``--launcher``; ``mpi`` is not supported).
        gpu_ids: GPU indices for a non-distributed run (``launcher='none'``).
        num_nodes: Number of nodes.
        find_unused_parameters: mmdet's top-level ``find_unused_parameters``.
        sync_bn: Convert every BatchNorm to SyncBatchNorm (``trainer.sync_batchnorm``).
        timeout_s: DDP timeout.
    """

    backend: str | None = None
    port: int | None = None
    launcher: Literal["none", "pytorch", "slurm"] = "none"
    gpu_ids: list[int] | None = None
    num_nodes: int = 1
    find_unused_parameters: bool = False
    sync_bn: bool = False
    timeout_s: float = DEFAULT_TIMEOUT_S

    def __post_init__(self) -> None:
        if self.launcher not in ("none", "pytorch", "slurm"):
            raise ConfigError(f"Unsupported launcher {self.launcher!r}; detlight maps 'none', 'pytorch' (torchrun) and "
                              "'slurm' (srun). For MPI, start one process per device with torchrun instead.")
        if self.backend is not None and self.backend not in ("nccl", "gloo", "mpi"):
            raise ConfigError(f"Unknown dist_params.backend {self.backend!r}; expected 'nccl', 'gloo' or 'mpi'.")

    @classmethod
    def from_mmcv(cls, cfg: Mapping[str, Any], launcher: Literal["none", "pytorch", "slurm"] = "none",
                  num_nodes: int = 1) -> Self:
        """Read ``dist_params``, ``find_unused_parameters``, ``gpu_ids`` and the model's ``norm_cfg`` of an mmcv cfg."""
        dist_params = dict(cfg.get("dist_params") or {})
        unknown = sorted(set(dist_params) - {"backend", "port"})
        if unknown:
            raise ConfigError(f"Unknown key(s) {unknown} in `dist_params`; accepted: ['backend', 'port'].")
        gpu_ids = cfg.get("gpu_ids")
        return cls(backend=dist_params.get("backend"), port=dist_params.get("port"), launcher=launcher,
                   gpu_ids=list(gpu_ids) if gpu_ids is not None else None, num_nodes=num_nodes,
                   find_unused_parameters=bool(cfg.get("find_unused_parameters", False)),
                   sync_bn=has_sync_bn(cfg.get("model")))

    @property
    def distributed(self) -> bool:
        """A launcher was named, or several nodes were asked for."""
        return self.launcher != "none" or self.num_nodes > 1

    def strategy_init_args(self) -> dict[str, Any]:
        """``init_args`` of :class:`DetDDPStrategy` (only what differs from its defaults)."""
        args: dict[str, Any] = {}
        if self.backend is not None and self.backend != "nccl":
            args["backend"] = self.backend  # nccl is what Lightning picks on CUDA anyway; keep CPU runs working
        if self.find_unused_parameters:
            args["find_unused_parameters"] = True
        if self.timeout_s != DEFAULT_TIMEOUT_S:
            args["timeout_s"] = self.timeout_s
        if self.launcher != "none":
            args["launcher"] = self.launcher
        return args

    def trainer_config(self) -> dict[str, Any]:
        """The ``trainer:`` YAML entries (``strategy`` as ``class_path``/``init_args``, ``devices``, ...)."""
        out: dict[str, Any] = {"strategy": {"class_path": DDP_STRATEGY_PATH, "init_args": self.strategy_init_args()}}
        if not self.distributed and self.gpu_ids is not None:
            out["devices"] = list(self.gpu_ids)
            if len(self.gpu_ids) <= 1:
                out.pop("strategy")  # one device: mmcv's MMDataParallel, no DDP
        if self.num_nodes > 1:
            out["num_nodes"] = self.num_nodes
        if self.sync_bn:
            out["sync_batchnorm"] = True
        return out

    def env(self) -> dict[str, str]:
        """Environment variables to export before launching (``dist_params.port`` -> ``MASTER_PORT``)."""
        return {"MASTER_PORT": str(self.port)} if self.port is not None else {}
