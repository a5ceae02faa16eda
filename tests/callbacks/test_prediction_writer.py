"""PredictionWriter: `predict` leaves COCO results json (2D) / KITTI label files (3D) in the run directory."""

from __future__ import annotations

import json

import lightning.pytorch as pl
import torch
from torch import nn

from detlight.callbacks.prediction_writer import PredictionWriter
from detlight.data.datamodule import DetDataModule
from detlight.data.synthetic import SyntheticCocoSpec
from detlight.data.transforms import PipelineConfig
from detlight.module import DetectorModule


class _OneBox(nn.Module):
    """A torchvision-contract detector that predicts one box of class 1 (0-based) with a mask, per image."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))

    def forward(self, images, targets=None):
        masks = torch.zeros(1, 1, *images[0].shape[-2:])
        masks[..., 2:10, 4:12] = 1.0
        return [{"boxes": torch.tensor([[4.0, 2.0, 12.0, 10.0]]), "scores": torch.tensor([0.9]),
                 "labels": torch.tensor([1]), "masks": masks} for _ in images]


def test_predict_writes_coco_results_json_by_default(tmp_path):
    spec = SyntheticCocoSpec(root=str(tmp_path / "data"), num_train=2, num_val=3, image_size=32, min_size=4,
                             max_size=12)
    data = DetDataModule(synthetic=spec, pipeline=PipelineConfig(img_scale=(32, 32)), samples_per_gpu=2,
                         workers_per_gpu=0, val_samples_per_gpu=2)
    trainer = pl.Trainer(default_root_dir=str(tmp_path), logger=False, enable_progress_bar=False,
                         use_distributed_sampler=False)
    trainer.predict(DetectorModule(_OneBox()), datamodule=data, return_predictions=False)
    writers = [cb for cb in trainer.callbacks if isinstance(cb, PredictionWriter)]
    assert len(writers) == 1  # added by DetectorModule.configure_callbacks for predict runs
    results = json.loads((tmp_path / "predictions" / "results.bbox.json").read_text())
    assert sorted(r["image_id"] for r in results) == [1, 2, 3]
    assert {r["category_id"] for r in results} == {2}  # label 1 -> the second category id of the synthetic set
    assert results[0]["bbox"] == [4.0, 2.0, 8.0, 8.0] and results[0]["score"] == 0.9
    segm = json.loads((tmp_path / "predictions" / "results.segm.json").read_text())
    assert len(segm) == 3 and segm[0]["segmentation"]["size"] == [32, 32]


def test_3d_predictions_become_kitti_label_files(tmp_path):
    writer = PredictionWriter(output=str(tmp_path / "out"), class_names=["Pedestrian", "Cyclist", "Car"])

    class _Trainer:
        global_rank, world_size, log_dir, default_root_dir, datamodule = 0, 1, None, str(tmp_path), None

    det = {"boxes_3d": torch.tensor([[10.0, 1.0, -1.0, 4.0, 1.8, 1.5, 0.3]]), "scores_3d": torch.tensor([0.8]),
           "labels_3d": torch.tensor([2]), "img_meta": {"sample_idx": 7}}
    writer.write_on_batch_end(_Trainer(), None, [det], None, None, 0, 0)  # type: ignore[arg-type]
    writer.on_predict_epoch_end(_Trainer(), None)  # type: ignore[arg-type]
    line = (tmp_path / "out" / "000007.txt").read_text().split()
    assert line[0] == "Car" and len(line) == 16 and float(line[-1]) == 0.8
    assert [float(v) for v in line[11:14]] == [10.0, 1.0, -1.0]  # LiDAR frame without a calib file
    assert "LiDAR" in (tmp_path / "out" / "README.txt").read_text()
