"""``{{ _base_.x }}`` references of mmcv ``.py`` configs, as read by the safe evaluator.

Replaces: mmcv ``Config._substitute_base_vars`` / ``_substitute_predefined_vars`` placeholders: before the file is
parsed each reference becomes a :data:`PLACEHOLDER` name, which the evaluator binds to a :class:`BaseRef` resolved
against the merged ``_base_`` configs.
"""

from __future__ import annotations

import ast
import copy
import re
from collections.abc import Mapping
from typing import Any

from detlight.exceptions import ConfigError

__all__ = ["PLACEHOLDER", "BaseRef", "value_dotted"]

#: ``{{ _base_.x }}`` references are replaced by this name (with a number) before the file is parsed.
PLACEHOLDER = "__detlight_base_ref_{}__"
_PLACEHOLDER_RE = re.compile(PLACEHOLDER.format(r"\d+"))


class BaseRef:
    """A ``{{ _base_.a.b }}`` reference, resolved against the merged bases when the evaluator reads it."""

    def __init__(self, dotted: str, base_cfg: Mapping[str, Any]) -> None:
        self.dotted = dotted
        self.base_cfg = base_cfg

    def resolve(self, where: str) -> Any:
        """The referenced value (a copy), or a :class:`ConfigError` naming the missing part."""
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


def _whole_value_nodes(tree: ast.AST) -> set[int]:
    """ids of the expression nodes where mmcv's ``{{ _base_.x }}`` placeholder string would be the whole value."""
    ids: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            ids.add(id(node.value))
        elif isinstance(node, ast.Dict):
            ids.update(id(v) for v in node.values)
        elif isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            ids.update(id(e) for e in node.elts)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict":
            ids.update(id(kw.value) for kw in node.keywords if kw.arg is not None)
    return ids


def value_dotted(ref: Any) -> str:
    """The ``a.b`` of a :class:`BaseRef` (for messages)."""
    return ref.dotted if isinstance(ref, BaseRef) else "?"
