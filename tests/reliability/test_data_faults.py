"""Per-image data errors read the same with and without DataLoader workers: one DatasetError naming the file, the
dataset index and the reason; odd images (16-bit, huge) are handled or refused clearly; a dead worker is explained."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from detlight.data.coco import CocoDataset
from detlight.data.datamodule import CocoSplit, DetDataModule
from detlight.data.loader import DetDataLoader
from detlight.data.synthetic import SyntheticCocoSpec, ensure_synthetic_coco
from detlight.data.transforms import LoadImage, PipelineConfig
from detlight.exceptions import DataLoaderWorkerError, DatasetError


def _split(tmp: Path, n: int = 4, size: int = 32) -> tuple[Path, Path]:
    img_dir = tmp / "imgs"
    img_dir.mkdir()
    for i in range(n):
        Image.fromarray(np.full((size, size, 3), 40 * i, dtype=np.uint8)).save(img_dir / f"{i}.png")
    coco = {
        "images": [{"id": i + 1, "file_name": f"{i}.png", "width": size, "height": size} for i in range(n)],
        "annotations": [{"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [2, 2, 10, 10], "area": 100,
                         "iscrowd": 0} for i in range(n)],
        "categories": [{"id": 1, "name": "thing"}],
    }
    ann = tmp / "ann.json"
    ann.write_text(json.dumps(coco))
    return ann, img_dir


def _break(img_dir: Path, case: str) -> str:
    """Damage image 2 of the split as ``case`` says; returns a fragment the error must contain."""
    target = img_dir / "2.png"
    if case == "missing":
        target.unlink()
        return "does not exist"
    if case == "random_bytes":
        target.write_bytes(np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8).tobytes())
        return "cannot be read as an image"
    if case == "zero_bytes":
        target.write_bytes(b"")
        return "cannot be read as an image"
    if case == "truncated_png":
        Image.fromarray(np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(target)
        target.write_bytes(target.read_bytes()[:200])
        return "cannot be read as an image"
    if case == "truncated_jpeg":
        buf = img_dir / "tmp.jpg"
        Image.fromarray(np.random.default_rng(2).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buf, "JPEG")
        target.write_bytes(buf.read_bytes()[:150])
        return "cannot be read as an image"
    if case == "wrong_size":
        Image.new("RGB", (20, 32)).save(target)
        return "is 20x32 but its annotation says 32x32"
    if case == "is_a_folder":
        target.unlink()
        target.mkdir()
        return "is a directory"
    raise AssertionError(case)


CASES = ["missing", "random_bytes", "zero_bytes", "truncated_png", "truncated_jpeg", "wrong_size", "is_a_folder"]


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("case", CASES)
def test_per_image_error_is_the_original_dataset_error_with_workers(tmp_path: Path, case: str, workers: int) -> None:
    ann, img_dir = _split(tmp_path)
    expected = _break(img_dir, case)
    data = DetDataModule(test=CocoSplit(str(ann), str(img_dir)), pipeline=PipelineConfig(img_scale=(32, 32)),
                         samples_per_gpu=1, workers_per_gpu=workers, val_samples_per_gpu=1)
    loader = data.test_dataloader()  # dataset order: image 2 is batch 2
    with pytest.raises(DatasetError) as info:
        for _ in loader:
            pass
    message = str(info.value)
    assert type(info.value) is DatasetError
    assert message.startswith(f"Image file {img_dir / '2.png'}"), message
    assert expected in message and "dataset index 2" in message and str(ann) in message, message
    assert "Caught" not in message and "Traceback" not in message and "\n" not in message, message
    if workers:
        assert "DataLoader worker" in message


def test_unreadable_folder_is_one_line_with_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ann, img_dir = _split(tmp_path)
    if os.geteuid() != 0:
        img_dir.chmod(0)  # a real unreadable folder; root reads it anyway, so it is simulated below
    real_open = Image.open

    def denied(fp, *args, **kwargs):  # type: ignore[no-untyped-def]
        if str(fp).startswith(str(img_dir)):
            raise PermissionError(13, "Permission denied", str(fp))
        return real_open(fp, *args, **kwargs)

    monkeypatch.setattr(Image, "open", denied)  # inherited by the forked workers
    data = DetDataModule(test=CocoSplit(str(ann), str(img_dir)), samples_per_gpu=1, workers_per_gpu=2)
    try:
        with pytest.raises(DatasetError, match="permission denied") as info:
            next(iter(data.test_dataloader()))
    finally:
        img_dir.chmod(0o755)
    assert "dataset index 0" in str(info.value) and "Caught" not in str(info.value)


def test_16_bit_png_is_scaled_to_8_bits_like_mmcv(tmp_path: Path) -> None:
    values = np.array([[0, 255, 256, 32768], [40000, 65535, 1000, 512]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I")
    out = LoadImage(channel_order="rgb")({"filename": str(path)})["img"]
    expected = torch.from_numpy((values >> 8).astype(np.uint8))
    assert out.dtype == torch.uint8 and out.shape == (3, 2, 4)
    assert torch.equal(out[0], expected) and torch.equal(out[1], expected) and torch.equal(out[2], expected)


def test_float_image_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "float.tif"
    Image.fromarray(np.ones((4, 4), dtype=np.float32)).save(path)
    with pytest.raises(DatasetError, match="floating-point pixels"):
        LoadImage()({"filename": str(path)})


def test_decompression_bomb_is_one_dataset_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "huge.png"
    Image.new("RGB", (64, 64)).save(path)
    # Stands in for a 16000 x 16000 file: PIL raises above twice MAX_IMAGE_PIXELS.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(DatasetError, match="too large to decode safely") as info:
        LoadImage()({"filename": str(path)})
    assert str(path) in str(info.value) and info.value.__cause__ is None


def test_synthetic_cache_without_marker_is_one_cli_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from detlight.cli import main

    spec = SyntheticCocoSpec(root=str(tmp_path / "cache"), num_train=2, num_val=1, image_size=32, max_size=16)
    folder = ensure_synthetic_coco(spec).train_ann.parents[1]
    (folder / ".complete").unlink()  # a copy made without the hidden marker
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(Path(__file__).resolve().parents[2] / "configs/quickstart.yaml"),
              f"--data.init_args.synthetic.root={spec.root}", "--data.init_args.synthetic.num_train=2",
              "--data.init_args.synthetic.num_val=1", "--data.init_args.synthetic.image_size=32",
              "--data.init_args.synthetic.max_size=16", f"--trainer.default_root_dir={tmp_path / 'wd'}",
              "--trainer.max_epochs=1"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert "has no .complete marker" in err and "Traceback" not in err, err


class _DiesAt:
    """A dataset whose worker is SIGKILLed (as by the out-of-memory killer) on index ``at``."""

    def __init__(self, at: int) -> None:
        self.at = at

    def __len__(self) -> int:
        return 8

    def __getitem__(self, idx: int) -> torch.Tensor:
        if idx == self.at:
            os.kill(os.getpid(), signal.SIGKILL)
        return torch.tensor(idx)


def test_worker_killed_by_the_oom_killer_names_cause_and_remedy() -> None:
    loader = DetDataLoader(_DiesAt(3), batch_size=2, num_workers=2)  # type: ignore[arg-type]
    with pytest.raises(DataLoaderWorkerError) as info:
        list(loader)
    message = str(info.value)
    assert "out-of-memory killer" in message and "`data.workers_per_gpu`, now 2" in message, message
    assert "`data.samples_per_gpu`, now 2" in message, message


def test_worker_errors_without_detlight_kind_keep_their_traceback() -> None:
    class Broken:
        def __len__(self) -> int:
            return 2

        def __getitem__(self, idx: int) -> None:
            raise KeyError("a bug in user code")

    with pytest.raises(KeyError, match="Caught KeyError in DataLoader worker process"):
        list(DetDataLoader(Broken(), batch_size=1, num_workers=1))  # type: ignore[arg-type]


def test_train_dataset_keeps_working_after_the_wrapper(tmp_path: Path) -> None:
    ann, img_dir = _split(tmp_path, n=2)
    ds = CocoDataset(str(ann), str(img_dir), pipeline=LoadImage())
    assert ds[1]["img"].shape == (3, 32, 32)


def test_cli_with_workers_prints_the_worker_error_as_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from detlight.cli import main

    monkeypatch.chdir(tmp_path)
    ann, img_dir = _split(tmp_path)
    _break(img_dir, "truncated_png")
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(Path(__file__).resolve().parents[2] / "configs/quickstart.yaml"),
              f"--data.init_args.train.ann_file={ann}", f"--data.init_args.train.img_prefix={img_dir}",
              f"--data.init_args.val.ann_file={ann}", f"--data.init_args.val.img_prefix={img_dir}",
              "--data.init_args.samples_per_gpu=1", "--data.init_args.workers_per_gpu=2",
              "--data.init_args.pipeline.img_scale=[32, 32]", "--model.model.init_args.num_classes=1",
              f"--trainer.default_root_dir={tmp_path / 'wd'}", f"--trainer.logger.init_args.save_dir={tmp_path}",
              "--trainer.max_epochs=1", "--trainer.limit_val_batches=0"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    [line] = [x for x in err.splitlines() if x.startswith("detlight: error:")]
    assert f"Image file {img_dir / '2.png'} cannot be read" in line and "dataset index 2" in line, err
    assert "Caught" not in err and "Traceback" not in err, err
