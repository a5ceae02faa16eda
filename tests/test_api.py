"""The Python API builds what the CLI builds, runs twice in one process, and the json-log curves read back."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

import detlight.api as api
from detlight.cli import main
from detlight.exceptions import ConfigError, UsageError
from detlight.plotting import find_json_log, load_curves, plot_curves

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = str(ROOT / "configs/quickstart.yaml")


def tiny(root: Path, **extra: object) -> dict[str, object]:
    """Settings that make the quickstart config run a few batches in seconds."""
    return {
        "data.init_args.synthetic.num_train": 8, "data.init_args.synthetic.num_val": 4,
        "data.init_args.samples_per_gpu": 4, "data.init_args.val_samples_per_gpu": 4,
        "data.init_args.workers_per_gpu": 0, "data.init_args.persistent_workers": False,
        "trainer.max_epochs": 1, "trainer.limit_train_batches": 2,
        "trainer.default_root_dir": str(root), "trainer.logger.init_args.save_dir": str(root), **extra,
    }


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------- overrides
@pytest.mark.parametrize(("overrides", "expected"), [
    (None, []),
    ({"trainer.max_epochs": 2}, ["--trainer.max_epochs=2"]),
    ({"trainer": {"max_epochs": 2, "logger": False}}, ["--trainer.max_epochs=2", "--trainer.logger=false"]),
    ({"model.optimizer": {"type": "SGD", "lr": 0.1}}, ['--model.optimizer={"type": "SGD", "lr": 0.1}']),
    ({"trainer": {"logger": {"class_path": "x.Y"}}}, ['--trainer.logger={"class_path": "x.Y"}']),
    ({"trainer.callbacks+": {"class_path": "a.B"}}, ['--trainer.callbacks+={"class_path": "a.B"}']),
    ({"ckpt_path": None, "data.init_args.seed": "3"}, ["--ckpt_path=null", "--data.init_args.seed=3"]),
    (["--trainer.max_epochs=3"], ["--trainer.max_epochs=3"]),
])
def test_overrides_become_cli_arguments(overrides, expected):
    assert api.overrides_to_args(overrides) == expected


@pytest.mark.parametrize("bad", ["--trainer.max_epochs=2", {1: 2}, {"a": object()}])
def test_bad_overrides_are_rejected(bad):
    with pytest.raises(TypeError, match="override|Override"):
        api.overrides_to_args(bad)


def test_unknown_key_raises_value_error_naming_it(tmp_path):
    with pytest.raises(ValueError, match="optimiser"):
        api.fit(QUICKSTART, {"model.optimiser.lr": 0.1})


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        api.fit(str(tmp_path / "nope.yaml"))


# ---------------------------------------------------------------------------------------------- parity with the CLI
def test_fit_saves_the_same_config_as_the_cli(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    overrides = tiny(tmp_path)
    main(["fit", "--config", QUICKSTART, *api.overrides_to_args(overrides)])
    run = api.fit(QUICKSTART, overrides)
    cli_yaml = (tmp_path / "quickstart" / "version_0" / "config.yaml").read_text()
    api_yaml = (Path(run.log_dir) / "config.yaml").read_text()
    assert run.log_dir == str(tmp_path / "quickstart" / "version_1")
    assert api_yaml == cli_yaml
    assert "limit_train_batches: 2" in api_yaml


def test_nested_and_dotted_overrides_build_the_same_config(tmp_path):
    dotted = api.validate(QUICKSTART, tiny(tmp_path))
    nested = api.validate(QUICKSTART, {"trainer": {"limit_train_batches": 2, "max_epochs": 1},
                                       **{k: v for k, v in tiny(tmp_path).items() if not k.startswith("trainer.")},
                                       "trainer.default_root_dir": str(tmp_path),
                                       "trainer.logger.init_args.save_dir": str(tmp_path)})
    assert dotted.cli.parser.dump(dotted.cli.config) == nested.cli.parser.dump(nested.cli.config)


# ---------------------------------------------------------------------------------------------- running
class _Counter(Callback):
    def __init__(self) -> None:
        self.batches = 0

    def on_train_batch_end(self, *args: object) -> None:
        self.batches += 1


def _open_files_under(root: Path) -> list[str]:
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(root)):
            out.append(target)
    return out


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to list open files")
def test_fit_twice_in_one_process_leaks_nothing(tmp_path):
    counter = _Counter()
    handlers_before = list(logging.getLogger("detlight").handlers)
    overrides = tiny(tmp_path, **{"data.init_args.workers_per_gpu": 1, "data.init_args.persistent_workers": True})
    runs = [api.fit(QUICKSTART, overrides, callbacks=[counter]) for _ in range(2)]
    assert [Path(r.log_dir).name for r in runs] == ["version_0", "version_1"]
    assert counter.batches == 4
    trainer, module = runs[1]
    assert trainer.global_step == 2 and module.eval_results
    callbacks = trainer.callbacks
    assert callbacks.index(counter) < callbacks.index(next(c for c in callbacks if isinstance(c, ModelCheckpoint)))
    assert logging.getLogger("detlight").handlers == handlers_before
    assert multiprocessing.active_children() == []
    assert _open_files_under(tmp_path) == []
    assert set(runs[1].metrics) >= {"val/bbox_mAP", "val/bbox_mAP_50"}


def test_validate_test_and_predict_return_results(tmp_path):
    overrides = tiny(tmp_path)
    fitted = api.fit(QUICKSTART, overrides)
    ckpt = str(Path(fitted.log_dir) / "checkpoints" / "last.ckpt")
    validated = api.validate(QUICKSTART, overrides, ckpt_path=ckpt)
    assert validated.metrics["val/bbox_mAP"] == pytest.approx(fitted.metrics["val/bbox_mAP"])
    assert validated.module.eval_results["bbox_mAP"] == pytest.approx(fitted.metrics["val/bbox_mAP"])
    tested = api.test(QUICKSTART, overrides, ckpt_path=ckpt)
    assert "test/bbox_mAP" in tested.metrics and isinstance(tested.results, list)
    # the evaluations' logs sit in the checkpoint's run, not in new version_N folders beside it
    stem = Path(ckpt).resolve().stem
    assert Path(validated.log_dir) == Path(fitted.log_dir) / "validate" / stem
    assert Path(tested.log_dir) == Path(fitted.log_dir) / "test" / stem
    assert list(Path(validated.log_dir).glob("events.out.tfevents.*"))
    assert sorted(p.name for p in Path(fitted.log_dir).parent.iterdir()) == [Path(fitted.log_dir).name]
    predicted = api.predict(QUICKSTART, overrides, ckpt_path=ckpt)
    images = [det for batch in predicted.results for det in batch]
    assert len(images) == 4 and {"boxes", "scores", "labels", "img_meta"} <= set(images[0])


def test_train_detector_takes_mmdet_arguments(tmp_path, monkeypatch):
    from detlight.data.datamodule import DetDataModule
    from detlight.data.synthetic import SyntheticCocoSpec, ensure_synthetic_coco
    from detlight.models.centernet import CenterNet

    monkeypatch.chdir(tmp_path)
    paths = ensure_synthetic_coco(SyntheticCocoSpec(num_train=8, num_val=4))
    val = dict(type="CocoDataset", ann_file=str(paths.val_ann), img_prefix=str(paths.val_img_prefix))
    cfg = dict(
        seed=3, work_dir=str(tmp_path / "work"),
        runner=dict(type="EpochBasedRunner", max_epochs=1),
        optimizer=dict(type="SGD", lr=0.01, momentum=0.9), optimizer_config=dict(grad_clip=None),
        lr_config=dict(policy="fixed"), log_config=dict(interval=1, hooks=[dict(type="TextLoggerHook")]),
        data=dict(samples_per_gpu=4, workers_per_gpu=0, train=dict(val, ann_file=str(paths.train_ann),
                                                                      img_prefix=str(paths.train_img_prefix)),
                  val=val, test=val),
    )
    dm = DetDataModule(synthetic=SyntheticCocoSpec(num_train=8, num_val=4), workers_per_gpu=0)
    dm.setup("fit")
    model = CenterNet(num_classes=4)
    run = api.train_detector(model, [dm.datasets["train"]], cfg, validate=True, timestamp="20240101_000000",
                             meta={"note": "x"})
    assert run.module.model is model
    assert run.datamodule.datasets["train"] is dm.datasets["train"]
    assert run.trainer.global_step == 2  # 8 images, 4 per batch
    log_json = Path(run.log_dir) / "20240101_000000.log.json"
    meta = json.loads(log_json.read_text().splitlines()[0])
    assert meta["seed"] == 3 and meta["note"] == "x"


# ---------------------------------------------------------------------------------------------- curves
def _write_log(path: Path, records: list[dict]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in [{"seed": 0, "exp_name": "x"}, *records]) + "\n")
    return path


def test_epoch_based_log_becomes_run_wide_steps(tmp_path):
    log = _write_log(tmp_path / "20240101_000000.log.json", [
        {"mode": "train", "epoch": 1, "iter": 10, "lr": 0.1, "loss": 3.0, "time": 0.5},
        {"mode": "train", "epoch": 1, "iter": 20, "lr": 0.1, "loss": 2.0, "time": 0.5},
        {"mode": "val", "epoch": 1, "iter": 4, "lr": 0.1, "bbox_mAP": 0.1},
        {"mode": "train", "epoch": 2, "iter": 10, "lr": 0.1, "loss": 1.5, "time": 0.5},
        {"mode": "train", "epoch": 2, "iter": 20, "lr": 0.1, "loss": 1.0, "time": 0.5},
        {"mode": "val", "epoch": 2, "iter": 4, "lr": 0.1, "bbox_mAP": 0.3},
    ])
    curves = load_curves(tmp_path)
    assert curves.iters_per_epoch == 20
    assert curves.get("loss").steps == [10, 20, 30, 40]
    assert curves.get("loss").values == [3.0, 2.0, 1.5, 1.0]
    assert curves.get("val/bbox_mAP").steps == [20, 40] and curves.get("bbox_mAP").epochs == [1, 2]
    assert "val/lr" in curves and "train/memory" not in curves
    table = curves.table(["loss", "val/bbox_mAP"]).splitlines()
    assert table[0] == "epoch | step | loss | val/bbox_mAP" and table[-1] == "2 | 40 | 1.0000 | 0.3000"
    assert find_json_log(log) == log


def test_epoch_length_comes_from_the_run_not_the_largest_logged_iter(tmp_path):
    records = [{"mode": "train", "epoch": e, "iter": i, "loss": 1.0 / (e * i)} for e in (1, 2) for i in (20,)]
    # Interval 20 on 36 batches an epoch: only iter 20 is logged, so the largest logged iter (20) is not the length.
    _write_log(tmp_path / "a.log.json", records)
    assert load_curves(tmp_path / "a.log.json").get("loss").steps == [20, 40]  # no record of the length: fallback
    (tmp_path / "a.log").write_text("2024-01-01 00:00:00,000 - mmdet - INFO - Epoch [1][20/36]\tlr: 1.000e-02, \n")
    assert load_curves(tmp_path / "a.log.json").get("loss").steps == [20, 56]  # mmcv's text log beside it
    meta = {"seed": 0, "iters_per_epoch": 36}
    (tmp_path / "b.log.json").write_text("\n".join(json.dumps(r) for r in [meta, *records]) + "\n")
    curves = load_curves(tmp_path / "b.log.json")  # detlight's meta line
    assert curves.iters_per_epoch == 36 and curves.get("loss").steps == [20, 56]


def test_iteration_based_log_keeps_its_iterations(tmp_path):
    _write_log(tmp_path / "a.log.json", [
        {"mode": "train", "epoch": 1, "iter": 50, "loss": 2.0},
        {"mode": "train", "epoch": 2, "iter": 100, "loss": 1.0},
        {"mode": "val", "epoch": 2, "iter": 8, "bbox_mAP": 0.2},
    ])
    curves = load_curves(tmp_path / "a.log.json")
    assert curves.iters_per_epoch is None
    assert curves.get("train/loss").steps == [50, 100] and curves.get("val/bbox_mAP").steps == [100]


def test_missing_curve_and_missing_log_name_what_exists(tmp_path):
    _write_log(tmp_path / "a.log.json", [{"mode": "train", "epoch": 1, "iter": 5, "loss": 2.0}])
    with pytest.raises(KeyError, match=r"bbox_mAP.*train \['loss'\]"):
        load_curves(tmp_path).get("val/bbox_mAP")
    with pytest.raises(FileNotFoundError, match="TextLogger"):
        find_json_log(tmp_path / "sub" if (tmp_path / "sub").mkdir() is None else tmp_path)


def test_plot_without_matplotlib_is_an_image(tmp_path):
    _write_log(tmp_path / "a.log.json", [{"mode": "train", "epoch": 1, "iter": i, "loss": 3.0 / i}
                                         for i in range(1, 6)])
    image = plot_curves(tmp_path, keys=["loss"], use_matplotlib=False)
    assert image.size == (320, 220)
    pixels = image.convert("RGB").getcolors(10_000)
    assert any(colour == (31, 119, 180) for _, colour in pixels)  # the curve was drawn


# ---------------------------------------------------------------------------------------------- the Run result
def test_run_is_small_and_indexes_like_it_unpacks(tmp_path):
    run = api.validate(QUICKSTART, tiny(tmp_path))
    trainer, module = run
    assert (run[0], run[1], len(run)) == (trainer, module, 2)
    text = repr(run)
    assert text.startswith("Run(validate, log_dir=") and "\n" not in text and len(text) < 300
    assert "CenterNet(" not in text
    assert all(k.startswith("val/") for k in run.metrics) and "val/bbox_mAP" in run.metrics
    assert all(v != -1.0 for v in run.metrics.values())


# ---------------------------------------------------------------------------------------------- Python objects
def test_fit_takes_a_model_and_a_datamodule_and_says_what_config_yaml_lacks(tmp_path):
    from detlight.data.datamodule import DetDataModule
    from detlight.data.synthetic import SyntheticCocoSpec
    from detlight.models.centernet import CenterNet

    model = CenterNet(num_classes=4)
    dm = DetDataModule(synthetic=SyntheticCocoSpec(num_train=8, num_val=4), samples_per_gpu=4, val_samples_per_gpu=4,
                       workers_per_gpu=0)
    overrides = {k: v for k, v in tiny(tmp_path).items() if not k.startswith("data.")}
    run = api.fit(QUICKSTART, overrides, model=model, datamodule=dm)
    assert run.module.model is model and run.datamodule is dm and run.trainer.global_step == 2
    assert run.results and set(run.results[0]) <= set(run.metrics) and "val/bbox_mAP" in run.results[0]
    saved = (Path(run.log_dir) / "config.yaml").read_text()
    assert ("# - model.model: detlight.models.centernet.CenterNet (init args not recorded: width, head_channels)"
            in saved)
    assert "# - data: detlight.data.datamodule.DetDataModule (init args not recorded: " in saved
    parsed = yaml.safe_load(saved)
    assert parsed["model"]["model"]["class_path"] == "detlight.models.centernet.CenterNet"
    assert parsed["model"]["model"]["init_args"]["num_classes"] == 4
    assert parsed["data"]["init_args"]["samples_per_gpu"] == 4
    assert parsed["trainer"]["limit_train_batches"] == 2


def test_an_object_in_overrides_works(tmp_path):
    from detlight.models.centernet import CenterNet

    model = CenterNet(num_classes=4)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        run = api.validate(QUICKSTART, {**tiny(tmp_path), "model.model": model})
    assert run.module.model is model and "val/bbox_mAP" in run.metrics
    assert not [w for w in seen if "serialize" in str(w.message)]  # no whole-model printout


def test_overriding_inside_an_object_is_a_clear_error(tmp_path):
    from detlight.data.datamodule import DetDataModule

    with pytest.raises(ConfigError, match=r"data.init_args.samples_per_gpu.*`data` is a DetDataModule object"):
        api.fit(QUICKSTART, {"data.init_args.samples_per_gpu": 2}, datamodule=DetDataModule())
    with pytest.raises(UsageError, match="`model` must be a detector"):
        api.fit(QUICKSTART, model="centernet")


def test_object_overrides_as_arguments_name_the_way_out():
    with pytest.raises(TypeError, match="accept Python objects"):
        api.overrides_to_args({"model.model": torch.nn.Linear(1, 1)})


def test_describe_object_records_what_it_can():
    described, missing = api.describe_object(torch.nn.Conv2d(3, 8, kernel_size=3))
    assert described["class_path"] == "torch.nn.modules.conv.Conv2d"
    assert described["init_args"]["in_channels"] == 3 and described["init_args"]["kernel_size"] == [3, 3]
    assert "bias" in missing


# ---------------------------------------------------------------------------------------------- what a run keeps
@pytest.mark.slow
def test_quickstart_last_checkpoint_is_the_final_state(tmp_path):
    # The reported case: 2 epochs x 16 batches must leave last.ckpt at step 32, whatever the mAP did.
    overrides = tiny(tmp_path, **{"trainer.max_epochs": 2, "trainer.limit_train_batches": 16,
                                  "data.init_args.synthetic.num_train": 48, "data.init_args.samples_per_gpu": 2,
                                  "data.init_args.synthetic.image_size": 64})
    run = api.fit(QUICKSTART, overrides)
    last = Path(run.log_dir) / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 32
    assert os.path.realpath(last) == str(Path(run.log_dir) / "checkpoints" / "epoch_2.ckpt")
    from detlight.resume import resolve_ckpt_path

    assert resolve_ckpt_path("last", run.trainer) == os.path.realpath(last)
    names = sorted(p.name for p in (Path(run.log_dir) / "checkpoints").glob("*.ckpt"))
    assert names[0].startswith("best_bbox_mAP_epoch_") and "epoch_1.ckpt" in names


def test_converted_py_config_leaves_no_temporary_yaml(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    config = str(ROOT / "tests/convert/configs/centernet/centernet_tiny_1x_coco.py")
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--config", config, "--print_config"])
    assert exc.value.code == 0
    assert list(tmp_path.iterdir()) == []
