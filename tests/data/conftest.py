"""Fixtures for the data tests: tiny hand-written COCO files and a tiny synthetic set."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from detlight.data.synthetic import SyntheticCocoPaths, SyntheticCocoSpec, ensure_synthetic_coco

WriteCoco = Callable[..., Path]


def _default_coco() -> dict[str, Any]:
    return {
        "images": [
            {"id": 1, "file_name": "a.png", "width": 40, "height": 30},
            {"id": 2, "file_name": "b.png", "width": 40, "height": 30},
            {"id": 3, "file_name": "empty.png", "width": 40, "height": 30},
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 7, "bbox": [2, 3, 10, 5], "area": 50, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 3, "bbox": [20, 10, 8, 8], "area": 64, "iscrowd": 0},
            {"id": 3, "image_id": 2, "category_id": 3, "bbox": [0, 0, 40, 30], "area": 1200, "iscrowd": 0},
            {"id": 4, "image_id": 2, "category_id": 7, "bbox": [5, 5, 5, 5], "area": 25, "iscrowd": 1},
        ],
        # deliberately not sorted by id: labels must follow the id order (3 -> 0, 7 -> 1)
        "categories": [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}],
    }


@pytest.fixture
def coco_dict() -> dict[str, Any]:
    """A fresh, valid COCO dict: 3 images (one without boxes), 2 categories, one crowd box."""
    return _default_coco()


@pytest.fixture
def write_coco(tmp_path: Path) -> WriteCoco:
    """Write ``coco`` (dict or raw text) to ``tmp_path/ann.json`` plus one PNG per image entry; return the json path."""

    def write(coco: dict[str, Any] | str, images: bool = True) -> Path:
        ann = tmp_path / "ann.json"
        ann.write_text(coco if isinstance(coco, str) else json.dumps(coco))
        if images and isinstance(coco, dict):
            for i, img in enumerate(coco.get("images", [])):
                pixels = np.full((img["height"], img["width"], 3), (10 * i, 100, 200), dtype=np.uint8)
                Image.fromarray(pixels).save(tmp_path / img["file_name"])
        return ann

    return write


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory: pytest.TempPathFactory) -> tuple[SyntheticCocoSpec, SyntheticCocoPaths]:
    """A 12 + 5 image synthetic set, generated once per session."""
    spec = SyntheticCocoSpec(root=str(tmp_path_factory.mktemp("cache")), num_train=12, num_val=5)
    return spec, ensure_synthetic_coco(spec)


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Run like a DataLoader worker (one intra-op thread): small-tensor ops crawl when a shared CPU is contended."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
