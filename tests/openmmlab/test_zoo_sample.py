"""20 of mmdet 2.28.2's own configs, one per family, each pointed at the synthetic COCO set by
``benchmarks/openmmlab_zoo.py`` and run for 2 train iterations and 1 val step through ``detlight fit``
(:func:`run_one`, the zoo's own function; needs the OpenMMLab venv, 2-30 s per config on 2 cores). RepPoints and
RPN need :mod:`detlight.openmmlab.legacy` (a ``device='cuda'`` default, a ragged numpy array).

Run: ``.venv-openmmlab/bin/python -m pytest -q -m openmmlab tests/openmmlab/test_zoo_sample.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _zoo import zoo_module

pytestmark = [pytest.mark.openmmlab, pytest.mark.timeout(1200)]  # builds mmdet models: slow on a loaded host

mmdet = pytest.importorskip("mmdet")


ZOO = zoo_module()


@pytest.mark.parametrize("config", ZOO.REPRESENTATIVE)
def test_mmdet_config_trains_two_iterations_and_evaluates(config: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    work = tmp_path_factory.mktemp("zoo") / Path(config).stem
    result = ZOO.run_one(ZOO.config_root() / config, work)
    assert result["status"] == "ok", result["reason"]
    adapted = (work / f"{Path(config).stem}.py").read_text()
    assert "CocoDataset" in adapted  # the overrides the docstring lists (RPN has no num_classes to set)
    assert "'num_classes': 4" in adapted or "num_classes" not in adapted


def test_adapt_points_wrapped_datasets_at_the_synthetic_set(tmp_path: Path) -> None:
    cfg = ZOO.adapt(ZOO.config_root() / "yolox" / "yolox_tiny_8x8_300e_coco.py", tmp_path / "data", max_side=64)
    train = cfg["data"]["train"]
    assert train["type"] == "MultiImageMixDataset"  # the wrapper is the config's own
    inner = train["dataset"]
    assert inner["type"] == "CocoDataset" and Path(inner["ann_file"]).is_file()
    assert inner["classes"] == ("circle", "square", "triangle", "cross")
    mosaic = next(t for t in train["pipeline"] if t["type"] == "Mosaic")
    assert max(mosaic["img_scale"]) <= 64  # (416, 416) scaled down
    assert cfg["model"]["bbox_head"]["num_classes"] == 4
    assert cfg["runner"] == {"type": "EpochBasedRunner", "max_epochs": 1}


def test_leaf_configs_skip_base_and_common_fragments() -> None:
    leaves = ZOO.leaf_configs()
    assert len(leaves) > 600
    assert not [p for p in leaves if "_base_" in p.parts or "common" in p.parts]
    sample = ZOO.sample_configs()
    assert len({p.parent.name for p in sample}) == len(sample)  # one per family folder
