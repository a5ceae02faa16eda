"""Which errors the CLI shortens to one line, and which keep their traceback.

A bad config value gets one line naming the key, the value and what is accepted; an error raised by a user's own code
(or by a bug) keeps its traceback, followed by detlight's hint line.
"""

from __future__ import annotations

import argparse
import traceback
from pathlib import Path

import pytest
from lightning.fabric.utilities.exceptions import MisconfigurationException
from torch import nn

from detlight.cli import main
from detlight.errors import TRACEBACK_HINT, format_error, shorten_parser_message
from detlight.exceptions import ConfigError, DetLightError, HookError
from detlight.models import CenterNet

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = str(ROOT / "configs/quickstart.yaml")
BASE = ["--data.init_args.synthetic.num_train=4", "--data.init_args.synthetic.num_val=2",
        "--data.init_args.samples_per_gpu=2", "--data.init_args.workers_per_gpu=0",
        "--data.init_args.persistent_workers=false", "--trainer.logger=false", "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=1", "--trainer.limit_val_batches=0"]


class KeyErrorNet(CenterNet):
    """A user's detector with a bug: it reads a key its config does not have."""

    def forward_train(self, *args: object, **kwargs: object) -> dict:
        loss_cfg: dict[str, float] = {}
        return {"loss": loss_cfg["loss_weight"]}


def _files(tmp: Path) -> dict[str, str]:
    (tmp / "empty.yaml").write_text("")
    (tmp / "list.yaml").write_text("- trainer\n- model\n")
    (tmp / "syntax.yaml").write_text("model:\n  optimizer: {type: SGD\n  foo: [\n")
    (tmp / "lr.yaml").write_text("model:\n  optimizer: {type: SGD, lr: fast, momentum: 0.9}\n")
    (tmp / "spg.yaml").write_text("data:\n  init_args:\n    samples_per_gpu: [2, 4]\n")
    (tmp / "model_as_data.yaml").write_text("data:\n  class_path: detlight.models.CenterNet\n")
    (tmp / "detlight_test_badhook.py").write_text("import detlight_no_such_package\n\n\nclass MyHook:\n"
                                                  "    def after_train_iter(self, runner):\n        pass\n")
    return {name: str(tmp / name) for name in ("empty.yaml", "list.yaml", "syntax.yaml", "lr.yaml", "spg.yaml",
                                                  "model_as_data.yaml")}


HOOK = ('--trainer.callbacks+={"class_path": "detlight.compat.MMCVHooks", "init_args": {"hooks": '
        '[{"class_path": "detlight_test_badhook.MyHook"}]}}')

#: name -> (extra arguments, with {file} placeholders; fragments the one error line must hold)
CASES: dict[str, tuple[list[str], list[str]]] = {
    "samples_per_gpu abc": (["--data.init_args.samples_per_gpu", "abc"],
                            ["`data.samples_per_gpu`: expected int, got 'abc'"]),
    "samples_per_gpu list": (["--config", "{spg.yaml}"], ["`data.samples_per_gpu`: expected int, got [2, 4]"]),
    "lr fast": (["--config", "{lr.yaml}"], ["`model.optimizer.lr`: expected a number", "got 'fast'"]),
    "empty yaml": (["--config", "{empty.yaml}"], ["empty.yaml is empty", "mapping with keys such as `trainer:`"]),
    "list yaml": (["--config", "{list.yaml}"], ["list.yaml: the top level is a list", "not a mapping"]),
    "yaml syntax": (["--config", "{syntax.yaml}"], ["syntax.yaml:3:", "YAML syntax error"]),
    "model without parameters": (["--model.model", "torch.nn.Identity"],
                                 ["torch.nn.modules.linear.Identity has no parameters", "model.model"]),
    "model as data": (["--config", "{model_as_data.yaml}"],
                      ["`data`: 'detlight.models.CenterNet' is a torch.nn.Module", "not a LightningDataModule",
                       "model.model"]),
    "hook import fails": ([HOOK], ["detlight_test_badhook.MyHook", "No module named 'detlight_no_such_package'"]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_config_value_gives_one_line_naming_key_value_and_type(name, tmp_path, capsys, monkeypatch):
    files = _files(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    extra, fragments = CASES[name]
    extra = [files[arg[1:-1]] if arg.startswith("{") else arg for arg in extra]
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--config", QUICKSTART, *BASE, f"--trainer.default_root_dir={tmp_path}", *extra])
    err = capsys.readouterr().err
    assert exc.value.code == 2, err[-3000:]
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("detlight: error:")]
    assert len(lines) == 1, err[-3000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert "Problem with given class_path" not in lines[0]


def test_user_model_key_error_keeps_its_traceback_and_ends_with_the_hint(tmp_path, capsys):
    with pytest.raises(KeyError, match="loss_weight") as exc:
        main(["fit", "--config", QUICKSTART, *BASE, f"--trainer.default_root_dir={tmp_path}",
              "--model.model.class_path=test_error_messages.KeyErrorNet"])
    assert "detlight: error:" not in capsys.readouterr().err
    printed = "".join(traceback.format_exception(exc.value))
    assert 'loss_cfg["loss_weight"]' in printed and "test_error_messages.py" in printed
    assert printed.rstrip().splitlines()[-1] == TRACEBACK_HINT


@pytest.mark.parametrize("error", [ValueError("bad"), TypeError("bad"), KeyError("loss_weight"), ImportError("x"),
                                   RuntimeError("boom"), FileNotFoundError("x.png")])
def test_builtin_errors_are_not_shortened(error):
    assert format_error(error) is None


@pytest.mark.parametrize("error", [ConfigError("`a.b`: bad"), HookError("`a.b`: bad"), DetLightError("`a.b`: bad"),
                                   MisconfigurationException("`a.b`: bad")])
def test_detlight_and_lightning_config_errors_are_one_line(error):
    assert format_error(error) == "`a.b`: bad"


def test_parser_errors_are_shortened():
    error = argparse.ArgumentError(None, 'Parser key "trainer.max_epochs":\n  Expected a <class \'int\'>. Got value: x')
    assert format_error(error) == "`trainer.max_epochs`: expected int, got 'x'"


def test_a_detlight_error_wrapped_by_jsonargparse_is_shown_alone():
    from jsonargparse._typehints import raise_union_unexpected_value

    try:
        try:
            raise HookError("Cannot import hook class_path `a.B`: No module named 'a'")
        except HookError as inner:
            raise_union_unexpected_value([nn.Module], [], [inner])
    except ValueError as wrapped:
        assert format_error(wrapped) == "Cannot import hook class_path `a.B`: No module named 'a'"


def test_nested_class_path_reason_is_kept():
    message = ('Parser key "data":\n  Does not validate against any of the Union subtypes\n  Subtypes: [<class '
               "'lightning.pytorch.core.datamodule.LightningDataModule'>, <class 'NoneType'>]\n  Errors:\n    - Problem "
               "with given class_path 'detlight.data.DetDataModule':\n        Parser key \"samples_per_gpu\":\n"
               "          Expected a <class 'int'>. Got value: abc\n    - Expected a <class 'NoneType'>\n  Given value "
               "type: <class 'str'>\n  Given value: abc")
    assert shorten_parser_message(message) == "`data.samples_per_gpu`: expected int, got 'abc'"


def test_check_and_the_python_api_build_through_the_same_checks(tmp_path, capsys):
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(SystemExit) as exc:
        main(["check", "--config", QUICKSTART, "--config", str(empty)])
    assert exc.value.code == 2
    assert f"config file {empty} is empty" in capsys.readouterr().err

    import detlight

    with pytest.raises(ConfigError, match=f"config file {empty} is empty"):
        detlight.fit([QUICKSTART, str(empty)])
