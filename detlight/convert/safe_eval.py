"""The safe evaluator behind :func:`detlight.convert.config.load_config`: runs an mmcv ``.py`` config as data only.

Replaces: the ``exec`` of the config file that ``mmcv.Config.fromfile`` does. The file is parsed with :mod:`ast` and
only data-building constructs are evaluated:

- literals, list/tuple/set/dict displays, names bound earlier in the same file, arithmetic, subscripts and slices;
- string formatting: f-strings, ``%``, ``str.format`` without attribute or index fields;
- comprehensions and generator expressions (several ``for`` clauses, ``if`` filters);
- calls of the pure builtins real configs use, on data: ``len sum range min max abs round int float str bool list
  tuple dict zip enumerate sorted reversed any all`` (``zip`` / ``enumerate`` / ``reversed`` give lists);
- the statements ``x = ...``, ``x += ...``, ``x[k] = ...`` and ``x.update(...)`` / ``x.append(...)`` /
  ``x.extend(...)`` on a dict or list bound earlier in the same file.

Everything else (imports, attribute access, other calls, lambdas, ``if``/``for``/``def``/``with`` statements, ...)
raises :class:`~detlight.exceptions.ConfigError` naming the file, line and construct; nothing in the file is ever
executed. Sizes are bounded so that a hostile file cannot exhaust memory or CPU: every built value holds at most
:data:`MAX_SIZE` elements (characters of strings included), ``range`` at most :data:`MAX_SIZE` numbers, all
comprehension loops of one file at most :data:`MAX_STEPS` iterations, exponents at most 256 and integers 4096 bits.

Example:
    >>> import ast, pathlib
    >>> ev = Evaluator(pathlib.Path("cfg.py"))
    >>> ev.run(ast.parse("depths = [2, 2]\\nkeys = {}\\n"
    ...                  "keys.update({f'stage{i}.{j}': 0.0 for i, n in enumerate(depths) for j in range(n)})"))["keys"]
    {'stage0.0': 0.0, 'stage0.1': 0.0, 'stage1.0': 0.0, 'stage1.1': 0.0}
"""

from __future__ import annotations

import ast
import operator
import string
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from detlight.convert.base_ref import _PLACEHOLDER_RE, PLACEHOLDER, BaseRef, _whole_value_nodes, value_dotted
from detlight.convert.safe_builtins import (
    _DATA,
    _HUGE_WIDTH,
    _MAX_EXPONENT,
    _MAX_INT_BITS,
    _PERCENT_WIDTH,
    BUILTINS,
    MAX_SIZE,
    MAX_STEPS,
    _TooLarge,
    size_of,
)
from detlight.exceptions import ConfigError

__all__ = ["BUILTINS", "MAX_SIZE", "MAX_STEPS", "PLACEHOLDER", "BaseRef", "EvalNote", "Evaluator", "source"]

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
_COMPARE_OPS: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt,
    ast.GtE: operator.ge, ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b,
}
#: container methods allowed as statements (``x.update(...)``), by the container type they apply to.
MUTATIONS: dict[str, type] = {"update": dict, "append": list, "extend": list}


@dataclass(frozen=True)
class EvalNote:
    """Something the evaluator computed that mmcv would not have (shown in the conversion report)."""

    key: str
    where: str
    text: str


class Evaluator:
    """Evaluates the statements of one config file, allowing only data-building constructs.

    Args:
        path: the file, for messages.
        where: how messages name the file (default: its path); :mod:`detlight.convert.config` passes the
            ``_base_`` chain from the leaf config down to this file.
    """

    def __init__(self, path: Path, where: str | None = None) -> None:
        self.path = path
        self.where = where or str(path)
        self.names: dict[str, Any] = {}
        self.notes: list[EvalNote] = []
        self._whole: set[int] = set()
        self._from_base: set[str] = set()  # names holding a {{_base_.x}} value (a placeholder string in mmcv)
        self._key = ""
        self._steps = 0

    def run(self, tree: ast.Module) -> dict[str, Any]:
        """Evaluate every top-level statement; return the names bound (in binding order)."""
        self._whole = _whole_value_nodes(tree)
        bound: dict[str, Any] = {}
        for node in tree.body:
            self._key = ", ".join(_target_names(node))
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
                continue  # a docstring or a bare literal does nothing
            if isinstance(node, ast.Assign):
                value = self.eval(node.value)
                for target in node.targets:
                    self._assign(target, value, bound)
                    self._track_base(target, node.value)
            elif isinstance(node, ast.AnnAssign) and node.value is not None:
                self._assign(node.target, self.eval(node.value), bound)
                self._track_base(node.target, node.value)
            elif isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name):
                current = self._name(node.target, whole=False)
                self._assign(node.target, self._binop(node.op, current, self.eval(node.value), node), bound)
            elif isinstance(node, ast.Expr) and _is_mutation(node.value):
                self._mutate(node.value, bound)  # type: ignore[arg-type]
            elif isinstance(node, ast.Expr):
                raise self._refuse(node.value)
            else:
                raise self._refuse(node)
        return bound

    def eval(self, node: ast.AST) -> Any:
        """Value of one expression node, or a :class:`ConfigError` if it is not an allowed construct."""
        method = getattr(self, f"_eval_{type(node).__name__}", None)
        if method is None:
            raise self._refuse(node)
        return self._apply(method, node, node)

    # statements
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

    def _track_base(self, target: ast.expr, value: ast.expr) -> None:
        if not isinstance(target, ast.Name):
            return
        direct = isinstance(value, ast.Name) and (_PLACEHOLDER_RE.fullmatch(value.id) or value.id in self._from_base)
        (self._from_base.add if direct else self._from_base.discard)(target.id)

    def _mutate(self, call: ast.Call, bound: dict[str, Any]) -> None:
        func = call.func
        assert isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
        name, method = func.value.id, func.attr
        if name not in bound:
            raise self._disallowed(call, f"`{name}.{method}(...)` on a name not bound earlier in this file")
        container = self._name(func.value, whole=False)
        if not isinstance(container, MUTATIONS[method]):
            raise self._error(call, f"`{name}.{method}(...)` needs a {MUTATIONS[method].__name__}, but `{name}` is a "
                              f"{type(container).__name__}")
        args = self._elements(call.args)
        kwargs = self._keywords(call, method)
        self._apply(getattr(container, method), call, *args, **kwargs)
        if size_of(container) > MAX_SIZE:
            raise self._disallowed(call, f"a value with more than {MAX_SIZE} elements")

    # each _eval_<Node> handles one allowed ast node type
    def _eval_Constant(self, node: ast.Constant) -> Any:
        return node.value

    def _eval_Name(self, node: ast.Name) -> Any:
        return self._name(node, whole=id(node) in self._whole)

    def _eval_List(self, node: ast.List) -> list[Any]:
        return self._sized(node, self._elements(node.elts))

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

    def _eval_Compare(self, node: ast.Compare) -> bool:
        left = self.eval(node.left)
        for op, right_node in zip(node.ops, node.comparators):
            func = _COMPARE_OPS.get(type(op))
            if func is None:
                raise self._disallowed(node, f"comparison `{type(op).__name__}`")
            right = self.eval(right_node)
            if not self._apply(func, node, left, right):
                return False
            left = right
        return True

    def _eval_IfExp(self, node: ast.IfExp) -> Any:
        return self.eval(node.body) if self.eval(node.test) else self.eval(node.orelse)

    def _eval_BoolOp(self, node: ast.BoolOp) -> Any:
        value: Any = None
        for operand in node.values:
            value = self.eval(operand)
            if bool(value) == isinstance(node.op, ast.Or):
                return value
        return value

    def _eval_Subscript(self, node: ast.Subscript) -> Any:
        container, key = self.eval(node.value), self.eval(node.slice)
        if not isinstance(container, (dict, list, tuple, str, range)):
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
        if size_of(value) > MAX_SIZE:
            raise self._disallowed(node, f"formatting a value with more than {MAX_SIZE} elements")
        if node.conversion in conversions:
            value = conversions[node.conversion](value)
        spec = self.eval(node.format_spec) if node.format_spec is not None else ""
        self._check_spec(spec, node)
        return self._apply(format, node, value, spec)

    def _eval_Call(self, node: ast.Call) -> Any:
        func = node.func
        if isinstance(func, ast.Name) and func.id in BUILTINS and func.id not in self.names:
            args = self._elements(node.args)
            kwargs = self._keywords(node, f"{func.id}()")
            return self._sized(node, self._apply(BUILTINS[func.id], node, *args, **kwargs))
        if isinstance(func, ast.Attribute) and func.attr == "format" and not node.keywords:
            template = self.eval(func.value)
            if isinstance(template, str):
                self._check_format_fields(template, node)
                args = self._elements(node.args)
                if size_of(args) > MAX_SIZE:
                    raise self._disallowed(node, f"formatting values with more than {MAX_SIZE} elements")
                return self._sized(node, self._apply(template.format, node, *args))
        raise self._refuse(node)

    def _eval_ListComp(self, node: ast.ListComp) -> list[Any]:
        return self._sized(node, [self.eval(node.elt) for _ in self._comprehension(node.generators)])

    def _eval_GeneratorExp(self, node: ast.GeneratorExp) -> list[Any]:
        return self._sized(node, [self.eval(node.elt) for _ in self._comprehension(node.generators)])

    def _eval_SetComp(self, node: ast.SetComp) -> set[Any]:
        return {self.eval(node.elt) for _ in self._comprehension(node.generators)}

    def _eval_DictComp(self, node: ast.DictComp) -> dict[Any, Any]:
        return self._sized(node, {self.eval(node.key): self.eval(node.value)
                                  for _ in self._comprehension(node.generators)})

    # helpers
    def _comprehension(self, generators: list[ast.comprehension]) -> Iterator[None]:
        saved = dict(self.names)
        try:
            yield from self._loop(generators)
        finally:
            self.names = saved

    def _loop(self, generators: list[ast.comprehension]) -> Iterator[None]:
        gen, rest = generators[0], generators[1:]
        if gen.is_async:
            raise self._disallowed(gen.iter, "an async comprehension")
        iterable = self.eval(gen.iter)
        if not isinstance(iterable, _DATA):
            raise self._error(gen.iter, f"iterating over a {type(iterable).__name__}")
        for item in list(iterable):
            self._steps += 1
            if self._steps > MAX_STEPS:
                raise self._disallowed(gen.iter, f"comprehensions running more than {MAX_STEPS} iterations")
            self._assign(gen.target, item, {})
            if all(self.eval(cond) for cond in gen.ifs):
                if rest:
                    yield from self._loop(rest)
                else:
                    yield None

    def _name(self, node: ast.Name, whole: bool) -> Any:
        if node.id not in self.names:
            if node.id in BUILTINS:
                raise self._disallowed(node, f"`{node.id}` other than in a call `{node.id}(...)`")
            raise self._error(
                node,
                f"name `{node.id}` is not defined earlier in this file (names of `_base_` files are not visible; "
                f"write `{{{{_base_.{node.id}}}}}` to use one)",
            )
        value = self.names[node.id]
        if isinstance(value, BaseRef):
            value = value.resolve(self._at(node))
            if not whole:
                self._note_base_use(node, f"`{{{{_base_.{value_dotted(self.names[node.id])}}}}}`")
        elif not whole and node.id in self._from_base:
            self._note_base_use(node, f"`{node.id}` (bound to a `{{{{_base_...}}}}` reference)")
        return value

    def _note_base_use(self, node: ast.AST, what: str) -> None:
        self.notes.append(EvalNote(self._key, self._at(node), (
            f"{what} is used inside an expression; detlight evaluated it with the base value, but mmcv 1.x "
            "replaces the reference by a placeholder string before running the file, so there it fails or gives a "
            "string")))

    def _keywords(self, node: ast.Call, what: str) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        for kw in node.keywords:
            items = self._mapping(kw.value).items() if kw.arg is None else [(kw.arg, self.eval(kw.value))]
            for key, value in items:
                if not isinstance(key, str):
                    raise self._error(node, f"{what} keywords must be strings, but `**` gave {key!r}")
                if key in kwargs:
                    raise self._error(node, f"{what} got multiple values for keyword argument '{key}' (Python "
                                      "raises TypeError here; remove one of them)")
                kwargs[key] = value
        return kwargs

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
        if not isinstance(value, _DATA):
            raise self._error(node, f"unpacking a {type(value).__name__}")
        return value

    def _mapping(self, node: ast.expr) -> dict[Any, Any]:
        value = self.eval(node)
        if not isinstance(value, dict):
            raise self._error(node, f"`**` needs a dict, but got a {type(value).__name__}")
        return value

    def _sized(self, node: ast.AST, value: Any) -> Any:
        if isinstance(value, (list, tuple, dict, set, str)) and size_of(value) > MAX_SIZE:
            raise self._disallowed(node, f"a value with more than {MAX_SIZE} elements")
        return value

    def _binop(self, op: ast.operator, left: Any, right: Any, node: ast.AST) -> Any:
        func = _BIN_OPS.get(type(op))
        if func is None:
            raise self._disallowed(node, f"operator `{type(op).__name__}`")
        if isinstance(op, ast.Pow) and isinstance(right, (int, float)) and abs(right) > _MAX_EXPONENT:
            raise self._disallowed(node, f"an exponent above {_MAX_EXPONENT}")
        if isinstance(op, ast.Mult):
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(times, int) and times > 0 and (
                        times > MAX_SIZE or size_of(seq) * times > MAX_SIZE):
                    raise self._disallowed(node, f"a repeated sequence longer than {MAX_SIZE}")
        if isinstance(op, ast.Add) and isinstance(left, (str, list, tuple)) and size_of([left, right]) > MAX_SIZE:
            raise self._disallowed(node, f"a value with more than {MAX_SIZE} elements")
        if isinstance(op, ast.Mod) and isinstance(left, str):
            if _PERCENT_WIDTH.search(left):
                raise self._disallowed(node, "a `%` width or precision of 10000 or more, or `*`")
            if not isinstance(right, (str, int, float, tuple, dict, list, type(None))):
                raise self._error(node, f"`%` formatting with a {type(right).__name__}")
            if size_of(right) > MAX_SIZE:
                raise self._disallowed(node, f"formatting a value with more than {MAX_SIZE} elements")
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
        except _TooLarge as err:
            raise self._disallowed(node, str(err)) from None
        except (TypeError, ValueError, KeyError, IndexError, ZeroDivisionError, OverflowError) as err:
            raise self._error(node, f"evaluating `{source(node)}` failed: {type(err).__name__}: {err}") from None
        except RecursionError:
            raise self._disallowed(node, "an expression nested this deeply") from None
        if isinstance(result, int) and result.bit_length() > _MAX_INT_BITS:
            raise self._disallowed(node, f"an integer wider than {_MAX_INT_BITS} bits")
        return result

    def _check_spec(self, spec: str, node: ast.AST) -> None:
        if _HUGE_WIDTH.search(spec) or "{" in spec:
            raise self._disallowed(node, f"a nested or 10000+ wide format spec (`{spec}`)")

    def _at(self, node: ast.AST) -> str:
        return f"{self.where}:{getattr(node, 'lineno', '?')}"

    def _refuse(self, node: ast.AST) -> ConfigError:
        kind = type(node).__name__
        described = {
            "Import": "an import",
            "ImportFrom": "an import",
            "Call": "a function call",
            "Attribute": "attribute access",
            "Lambda": "a lambda",
        }.get(kind, f"a `{kind}` construct")
        return self._disallowed(node, f"{described} (`{source(node)}`)")

    def _disallowed(self, node: ast.AST, what: str) -> ConfigError:
        return ConfigError(
            f"{self._at(node)}: {what} is not allowed in a config read by detlight; configs may only contain data "
            f"(literals, names bound earlier, arithmetic, string formatting, comprehensions, the builtins "
            f"{', '.join(BUILTINS)}, and x.update/append/extend(...) statements). Nothing in the file was executed."
        )

    def _error(self, node: ast.AST, what: str) -> ConfigError:
        return ConfigError(f"{self._at(node)}: {what}.")




def _is_mutation(node: ast.expr) -> bool:
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in MUTATIONS
            and isinstance(node.func.value, ast.Name))


def _target_names(node: ast.stmt) -> list[str]:
    if isinstance(node, ast.Assign):
        targets: list[ast.expr] = list(node.targets)
    elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
        targets = [node.target]
    elif isinstance(node, ast.Expr) and _is_mutation(node.value):
        targets = [node.value.func.value]  # type: ignore[attr-defined]
    else:
        return []
    names: list[str] = []
    for target in targets:
        for sub in ast.walk(target):
            if isinstance(sub, ast.Name):
                names.append(sub.id)
                break
    return names


def source(node: ast.AST) -> str:
    """The source of ``node`` for a message: ``{{_base_...}}`` placeholders shown as such, at most 80 characters."""
    text = ast.unparse(node) if isinstance(node, ast.AST) else str(node)
    text = _PLACEHOLDER_RE.sub("{{_base_...}}", text).replace("\n", " ")
    return text if len(text) <= 80 else text[:77] + "..."
