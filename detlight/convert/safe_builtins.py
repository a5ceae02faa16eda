"""Size limits and the table of builtins that the safe config evaluator allows (:mod:`detlight.convert.safe_eval`).

Replaces: the unrestricted builtins an mmcv ``.py`` config sees under ``mmcv.Config.fromfile``'s ``exec``. Each
builtin here checks that its arguments are data and bounds what it builds, so that a hostile file cannot exhaust
memory or CPU.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

__all__ = ["BUILTINS", "MAX_SIZE", "MAX_STEPS", "size_of"]

#: most elements (nested; string characters included) any value built by the file may hold.
MAX_SIZE = 1_000_000
#: most comprehension iterations one file may run (all comprehensions together).
MAX_STEPS = 1_000_000
_MAX_EXPONENT = 256
_MAX_INT_BITS = 4096
_HUGE_WIDTH = re.compile(r"\d{5,}")
_PERCENT_WIDTH = re.compile(r"%[#0\- +]*(?:\d{5,}|\*|\d*\.(?:\d{5,}|\*))")
_DATA = (list, tuple, dict, str, set, frozenset, range)


def size_of(value: Any, limit: int = MAX_SIZE) -> int:
    """Number of elements in ``value``: scalars and containers count 1, strings and ranges their length; nested.

    Counting stops past ``limit``. Shared sub-lists count every time they appear (``[[0] * 1000] * 1000`` is about a
    million), which is what a copy or a YAML dump of the value would cost.
    """
    total, stack = 0, [value]
    while stack and total <= limit:
        item = stack.pop()
        if isinstance(item, (str, range)):
            total += max(1, len(item))
        elif isinstance(item, dict):
            total += 1
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            total += 1
            stack.extend(item)
        else:
            total += 1
    return total


def _data_arg(name: str, value: Any) -> Any:
    if not isinstance(value, _DATA):
        raise TypeError(f"{name}() needs a list, tuple, dict, set, str or range here, not {type(value).__name__}")
    return value


def _range(*args: Any) -> range:
    if not all(isinstance(a, int) and not isinstance(a, bool) for a in args):
        raise TypeError("range() takes integers")
    result = range(*args)
    if len(result) > MAX_SIZE:
        raise _TooLarge(f"a range of {len(result)} numbers (at most {MAX_SIZE})")
    return result


def _sum(iterable: Any, start: Any = 0) -> Any:
    _data_arg("sum", iterable)
    if isinstance(start, (list, tuple, str)) and size_of([start, *iterable]) > MAX_SIZE:
        raise _TooLarge(f"a sum longer than {MAX_SIZE} elements")
    return sum(iterable, start)


def _min_max(func: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        if "key" in kwargs:
            raise TypeError(f"{func.__name__}(key=...) needs a function; configs cannot define one")
        if len(args) == 1:
            _data_arg(func.__name__, args[0])
        return func(*args, **kwargs)

    return call


def _sorted(iterable: Any, reverse: bool = False) -> list[Any]:
    return sorted(_data_arg("sorted", iterable), reverse=reverse)


def _as_list(name: str, func: Callable[..., Any]) -> Callable[..., list[Any]]:
    def call(*args: Any, **kwargs: Any) -> list[Any]:
        for arg in args:
            _data_arg(name, arg)
        return list(func(*args, **kwargs))

    return call


def _on_data(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        if args:
            _data_arg(name, args[0])
        return func(*args, **kwargs)

    return call


def _str(*args: Any, **kwargs: Any) -> str:
    if args and size_of(args[0]) > MAX_SIZE:
        raise _TooLarge(f"str() of a value with more than {MAX_SIZE} elements")
    return str(*args, **kwargs)


def _int(*args: Any, **kwargs: Any) -> int:
    if args and isinstance(args[0], str) and len(args[0]) > 4000:
        raise _TooLarge("int() of a string longer than 4000 digits")
    return int(*args, **kwargs)


def _seq_constructor(kind: type) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        if args:
            _data_arg(kind.__name__, args[0])
        return kind(*args, **kwargs)

    return call


#: the builtins a config may call, by name; each checks its arguments are data and bounds what it builds.
BUILTINS: dict[str, Callable[..., Any]] = {
    "dict": dict, "list": _seq_constructor(list), "tuple": _seq_constructor(tuple),
    "len": _on_data("len", len), "sum": _sum, "range": _range, "min": _min_max(min), "max": _min_max(max),
    "abs": abs, "round": round, "int": _int, "float": float, "str": _str, "bool": bool,
    "zip": _as_list("zip", zip), "enumerate": _on_data("enumerate", lambda *a, **k: list(enumerate(*a, **k))),
    "sorted": _sorted, "reversed": _as_list("reversed", reversed), "any": _on_data("any", any),
    "all": _on_data("all", all),
}


class _TooLarge(Exception):
    """A builtin would build a value above the size limits."""

