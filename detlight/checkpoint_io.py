"""Checkpoint files that are either complete or absent: atomic, verified writes and a readability check.

Replaces: mmcv's ``torch.save(checkpoint, filename)`` in ``save_checkpoint`` (docs/mmcv-semantics.md §3.7), which writes in
place (a crash leaves a truncated ``epoch_N.pth``), and Lightning's ``TorchCheckpointIO``, whose fsspec transaction
writes to a temporary file in the *system* temp directory and then moves it (a copy, not an atomic rename, when that
directory is on another file system; nothing is fsync'ed).

:func:`atomic_torch_save` writes to a hidden temporary file in the target's own directory, fsyncs it, checks that
the file on disk has every byte written and reads back its zip directory (:func:`checkpoint_problem`), and only then
renames it over the target. Any failure (disk full, file-size limit, permissions, read-only file system) raises one
:class:`~detlight.exceptions.SaveError` naming the path and the free space; the previous file is left as it was.
:class:`AtomicCheckpointIO` routes Lightning's checkpoint writes through it.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import tempfile
import zipfile
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from typing_extensions import override

from detlight.exceptions import SaveError
from detlight.upstream_internals import is_local_path

__all__ = ["AtomicCheckpointIO", "atomic_torch_save", "checkpoint_problem", "link_or_copy"]

log = logging.getLogger(__name__)


def atomic_torch_save(obj: Any, path: str) -> None:
    """``torch.save`` that never leaves a truncated or half-written file at ``path`` (see the module docstring).

    Raises:
        SaveError: the file could not be written or did not read back complete; ``path`` keeps its previous content.
    """
    directory = os.path.dirname(os.path.abspath(path))
    tmp: str | None = None
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
            written = f.tell()
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; a checkpoint gets the usual file mode
        problem = checkpoint_problem(tmp, expected_size=written)
        if problem is not None:
            raise SaveError(_save_message(path, directory, f"the written file does not read back: {problem}"))
        os.replace(tmp, path)
        tmp = None
    except SaveError:
        raise
    except (OSError, RuntimeError) as err:
        cause = _os_error(err)
        if cause is None:
            raise  # not a file-system failure: a bug or an unpicklable object keeps its traceback
        raise SaveError(_save_message(path, directory, _describe(cause))) from err
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    _fsync_dir(directory)


def checkpoint_problem(path: str, expected_size: int | None = None) -> str | None:
    """Why ``path`` is not a complete ``torch.save`` file, or ``None`` when it looks complete.

    Cheap: it reads the zip archive's central directory (at the end of the file) and checks that every record lies
    inside the file and that the pickle record is there; tensor data is not read. Files of the legacy (pre-1.6,
    non-zip) format are accepted unread.
    """
    try:
        size = os.path.getsize(path)
        if expected_size is not None and size != expected_size:
            return f"{size} bytes on disk, {expected_size} written"
        if size == 0:
            return "the file is empty"
        with open(path, "rb") as f:
            head = f.read(4)
        if head != b"PK\x03\x04":
            return None if head[:1] == b"\x80" else "not a torch checkpoint (no zip header)"
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
        if not any(info.filename.endswith("/data.pkl") or info.filename == "data.pkl" for info in infos):
            return "the archive has no data.pkl record"
        for info in infos:
            if info.header_offset + info.compress_size > size:
                return f"record {info.filename} runs past the end of the file"
    except zipfile.BadZipFile as err:
        return f"truncated or corrupt ({err})"
    except OSError as err:
        return _describe(err)
    return None


def link_or_copy(src: str, dst: str) -> None:
    """Point ``dst`` at ``src`` (relative symlink, like mmcv's ``latest.pth``); copy where symlinks fail.

    The link is created under a temporary name and renamed over ``dst``, so readers never see ``dst`` missing.

    Raises:
        SaveError: neither a link nor a copy could be written.
    """
    directory = os.path.dirname(os.path.abspath(dst))
    tmp = os.path.join(directory, f".{os.path.basename(dst)}.{os.getpid()}.tmp")
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        try:
            os.symlink(os.path.relpath(os.path.abspath(src), directory), tmp)
        except (OSError, NotImplementedError):
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except OSError as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise SaveError(_save_message(dst, directory, _describe(err))) from err


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local writes are atomic, verified and durable (see the module docstring).

    Remote URLs (``s3://``, ...) keep Lightning's fsspec path.
    """

    @override
    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or not is_local_path(str(path)):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        atomic_torch_save(checkpoint, str(path))


# ---------------------------------------------------------------------------------------------------- helpers
def _fsync_dir(directory: str) -> None:
    # Makes the rename itself durable; not every platform / file system allows opening a directory.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _umask() -> int:
    # Read once, at import: os.umask can only be read by setting it, which is not thread-safe later on.
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()


def _os_error(err: BaseException) -> OSError | None:
    """The ``OSError`` behind ``err``: itself, or one in its cause/context chain (torch's zip writer turns a failed
    write into a ``RuntimeError`` whose context is the ``OSError``, e.g. ``EFBIG`` under ``ulimit -f``)."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    if isinstance(err, RuntimeError) and ("PytorchStreamWriter" in str(err) or "inline_container" in str(err)):
        return OSError(errno.EIO, f"torch could not write the file ({err})")
    return None


def _describe(err: OSError) -> str:
    hints = {errno.ENOSPC: "disk full", errno.EFBIG: "file-size limit (ulimit -f) reached",
             errno.EDQUOT: "disk quota exceeded", errno.EACCES: "permission denied", errno.EPERM: "not permitted",
             errno.EROFS: "read-only file system"}
    reason = err.strerror or str(err)
    hint = hints.get(err.errno or -1)
    return f"{reason} ({hint})" if hint and hint.lower() not in reason.lower() else reason


def _free_space(directory: str) -> str:
    probe = directory
    while probe and not os.path.isdir(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    try:
        free = float(shutil.disk_usage(probe).free)
    except OSError:
        return "free space unknown"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if free < 1024 or unit == "GiB":
            return f"{free:.0f} {unit} free" if unit == "B" else f"{free:.1f} {unit} free"
        free /= 1024
    return "free space unknown"  # unreachable


def _save_message(path: str, directory: str, reason: str) -> str:
    return (f"Could not save checkpoint {path}: {reason}; {_free_space(directory)} in {directory}. "
            "The previous checkpoint there (if any) is unchanged.")
