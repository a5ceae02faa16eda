"""The base of an mmcv-style hook: its stages, its generic fallbacks, its helpers and mmcv's priority levels.

Replaces: ``mmcv.runner.Hook`` (``mmcv/runner/hooks/hook.py``) and ``mmcv.runner.priority`` (``Priority``,
``get_priority``) for users without mmcv. A hook written against mmcv's own ``Hook`` needs none of this: any object
with mmcv's stage methods runs in :class:`~detlight.callbacks.mmcv_hooks.MMCVHooks`.
"""

from __future__ import annotations

import enum
from typing import Any

from detlight.exceptions import ConfigError

__all__ = ["DIRECT_STAGES", "FALLBACKS", "PRIORITIES", "STAGES", "Hook", "Priority", "get_priority"]


class Priority(enum.Enum):
    """mmcv's hook priority levels (``mmcv/runner/priority.py``): lower runs first."""

    HIGHEST = 0
    VERY_HIGH = 10
    HIGH = 30
    ABOVE_NORMAL = 40
    NORMAL = 50
    BELOW_NORMAL = 60
    LOW = 70
    VERY_LOW = 90
    LOWEST = 100


#: ``Priority`` as a plain name -> value table.
PRIORITIES: dict[str, int] = {level.name: level.value for level in Priority}

#: The stages a runner calls, in mmcv's ``Hook.stages`` order.
STAGES: tuple[str, ...] = (
    "before_run", "before_train_epoch", "before_train_iter", "after_train_iter", "after_train_epoch",
    "before_val_epoch", "before_val_iter", "after_val_iter", "after_val_epoch", "after_run",
)
#: Stages that fall back to a generic method, as ``mmcv.runner.Hook`` does by default.
FALLBACKS: dict[str, str] = {
    "before_train_epoch": "before_epoch", "before_val_epoch": "before_epoch",
    "after_train_epoch": "after_epoch", "after_val_epoch": "after_epoch",
    "before_train_iter": "before_iter", "before_val_iter": "before_iter",
    "after_train_iter": "after_iter", "after_val_iter": "after_iter",
}
#: Called directly by IterBasedRunner (once each).
DIRECT_STAGES: tuple[str, ...] = ("before_epoch", "after_epoch")


def get_priority(priority: int | str | Any) -> int:
    """mmcv's ``get_priority``: an int in [0, 100], a :class:`Priority` name (any case) or an enum with ``.value``.

    Raises:
        ConfigError: an int outside [0, 100], an unknown name, or another type (a ``ValueError``, as mmcv raises).
    """
    value = getattr(priority, "value", priority)
    accepted = f"an int in [0, 100] or one of {list(PRIORITIES)}"
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ConfigError(f"Hook priority must be {accepted}, but got {priority!r}")
    if isinstance(value, int):
        if not 0 <= value <= 100:
            raise ConfigError(f"Hook priority must be in [0, 100], but got {value}")
        return value
    key = value.upper()
    if key not in PRIORITIES:
        raise ConfigError(f"Unknown hook priority {value!r}; expected {accepted}")
    return PRIORITIES[key]


class Hook:
    """Dependency-free twin of ``mmcv.runner.Hook``: no-op stages, mmcv's fallbacks and helpers.

    Replaces: ``mmcv.runner.Hook`` for users without mmcv (it is also ``mmcv.runner.Hook`` under
    :func:`detlight.compat.install_mmcv_shim`). Subclasses of mmcv's own ``Hook`` work just as well.

    Example:
        >>> class CountIters(Hook):
        ...     def __init__(self): self.n = 0
        ...     def after_iter(self, runner): self.n += 1
        >>> hook = CountIters(); hook.after_train_iter(None); hook.after_val_iter(None); hook.n
        2
    """

    stages = STAGES

    def before_run(self, runner: Any) -> None:
        pass

    def after_run(self, runner: Any) -> None:
        pass

    def before_epoch(self, runner: Any) -> None:
        pass

    def after_epoch(self, runner: Any) -> None:
        pass

    def before_iter(self, runner: Any) -> None:
        pass

    def after_iter(self, runner: Any) -> None:
        pass

    def before_train_epoch(self, runner: Any) -> None:
        self.before_epoch(runner)

    def before_val_epoch(self, runner: Any) -> None:
        self.before_epoch(runner)

    def after_train_epoch(self, runner: Any) -> None:
        self.after_epoch(runner)

    def after_val_epoch(self, runner: Any) -> None:
        self.after_epoch(runner)

    def before_train_iter(self, runner: Any) -> None:
        self.before_iter(runner)

    def before_val_iter(self, runner: Any) -> None:
        self.before_iter(runner)

    def after_train_iter(self, runner: Any) -> None:
        self.after_iter(runner)

    def after_val_iter(self, runner: Any) -> None:
        self.after_iter(runner)

    def every_n_epochs(self, runner: Any, n: int) -> bool:
        return (runner.epoch + 1) % n == 0 if n > 0 else False

    def every_n_inner_iters(self, runner: Any, n: int) -> bool:
        return (runner.inner_iter + 1) % n == 0 if n > 0 else False

    def every_n_iters(self, runner: Any, n: int) -> bool:
        return (runner.iter + 1) % n == 0 if n > 0 else False

    def end_of_epoch(self, runner: Any) -> bool:
        return runner.inner_iter + 1 == len(runner.data_loader)

    def is_last_epoch(self, runner: Any) -> bool:
        return runner.epoch + 1 == runner._max_epochs

    def is_last_iter(self, runner: Any) -> bool:
        return runner.iter + 1 == runner._max_iters

    def get_triggered_stages(self) -> list[str]:
        """The stages this hook overrides (mmcv ``Hook.get_triggered_stages``)."""
        overridden = {name for name in (*STAGES, *DIRECT_STAGES, "before_iter", "after_iter")
                      if getattr(type(self), name, None) is not getattr(Hook, name, None)}
        return [stage for stage in STAGES if stage in overridden or FALLBACKS.get(stage) in overridden]
