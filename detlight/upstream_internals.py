"""Every private attribute, private import and private override of Lightning, jsonargparse, argparse, torch's
``DataLoader`` and torchvision that detlight relies on, each behind one small named function.

Replaces: nothing in mmcv. It exists so that an upgrade of one of these libraries fails in one place: each function
says which public behaviour it stands in for, the version it was checked on and what breaks when the internal
changes, and ``tests/test_internals.py`` has one test per function that exercises it against the installed
libraries. No other module under ``detlight/`` touches these internals (``tests/test_internals.py`` checks that with
an AST scan).

Checked on: lightning 2.6.6, jsonargparse 4.53.0, torch 2.14, torchvision 0.29, Python 3.11.

Internals (function -> the internal it wraps -> where detlight uses it):

- :func:`keep_first_loop_iter` -> ``trainer._logger_connector._first_loop_iter`` -> ``callbacks/evaluation.py``
- :func:`request_graceful_stop` -> ``trainer._signal_connector.received_sigterm`` -> ``callbacks/preemption.py``
- :func:`set_restored_signal_handler` -> ``trainer._signal_connector._original_handlers`` -> ``callbacks/preemption.py``
- :func:`pending_loader_states`, :func:`clear_pending_loader_states` -> ``fit_loop._combined_loader_states_to_load``
  -> ``data/loader_state.py``
- :func:`dump_trainer_checkpoint` -> ``trainer._checkpoint_connector.dump_checkpoint`` -> ``compat/runner.py``
- :func:`save_checkpoint_via` -> ``ModelCheckpoint._save_checkpoint`` -> ``callbacks/checkpoint.py``
- :data:`FIND_LAST_CHECKPOINTS` -> override of ``ModelCheckpoint._find_last_checkpoints`` -> ``callbacks/checkpoint.py``
- :func:`callback_state_key` -> ``Callback._generate_state_key`` -> ``callbacks/checkpoint.py``, ``callbacks/ema.py``,
  ``callbacks/mmcv_hooks.py``
- :func:`progress_bar_leave` -> ``TQDMProgressBar._leave`` -> ``callbacks/progress_bar.py``
- :func:`is_local_path` -> ``lightning.fabric.utilities.cloud_io._is_local_file_protocol`` -> ``checkpoint_io.py``
- :func:`attached_trainer` -> ``LightningModule._trainer`` -> ``module.py``
- :func:`strategy_ddp_kwargs` -> ``DDPStrategy._ddp_kwargs`` -> ``dist.py``
- :func:`parser_option_actions` -> argparse ``parser._option_string_actions`` -> ``cli_app.py``, ``errors.py``
- :func:`parser_actions` -> argparse ``parser._actions`` -> ``errors.py``
- :func:`action_typehint`, :func:`set_action_typehint` -> jsonargparse ``ActionTypeHint._typehint`` -> ``cli_app.py``
- :func:`uncached_union` -> ``typing._UnionGenericAlias(origin, args, name=)`` -> ``cli_app.py``
- :func:`followed_parameters` -> ``jsonargparse._parameter_resolvers.get_signature_parameters`` ->
  ``models/torchvision_factory.py``
- :func:`set_box_loss` -> torchvision ``RetinaNetRegressionHead._loss_type`` -> ``models/torchvision_factory.py``
- :func:`shut_down_workers` -> torch ``DataLoader._iterator`` and ``_MultiProcessingDataLoaderIter._shutdown_workers``
  -> ``data/loader.py``

An override cannot move here: :class:`~detlight.callbacks.checkpoint.MMCheckpoint` overrides
``ModelCheckpoint._find_last_checkpoints`` (named by :data:`FIND_LAST_CHECKPOINTS`, allow-listed in the AST test),
and the tests check that Lightning still has that method and still calls it for ``ckpt_path="last"``.

Known and left where they are (long-standing torch idioms, not version-fragile in practice):
``torch._foreach_mul_`` / ``torch._foreach_add_`` (``callbacks/ema.py``) and ``torch.nn.modules.batchnorm._BatchNorm``
/ ``torch.nn.modules.instancenorm._InstanceNorm`` (``optim/builder.py``, ``models/pointpillars.py``).
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse

    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import Callback, ModelCheckpoint, TQDMProgressBar
    from lightning.pytorch.loops import _FitLoop
    from lightning.pytorch.strategies import DDPStrategy

__all__ = [
    "FIND_LAST_CHECKPOINTS",
    "action_typehint",
    "attached_trainer",
    "callback_state_key",
    "clear_pending_loader_states",
    "dump_trainer_checkpoint",
    "followed_parameters",
    "is_local_path",
    "keep_first_loop_iter",
    "parser_actions",
    "parser_option_actions",
    "pending_loader_states",
    "progress_bar_leave",
    "request_graceful_stop",
    "save_checkpoint_via",
    "set_action_typehint",
    "set_box_loss",
    "set_restored_signal_handler",
    "shut_down_workers",
    "strategy_ddp_kwargs",
    "uncached_union",
]

#: The private ``ModelCheckpoint`` method that ``MMCheckpoint`` overrides so that ``ckpt_path="last"`` finds
#: ``latest.ckpt``. Lightning's ``_CheckpointConnector._parse_ckpt_path`` calls it on every ``ModelCheckpoint`` for
#: ``"last"`` (lightning 2.6.6). If it is renamed, ``--ckpt_path last`` stops finding mmcv-style checkpoints.
FIND_LAST_CHECKPOINTS = "_find_last_checkpoints"


# ---------------------------------------------------------------------------------------------------- Lightning
@contextlib.contextmanager
def keep_first_loop_iter(trainer: pl.Trainer) -> Iterator[None]:
    """Save the logger connector's "first batch of the loop" flag and put it back after the ``with`` body.

    Stands in for: what ``_TrainingEpochLoop.on_advance_end`` does around ``val_loop.run()``; there is no public way
    to run the validation loop from inside training. Checked on lightning 2.6.6. If the flag moves or is renamed,
    an mmcv-style evaluation run from a training hook fails with ``AttributeError`` here; if Lightning stops
    resetting it in the validation loop, the save/restore becomes unnecessary (harmless).
    """
    connector = trainer._logger_connector
    first_loop_iter = connector._first_loop_iter
    try:
        yield
    finally:
        connector._first_loop_iter = first_loop_iter


def request_graceful_stop(trainer: pl.Trainer) -> None:
    """Make the Trainer stop after the current batch as if SIGTERM had arrived (``SIGTERMException`` is raised).

    Stands in for: Lightning's own SIGTERM notifier, for signals Lightning does not watch (SIGUSR1/2, SIGINT). Checked
    on lightning 2.6.6. If ``received_sigterm`` moves, preemption by another signal raises ``AttributeError``; if
    Lightning stops checking it, the run keeps training after the signal (the test catches both).
    """
    trainer._signal_connector.received_sigterm = True


def set_restored_signal_handler(trainer: pl.Trainer, signum: signal.Signals, handler: Any) -> bool:
    """Change the handler Lightning restores for ``signum`` when ``fit`` ends (teardown); True if Lightning had one.

    Stands in for: nothing public (Lightning saves the pre-fit handlers and puts them back at teardown). Checked on
    lightning 2.6.6. If the dict moves, this returns False and a second preemption signal during teardown gets the
    pre-fit handler again (a default SIGTERM kills the process before the checkpoint links are updated).
    """
    originals = getattr(getattr(trainer, "_signal_connector", None), "_original_handlers", None)
    if isinstance(originals, dict) and signum in originals:
        originals[signum] = handler
        return True
    return False


def pending_loader_states(fit_loop: _FitLoop) -> list[dict[str, Any]] | None:
    """The train-loader states read from the checkpoint that the fit loop has not handed to the loaders yet.

    Stands in for: the ``loops.fit_loop.state_dict.combined_loader`` entry of the checkpoint, which Lightning loads
    only while the fit loop is restarting. Checked on lightning 2.6.6. If it moves, this returns None and a resume
    from an end-of-epoch checkpoint draws the next epoch from freshly seeded RNGs (not bit-exact).
    """
    states = getattr(fit_loop, "_combined_loader_states_to_load", None)
    return states if isinstance(states, list) else None


def clear_pending_loader_states(fit_loop: _FitLoop) -> None:
    """Drop the pending loader states (so a later dataloader reload does not load them a second time).

    Checked on lightning 2.6.6; see :func:`pending_loader_states`.
    """
    fit_loop._combined_loader_states_to_load = []


def set_loop_counters(trainer: pl.Trainer, epoch: int, iteration: int) -> None:
    """Set the fit loop's counters as an epoch-end checkpoint after ``epoch`` epochs and ``iteration`` batches would.

    Stands in for: a Lightning checkpoint's ``loops`` entry, for an mmcv ``.pth`` (``meta['epoch']`` /
    ``meta['iter']``) that has none; call it in ``on_fit_start``. Checked on lightning 2.6.6. If the trackers move,
    ``current_epoch`` / ``global_step`` stay 0 and the resumed run starts its schedule from the beginning.
    """
    fit_loop = trainer.fit_loop
    epoch_loop = fit_loop.epoch_loop
    trackers = [(fit_loop.epoch_progress.current, epoch), (fit_loop.epoch_progress.total, epoch),
                (epoch_loop.batch_progress.total, iteration),
                (epoch_loop.automatic_optimization.optim_progress.optimizer.step.total, iteration)]
    for tracker, value in trackers:
        for name in ("ready", "started", "processed", "completed"):
            if hasattr(tracker, name):
                setattr(tracker, name, value)
    epoch_loop._batches_that_stepped = iteration


def dump_trainer_checkpoint(trainer: pl.Trainer, weights_only: bool = False) -> dict[str, Any]:
    """The checkpoint dict ``trainer.save_checkpoint`` would write, built on this rank alone.

    Stands in for: ``trainer.save_checkpoint`` without its barrier (mmcv hooks save on rank 0 only, so a collective
    would hang). Checked on lightning 2.6.6. If it moves, ``runner.save_checkpoint`` of users' mmcv hooks fails.
    """
    return trainer._checkpoint_connector.dump_checkpoint(weights_only=weights_only)


def save_checkpoint_via(callback: ModelCheckpoint, trainer: pl.Trainer, path: str) -> None:
    """Save through ``ModelCheckpoint``'s own path (all ranks; records the step saved and notifies the loggers).

    Stands in for: ``trainer.save_checkpoint`` plus the bookkeeping ``ModelCheckpoint`` does after it (loggers'
    ``after_save_checkpoint``, the last saved step). Checked on lightning 2.6.6. If it is renamed, ``MMCheckpoint``
    saves fail with ``AttributeError``.
    """
    callback._save_checkpoint(trainer, path)


def callback_state_key(callback: Callback, **kwargs: Any) -> str:
    """A callback's ``state_key`` built from its class name and ``kwargs`` (Lightning's documented recipe).

    Stands in for: ``Callback._generate_state_key``, which Lightning's docs recommend for ``state_key``. Checked on
    lightning 2.6.6. If its format changes, checkpoints written before the change no longer restore these callbacks'
    states (their keys differ).
    """
    return callback._generate_state_key(**kwargs)


def progress_bar_leave(bar: TQDMProgressBar) -> bool:
    """The ``leave`` argument a ``TQDMProgressBar`` was built with.

    Stands in for: a public ``leave`` property, which Lightning does not have. Checked on lightning 2.6.6. If it
    moves, replacing the default bar by detlight's fails with ``AttributeError``.
    """
    return bool(bar._leave)


def is_local_path(path: str) -> bool:
    """True for a path on the local file system (no ``s3://``-style protocol; ``file://`` counts as local).

    Stands in for: ``lightning.fabric.utilities.cloud_io._is_local_file_protocol`` (checked on lightning 2.6.6), the
    test Lightning's own ``TorchCheckpointIO`` uses. If the import fails, importing ``detlight.checkpoint_io`` fails.
    """
    from lightning.fabric.utilities.cloud_io import _is_local_file_protocol

    return bool(_is_local_file_protocol(path))


def attached_trainer(module: pl.LightningModule) -> pl.Trainer | None:
    """The Trainer ``module`` is attached to, or None (``module.trainer`` raises when there is none).

    Checked on lightning 2.6.6. If ``_trainer`` moves, this raises ``AttributeError`` in ``DetectorModule.setup``.
    """
    return module._trainer


def strategy_ddp_kwargs(strategy: DDPStrategy) -> dict[str, Any]:
    """The keyword arguments a ``DDPStrategy`` hands to ``DistributedDataParallel``.

    Stands in for: a public accessor, which Lightning does not have. Checked on lightning 2.6.6. If it moves,
    ``DetDDPStrategy.ddp_kwargs`` raises ``AttributeError``.
    """
    return dict(strategy._ddp_kwargs)


# ---------------------------------------------------------------------------------------------------- argparse
def parser_option_actions(parser: argparse.ArgumentParser) -> Mapping[str, argparse.Action]:
    """``--option -> Action`` of an argparse (or jsonargparse) parser, this parser's own options only.

    Stands in for: a public option table, which argparse does not have. Stable in CPython since 3.2; checked on
    Python 3.11 with jsonargparse 4.53.0. If it moves, the CLI's typo suggestions and int-before-float fix fail.
    """
    return parser._option_string_actions


def parser_actions(parser: argparse.ArgumentParser) -> Sequence[argparse.Action]:
    """All actions of an argparse parser (subcommand actions included, whose ``choices`` are the sub-parsers).

    Checked on Python 3.11 with jsonargparse 4.53.0. If it moves, usage errors lose the subcommands' option names.
    """
    return parser._actions


def action_typehint(action: argparse.Action | None) -> Any:
    """The type hint a jsonargparse ``ActionTypeHint`` parses its value with (None for other actions).

    Checked on jsonargparse 4.53.0. If it moves, this returns None and ``--trainer.limit_val_batches=1`` goes back to
    meaning 100 % (``1.0``) when Python's typing cache hands jsonargparse a ``Union[float, int]``.
    """
    return getattr(action, "_typehint", None)


def set_action_typehint(action: argparse.Action, hint: Any) -> None:
    """Make a jsonargparse ``ActionTypeHint`` parse with ``hint`` from now on (checked on jsonargparse 4.53.0)."""
    action._typehint = hint  # type: ignore[attr-defined]


def uncached_union(hint: Any, args: Sequence[Any]) -> Any:
    """A ``Union`` of ``args`` in exactly this order, bypassing typing's cache (which may return another order).

    ``typing.Union[int, float]`` and ``Union[float, int]`` compare equal, so the cache hands out whichever was built
    first. Checked on Python 3.11 (``typing._UnionGenericAlias(origin, args, name=)``). If the constructor changes,
    this raises ``TypeError`` at CLI start-up.
    """
    return type(hint)(hint.__origin__, tuple(args), name=getattr(hint, "_name", None))


def followed_parameters(function: Any) -> list[tuple[str, Any, Any]]:
    """``(name, annotation, default)`` of every keyword jsonargparse would offer for ``function``, ``**kwargs`` followed.

    Stands in for: nothing public (jsonargparse resolves these inside ``add_function_arguments``). Checked on
    jsonargparse 4.53.0, where ``get_signature_parameters`` walks the function's source to find where ``**kwargs``
    goes. If it moves, this raises ``ImportError`` and torchvision builders given as ``class_path`` show jsonargparse
    their plain signature (the CLI then warns that their own defaults are not kept).
    """
    import inspect

    from jsonargparse._parameter_resolvers import get_signature_parameters

    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return [(p.name, p.annotation, p.default) for p in get_signature_parameters(function, logger=False)
            if p.kind not in variadic]


# ---------------------------------------------------------------------------------------------------- torch
def set_box_loss(regression_head: Any, loss: str) -> None:
    """Make a torchvision ``RetinaNetRegressionHead`` train with ``loss`` (``l1``, ``smooth_l1``, ``giou``, ...).

    Stands in for: nothing public; ``retinanet_resnet50_fpn_v2`` sets the same attribute (torchvision 0.29). If it
    is renamed, this raises ``AttributeError`` instead of silently training with L1.
    """
    if not hasattr(regression_head, "_loss_type"):
        raise AttributeError(f"{type(regression_head).__name__} has no `_loss_type`; torchvision changed how the "
                             "RetinaNet box loss is chosen")
    regression_head._loss_type = loss


def shut_down_workers(loader: Any, iterator: Any = None) -> bool:
    """Stop the worker processes of ``iterator`` (default: the loader's kept ``persistent_workers`` iterator) now.

    A loader whose kept iterator is the one stopped forgets it, so it builds a fresh one next time. Stands in for:
    nothing public (torch stops workers at garbage collection, joining each with a timeout). Checked on torch 2.14.
    If the names change, this returns False and the workers are left to garbage collection (slower, not wrong).

    Returns:
        Whether workers were shut down.
    """
    kept = getattr(loader, "_iterator", None)
    target = kept if iterator is None else iterator
    shutdown = getattr(target, "_shutdown_workers", None)
    if not callable(shutdown):
        return False
    shutdown()
    if kept is not None and kept is target:
        loader._iterator = None
    return True


def limit_next_validation(trainer: pl.Trainer, num_batches: int | None) -> None:
    """Run the fit's next validation over at most ``num_batches`` batches per loader (``None``: the configured
    ``limit_val_batches``).

    Stands in for: a per-run ``limit_val_batches``. Lightning's ``_EvaluationLoop.setup_data`` computes the per-loader
    limits (``_max_batches``) once per fit and ``reset`` applies them at every run; before that first set-up the
    Trainer's ``limit_val_batches`` is what it reads. Checked on Lightning 2.6.
    """
    loop = trainer.fit_loop.epoch_loop.val_loop
    configured = getattr(trainer, "_detlight_limit_val_batches", None)
    if configured is None:
        configured = trainer.limit_val_batches
        trainer._detlight_limit_val_batches = configured  # type: ignore[attr-defined]
    combined = getattr(loop, "_combined_loader", None)
    if combined is None:
        trainer.limit_val_batches = configured if num_batches is None else num_batches
        return
    limits: list[int | float] = []
    for loader in combined.flattened:
        try:
            length: int | float = len(loader)
        except TypeError:
            length = float("inf")
        if isinstance(configured, int):
            full = min(length, configured)
        else:
            full = length if length == float("inf") else int(length * float(configured))
        limits.append(full if num_batches is None else min(full, num_batches))
    loop._max_batches = limits
