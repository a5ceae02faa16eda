"""detlight.models.torchvision_detector: builder defaults kept, no downloads, dataset-sized num_classes."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch

from detlight.exceptions import ConfigError, ModelContractError
from detlight.models.torchvision_factory import torchvision_detector
from detlight.module import DetectorModule


def test_builder_keeps_its_own_defaults_and_adds_background():
    model = torchvision_detector("torchvision.models.detection.fasterrcnn_mobilenet_v3_large_320_fpn", num_classes=4)
    assert model.transform.min_size == (320,) and model.rpn.score_thresh == 0.05  # the builder's, not FasterRCNN's
    assert model.roi_heads.box_predictor.cls_score.out_features == 5  # 4 dataset classes + background


def test_no_weights_are_requested_by_default(monkeypatch):
    def no_download(*args, **kwargs):
        raise AssertionError("torchvision_detector must not download weights unless asked")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    model = torchvision_detector("retinanet_resnet50_fpn", num_classes=3, options={"min_size": 64, "max_size": 64})
    assert model.head.classification_head.num_classes == 3  # no background class in RetinaNet


def test_backbone_swap_builds_the_family_around_another_resnet():
    model = torchvision_detector("fcos_resnet50_fpn", num_classes=2, backbone="resnet18")
    assert type(model).__name__ == "FCOS" and model.backbone.body.layer4[0].conv1.in_channels == 256


def test_bad_builder_and_options_are_config_errors():
    with pytest.raises(ConfigError, match=r"Unknown torchvision detection builder `nope`.*fasterrcnn_resnet50_fpn"):
        torchvision_detector("nope", num_classes=3)
    with pytest.raises(ConfigError, match="num_classes"):
        torchvision_detector("fcos_resnet50_fpn", num_classes=0)
    with pytest.raises(ConfigError, match="not inside `options`"):
        torchvision_detector("fcos_resnet50_fpn", num_classes=2, options={"num_classes": 3})


class _Data(pl.LightningDataModule):
    CLASSES = ("a", "b", "c", "d")


def test_raw_builder_with_dataset_num_classes_is_told_about_the_background_class():
    from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_320_fpn

    module = DetectorModule(fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None, num_classes=4))
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.datamodule = _Data()  # what Trainer.fit sets before setup
    module.trainer = trainer
    with pytest.raises(ModelContractError, match=r"predicts 3 classes but the dataset has 4.*num_classes=5.*"
                                                 r"torchvision_detector"):
        module._check_num_classes()
