"""Safe reader for mmcv 1.x / mmdet 2.x / mmdet3d 1.0 ``.py`` configs.

Replaces: ``mmcv.Config.fromfile`` + ``Config.merge_from_dict``. mmcv executes the config file as Python; this reader
parses it with :mod:`ast` and evaluates only data: literals, ``dict()`` / ``list()`` / ``tuple()`` calls, names bound
earlier in the same file, arithmetic, list/tuple/dict/set displays, subscripts, string formatting (f-strings, ``%``,
``str.format`` without attribute or index fields) and simple comprehensions. Anything else (imports, other calls,
attribute access, lambdas, ``if``/``for`` statements, ...) raises :class:`ConfigError` naming the file, line and
construct, before any of the file's code could run; nothing in a config file is ever executed.

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
import operator
import os.path as osp
import re
import string
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from detlight.exceptions import ConfigError

__all__ = ["ConfigError", "load_config", "merge_config", "parse_cfg_options", "parse_option_value"]

BASE_KEY = "_base_"
DELETE_KEY = "_delete_"

_BASE_REF = re.compile(r"\{\{\s*_base_\.([\w\.]+)\s*\}\}")
_PLACEHOLDER = "__detlight_base_ref_{}__"
_BIN_OPS: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY_OPS: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
    ast.Not: operator.not_,
}
_CONSTRUCTORS: dict[str, Callable[..., Any]] = {"dict": dict, "list": list, "tuple": tuple}
# Bounds that keep a hostile config from exhausting memory or CPU with `'a' * 10**12` or `9 ** 9 ** 9`.
_MAX_EXPONENT = 256
_MAX_SEQ_LEN = 1_000_000
_MAX_INT_BITS = 4096
_HUGE_WIDTH = re.compile(r"\d{5,}")
_PERCENT_WIDTH = re.compile(r"%[#0\- +]*(?:\d{5,}|\*|\d*\.(?:\d{5,}|\*))")




def load_config(path: str | Path, cfg_options: Sequence[str] | Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Read an mmcv-style ``.py`` (or ``.json`` / ``.yaml``) config without executing it.

    Args:
        path: config file.
        cfg_options: ``--cfg-options`` overrides merged last: ``["a.b=1", "data.train.pipeline.1.type=X"]`` (values
            parsed like mmcv's ``DictAction``), or a mapping of dotted keys to already-parsed values.

    Returns:
        The resolved config as plain dicts, lists, tuples and scalars, without ``_base_`` and ``_delete_`` keys.

    Raises:
        ConfigError: the file uses a construct other than data, a ``_base_`` file is missing or cyclic, two bases
            define the same key, a ``{{ _base_.x }}`` reference or a ``--cfg-options`` key cannot be resolved.
    """
    cfg = _load_file(Path(path).expanduser().resolve(), ())
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


def _load_file(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    if path in chain:
        cycle = " -> ".join(str(p) for p in (*chain, path))
        raise ConfigError(f"`_base_` inheritance is cyclic: {cycle}.")
    if not path.is_file():
        where = f" (a `_base_` of {chain[-1]})" if chain else ""
        raise ConfigError(f"Config file {path}{where} does not exist.")
    if path.suffix == ".py":
        return _load_py(path, chain)
    if path.suffix in (".json", ".yaml", ".yml"):
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}.")
        return _with_bases(path, chain, data.pop(BASE_KEY, None), data)
    raise ConfigError(f"{path}: unsupported config type `{path.suffix}`; expected .py, .json, .yaml or .yml.")


def _with_bases(path: Path, chain: tuple[Path, ...], bases: Any, own: dict[str, Any]) -> dict[str, Any]:
    base_cfg = _load_bases(path, chain, bases)
    return merge_config(own, base_cfg, where=str(path))


def _load_bases(path: Path, chain: tuple[Path, ...], bases: Any) -> dict[str, Any]:
    if bases is None:
        return {}
    names = [bases] if isinstance(bases, str) else bases
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"{path}: `_base_` must be a path or a list of paths, but got {bases!r}.")
    merged: dict[str, Any] = {}
    for name in names:
        if "::" in name:
            raise ConfigError(
                f"{path}: `_base_ = {name!r}` refers to a config inside an installed package (mmengine syntax); "
                "copy that file next to this config and use a relative path."
            )
        base = _load_file((path.parent / osp.expanduser(name)).resolve(), (*chain, path))
        duplicated = sorted(set(base) & set(merged))
        if duplicated:
            raise ConfigError(f"{path}: keys {duplicated} are defined in more than one `_base_` file; keep one.")
        merged.update(base)
    return merged


def _load_py(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    text = _substitute_predefined(path, path.read_text(encoding="utf-8"))
    refs: dict[str, str] = {}

    def to_placeholder(match: re.Match[str]) -> str:
        name = _PLACEHOLDER.format(len(refs))
        refs[name] = match.group(1)
        return name

    text = _BASE_REF.sub(to_placeholder, text)
    try:
        tree = ast.parse(text, filename=str(path))
    except SyntaxError as err:
        raise ConfigError(f"{path}:{err.lineno}: syntax error: {err.msg}.") from None
    evaluator = _Evaluator(path)
    base_node = _find_base_assignment(tree)
    bases = evaluator.eval(base_node.value) if base_node is not None else None
    base_cfg = _load_bases(path, chain, bases)
    evaluator.names.update({name: _BaseRef(dotted, base_cfg) for name, dotted in refs.items()})
    own = evaluator.run(tree)
    own.pop(BASE_KEY, None)
    own = {k: v for k, v in own.items() if not k.startswith("__")}
    return merge_config(copy.deepcopy(own), base_cfg, where=str(path))


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


class _BaseRef:
    """A ``{{ _base_.a.b }}`` reference, resolved against the merged bases when the evaluator reads it."""

    def __init__(self, dotted: str, base_cfg: Mapping[str, Any]) -> None:
        self.dotted = dotted
        self.base_cfg = base_cfg

    def resolve(self, where: str) -> Any:
        value: Any = self.base_cfg
        for part in self.dotted.split("."):
            if isinstance(value, Mapping) and part in value:
                value = value[part]
            elif isinstance(value, (list, tuple)) and part.isdigit() and int(part) < len(value):
                value = value[int(part)]
            else:
                known = sorted(value) if isinstance(value, Mapping) else f"a {type(value).__name__}"
                raise ConfigError(
                    f"{where}: `{{{{_base_.{self.dotted}}}}}` cannot be resolved: `{part}` is not in the merged "
                    f"`_base_` config (available there: {known})."
                )
        return copy.deepcopy(value)


# --------------------------------------------------------------------------------------------------- evaluation


class _Evaluator:
    """Evaluates the statements of one config file, allowing only data-building constructs."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.names: dict[str, Any] = {}

    def run(self, tree: ast.Module) -> dict[str, Any]:
        bound: dict[str, Any] = {}
        for node in tree.body:
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
                continue  # a docstring or a bare literal does nothing
            if isinstance(node, ast.Assign):
                value = self.eval(node.value)
                for target in node.targets:
                    self._assign(target, value, bound)
            elif isinstance(node, ast.AnnAssign) and node.value is not None:
                self._assign(node.target, self.eval(node.value), bound)
            elif isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name):
                current = self._name(node.target)
                self._assign(node.target, self._binop(node.op, current, self.eval(node.value), node), bound)
            else:
                raise self._refuse(node)
        return bound

    def _assign(self, target: ast.expr, value: Any, bound: dict[str, Any]) -> None:
        if isinstance(target, ast.Name):
            self.names[target.id] = bound[target.id] = value
        elif isinstance(target, (ast.Tuple, ast.List)) and all(isinstance(t, ast.Name) for t in target.elts):
            items = list(value) if isinstance(value, (list, tuple)) else None
            if items is None or len(items) != len(target.elts):
                raise self._error(target, f"cannot unpack {value!r} into {len(target.elts)} names")
            for elt, item in zip(target.elts, items):
                self._assign(elt, item, bound)
        elif isinstance(target, ast.Subscript):
            container, key = self.eval(target.value), self.eval(target.slice)
            if not isinstance(container, (dict, list)):
                raise self._disallowed(target, f"item assignment on a {type(container).__name__}")
            try:
                container[key] = value
            except (IndexError, TypeError) as err:
                raise self._error(target, f"item assignment failed ({err})") from None
        else:
            raise self._refuse(target)

    def eval(self, node: ast.AST) -> Any:
        method = getattr(self, f"_eval_{type(node).__name__}", None)
        if method is None:
            raise self._refuse(node)
        return self._apply(method, node, node)

    # each _eval_<Node> handles one allowed ast node type
    def _eval_Constant(self, node: ast.Constant) -> Any:
        return node.value

    def _eval_Name(self, node: ast.Name) -> Any:
        return self._name(node)

    def _eval_List(self, node: ast.List) -> list[Any]:
        return self._elements(node.elts)

    def _eval_Tuple(self, node: ast.Tuple) -> tuple[Any, ...]:
        return tuple(self._elements(node.elts))

    def _eval_Set(self, node: ast.Set) -> set[Any]:
        return set(self._elements(node.elts))

    def _eval_Dict(self, node: ast.Dict) -> dict[Any, Any]:
        result: dict[Any, Any] = {}
        for key, value in zip(node.keys, node.values):
            if key is None:
                result.update(self._mapping(value))
            else:
                result[self.eval(key)] = self.eval(value)
        return result

    def _eval_BinOp(self, node: ast.BinOp) -> Any:
        return self._binop(node.op, self.eval(node.left), self.eval(node.right), node)

    def _eval_UnaryOp(self, node: ast.UnaryOp) -> Any:
        op = _UNARY_OPS.get(type(node.op))
        if op is None:
            raise self._refuse(node)
        return self._apply(op, node, self.eval(node.operand))

    def _eval_Subscript(self, node: ast.Subscript) -> Any:
        container, key = self.eval(node.value), self.eval(node.slice)
        if not isinstance(container, (dict, list, tuple, str)):
            raise self._error(node, f"subscript of a {type(container).__name__}")
        return self._apply(operator.getitem, node, container, key)

    def _eval_Slice(self, node: ast.Slice) -> slice:
        parts = (node.lower, node.upper, node.step)
        return slice(*(None if p is None else self.eval(p) for p in parts))

    def _eval_JoinedStr(self, node: ast.JoinedStr) -> str:
        return "".join(str(self.eval(v)) for v in node.values)

    def _eval_FormattedValue(self, node: ast.FormattedValue) -> str:
        value = self.eval(node.value)
        conversions: dict[int, Callable[[Any], str]] = {ord("r"): repr, ord("s"): str, ord("a"): ascii}
        if node.conversion in conversions:
            value = conversions[node.conversion](value)
        spec = self.eval(node.format_spec) if node.format_spec is not None else ""
        self._check_spec(spec, node)
        return self._apply(format, node, value, spec)

    def _eval_Call(self, node: ast.Call) -> Any:
        func = node.func
        if isinstance(func, ast.Name) and func.id in _CONSTRUCTORS and func.id not in self.names:
            args = self._elements(node.args)
            kwargs: dict[str, Any] = {}
            for kw in node.keywords:
                if kw.arg is None:
                    kwargs.update(self._mapping(kw.value))
                else:
                    kwargs[kw.arg] = self.eval(kw.value)
            return self._apply(_CONSTRUCTORS[func.id], node, *args, **kwargs)
        if isinstance(func, ast.Attribute) and func.attr == "format" and not node.keywords:
            template = self.eval(func.value)
            if isinstance(template, str):
                self._check_format_fields(template, node)
                return self._apply(template.format, node, *self._elements(node.args))
        raise self._refuse(node)

    def _eval_ListComp(self, node: ast.ListComp) -> list[Any]:
        return [self.eval(node.elt) for _ in self._comprehension(node.generators)]

    def _eval_DictComp(self, node: ast.DictComp) -> dict[Any, Any]:
        return {self.eval(node.key): self.eval(node.value) for _ in self._comprehension(node.generators)}

    # helpers
    def _comprehension(self, generators: list[ast.comprehension]) -> Any:
        if len(generators) != 1 or generators[0].ifs or generators[0].is_async:
            raise self._disallowed(generators[0], "a comprehension other than `[expr for name in iterable]`")
        gen = generators[0]
        iterable = self.eval(gen.iter)
        if not isinstance(iterable, (list, tuple, dict, str, set)):
            raise self._error(gen.iter, f"iterating over a {type(iterable).__name__}")
        saved = dict(self.names)
        try:
            for item in list(iterable):
                self._assign(gen.target, item, {})
                yield item
        finally:
            self.names = saved

    def _name(self, node: ast.Name) -> Any:
        if node.id not in self.names:
            if node.id in _CONSTRUCTORS:
                raise self._disallowed(node, f"`{node.id}` other than in a call `{node.id}(...)`")
            raise self._error(
                node,
                f"name `{node.id}` is not defined earlier in this file (names of `_base_` files are not visible; "
                f"write `{{{{_base_.{node.id}}}}}` to use one)",
            )
        value = self.names[node.id]
        return value.resolve(f"{self.path}:{node.lineno}") if isinstance(value, _BaseRef) else value

    def _elements(self, nodes: list[ast.expr]) -> list[Any]:
        values: list[Any] = []
        for elt in nodes:
            if isinstance(elt, ast.Starred):
                values.extend(self._iterable(elt.value))
            else:
                values.append(self.eval(elt))
        return values

    def _iterable(self, node: ast.expr) -> Any:
        value = self.eval(node)
        if not isinstance(value, (list, tuple, dict, str, set)):
            raise self._error(node, f"unpacking a {type(value).__name__}")
        return value

    def _mapping(self, node: ast.expr) -> dict[Any, Any]:
        value = self.eval(node)
        if not isinstance(value, dict):
            raise self._error(node, f"`**` needs a dict, but got a {type(value).__name__}")
        return value

    def _binop(self, op: ast.operator, left: Any, right: Any, node: ast.AST) -> Any:
        func = _BIN_OPS.get(type(op))
        if func is None:
            raise self._disallowed(node, f"operator `{type(op).__name__}`")
        if isinstance(op, ast.Pow) and isinstance(right, (int, float)) and abs(right) > _MAX_EXPONENT:
            raise self._disallowed(node, f"an exponent above {_MAX_EXPONENT}")
        if isinstance(op, ast.Mult):
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(times, int) and len(seq) * times > _MAX_SEQ_LEN:
                    raise self._disallowed(node, f"a repeated sequence longer than {_MAX_SEQ_LEN}")
        if isinstance(op, ast.Mod) and isinstance(left, str):
            if _PERCENT_WIDTH.search(left):
                raise self._disallowed(node, "a `%` width or precision of 10000 or more, or `*`")
            if not isinstance(right, (str, int, float, tuple, dict, list, type(None))):
                raise self._error(node, f"`%` formatting with a {type(right).__name__}")
        return self._apply(func, node, left, right)

    def _check_format_fields(self, template: str, node: ast.AST) -> None:
        try:
            fields = [(f, spec or "") for _, f, spec, _ in string.Formatter().parse(template) if f is not None]
        except ValueError as err:
            raise self._error(node, f"invalid format string ({err})") from None
        for field, spec in fields:
            self._check_spec(spec, node)
            if "." in field or "[" in field:
                raise self._disallowed(node, f"format field `{{{field}}}` (attribute or index access)")

    def _apply(self, func: Callable[..., Any], node: ast.AST, *args: Any, **kwargs: Any) -> Any:
        try:
            result = func(*args, **kwargs)
        except ConfigError:
            raise
        except (TypeError, ValueError, KeyError, IndexError, ZeroDivisionError, OverflowError) as err:
            raise self._error(node, f"evaluating `{_source(node)}` failed: {type(err).__name__}: {err}") from None
        except RecursionError:
            raise self._disallowed(node, "an expression nested this deeply") from None
        if isinstance(result, int) and result.bit_length() > _MAX_INT_BITS:
            raise self._disallowed(node, f"an integer wider than {_MAX_INT_BITS} bits")
        return result

    def _check_spec(self, spec: str, node: ast.AST) -> None:
        if _HUGE_WIDTH.search(spec) or "{" in spec:
            raise self._disallowed(node, f"a nested or 10000+ wide format spec (`{spec}`)")

    def _refuse(self, node: ast.AST) -> ConfigError:
        kind = type(node).__name__
        described = {
            "Import": "an import",
            "ImportFrom": "an import",
            "Call": "a function call",
            "Attribute": "attribute access",
            "Lambda": "a lambda",
        }.get(kind, f"a `{kind}` construct")
        return self._disallowed(node, f"{described} (`{_source(node)}`)")

    def _disallowed(self, node: ast.AST, what: str) -> ConfigError:
        return ConfigError(
            f"{self.path}:{getattr(node, 'lineno', '?')}: {what} is not allowed in a config read by detlight; "
            "configs may only contain data (literals, dict()/list()/tuple(), names bound earlier, arithmetic, string "
            "formatting). Nothing in the file was executed."
        )

    def _error(self, node: ast.AST, what: str) -> ConfigError:
        return ConfigError(f"{self.path}:{getattr(node, 'lineno', '?')}: {what}.")


def _source(node: ast.AST) -> str:
    text = ast.unparse(node) if isinstance(node, ast.AST) else str(node)
    text = re.sub(_PLACEHOLDER.format(r"(\d+)"), "{{_base_...}}", text).replace("\n", " ")
    return text if len(text) <= 80 else text[:77] + "..."
