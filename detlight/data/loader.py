"""The DataLoader detlight builds: mmdet's seeded workers, which leave signals to the main process, and errors that
name their cause.

Replaces: mmdet's ``build_dataloader`` loader and its ``worker_init_fn`` (seeded with
``num_workers * rank + worker_id + seed``).

Two things a plain ``DataLoader`` does badly with ``workers_per_gpu > 0``:

* an error raised in a worker reaches the main process as a new exception of the same type whose message is
  "Caught DatasetError in DataLoader worker process 0." followed by the worker's traceback; :class:`DetDataLoader`
  re-raises detlight's own errors with their original one-line message (file, dataset index, reason);
* workers share the main process's process group, so a SIGTERM sent to the whole group (what schedulers do) killed
  them before the main process could write its preemption checkpoint. :func:`worker_init_fn` makes workers leave
  SIGTERM (unless their own main process sends it) and SIGINT to the main process, which handles both and shuts its
  workers down itself. A worker killed by SIGKILL (the out-of-memory killer) is reported with its likely cause and
  the settings that reduce memory.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from typing_extensions import override

from detlight import exceptions
from detlight.upstream_internals import shut_down_workers

__all__ = ["DetDataLoader", "explain_worker_death", "leave_signals_to_main_process", "quiet_resource_sharer_pipes",
           "release_workers", "worker_init_fn"]

_WORKER_PREFIX = re.compile(r"^Caught (\w+) in DataLoader worker process (\d+)\.")
_KILLED = re.compile(r"DataLoader worker \(pid\(?s?\)? ?([\d, ]+)\) (?:is killed by signal: (.+?)\.|exited unexpectedly)")


def worker_init_fn(worker_id: int, num_workers: int, rank: int, seed: int) -> None:
    """mmdet's ``worker_init_fn``: seed numpy, ``random`` and torch with ``num_workers * rank + worker_id + seed``.

    Also leaves SIGTERM and SIGINT to the main process (see :func:`leave_signals_to_main_process`).
    """
    leave_signals_to_main_process()
    worker_seed = num_workers * rank + worker_id + seed
    np.random.seed(worker_seed % 2**32)
    random.seed(worker_seed)
    torch.manual_seed(worker_seed)


def leave_signals_to_main_process() -> None:
    """In a DataLoader worker: ignore SIGINT, and SIGTERM unless the main process itself sends it.

    A SIGTERM sent to the whole process group (a scheduler's preemption, ``kill -TERM -PGID``) must not kill the
    workers while the main process finishes its batch and writes its checkpoint. The main process still ends its
    workers with SIGTERM (``Process.terminate`` when it shuts them down or exits), so SIGTERM is blocked and a
    thread waits for it: sent by the parent, the worker exits; sent by anyone else, it is dropped. Where
    ``sigwaitinfo`` is missing (macOS), SIGTERM keeps its default action.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    quiet_resource_sharer_pipes()
    if not hasattr(signal, "sigwaitinfo"):
        return
    parent = os.getppid()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})

    def wait_for_parent_sigterm() -> None:
        while True:
            info = signal.sigwaitinfo({signal.SIGTERM})
            if info.si_pid == parent or os.getppid() != parent:
                os._exit(0)

    threading.Thread(target=wait_for_parent_sigterm, name="detlight-worker-sigterm", daemon=True).start()


def quiet_resource_sharer_pipes() -> None:
    """Drop the traceback of a ``multiprocessing.resource_sharer`` thread whose peer went away (idempotent).

    A worker hands each batch's tensors to the main process through file descriptors that a ``resource_sharer``
    thread of the worker serves. When the main process stops reading (Ctrl-C, an error), that thread's
    ``BrokenPipeError`` / ``ConnectionResetError`` is printed as a traceback from the worker, though nothing is
    wrong beyond the stop itself. Other threads' errors, and other errors of that thread, are printed as before.
    """
    previous = threading.excepthook
    if getattr(previous, "_detlight_quiet_pipes", False):
        return

    def hook(args: Any) -> None:
        if isinstance(args.exc_value, (BrokenPipeError, ConnectionResetError, EOFError)) and _raised_in_resource_sharer(
                args.exc_traceback):
            return
        previous(args)

    hook._detlight_quiet_pipes = True  # type: ignore[attr-defined]
    threading.excepthook = hook


def _raised_in_resource_sharer(tb: Any) -> bool:
    while tb is not None:
        if os.path.basename(tb.tb_frame.f_code.co_filename) == "resource_sharer.py":
            return True
        tb = tb.tb_next
    return False


def original_worker_error(err: BaseException) -> BaseException | None:
    """For a detlight error re-raised by the DataLoader from a worker, the error with its original message."""
    if not isinstance(err, exceptions.DetLightError):
        return None
    text = str(err)
    match = _WORKER_PREFIX.match(text)
    if match is None:
        return None
    # The worker's traceback ends with "<module>.<Class>: <message>"; the message is the last such line's tail.
    marker = f"{type(err).__name__}: "
    tail = text[text.rfind(marker) + len(marker):].strip() if marker in text else ""
    if not tail:
        return None
    return type(err)(f"{tail} (in DataLoader worker {match.group(2)})")


def explain_worker_death(err: BaseException, workers: int, batch_size: int | None) -> str | None:
    """One line explaining a worker killed by a signal (``None`` for any other error)."""
    if not isinstance(err, RuntimeError):
        return None
    match = _KILLED.search(str(err))
    if match is None:
        return None
    how = match.group(2)
    if how is not None and how.strip() not in ("Killed", "SIGKILL"):
        cause = f"was killed by signal {how.strip()}"
        remedy = "check what sent it (another user, a job scheduler)"
    else:
        cause = ("was killed (SIGKILL), most likely by the out-of-memory killer (`dmesg` says so)" if how else
                 "exited unexpectedly, most likely killed by the out-of-memory killer (`dmesg` says so)")
        batch = f"`data.samples_per_gpu`, now {batch_size}" if batch_size else "`data.samples_per_gpu`"
        remedy = (f"use fewer workers (`data.workers_per_gpu`, now {workers}) or a smaller batch ({batch}), "
                  "or give the job more memory")
    return f"DataLoader worker (pid {match.group(1).strip()}) {cause}: {remedy}."


class DetDataLoader(DataLoader):
    """A ``DataLoader`` whose worker-side errors read as they would without workers (see the module docstring).

    A detlight error raised in a worker is re-raised as the same kind with its own message; a worker killed by a
    signal raises a :class:`~detlight.exceptions.DataLoaderWorkerError` naming the cause and the remedy.
    """

    @override
    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        return self._explained(super().__iter__())

    def _explained(self, base: Iterator[Any]) -> Iterator[Any]:
        while True:
            try:
                batch = next(base)
            except StopIteration:
                return
            except Exception as err:
                self._shut_down(base)
                explained = self.explain(err)
                if explained is err:
                    raise
                raise explained from err
            yield batch

    def _shut_down(self, base: Iterator[Any]) -> None:
        # Stop the workers now: left to garbage collection, an iterator whose worker raised takes ~5 s per worker
        # to shut down (torch joins each with a timeout), at some unrelated later point.
        shut_down_workers(self, base)  # a persistent-workers loader forgets it: a fresh iterator next time

    def explain(self, err: BaseException) -> BaseException:
        """The error to raise in place of ``err`` caught while fetching a batch (``err`` itself when it is clear)."""
        original = original_worker_error(err)
        if original is not None:
            return original
        death = explain_worker_death(err, self.num_workers, self.batch_size)
        if death is not None:
            return exceptions.DataLoaderWorkerError(death)
        return err


def release_workers(trainer: Any) -> None:
    """Shut down the worker processes of the run's data loaders (``persistent_workers`` keeps them alive otherwise)."""
    loaders: list[Any] = []
    for name in ("train_dataloader", "val_dataloaders", "test_dataloaders", "predict_dataloaders"):
        with contextlib.suppress(Exception):  # a loop that never ran has no loaders
            value = getattr(trainer, name)
            loaders += list(value) if isinstance(value, (list, tuple)) else [value]
    for loader in loaders:
        shut_down_workers(loader)
