"""mmdet3d KITTI configs pointed at detlight's synthetic KITTI set (smoke tests, the zoo sweep, the learning run).

Replaces: nothing; mmdet3d's KITTI configs read ``data/kitti/`` prepared by ``tools/create_data.py``. :func:`retarget`
takes any mmdet3d config (a file or an ``mmcv.Config``), swaps every ``data/kitti/`` path for the synthetic set's
info folder (:func:`detlight.openmmlab.kitti_infos.ensure_kitti_infos`), and optionally shrinks the scene: a smaller
``point_cloud_range`` (every ``point_cloud_range`` key, range filters, anchor ranges), the voxel grid's
``output_shape`` / ``sparse_shape`` recomputed from ``voxel_size``, fewer ``max_voxels``, smaller batches, no loader
workers and a set number of epochs. The result is written with ``Config.dump`` as a flat ``.py`` config that
``detlight fit --config`` reads. mmdet3d's model, pipelines, db-sampler and evaluation stay as the config has them.

Limits: camera configs (mono3d, multi-modality) need images, which the synthetic set does not have.
"""

from __future__ import annotations

import pprint
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from detlight.data.synthetic_lidar import SyntheticLidarSpec
from detlight.openmmlab.kitti_infos import ensure_kitti_infos

__all__ = ["CONFIG_DIR", "mmdet3d_config_dir", "retarget"]

#: the prefix mmdet3d's KITTI configs use for their data
KITTI_PREFIX = "data/kitti/"
CONFIG_DIR = "configs"


def mmdet3d_config_dir() -> Path:
    """The configs shipped inside the installed mmdet3d (``mmdet3d/.mim/configs``)."""
    import mmdet3d

    return Path(mmdet3d.__file__).parent / ".mim" / "configs"


def _walk(node: Any, fn: Any, key: str | None = None) -> Any:
    node = fn(key, node)
    if isinstance(node, dict):
        return {k: _walk(v, fn, k) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return type(node)(_walk(v, fn, None) for v in node)
    return node


def _grid(pcr: Sequence[float], voxel: Sequence[float]) -> list[int]:
    return [max(1, round((pcr[i + 3] - pcr[i]) / voxel[i])) for i in range(3)]


def retarget(config: str | Path | Any, out: str | Path, spec: SyntheticLidarSpec | None = None,
             point_cloud_range: Sequence[float] | None = None, max_voxels: int | None = None,
             samples_per_gpu: int | None = None, max_epochs: int | None = None,
             extra: dict[str, Any] | None = None, cache_dir: str | Path | None = None) -> Path:
    """Write ``config`` with its KITTI data replaced by the synthetic set to ``out`` (a ``.py`` file).

    Args:
        config: an mmdet3d config file or ``mmcv.Config``.
        out: the ``.py`` file to write.
        spec: the synthetic set (default :class:`SyntheticLidarSpec`'s 200 + 50 frames).
        point_cloud_range: ``[x0, y0, z0, x1, y1, z1]`` replacing the config's range everywhere, the voxel grid
            resized to match (``voxel_size`` kept).
        max_voxels: cap of ``voxel_layer.max_voxels`` (train and test).
        samples_per_gpu: train batch size.
        max_epochs: ``runner.max_epochs``; a ``RepeatDataset`` around the train set is kept.
        extra: top-level keys merged last (``mmcv.Config.merge_from_dict`` dotted keys allowed).
        cache_dir: the synthetic set's cache folder.

    Returns:
        ``out``.
    """
    from mmcv import Config

    cfg = config if isinstance(config, Config) else Config.fromfile(str(config))
    root = str(ensure_kitti_infos(spec, cache_dir)) + "/"
    data = cfg._cfg_dict.to_dict()

    def paths(key: str | None, node: Any) -> Any:
        if isinstance(node, str) and node.startswith(KITTI_PREFIX):
            return root + node[len(KITTI_PREFIX):]
        if isinstance(node, str) and node.startswith("./" + KITTI_PREFIX):
            return root + node[len(KITTI_PREFIX) + 2:]
        return node

    data = _walk(data, paths)
    if point_cloud_range is not None:
        data = _shrink(data, [float(v) for v in point_cloud_range])
    if max_voxels is not None:
        def cap(key: str | None, node: Any) -> Any:
            if isinstance(node, dict) and "max_voxels" in node:
                old = node["max_voxels"]
                node = dict(node, max_voxels=(tuple(min(int(v), max_voxels) for v in old)
                                              if isinstance(old, (list, tuple)) else min(int(old), max_voxels)))
            return node
        data = _walk(data, cap)
    loader = data.setdefault("data", {})
    loader["workers_per_gpu"] = 0
    if samples_per_gpu is not None:
        loader["samples_per_gpu"] = samples_per_gpu
    if max_epochs is not None:
        data["runner"] = dict(data.get("runner") or {"type": "EpochBasedRunner"}, max_epochs=max_epochs)
        data["runner"].pop("max_iters", None)
        if data["runner"].get("type") == "IterBasedRunner":
            data["runner"]["type"] = "EpochBasedRunner"
    for hook in ("load_from", "resume_from"):
        data[hook] = None
    new = Config(data)
    if extra:
        new.merge_from_dict(extra)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = new._cfg_dict.to_dict()
    source = f"# {getattr(config, 'filename', None) or config} on detlight's synthetic KITTI set\n"
    path.write_text(source + "".join(f"{k} = {pprint.pformat(v, width=118, sort_dicts=False)}\n"
                                     for k, v in body.items()), encoding="utf-8")
    return path


def _shrink(data: dict[str, Any], pcr: list[float]) -> dict[str, Any]:
    """Replace the point-cloud range everywhere and resize the voxel grids to it."""
    def fix(key: str | None, node: Any) -> Any:
        if not isinstance(node, dict):
            return node
        node = dict(node)
        if "point_cloud_range" in node:
            node["point_cloud_range"] = list(pcr)
        if "ranges" in node and isinstance(node["ranges"], (list, tuple)) and "Anchor" in str(node.get("type", "")):
            node["ranges"] = [[pcr[0], pcr[1], r[2], pcr[3], pcr[4], r[5]] for r in node["ranges"]]
        return node

    data = _walk(data, fix)
    model = data.get("model", {})
    voxel = (model.get("voxel_layer") or model.get("pts_voxel_layer") or {}).get("voxel_size")
    if voxel:
        nx, ny, nz = _grid(pcr, voxel)
        for key in ("middle_encoder", "pts_middle_encoder"):
            enc = model.get(key)
            if not isinstance(enc, dict):
                continue
            if "output_shape" in enc:
                enc["output_shape"] = [ny, nx]
            if "sparse_shape" in enc:
                enc["sparse_shape"] = [nz + 1, ny, nx]
        for key in ("grid_size",):
            for head in (model.get("pts_bbox_head") or {}, (model.get("train_cfg") or {}).get("pts") or {}):
                if key in head:
                    head[key] = [nx, ny, nz]
    return data
