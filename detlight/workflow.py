"""Old home of :class:`~detlight.callbacks.workflow.Workflow` (kept for imports and YAML ``class_path`` entries)."""

from detlight.callbacks.workflow import RUNNER_TYPES, Workflow

__all__ = ["RUNNER_TYPES", "Workflow"]
