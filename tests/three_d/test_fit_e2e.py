"""End-to-end ``detlight fit`` smoke run of the 3D stack on a tiny synthetic set."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from detlight.cli import DetLightCLI
from detlight.data.synthetic_lidar import SyntheticLidarSpec

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "pointpillars_synthetic.yaml"


@pytest.mark.slow
def test_fit_pointpillars_config_tiny(tmp_path: Path, tiny_cache: Path, tiny_kitti: Path,
                                      tiny_spec: SyntheticLidarSpec) -> None:
    cfg = yaml.safe_load(CONFIG.read_text())
    cfg["trainer"].update(max_epochs=2, default_root_dir=str(tmp_path / "wd"), enable_progress_bar=False)
    cfg["trainer"]["logger"]["init_args"]["save_dir"] = str(tmp_path / "tb")
    cfg["trainer"]["callbacks"] = [c for c in cfg["trainer"]["callbacks"] if "TQDMProgressBar" not in c["class_path"]]
    model = cfg["model"]["model"]["init_args"]
    model.update(backbone_channels=[8, 16], backbone_layers=[0, 1], neck_channels=[8, 8], head_channels=8,
                 pillar_channels=8)
    data = cfg["data"]["init_args"]
    data.update(synthetic={k: list(v) if isinstance(v, tuple) else v for k, v in vars(tiny_spec).items()},
                cache_dir=str(tiny_cache), samples_per_gpu=3, val_samples_per_gpu=3)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))

    cli = DetLightCLI(args=["fit", "--config", str(path)])

    trainer = cli.trainer
    assert trainer.current_epoch == 2 and trainer.global_step == 4  # 6 frames / 3 per batch x 2 epochs
    logged = trainer.callback_metrics
    assert {"val/mAP", "val/mAP_Car", "val/AP_Car_dist_4"} <= set(logged)
    assert 0.0 <= float(logged["val/mAP"]) <= 1.0
    ckpts = sorted(p.name for p in tmp_path.rglob("*.ckpt"))  # in the run folder: <logger dir>/version_0/checkpoints
    assert {"epoch_1.ckpt", "epoch_2.ckpt"} <= set(ckpts), ckpts
    events = list((tmp_path / "tb").rglob("events.out.tfevents.*"))
    assert events and any(b"val/bev/" in e.read_bytes() for e in events)
