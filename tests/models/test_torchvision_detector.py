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


def test_fpn_width_and_anchor_sizes_shape_the_model():
    model = torchvision_detector("fasterrcnn_resnet50_fpn", num_classes=4, backbone="resnet18", fpn_channels=32,
                                 anchor_sizes=[[16], [32], [64], [128], [256]], aspect_ratios=[1.0, 2.0])
    assert model.backbone.out_channels == 32 and model.backbone.fpn.layer_blocks[0].out_channels == 32
    assert model.roi_heads.box_head.fc6.in_features == 32 * 7 * 7  # the box head follows the FPN width
    assert model.rpn.anchor_generator.sizes == ((16.0,), (32.0,), (64.0,), (128.0,), (256.0,))
    assert model.rpn.head.cls_logits.out_channels == 2  # one size x two ratios per location
    retina = torchvision_detector("retinanet_resnet50_fpn", num_classes=3, backbone="resnet18", fpn_channels=32,
                                  anchor_sizes=[[s, s * 1.5] for s in (8, 16, 32, 64, 128)])
    assert retina.anchor_generator.sizes[0] == (8.0, 12.0)
    assert retina.head.classification_head.cls_logits.out_channels == 2 * 3 * 3  # anchors x classes
    retina.eval()
    with torch.no_grad():  # the head and the generator agree on anchors per location
        out = retina([torch.rand(3, 64, 64)])
    assert out[0]["boxes"].shape[1] == 4


def test_fpn_and_anchor_options_say_what_is_wrong():
    with pytest.raises(ConfigError, match=r"anchor_sizes` has 3 levels.*5 feature maps"):
        torchvision_detector("retinanet_resnet50_fpn", num_classes=3, backbone="resnet18",
                             anchor_sizes=[[16], [32], [64]])
    with pytest.raises(ConfigError, match=r"R-CNN families and RetinaNet; fcos_resnet50_fpn builds FCOS"):
        torchvision_detector("fcos_resnet50_fpn", num_classes=3, anchor_sizes=[[16]] * 5)
    with pytest.raises(ConfigError, match=r"same number of sizes.*\[1, 2\]"):
        torchvision_detector("retinanet_resnet50_fpn", num_classes=3, anchor_sizes=[[16], [32, 40]])
    with pytest.raises(ConfigError, match=r"anchor_sizes` to be one non-empty list of positive"):
        torchvision_detector("retinanet_resnet50_fpn", num_classes=3, anchor_sizes=[[16], [-1]])
    with pytest.raises(ConfigError, match=r"aspect_ratios` to be a non-empty list"):
        torchvision_detector("retinanet_resnet50_fpn", num_classes=3, aspect_ratios=[])
    with pytest.raises(ConfigError, match=r"fpn_channels` sizes the FPN that `backbone` builds"):
        torchvision_detector("retinanet_resnet50_fpn", num_classes=3, fpn_channels=64)
    with pytest.raises(ConfigError, match=r"fpn_channels` to be an int >= 1"):
        torchvision_detector("retinanet_resnet50_fpn", num_classes=3, backbone="resnet18", fpn_channels=0)
    with pytest.raises(ConfigError, match=r"trainable_backbone_layers` to be an int in \[0, 5\]"):
        torchvision_detector("retinanet_resnet50_fpn", num_classes=3, backbone="resnet18",
                             options={"trainable_backbone_layers": 7})


def test_trainable_backbone_layers_freeze_the_earlier_stages():
    model = torchvision_detector("retinanet_resnet50_fpn", num_classes=3, backbone="resnet18",
                                 options={"trainable_backbone_layers": 2})
    body = model.backbone.body
    assert not body.conv1.weight.requires_grad and not body.layer2[0].conv1.weight.requires_grad
    assert body.layer3[0].conv1.weight.requires_grad and body.layer4[0].conv1.weight.requires_grad


def test_builder_signature_carries_the_builders_own_defaults_only_while_parsing():
    import inspect

    from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_320_fpn, ssdlite320_mobilenet_v3_large

    from detlight.models.torchvision_factory import builder_signatures, effective_signature

    params = effective_signature(fasterrcnn_mobilenet_v3_large_320_fpn).parameters
    assert (params["min_size"].default, params["max_size"].default, params["rpn_score_thresh"].default) == (320, 640,
                                                                                                           0.05)
    assert params["weights_backbone"].default is None and params["box_nms_thresh"].default == 0.5  # class default
    assert "rpn_anchor_generator" not in params  # the builder passes it itself
    ssd = effective_signature(ssdlite320_mobilenet_v3_large).parameters
    assert ssd["score_thresh"].default == 0.001 and ssd["detections_per_img"].default == 300
    plain = inspect.signature(fasterrcnn_mobilenet_v3_large_320_fpn)
    with builder_signatures():
        assert inspect.signature(fasterrcnn_mobilenet_v3_large_320_fpn).parameters["min_size"].default == 320
    assert inspect.signature(fasterrcnn_mobilenet_v3_large_320_fpn) == plain  # torchvision's own again


def test_builder_as_class_path_keeps_its_defaults_through_the_cli(monkeypatch):
    from detlight.cli import build_cli

    def no_download(*args, **kwargs):
        raise AssertionError("a builder as class_path must not download weights unless the config asks")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    cli = build_cli(["--model.model.class_path=torchvision.models.detection.fasterrcnn_mobilenet_v3_large_320_fpn",
                     "--model.model.init_args.num_classes=5", "--model.model.init_args.box_score_thresh=0.2",
                     "--data.class_path=detlight.testing.BoringDataModule", "--trainer.logger=false"], run=False)
    model = cli.model.model
    assert model.transform.min_size == (320,) and model.transform.max_size == 640  # the builder's, not 800/1333
    assert model.rpn.score_thresh == 0.05 and model.roi_heads.score_thresh == 0.2  # the builder's, and the config's
    init = cli.config["model"]["model"]["init_args"]
    assert init["min_size"] == 320 and init["weights_backbone"] is None  # what config.yaml records


def test_builder_signatures_are_installed_only_for_configs_that_name_a_builder(tmp_path):
    from detlight.models.torchvision_factory import mentions_builders

    config = tmp_path / "c.yaml"
    config.write_text("model:\n  model:\n    class_path: torchvision.models.detection.fcos_resnet50_fpn\n")
    assert mentions_builders(["fit", "--config", str(config)]) and mentions_builders(["fit", f"--config={config}"])
    assert mentions_builders({"model": {"model": {"class_path": "torchvision.models.detection.ssd300_vgg16"}}})
    other = tmp_path / "d.yaml"
    other.write_text("model:\n  model:\n    class_path: detlight.models.CenterNet\n")
    assert not mentions_builders(["fit", "--config", str(other), "--trainer.max_epochs=1"])
    assert not mentions_builders(None)


def test_bridged_configs_leave_the_class_check_to_their_own_hook():
    """mmdet3d adds no NumClassCheckHook and PointRCNN's bbox head is class-agnostic (num_classes=1 for 3 classes):
    a datamodule flagged ``num_class_check_by_hook`` (OpenMMLab's) skips the module's own check."""

    class Agnostic(torch.nn.Module):
        num_classes = 1

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bbox_head = Agnostic()

    class Three(pl.LightningDataModule):
        CLASSES = ("Car", "Pedestrian", "Cyclist")

    module = DetectorModule(Net())
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.datamodule = Three()
    module.trainer = trainer
    with pytest.raises(ConfigError, match=r"`num_classes` \(1\) of Agnostic `bbox_head` does not match"):
        module._check_num_classes()
    Three.num_class_check_by_hook = True  # what OpenMMLabDataModule declares
    module._check_num_classes()


def test_train_overrides_run_at_each_epoch_start_as_in_mmcv(tmp_path):
    """mmdet's ResNet(norm_eval=True) puts BatchNorm in eval mode in its ``train()``: mmcv's runner calls
    ``model.train()`` at every train epoch, Lightning does not, so the module does (BatchNorm statistics frozen)."""
    from detlight.testing import BoringDataModule, BoringDetector, boring_trainer

    class NormEval(BoringDetector):
        modes: list[bool] = []

        def train(self, mode: bool = True):
            super().train(mode)
            if mode:
                self.norm.eval()  # norm_eval=True
            return self

        def forward_train(self, img, img_metas, **kwargs):
            NormEval.modes.append(self.norm.training)
            return super().forward_train(img, img_metas, **kwargs)

    model = NormEval()  # built in train mode: nn.Module's default, the BatchNorm included
    assert model.norm.training
    stats = model.norm.running_mean.clone()
    module = DetectorModule(model, optimizer={"type": "SGD", "lr": 0.1})
    boring_trainer(tmp_path, max_epochs=2, limit_val_batches=1).fit(module, datamodule=BoringDataModule())
    assert NormEval.modes and not any(NormEval.modes)  # every step, also after the validation between the epochs
    assert torch.equal(model.norm.running_mean, stats)  # frozen statistics, as the config asked
