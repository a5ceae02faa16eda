from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from jsonargparse import ArgumentParser

from detlight.data.coco import DatasetError
from detlight.data.datamodule import CocoSplit, DetDataModule
from detlight.data.sampler import DetSampler
from detlight.data.synthetic import SyntheticCocoPaths, SyntheticCocoSpec

Tiny = tuple[SyntheticCocoSpec, SyntheticCocoPaths]


def _dm(tiny: Tiny, **kw: Any) -> DetDataModule:
    params: dict[str, Any] = {"synthetic": tiny[0], "samples_per_gpu": 4, "workers_per_gpu": 0,
                              "val_samples_per_gpu": 2} | kw
    return DetDataModule(**params)


def test_loaders_yield_the_documented_batch_layout(tiny_synthetic: Tiny) -> None:
    dm = _dm(tiny_synthetic)
    dm.prepare_data()
    dm.setup("fit")
    assert dm.CLASSES == ("circle", "square", "triangle", "cross") and dm.num_classes == 4
    train = list(dm.train_dataloader())
    assert len(train) == -(-len(dm.datasets["train"]) // 4) and len(dm.datasets["train"]) >= 9
    batch = train[0]
    assert set(batch) == {"img", "img_metas", "gt_bboxes", "gt_labels"}
    assert batch["img"].shape == (4, 3, 128, 128) and batch["img"].dtype == torch.float32
    for meta, boxes, labels in zip(batch["img_metas"], batch["gt_bboxes"], batch["gt_labels"]):
        assert {"filename", "image_id", "ori_shape", "img_shape", "pad_shape", "scale_factor", "flip",
                "flip_direction"} <= set(meta)
        assert meta["pad_shape"] == (128, 128, 3) and isinstance(meta["image_id"], int)
        assert boxes.dtype == torch.float32 and boxes.shape[1] == 4 and labels.dtype == torch.int64
        assert len(boxes) == len(labels) > 0 and int(labels.max()) < 4
    val = list(dm.val_dataloader())
    ids = [m["image_id"] for b in val for m in b["img_metas"]]
    assert ids == list(range(1, 6))  # test mode keeps every image, in order
    assert all(m["flip"] is False for b in val for m in b["img_metas"])


def test_train_order_is_shuffled_per_epoch_and_seeded(tiny_synthetic: Tiny) -> None:
    def order(seed: int, epoch: int) -> list[int]:
        dm = _dm(tiny_synthetic, seed=seed, samples_per_gpu=1)
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(epoch)  # type: ignore[attr-defined]
        return [b["img_metas"][0]["image_id"] for b in loader]

    first = order(0, 0)
    assert first == order(0, 0) and first != order(0, 1) and first != order(1, 0)
    assert sorted(first) != first and sorted(first) == sorted(order(0, 1))


def test_sampler_uses_the_trainer_rank(tiny_synthetic: Tiny) -> None:
    dm = _dm(tiny_synthetic, samples_per_gpu=2)
    dm.trainer = SimpleNamespace(global_rank=1, world_size=2)  # type: ignore[assignment]
    loader = dm.train_dataloader()
    sampler = loader.sampler
    assert isinstance(sampler, DetSampler) and (sampler.rank, sampler.world_size) == (1, 2)
    assert dm.train_sampler is sampler and len(loader) == -(-len(sampler) // 2)
    val_sampler = dm.val_dataloader().sampler  # type: ignore[union-attr]
    assert list(val_sampler) == [1, 3, 0]  # 5 val images, rank 1 of 2, padded like DistributedSampler


@pytest.mark.parametrize(("kwargs", "key"), [({"samples_per_gpu": 0}, "data.samples_per_gpu"),
                                             ({"samples_per_gpu": -2}, "data.samples_per_gpu"),
                                             ({"val_samples_per_gpu": 0}, "data.val_samples_per_gpu"),
                                             ({"workers_per_gpu": -1}, "data.workers_per_gpu")])
def test_bad_loader_settings_name_the_key(kwargs: dict[str, int], key: str) -> None:
    with pytest.raises(ValueError, match=key):
        DetDataModule(**kwargs)  # type: ignore[arg-type]


def test_setup_works_without_prepare_data_and_classes_are_cheap(tmp_path: Path) -> None:
    spec = SyntheticCocoSpec(root=str(tmp_path), num_train=3, num_val=2, num_classes=2)
    dm = DetDataModule(synthetic=spec, workers_per_gpu=0)
    assert dm.num_classes == 2 and not spec.cache_dir().exists()  # known without generating anything
    dm.setup("validate")
    assert spec.cache_dir().is_dir() and set(dm.datasets) == {"val"}
    assert len(dm.datasets["val"]) == 2 and dm.datasets["val"].test_mode


def test_default_is_the_synthetic_set(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DETLIGHT_CACHE", str(tmp_path))
    dm = DetDataModule()
    assert dm.synthetic == SyntheticCocoSpec()
    assert dm.synthetic.cache_dir().parent == tmp_path / "synthetic_coco" and dm.num_classes == 4


def test_explicit_splits(write_coco: Callable[..., Path], coco_dict: dict) -> None:
    ann = write_coco(coco_dict)
    split = CocoSplit(str(ann), str(ann.parent))
    dm = DetDataModule(train=split, val=split, workers_per_gpu=0, samples_per_gpu=2)
    assert dm.synthetic is None and dm.CLASSES == ("cat", "dog")  # read from the json before setup
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 2 and len(dm.datasets["val"]) == 3
    with pytest.raises(DatasetError, match="data.test"):
        dm.test_dataloader()
    sub = CocoSplit(str(ann), str(ann.parent), classes=["dog"])
    assert DetDataModule(train=sub, workers_per_gpu=0).num_classes == 1
    no_val = DetDataModule(train=split, workers_per_gpu=0)
    assert no_val.val_dataloader() == []
    mismatched = DetDataModule(train=split, val=sub, workers_per_gpu=0)
    with pytest.raises(DatasetError, match="disagree on their classes"):
        mismatched.setup("fit")


def test_workers_and_persistent_workers(tiny_synthetic: Tiny) -> None:
    dm = _dm(tiny_synthetic, workers_per_gpu=1, persistent_workers=True)
    loader = dm.val_dataloader()
    assert loader.num_workers == 1 and loader.persistent_workers  # type: ignore[union-attr]
    ids = [m["image_id"] for b in loader for m in b["img_metas"]]
    assert ids == list(range(1, 6))
    assert not _dm(tiny_synthetic, persistent_workers=True).val_dataloader().persistent_workers  # type: ignore


def test_signature_parses_with_jsonargparse(tmp_path: Path) -> None:
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(DetDataModule, "data")
    cfg = parser.parse_args([
        "--data.samples_per_gpu=3", f"--data.synthetic.root={tmp_path}", "--data.synthetic.num_train=5",
        "--data.pipeline.img_scale=[96, 96]", "--data.pipeline.flip_ratio=0.0", "--data.workers_per_gpu=0",
    ])
    dm = parser.instantiate(cfg).data
    assert isinstance(dm, DetDataModule) and dm.samples_per_gpu == 3
    assert dm.synthetic is not None and dm.synthetic.num_train == 5 and dm.pipeline.img_scale == (96, 96)


class _Recorder(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.seen: dict[str, list[list[int]]] = {"train": [], "val": []}

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        self.seen["train"].append([m["image_id"] for m in batch["img_metas"]])
        return (self.weight - batch["img"].mean()) ** 2

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self.seen["val"].append([m["image_id"] for m in batch["img_metas"]])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_trainer_sets_the_sampler_epoch(tiny_synthetic: Tiny) -> None:
    model, dm = _Recorder(), _dm(tiny_synthetic, samples_per_gpu=6)
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", devices=1, use_distributed_sampler=False, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0)
    trainer.fit(model, datamodule=dm)
    epochs = [sum(model.seen["train"][i:i + 2], []) for i in (0, 2)]
    assert len(model.seen["train"]) == 4 and epochs[0] != epochs[1] and sorted(epochs[0]) == sorted(epochs[1])
    assert model.seen["val"] == [[1, 2], [3, 4], [5]] * 2
    assert dm.train_sampler is not None and dm.train_sampler.epoch == 1


def test_synthetic_json_is_what_the_datamodule_reads(tiny_synthetic: Tiny) -> None:
    _, paths = tiny_synthetic
    dm = _dm(tiny_synthetic)
    split = dm.split("val")
    assert split is not None and Path(split.ann_file) == paths.val_ann
    assert len(json.loads(paths.val_ann.read_text())["images"]) == 5
