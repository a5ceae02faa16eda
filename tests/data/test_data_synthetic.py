from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import detlight.data.synthetic as synthetic
from detlight.data.synthetic import SHAPES, SyntheticCocoSpec, ensure_synthetic_coco
from detlight.exceptions import DatasetError


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _small(root: Path, **kw: object) -> SyntheticCocoSpec:
    params: dict[str, object] = {"root": str(root), "num_train": 6, "num_val": 3} | kw
    return SyntheticCocoSpec(**params)  # type: ignore[arg-type]


def test_same_seed_gives_byte_identical_files(tmp_path: Path) -> None:
    a = ensure_synthetic_coco(_small(tmp_path / "a"))
    b = ensure_synthetic_coco(_small(tmp_path / "b"))
    files_a, files_b = _files(a.root), _files(b.root)
    assert len(files_a) == 6 + 3 + 2 + 1  # images, two json files, the completion marker
    assert files_a == files_b
    assert a.root.stat().st_mode & 0o777 == 0o755


def test_different_seed_differs(tmp_path: Path) -> None:
    a = ensure_synthetic_coco(_small(tmp_path, seed=0))
    b = ensure_synthetic_coco(_small(tmp_path, seed=1))
    assert a.root != b.root
    assert a.train_ann.read_bytes() != b.train_ann.read_bytes()
    assert (a.train_img_prefix / "000000.png").read_bytes() != (b.train_img_prefix / "000000.png").read_bytes()


@pytest.mark.parametrize("change", [{"num_train": 7}, {"image_size": 96, "max_size": 40}, {"noise_std": 0.0},
                                    {"num_classes": 3}, {"seed": 5}])
def test_cache_key_covers_every_parameter_but_root(tmp_path: Path, change: dict[str, object]) -> None:
    base = _small(tmp_path)
    assert _small(tmp_path, **change).cache_dir() != base.cache_dir()
    assert _small(tmp_path / "elsewhere").cache_key() == base.cache_key()
    assert f"v{synthetic.GENERATOR_VERSION}" in base.cache_key()


def test_annotations_are_consistent_with_images(tmp_path: Path) -> None:
    spec = SyntheticCocoSpec(root=str(tmp_path), num_train=30, num_val=2, min_size=10, max_size=30)
    paths = ensure_synthetic_coco(spec)
    coco = json.loads(paths.train_ann.read_text())
    assert [c["name"] for c in coco["categories"]] == list(SHAPES) == list(paths.classes)
    sizes = {img["id"]: (img["width"], img["height"]) for img in coco["images"]}
    assert len(sizes) == 30
    per_image: dict[int, int] = {}
    for ann in coco["annotations"]:
        x, y, w, h = ann["bbox"]
        width, height = sizes[ann["image_id"]]
        assert 0 <= x and 0 <= y and x + w <= width and y + h <= height
        assert 0.5 * spec.min_size <= max(w, h) <= spec.max_size
        per_image[ann["image_id"]] = per_image.get(ann["image_id"], 0) + 1
    assert max(per_image.values()) <= spec.max_objects
    assert len({a["category_id"] for a in coco["annotations"]}) == len(SHAPES)
    img = Image.open(paths.train_img_prefix / coco["images"][0]["file_name"])
    assert img.size == (128, 128) and img.mode == "RGB"


def test_boxes_are_tight_on_clean_images(tmp_path: Path) -> None:
    # Without noise and clutter an object is one flat colour: it must touch all four box edges and appear nowhere
    # in the one-pixel ring just outside the box.
    spec = SyntheticCocoSpec(root=str(tmp_path), num_train=8, num_val=1, noise_std=0.0, clutter=0, empty_ratio=0.0)
    paths = ensure_synthetic_coco(spec)
    coco = json.loads(paths.train_ann.read_text())
    files = {img["id"]: img["file_name"] for img in coco["images"]}
    assert len(coco["annotations"]) >= 8
    for ann in coco["annotations"]:
        pixels = np.asarray(Image.open(paths.train_img_prefix / files[ann["image_id"]])).astype(np.int64)
        code = pixels[..., 0] * 65536 + pixels[..., 1] * 256 + pixels[..., 2]
        x, y, w, h = (int(v) for v in ann["bbox"])
        values, counts = np.unique(code[y:y + h, x:x + w], return_counts=True)
        is_obj = code == values[counts.argmax()]
        crop = is_obj[y:y + h, x:x + w]
        assert crop[0].any() and crop[-1].any() and crop[:, 0].any() and crop[:, -1].any()
        outer = is_obj[max(y - 1, 0):y + h + 1, max(x - 1, 0):x + w + 1].sum()
        assert outer == crop.sum()


def test_empty_ratio_one_gives_images_without_objects(tmp_path: Path) -> None:
    paths = ensure_synthetic_coco(_small(tmp_path, empty_ratio=1.0))
    coco = json.loads(paths.train_ann.read_text())
    assert len(coco["images"]) == 6 and coco["annotations"] == []


def test_failed_generation_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _small(tmp_path)
    real = synthetic._write_dataset

    def crash(spec_: SyntheticCocoSpec, out: Path) -> None:
        real(spec_, out)
        raise KeyboardInterrupt

    monkeypatch.setattr(synthetic, "_write_dataset", crash)
    with pytest.raises(KeyboardInterrupt):
        ensure_synthetic_coco(spec)
    assert not spec.cache_dir().exists()
    assert list(spec.cache_dir().parent.iterdir()) == []  # no temp folder left behind
    monkeypatch.setattr(synthetic, "_write_dataset", real)
    assert ensure_synthetic_coco(spec).train_ann.is_file()


def test_concurrent_writer_finishing_first_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _small(tmp_path)
    real = synthetic._write_dataset
    calls = []

    def racing(spec_: SyntheticCocoSpec, out: Path) -> None:
        calls.append(out)
        if len(calls) == 1:  # another process completes the same dataset while we are still writing ours
            ensure_synthetic_coco(spec_)
        real(spec_, out)

    monkeypatch.setattr(synthetic, "_write_dataset", racing)
    paths = ensure_synthetic_coco(spec)
    assert len(calls) == 2 and paths.root == spec.cache_dir()
    assert sorted(p.name for p in spec.cache_dir().parent.iterdir()) == [spec.cache_key()]
    assert json.loads(paths.val_ann.read_text())["images"]


def test_folder_without_marker_is_refused(tmp_path: Path) -> None:
    spec = _small(tmp_path)
    spec.cache_dir().mkdir(parents=True)
    with pytest.raises(DatasetError, match=spec.cache_key()):
        ensure_synthetic_coco(spec)


def test_default_root_comes_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DETLIGHT_CACHE", str(tmp_path))
    assert SyntheticCocoSpec().cache_dir().parent == tmp_path / "synthetic_coco"
    monkeypatch.delenv("DETLIGHT_CACHE")
    assert synthetic.default_cache_root() == Path(os.path.expanduser("~")) / ".cache" / "detlight"


@pytest.mark.parametrize(("field", "value"), [("num_classes", 5), ("num_train", 0), ("max_size", 200),
                                              ("empty_ratio", 1.5)])
def test_bad_spec_names_the_key(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"synthetic.{field}"):
        SyntheticCocoSpec(**{field: value})  # type: ignore[arg-type]
