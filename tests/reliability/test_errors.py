"""Bad input gets one short, specific `detlight: error: ...` line and exit status 2, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from detlight.cli import main
from detlight.errors import shorten_parser_message, summarize_state_dict_error
from detlight.exceptions import CheckpointError

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = str(ROOT / "configs/quickstart.yaml")


def _coco(tmp: Path, name: str, **edits: object) -> tuple[str, str]:
    """A valid 2-image COCO split (images on disk) with top-level ``edits`` applied; returns (ann_file, img_prefix)."""
    from PIL import Image

    img_dir = tmp / "imgs"
    img_dir.mkdir(exist_ok=True)
    for i in (1, 2):
        Image.new("RGB", (32, 32)).save(img_dir / f"{i}.png")
    coco: dict = {
        "images": [{"id": i, "file_name": f"{i}.png", "width": 32, "height": 32} for i in (1, 2)],
        "annotations": [{"id": i, "image_id": i, "category_id": 1, "bbox": [2, 2, 10, 10], "area": 100, "iscrowd": 0}
                        for i in (1, 2)],
        "categories": [{"id": 1, "name": "circle"}],
    }
    for key, value in edits.items():
        if value is None:
            coco.pop(key)
        else:
            coco[key] = value
    path = tmp / f"{name}.json"
    path.write_text(json.dumps(coco))
    return str(path), str(img_dir)


def _split(ann: str, prefix: str) -> list[str]:
    return [f"--data.init_args.train.ann_file={ann}", f"--data.init_args.train.img_prefix={prefix}",
            f"--data.init_args.val.ann_file={ann}", f"--data.init_args.val.img_prefix={prefix}",
            "--model.model.init_args.num_classes=1"]


def _ann(**bad: object) -> dict:
    return {"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 10, 10], "area": 100, "iscrowd": 0, **bad}


def _cases(tmp: Path) -> dict[str, tuple[list[str], str]]:
    """name -> (extra CLI args, expected message fragment)."""
    junk = tmp / "junk.json"
    junk.write_text("{not json")
    corrupt = tmp / "corrupt.ckpt"
    corrupt.write_bytes(b"PK\x03\x04 truncated")
    other = tmp / "other_model.ckpt"
    torch.save({"state_dict": {"backbone.conv.weight": torch.zeros(1)}, "pytorch-lightning_version": "2.6.6",
                "epoch": 0, "global_step": 0}, other)
    unsafe = tmp / "unsafe.ckpt"
    torch.save({"state_dict": {}, "meta": _Unsafe()}, unsafe)
    readonly = tmp / "a_file"  # a path below a regular file can never be created (even by root)
    readonly.write_text("")
    good_ann, prefix = _coco(tmp, "good")
    no_img = tmp / "no_imgs"
    no_img.mkdir()
    return {
        "unknown key": (["--model.optimiser.lr=0.1"], "unknown option --model.optimiser.lr; did you mean "
                                                      "--model.optimizer.lr?"),
        "unknown trainer key": (["--trainer.max_epochz=3"], "did you mean --trainer.max_epochs?"),
        "wrong type": (["--trainer.max_epochs=abc"], "`trainer.max_epochs`: expected int or NoneType, got 'abc'"),
        "unknown class_path": (["--model.model.class_path=detlight.models.CenterNett"],
                               "did you mean 'detlight.models.CenterNet'?"),
        "unknown module": (["--model.model.class_path=detlight.modelz.CenterNet"],
                           "did you mean 'detlight.models.CenterNet'?"),
        "unknown init arg": (["--model.model.init_args.num_clases=3"], "unknown key 'num_clases'; did you mean "
                                                                       "'num_classes'?"),
        "unknown data arg": (["--data.init_args.samples_per_gpuu=3"], "did you mean 'samples_per_gpu'?"),
        "unknown nested arg": (["--data.init_args.synthetic.num_trian=3"], "did you mean 'num_train'?"),
        "unknown callback": (["--trainer.callbacks+=detlight.callbacks.LrUpdatr"],
                             "did you mean 'detlight.callbacks.LrUpdater'?"),
        "unknown LR policy": (["--trainer.callbacks+=detlight.callbacks.LrUpdater",
                               "--trainer.callbacks.policy=Cosinee"], "Cosinee"),
        "samples_per_gpu 0": (["--data.init_args.samples_per_gpu=0"],
                              "Expected `data.samples_per_gpu` to be an int >= 1, but got 0"),
        "negative workers": (["--data.init_args.workers_per_gpu=-1"], "`data.workers_per_gpu` to be an int >= 0"),
        "missing config": (["--config", str(tmp / "nope.yaml")], "nope.yaml"),
        "missing ann file": (_split(str(tmp / "nope.json"), prefix), "nope.json does not exist"),
        "malformed json": (_split(str(junk), prefix), "is not valid json"),
        "json missing key": (_split(_coco(tmp, "nokey", annotations=None)[0], prefix), "annotations"),
        "unknown category": (_split(_coco(tmp, "cat", annotations=[_ann(category_id=7)])[0], prefix),
                             "unknown category_id 7"),
        "negative box": (_split(_coco(tmp, "neg", annotations=[_ann(bbox=[2, 2, -3, 5])])[0], prefix),
                         "non-positive size"),
        "box outside image": (_split(_coco(tmp, "out", annotations=[_ann(bbox=[20, 20, 30, 30])])[0], prefix),
                              "outside its image"),
        "empty split": (_split(_coco(tmp, "empty", images=[], annotations=[])[0], prefix), "holds no image"),
        "missing image": (_split(good_ann, str(no_img)), "1.png does not exist"),
        "num_classes mismatch": (_split(good_ann, prefix)[:4] + ["--model.model.init_args.num_classes=3"],
                                 "Set num_classes: 1"),
        "unwritable work_dir": ([f"--trainer.default_root_dir={readonly}/run"], "not writable"),
        "missing checkpoint": (["--ckpt_path", str(tmp / "nope.ckpt")], "checkpoint not found"),
        "corrupt checkpoint": (["--ckpt_path", str(corrupt)], "corrupt or not a torch checkpoint"),
        "unsafe checkpoint": (["--ckpt_path", str(unsafe)], "needs arbitrary unpickling"),
        "other model's checkpoint": (["--ckpt_path", str(other)], "different model: "),
        "missing load_from": ([f"--model.load_from={tmp / 'nope.pth'}"], "`load_from` checkpoint not found"),
    }


class _Unsafe:
    """Anything that is not a tensor or plain container."""


BASE = ["--data.init_args.synthetic.num_train=4", "--data.init_args.synthetic.num_val=2",
        "--data.init_args.samples_per_gpu=2", "--data.init_args.workers_per_gpu=0",
        "--data.init_args.persistent_workers=false", "--trainer.logger=false", "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=1", "--trainer.limit_val_batches=0"]


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    return _cases(tmp_path_factory.mktemp("bad_input"))


NAMES = [
    "unknown key", "unknown trainer key", "wrong type", "unknown class_path", "unknown module", "unknown init arg",
    "unknown data arg", "unknown nested arg", "unknown callback", "unknown LR policy", "samples_per_gpu 0",
    "negative workers", "missing config", "missing ann file", "malformed json", "json missing key",
    "unknown category", "negative box", "box outside image", "empty split", "missing image", "num_classes mismatch",
    "unwritable work_dir", "missing checkpoint", "corrupt checkpoint", "unsafe checkpoint",
    "other model's checkpoint", "missing load_from",
]


@pytest.mark.parametrize("name", NAMES)
def test_bad_input_gives_one_specific_message(name, cases, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    extra, expected = cases[name]
    root = [] if any(a.startswith("--trainer.default_root_dir") for a in extra) else \
        [f"--trainer.default_root_dir={tmp_path}"]
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--config", QUICKSTART, *BASE, *root, *extra])
    err = capsys.readouterr().err
    assert exc.value.code == 2, err[-2000:]
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("detlight: error:")]
    assert len(lines) == 1, err[-2000:]
    assert expected in lines[0], lines[0]
    assert len(lines[0]) < 400, lines[0]


def test_debug_flag_shows_the_traceback(capsys):
    with pytest.raises(ValueError, match="samples_per_gpu"):
        main(["fit", "--config", QUICKSTART, "--data.init_args.samples_per_gpu=0", "--debug"])


def test_debug_env_var_shows_the_traceback(monkeypatch):
    monkeypatch.setenv("DETLIGHT_DEBUG", "1")
    with pytest.raises(CheckpointError):
        main(["fit", "--config", QUICKSTART, "--ckpt_path", "/nonexistent/x.ckpt"])


def test_console_script_prints_one_line_and_exits_2(tmp_path):
    exe = Path(sys.executable).with_name("detlight")
    proc = subprocess.run([str(exe), "fit", "--config", QUICKSTART, "--model.optimiser.lr=0.1"], capture_output=True,
                          text=True, timeout=240, cwd=tmp_path, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == ("detlight: error: unknown option --model.optimiser.lr; did you "
                                                    "mean --model.optimizer.lr?")
    assert "usage:" not in proc.stderr and "Traceback" not in proc.stderr


def test_state_dict_error_summary_counts_and_names_keys():
    message = ('Error(s) in loading state_dict for DetectorModule:\n\tMissing key(s) in state_dict: "a.w", "a.b", '
               '"c.w", "d.w". \n\tUnexpected key(s) in state_dict: "x.w". \n\tsize mismatch for e.w: copying ...')
    summary = summarize_state_dict_error(message)
    assert summary is not None
    assert "4 missing (a.w, a.b, c.w, ...)" in summary and "1 unexpected (x.w)" in summary
    assert "1 with another shape (e.w)" in summary


def test_union_type_error_is_reduced_to_expected_and_given():
    message = ('Parser key "trainer.max_epochs":\n  Does not validate against any of the Union subtypes\n  Subtypes: '
               "[<class 'int'>, <class 'NoneType'>]\n  Errors:\n    - Expected a <class 'int'>\n    - Expected a "
               "<class 'NoneType'>\n  Given value type: <class 'str'>\n  Given value: abc")
    assert shorten_parser_message(message) == "`trainer.max_epochs`: expected int or NoneType, got 'abc'"
