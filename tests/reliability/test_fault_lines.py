"""Failures that are input, not bugs, end in one line in the CLI and as the same detlight error from ``detlight.fit``.

An OS error on a path the user configured (an annotation file, ``DETLIGHT_CACHE``) names the path, the key or variable
that set it and the fix; a model whose ``forward_train`` does not take what the datamodule yields is named with both
classes before its first forward; a DataLoader worker killed by the out-of-memory killer while the main process is in
the optimizer step is explained wherever torch raises it; a hook jsonargparse refused arrives as detlight's sentence.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import detlight
from detlight.cli import main
from detlight.errors import translate_error
from detlight.exceptions import DetLightError, HookError, ModelContractError, PathError

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
QUICKSTART = str(ROOT / "configs/quickstart.yaml")

#: a tiny quickstart run: 4 training images, 2 per batch, one epoch, no validation
SMALL = {"data.init_args.synthetic.num_train": 4, "data.init_args.synthetic.num_val": 2,
         "data.init_args.samples_per_gpu": 2, "data.init_args.workers_per_gpu": 0,
         "data.init_args.persistent_workers": False, "trainer.logger": False, "trainer.max_epochs": 1,
         "trainer.limit_val_batches": 0}


def _args(overrides: dict[str, Any]) -> list[str]:
    return [f"--{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in overrides.items()]


def _cli_line(overrides: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> str:
    """Run ``detlight fit`` in-process; the one ``detlight: error:`` line (exit status 2, no traceback)."""
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--config", QUICKSTART, *_args(overrides)])
    err = capsys.readouterr().err
    assert exc.value.code == 2, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    lines = [line[line.index("detlight: error:"):] for line in err.splitlines() if "detlight: error:" in line]
    assert len(lines) == 1, err[-3000:]
    return lines[0][len("detlight: error: "):]


def _api_error(overrides: dict[str, Any], **kwargs: Any) -> DetLightError:
    with pytest.raises(DetLightError) as exc:
        detlight.fit(QUICKSTART, overrides, **kwargs)
    return exc.value


def _coco(tmp: Path, n: int = 4, size: int = 32) -> tuple[Path, Path]:
    img_dir = tmp / "imgs"
    img_dir.mkdir()
    for i in range(n):
        Image.fromarray(np.full((size, size, 3), 40 * i, dtype=np.uint8)).save(img_dir / f"{i}.png")
    coco = {"images": [{"id": i + 1, "file_name": f"{i}.png", "width": size, "height": size} for i in range(n)],
            "annotations": [{"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [2, 2, 10, 10], "area": 100,
                             "iscrowd": 0} for i in range(n)],
            "categories": [{"id": 1, "name": "thing"}]}
    ann = tmp / "ann.json"
    ann.write_text(json.dumps(coco))
    return ann, img_dir


# ------------------------------------------------------------------------------ user paths
def test_unreadable_annotation_file_names_path_key_and_fix(tmp_path, capsys, monkeypatch):
    ann, img_dir = _coco(tmp_path)
    if os.geteuid() != 0:
        ann.chmod(0)
    else:  # root reads any file: the kernel's answer to a non-root user, given here
        real = Path.read_text

        def refuse(self: Path, *args: Any, **kwargs: Any) -> str:
            if self == ann:
                raise PermissionError(13, "Permission denied", str(self))
            return real(self, *args, **kwargs)

        monkeypatch.setattr(Path, "read_text", refuse)
    overrides = {**SMALL, "data.init_args.train.ann_file": str(ann), "data.init_args.train.img_prefix": str(img_dir),
                 "data.init_args.val.ann_file": str(ann), "data.init_args.val.img_prefix": str(img_dir),
                 "data.init_args.pipeline.img_scale": [32, 32], "model.model.init_args.num_classes": 1,
                 "trainer.default_root_dir": str(tmp_path / "wd")}
    line = _cli_line(overrides, capsys)
    assert line.startswith(f"{ann}: permission denied (set by `data.train.ann_file`: {ann})"), line
    assert "point `data.train.ann_file` at a path this user can access" in line, line
    error = _api_error(overrides)
    assert type(error) is PathError and isinstance(error, OSError) and str(error) == line


def test_detlight_cache_that_is_a_regular_file(tmp_path, capsys, monkeypatch):
    cache = tmp_path / "cache_file"
    cache.write_text("not a folder")
    monkeypatch.setenv("DETLIGHT_CACHE", str(cache))
    overrides = {**SMALL, "trainer.default_root_dir": str(tmp_path / "wd")}
    line = _cli_line(overrides, capsys)
    assert f"{cache} is a regular file, not a folder (set by DETLIGHT_CACHE={cache})" in line, line
    assert "set DETLIGHT_CACHE to a folder this user can write" in line, line
    error = _api_error(overrides)
    assert type(error) is PathError and str(error) == line


def test_detlight_cache_that_is_not_writable(tmp_path, capsys, monkeypatch):
    if os.geteuid() != 0:
        parent = tmp_path / "ro"
        parent.mkdir()
        parent.chmod(0o500)
        cache = parent / "cache"
    elif os.path.isdir("/sys") and _mkdir_refused("/sys/detlight_probe"):
        cache = Path("/sys/detlight_cache")  # sysfs refuses new folders, even to root
    else:
        pytest.skip("no folder here that refuses writes")
    monkeypatch.setenv("DETLIGHT_CACHE", str(cache))
    line = _cli_line({**SMALL, "trainer.default_root_dir": str(tmp_path / "wd")}, capsys)
    assert line.startswith(str(cache)), line
    assert f"(set by DETLIGHT_CACHE={cache}); set DETLIGHT_CACHE to a folder this user can write" in line, line


def _mkdir_refused(path: str) -> bool:
    try:
        os.mkdir(path)
    except OSError:
        return True
    os.rmdir(path)
    return False


def test_os_error_on_a_path_nobody_configured_keeps_its_traceback():
    err = PermissionError(13, "Permission denied", "/somewhere/the/model/opens.bin")
    assert translate_error(err, {"fit": {"data": {"init_args": {"train": {"ann_file": "/data/ann.json"}}}}}) is None
    joined = PermissionError(13, "Permission denied", "/data/root/annotations/train.json")
    config = {"data": {"data_root": "/data/root", "train": {"ann_file": "annotations/train.json"}}}
    assert "set by `data.train.ann_file`" in str(translate_error(joined, config))  # the longer match wins


# ------------------------------------------------------------------------------ model / data mismatch
def test_lidar_model_with_the_image_datamodule_is_named_before_the_first_step(tmp_path, capsys):
    overrides = {**SMALL, "model.model": "detlight.models.pointpillars.PointPillars",
                 "trainer.default_root_dir": str(tmp_path)}
    line = _cli_line(overrides, capsys)
    assert line.startswith("The model `PointPillars` does not fit the data of `DetDataModule`: it needs points, "
                           "gt_bboxes_3d, gt_labels_3d, which the batches lack"), line
    assert "detlight.data.Det3DDataModule" in line, line
    error = _api_error(overrides)
    assert isinstance(error, ModelContractError) and str(error) == line


# ------------------------------------------------------------------------------ OOM-killed worker
API_CHILD = """
import json, sys
import detlight
from detlight.exceptions import DetLightError
from fault_helpers import KillWorkerBeforeStep
try:
    detlight.fit(sys.argv[1], json.loads(sys.argv[2]), callbacks=[KillWorkerBeforeStep(at=0)])
except DetLightError as err:
    print(); print("RAISED", type(err).__name__, err)
"""


@pytest.mark.slow
def test_worker_killed_during_the_optimizer_step_is_one_line(tmp_path):
    """In fresh processes: torch's SIGCHLD handler, which raises inside the optimizer step, is installed once per
    process (an earlier run's teardown may have put the default handler back)."""
    import subprocess

    overrides = {**SMALL, "data.init_args.workers_per_gpu": 2, "trainer.default_root_dir": str(tmp_path)}
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), *sys.path]), OMP_NUM_THREADS="1")
    hook = {"trainer.callbacks+": {"class_path": "fault_helpers.KillWorkerBeforeStep", "init_args": {"at": 0}}}
    cli = subprocess.run([sys.executable, "-m", "detlight.cli", "fit", "--config", QUICKSTART,
                          *_args({**overrides, **hook})], capture_output=True, text=True, env=env, timeout=300)
    assert cli.returncode == 2 and "Traceback" not in cli.stderr, cli.stderr[-3000:]
    [line] = [x[x.index("detlight: error: ") + 17:] for x in cli.stderr.splitlines() if "detlight: error: " in x]
    assert "was killed (SIGKILL), most likely by the out-of-memory killer" in line, line
    assert "`data.workers_per_gpu`, now 2" in line and "`data.samples_per_gpu`, now 2" in line, line
    api = subprocess.run([sys.executable, "-c", API_CHILD, QUICKSTART, json.dumps(overrides)], capture_output=True,
                         text=True, env=env, timeout=300)
    [raised] = [x for x in api.stdout.splitlines() if x.startswith("RAISED ")] or [api.stdout + api.stderr[-3000:]]
    assert raised.startswith("RAISED DataLoaderWorkerError DataLoader worker (pid "), raised
    assert raised.split(") ", 1)[1] == line.split(") ", 1)[1]  # the same line; only the worker's pid differs


# ------------------------------------------------------------------------------ the Python API
def test_a_refused_hook_is_the_same_error_in_the_api_as_in_the_cli(tmp_path, capsys, monkeypatch):
    (tmp_path / "detlight_test_nostage.py").write_text("class NoStage:\n    priority = 'NORMAL'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    overrides = {**SMALL, "trainer.default_root_dir": str(tmp_path),
                 "trainer.callbacks+": {"class_path": "detlight.compat.MMCVHooks",
                                        "init_args": {"hooks": [{"class_path": "detlight_test_nostage.NoStage"}]}}}
    line = _cli_line(overrides, capsys)
    assert line.startswith("Hook object (NoStage) is not an mmcv-style hook"), line
    error = _api_error(overrides)
    assert type(error) is HookError and str(error) == line
    assert "Union subtypes" not in str(error) and "object at 0x" not in str(error)


def test_a_parser_error_is_the_same_usage_error_in_the_api(tmp_path, capsys):
    overrides = {**SMALL, "data.init_args.samples_per_gpu": "abc", "trainer.default_root_dir": str(tmp_path)}
    line = _cli_line(overrides, capsys)
    error = _api_error(overrides)
    assert type(error).__name__ == "UsageError" and isinstance(error, ValueError) and str(error) == line
