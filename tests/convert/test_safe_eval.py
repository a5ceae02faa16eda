"""The safe evaluator (``detlight.convert.safe_eval``): builtins with size limits, mutation statements, refusals."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from detlight.convert.config import EvalNote, load_config
from detlight.convert.safe_eval import BUILTINS, MAX_SIZE
from detlight.exceptions import ConfigError


def _load(tmp_path: Path, text: str, name: str = "cfg.py") -> dict:
    path = tmp_path / name
    path.write_text(text)
    return load_config(path)


# ---------------------------------------------------------------------------------------------- builtins
BUILTIN_CASES = {
    "len": ("x = len(['a', 'b', 'c'])", 3),
    "sum": ("x = sum([128, 128, 128])", 384),
    "range": ("x = list(range(1, 7, 2))", [1, 3, 5]),
    "min": ("x = min([3, 1, 2])", 1),
    "max": ("x = max(3, 9)", 9),
    "abs": ("x = abs(-2.5)", 2.5),
    "round": ("x = round(2.675, 2)", round(2.675, 2)),
    "int": ("x = int('42')", 42),
    "float": ("x = float('1e-3')", 1e-3),
    "str": ("x = str(12)", "12"),
    "bool": ("x = bool([])", False),
    "list": ("x = list((1, 2))", [1, 2]),
    "tuple": ("x = tuple([1, 2])", (1, 2)),
    "dict": ("x = dict([('a', 1)], b=2)", {"a": 1, "b": 2}),
    "zip": ("x = zip(['a', 'b'], [1, 2])", [("a", 1), ("b", 2)]),
    "enumerate": ("x = enumerate(['a', 'b'], 1)", [(1, "a"), (2, "b")]),
    "sorted": ("x = sorted([3, 1, 2], reverse=True)", [3, 2, 1]),
    "reversed": ("x = reversed([1, 2, 3])", [3, 2, 1]),
    "any": ("x = any([0, 0, 1])", True),
    "all": ("x = all([1, 1, 0])", False),
}


def test_every_builtin_has_a_case() -> None:
    assert set(BUILTIN_CASES) == set(BUILTINS)


@pytest.mark.parametrize("name", sorted(BUILTIN_CASES))
def test_builtin_on_literal_data(tmp_path: Path, name: str) -> None:
    text, expected = BUILTIN_CASES[name]
    assert _load(tmp_path, text)["x"] == expected


LIMIT_CASES = {
    "range": "x = range(10 ** 12)",
    "sum": "x = sum([[0] * 1000] * 2000, [])",
    "str": "x = str([[0] * 1000] * 2000)",
    "list": "x = list(range(10 ** 7))",
    "tuple": "x = tuple(range(2 * 10 ** 6))",
    "sorted": "x = sorted(range(2 * 10 ** 6))",
    "zip": "x = zip(range(2 * 10 ** 6), range(3))",
    "enumerate": "x = enumerate(range(10 ** 7))",
    "reversed": "x = reversed(range(10 ** 7))",
    "len": "x = len(range(10 ** 13))",
    "min": "x = min(range(10 ** 13))",
    "max": "x = max(range(10 ** 13))",
    "any": "x = any(range(10 ** 13))",
    "all": "x = all(range(1, 10 ** 13))",
    "int": "x = int('9' * 5000)",
    "dict": "x = dict(a=[[0] * 1000] * 2000)",
    "comprehension": "x = [0 for a in range(10 ** 6) for b in range(10 ** 6)]",
    "repeat": "x = [[0] * 1000] * 2000",
    "format": "x = '{}'.format([[0] * 1000] * 2000)",
    "fstring": "y = [[0] * 1000] * 1000\nx = f'{y}{y}'",
}


@pytest.mark.parametrize("name", sorted(LIMIT_CASES))
def test_size_limits(tmp_path: Path, name: str) -> None:
    """Every builtin (and the other ways to build data) refuses values beyond the limits, quickly."""
    with pytest.raises(ConfigError, match=r"cfg\.py:\d+: .*(more than|at most|longer than|wider than|4000)"):
        _load(tmp_path, LIMIT_CASES[name])


def test_values_at_the_limit_are_fine(tmp_path: Path) -> None:
    cfg = _load(tmp_path, f"x = list(range({MAX_SIZE - 1}))\ny = sum([[1] * 10] * 10, [])\n")
    assert len(cfg["x"]) == MAX_SIZE - 1 and len(cfg["y"]) == 100


def test_builtins_reject_key_functions_and_shadowing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="key=...\\) needs a function"):
        _load(tmp_path, "x = max([1, 2], key=1)")
    with pytest.raises(ConfigError, match="not allowed.*Nothing in the file was executed"):
        _load(tmp_path, "len = 3\nx = len([1])")
    with pytest.raises(ConfigError, match="`sum` other than in a call"):
        _load(tmp_path, "f = sum")


def test_comprehensions_with_several_clauses_filters_and_generators(tmp_path: Path) -> None:
    cfg = _load(tmp_path, """depths = [2, 1]
keys = [f's{i}.b{j}' for i, n in enumerate(depths) for j in range(n) if j != 1]
total = sum(d * 2 for d in depths)
flags = {d > 1 for d in depths}
pick = 'a' if len(depths) == 2 and depths[0] >= 2 else 'b'
""")
    assert cfg["keys"] == ["s0.b0", "s1.b0"] and cfg["total"] == 6 and cfg["flags"] == {True, False}
    assert cfg["pick"] == "a" and "i" not in cfg and "d" not in cfg


# ---------------------------------------------------------------------------------------------- mutations
def test_update_append_extend_statements(tmp_path: Path) -> None:
    cfg = _load(tmp_path, """custom_keys = {'backbone': dict(lr_mult=0.1)}
norm = dict(decay_mult=0.0)
depths = [2, 2]
custom_keys.update({f'stages.{s}.blocks.{b}.norm': norm for s, n in enumerate(depths) for b in range(n)})
custom_keys.update(level_embed=norm)
hooks = []
hooks.append(dict(type='A'))
hooks.extend([dict(type='B')])
optimizer = dict(paramwise_cfg=dict(custom_keys=custom_keys))
""")
    keys = cfg["optimizer"]["paramwise_cfg"]["custom_keys"]
    assert list(keys) == ["backbone", "stages.0.blocks.0.norm", "stages.0.blocks.1.norm", "stages.1.blocks.0.norm",
                          "stages.1.blocks.1.norm", "level_embed"]
    assert cfg["hooks"] == [{"type": "A"}, {"type": "B"}]


@pytest.mark.parametrize(("text", "match"), [
    ("x.update(a=1)", "on a name not bound earlier"),
    ("x = [1]\nx.update(a=1)", "needs a dict, but `x` is a list"),
    ("x = {}\nx.append(1)", "needs a list, but `x` is a dict"),
    ("x = [1]\nx.pop()", "a function call"),
    ("x = [1]\nx.append(open('f', 'w'))", "a function call"),
    ("x = [1]\ny = x.append(2)", "a function call"),
    ("x = [1]\nx.append(x)\nx.extend(x * 600000)", "not allowed"),
])
def test_mutation_refusals(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        _load(tmp_path, text)


def test_mutating_a_base_value_needs_a_local_name(tmp_path: Path) -> None:
    (tmp_path / "base.py").write_text("keys = dict(a=1)\n")
    with pytest.raises(ConfigError, match="not bound earlier in this file"):
        _load(tmp_path, "_base_ = 'base.py'\nkeys.update(b=2)\n")


# ---------------------------------------------------------------------------------------------- what Python refuses
def test_duplicate_keyword_through_double_star_is_refused_as_python_does(tmp_path: Path) -> None:
    text = "warmup_cfg = dict(warmup='linear', warmup_iters=500)\nlr_config = dict(warmup='constant', **warmup_cfg)\n"
    with pytest.raises(ConfigError, match="got multiple values for keyword argument 'warmup'"):
        _load(tmp_path, text)
    path = tmp_path / "control.py"
    path.write_text(text)
    run = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=30)
    assert run.returncode != 0 and "multiple values for keyword argument 'warmup'" in run.stderr
    # a dict display with ** is fine in Python (later keys win), and so here
    assert _load(tmp_path, "a = dict(x=1)\nb = {**a, 'x': 2}\n")["b"] == {"x": 2}


def test_base_reference_inside_an_expression_is_evaluated_with_a_note(tmp_path: Path) -> None:
    (tmp_path / "base.py").write_text("lr = 0.02\nsteps = [8, 11]\n")
    (tmp_path / "cfg.py").write_text("_base_ = 'base.py'\nlr2 = {{_base_.lr}} * 2\nwhole = {{_base_.lr}}\n"
                                     "opt = dict(lr={{_base_.lr}})\ns = {{_base_.steps}}\nfirst = s[0]\n")
    notes: list[EvalNote] = []
    cfg = load_config(tmp_path / "cfg.py", notes=notes)
    assert cfg["lr2"] == 0.04 and cfg["whole"] == 0.02 and cfg["opt"] == {"lr": 0.02} and cfg["first"] == 8
    assert [(n.key, n.where.rsplit(":", 1)[1]) for n in notes] == [("lr2", "2"), ("first", "6")]
    assert all("mmcv 1.x replaces the reference by a placeholder string" in n.text for n in notes)


# ---------------------------------------------------------------------------------------------- messages
def test_errors_name_the_leaf_config_and_the_base_chain(tmp_path: Path) -> None:
    (tmp_path / "_base_").mkdir()
    (tmp_path / "_base_" / "model.py").write_text("a = 1\nb = getattr(a, 'real')\n")
    (tmp_path / "mid.py").write_text("_base_ = './_base_/model.py'\n")
    (tmp_path / "leaf.py").write_text("_base_ = ['./mid.py']\n")
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "leaf.py")
    message = str(err.value)
    expected = f"{tmp_path / 'leaf.py'} -> {tmp_path / 'mid.py'} -> {tmp_path / '_base_' / 'model.py'}:2: a function call"
    assert message.startswith(expected), message


# ---------------------------------------------------------------------------------------------- still refused
HIDDEN = {
    "getattr": "x = getattr(1, 'real')\nopen('{marker}', 'w')\n",
    "builtin_attribute": "x = len.__self__\nopen('{marker}', 'w')\n",
    "builtin_as_value": "f = sum\nopen('{marker}', 'w')\n",
    "sorted_key_open": "x = sorted(['{marker}'], key=open)\n",
    "range_class": "x = range(3).__class__\nopen('{marker}', 'w')\n",
    "str_method": "x = str(1).join(['a'])\nopen('{marker}', 'w')\n",
    "type_call": "x = type('A', (), {{}})\nopen('{marker}', 'w')\n",
    "vars_call": "x = vars()\nopen('{marker}', 'w')\n",
    "update_with_call": "d = {{}}\nd.update(f=open('{marker}', 'w'))\n",
    "mutation_on_call": "dict().update(a=open('{marker}', 'w'))\n",
    "comprehension_open": "x = [open('{marker}', 'w') for _ in range(1)]\n",
}


@pytest.mark.parametrize("snippet", sorted(HIDDEN))
def test_hidden_code_stays_refused(tmp_path: Path, snippet: str) -> None:
    marker = tmp_path / "MARKER"
    with pytest.raises(ConfigError, match=r"cfg\.py:\d+: "):
        _load(tmp_path, "a = 1\n" + HIDDEN[snippet].format(marker=marker))
    assert not marker.exists()
