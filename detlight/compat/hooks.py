"""Old home of the mmcv-hook adapter; kept so existing imports and ``class_path`` entries keep working.

Replaces: nothing itself. The pieces live in :mod:`detlight.compat.hook_base` (``Hook``, priorities, stages),
:mod:`detlight.compat.hook_registry` (``type`` names, building), :mod:`detlight.compat.hook_table` (mmcv's standard
hooks) and :mod:`detlight.callbacks.mmcv_hooks` (the ``MMCVHooks`` callback).
"""

from __future__ import annotations

from detlight.callbacks.mmcv_hooks import MMCVHooks
from detlight.compat.hook_base import DIRECT_STAGES, FALLBACKS, PRIORITIES, STAGES, Hook, Priority, get_priority
from detlight.compat.hook_registry import HookSpec, build_hook, check_hook, register_hook, registered_hooks
from detlight.compat.hook_table import HookMapping, lookup_standard_hook, standard_hook_table

__all__ = [
    "DIRECT_STAGES",
    "FALLBACKS",
    "PRIORITIES",
    "STAGES",
    "Hook",
    "HookMapping",
    "HookSpec",
    "MMCVHooks",
    "Priority",
    "build_hook",
    "check_hook",
    "get_priority",
    "lookup_standard_hook",
    "register_hook",
    "registered_hooks",
    "standard_hook_table",
]
