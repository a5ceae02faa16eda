"""Safe reader for mmcv 1.x / mmdet 2.x / mmdet3d 1.0 ``.py`` configs.

Replaces: ``mmcv.Config.fromfile`` + ``Config.merge_from_dict``. mmcv executes the config file as Python; this reader
parses it with :mod:`ast` and evaluates only data with :class:`detlight.convert.safe_eval.Evaluator` (literals,
arithmetic, string formatting, comprehensions, pure builtins such as ``len`` / ``sum`` / ``range`` with size limits,
``x.update(...)`` / ``x.append(...)`` statements). Anything else (imports, other calls, attribute access, lambdas,
``if``/``for`` statements, ...) raises :class:`ConfigError` naming the leaf config, the ``_base_`` chain, the line
and the construct, before any of the file's code could run; nothing in a config file is ever executed.

Resolved like mmcv: ``_base_`` (a path or a list of paths, relative to the file, nested chains; a key defined in two
bases of one file is an error), child dicts merged into the base key by key, ``_delete_=True`` replacing the base
value, ``{{ _base_.a.b }}`` references to the merged bases, ``{{ fileDirname }}``-style predefined variables, and
``--cfg-options`` overrides (``a.b=1``, ``data.train.pipeline.1.type=X``) parsed like mmcv's ``DictAction``.
``custom_imports`` is returned as data; it is never imported here.

Example:
    >>> import pathlib, tempfile
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "base.py").write_text("optimizer = dict(type='SGD', lr=0.02, momentum=0.9)\\nlr = 0.02\\n")
    >>> _ = (d / "child.py").write_text("_base_ = './base.py'\\noptimizer = dict(lr={{_base_.lr}} / 2)\\n")
    >>> load_config(d / "child.py", ["optimizer.momentum=0.8"])["optimizer"]
    {'type': 'SGD', 'lr': 0.01, 'momentum': 0.8}
"""

from __future__ import annotations

import ast
import copy
import json
import os.path as osp
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from detlight.convert.safe_eval import PLACEHOLDER, BaseRef, EvalNote, Evaluator
from detlight.exceptions import ConfigError

__all__ = ["ConfigError", "EvalNote", "load_config", "merge_config", "parse_cfg_options", "parse_option_value"]

BASE_KEY = "_base_"
DELETE_KEY = "_delete_"

_BASE_REF = re.compile(r"\{\{\s*_base_\.([\w\.]+)\s*\}\}")
_Chain = tuple[Path, ...]


def load_config(
    path: str | Path,
    cfg_options: Sequence[str] | Mapping[str, Any] | None = None,
    notes: list[EvalNote] | None = None,
) -> dict[str, Any]:
    """Read an mmcv-style ``.py`` (or ``.json`` / ``.yaml``) config without executing it.

    Args:
        path: config file.
        cfg_options: ``--cfg-options`` overrides merged last: ``["a.b=1", "data.train.pipeline.1.type=X"]`` (values
            parsed like mmcv's ``DictAction``), or a mapping of dotted keys to already-parsed values.
        notes: when given, receives an :class:`EvalNote` for each value detlight computed that mmcv would not (a
            ``{{ _base_.x }}`` reference used inside an expression); the converter reports them.

    Returns:
        The resolved config as plain dicts, lists, tuples and scalars, without ``_base_`` and ``_delete_`` keys.

    Raises:
        ConfigError: the file uses a construct other than data, a ``_base_`` file is missing or cyclic, two bases
            define the same key, a ``{{ _base_.x }}`` reference or a ``--cfg-options`` key cannot be resolved.
            Messages name the leaf config and the ``_base_`` chain down to the offending file and line.
    """
    cfg = _load_file(Path(path).expanduser().resolve(), (), notes if notes is not None else [])
    if cfg_options:
        options = parse_cfg_options(cfg_options) if not isinstance(cfg_options, Mapping) else dict(cfg_options)
        cfg = merge_config(_unflatten(options), cfg, allow_list_keys=True, where="--cfg-options")
    return _strip_delete(cfg)


def merge_config(child: Mapping[str, Any], base: Any, allow_list_keys: bool = False, where: str = "") -> Any:
    """mmcv's ``Config._merge_a_into_b``: merge ``child`` into a copy of ``base``.

    A dict value merges into the base dict key by key unless it carries ``_delete_=True``, in which case it replaces
    the base value; any other value replaces. With ``allow_list_keys``, digit keys index into base lists (this is how
    ``--cfg-options data.train.pipeline.1.type=X`` edits one list element).
    """
    merged: Any = list(base) if isinstance(base, list) else dict(base)
    for key, value in child.items():
        if allow_list_keys and isinstance(merged, list):
            if not (isinstance(key, str) and key.isdigit()) or int(key) >= len(merged):
                raise ConfigError(
                    f"{where}: index `{key}` is out of range for a list of length {len(merged)}; "
                    f"use an index in 0..{len(merged) - 1}."
                )
            merged[int(key)] = merge_config(value, merged[int(key)], allow_list_keys, where) if isinstance(
                value, Mapping
            ) else value
        elif isinstance(value, Mapping):
            value = dict(value)
            delete = value.pop(DELETE_KEY, False)
            if key in merged and not delete:
                allowed = (dict, list) if allow_list_keys else (dict,)
                if not isinstance(merged[key], allowed):
                    raise ConfigError(
                        f"{where}: `{key}` is a dict in the child config but a {type(merged[key]).__name__} in its "
                        f"base, so it cannot be merged; add `{DELETE_KEY}=True` to the child dict to replace it."
                    )
                merged[key] = merge_config(value, merged[key], allow_list_keys, where)
            else:
                merged[key] = value
        else:
            merged[key] = value
    return merged


def parse_option_value(text: str) -> Any:
    """Parse one ``--cfg-options`` value the way mmcv 1.x ``DictAction._parse_iterable`` does.

    ints, floats, ``true``/``false`` (any case), ``None``, ``[a,b]`` lists, ``(a,b)`` tuples, nested brackets and bare
    ``a,b`` lists; anything else stays a string. As in mmcv, quotes around the whole value and all spaces are removed.

    Example:
        >>> parse_option_value("[1,(2,3e-2),true,None,x]")
        [1, (2, 0.03), True, None, 'x']
    """
    text = text.strip("'\"").replace(" ", "")
    is_tuple = False
    if text.startswith("(") and text.endswith(")"):
        is_tuple, text = True, text[1:-1]
    elif text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    elif "," not in text:
        return _parse_scalar(text)
    values = []
    while text:
        end = _next_top_level_comma(text)
        values.append(parse_option_value(text[:end]))
        text = text[end + 1 :]
    return tuple(values) if is_tuple else values


def parse_cfg_options(options: Sequence[str]) -> dict[str, Any]:
    """Turn ``["a.b=1", "c=[x,y]"]`` into ``{"a.b": 1, "c": ["x", "y"]}``."""
    parsed: dict[str, Any] = {}
    for item in options:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--cfg-options: expected `key=value` (e.g. `optimizer.lr=0.01`), but got `{item}`.")
        parsed[key.strip()] = parse_option_value(value)
    return parsed


def _parse_scalar(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return None if text == "None" else text


def _next_top_level_comma(text: str) -> int:
    if text.count("(") != text.count(")") or text.count("[") != text.count("]"):
        raise ConfigError(f"--cfg-options: unbalanced brackets in `{text}`.")
    depth = 0
    for idx, char in enumerate(text):
        depth += char in "([" and 1 or char in ")]" and -1 or 0
        if char == "," and depth == 0:
            return idx
    return len(text)


def _unflatten(options: Mapping[str, Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for full_key, value in options.items():
        node = tree
        *parents, last = full_key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return tree


def _strip_delete(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_delete(v) for k, v in value.items() if k != DELETE_KEY}
    if isinstance(value, list):
        return [_strip_delete(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_strip_delete(v) for v in value)
    return value


# --------------------------------------------------------------------------------------------------- file loading


def describe_chain(path: Path, chain: _Chain) -> str:
    """How messages name a file: the leaf config first, then each ``_base_`` down to ``path``.

    Example:
        >>> describe_chain(Path("/c/_base_/models/m.py"), (Path("/c/leaf.py"), Path("/c/mid.py")))
        '/c/leaf.py -> /c/mid.py -> /c/_base_/models/m.py'
    """
    return " -> ".join(str(p) for p in (*chain, path))


def _load_file(path: Path, chain: _Chain, notes: list[EvalNote]) -> dict[str, Any]:
    if path in chain:
        raise ConfigError(f"`_base_` inheritance is cyclic: {describe_chain(path, chain)}.")
    if not path.is_file():
        where = f" (a `_base_` of {describe_chain(chain[-1], chain[:-1])})" if chain else ""
        raise ConfigError(f"Config file {path}{where} does not exist.")
    if path.suffix == ".py":
        return _load_py(path, chain, notes)
    if path.suffix in (".json", ".yaml", ".yml"):
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        if not isinstance(data, dict):
            raise ConfigError(f"{describe_chain(path, chain)}: expected a mapping at the top level, got "
                              f"{type(data).__name__}.")
        base_cfg = _load_bases(path, chain, data.pop(BASE_KEY, None), notes)
        return merge_config(data, base_cfg, where=describe_chain(path, chain))
    raise ConfigError(f"{describe_chain(path, chain)}: unsupported config type `{path.suffix}`; expected .py, .json, "
                      ".yaml or .yml.")


def _load_bases(path: Path, chain: _Chain, bases: Any, notes: list[EvalNote]) -> dict[str, Any]:
    if bases is None:
        return {}
    where = describe_chain(path, chain)
    names = [bases] if isinstance(bases, str) else bases
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"{where}: `_base_` must be a path or a list of paths, but got {bases!r}.")
    merged: dict[str, Any] = {}
    for name in names:
        if "::" in name:
            raise ConfigError(
                f"{where}: `_base_ = {name!r}` refers to a config inside an installed package (mmengine syntax); "
                "copy that file next to this config and use a relative path."
            )
        base = _load_file((path.parent / osp.expanduser(name)).resolve(), (*chain, path), notes)
        duplicated = sorted(set(base) & set(merged))
        if duplicated:
            raise ConfigError(f"{where}: keys {duplicated} are defined in more than one `_base_` file; keep one.")
        merged.update(base)
    return merged


def _load_py(path: Path, chain: _Chain, notes: list[EvalNote]) -> dict[str, Any]:
    text = _substitute_predefined(path, path.read_text(encoding="utf-8"))
    refs: dict[str, str] = {}
    where = describe_chain(path, chain)

    def to_placeholder(match: re.Match[str]) -> str:
        name = PLACEHOLDER.format(len(refs))
        refs[name] = match.group(1)
        return name

    text = _BASE_REF.sub(to_placeholder, text)
    try:
        tree = ast.parse(text, filename=str(path))
    except SyntaxError as err:
        raise ConfigError(f"{where}:{err.lineno}: syntax error: {err.msg}.") from None
    evaluator = Evaluator(path, where)
    base_node = _find_base_assignment(tree)
    bases = evaluator.eval(base_node.value) if base_node is not None else None
    base_cfg = _load_bases(path, chain, bases, notes)
    evaluator.names.update({name: BaseRef(dotted, base_cfg) for name, dotted in refs.items()})
    own = evaluator.run(tree)
    notes.extend(evaluator.notes)
    own.pop(BASE_KEY, None)
    own = {k: v for k, v in own.items() if not k.startswith("__")}
    return merge_config(copy.deepcopy(own), base_cfg, where=where)


def _substitute_predefined(path: Path, text: str) -> str:
    values = {
        "fileDirname": str(path.parent),
        "fileBasename": path.name,
        "fileBasenameNoExtension": path.stem,
        "fileExtname": path.suffix,
    }
    for key, value in values.items():
        text = re.sub(r"\{\{\s*" + key + r"\s*\}\}", value.replace("\\", "/"), text)
    return text


def _find_base_assignment(tree: ast.Module) -> ast.Assign | None:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == BASE_KEY for t in node.targets):
            return node
    return None
