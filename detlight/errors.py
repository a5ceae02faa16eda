"""Short, specific CLI errors: ``detlight: error: <message>`` instead of a traceback or a page of usage text.

Replaces: mmdet's ``tools/train.py`` behaviour of dying with a traceback on every bad input.

:func:`run_main` wraps the console entry point: :class:`~detlight.exceptions.DetLightError` (and its kinds), the
parser's own errors and Lightning's ``MisconfigurationException`` are printed as one short message and exit with
status 2; ``--debug`` (or ``DETLIGHT_DEBUG=1``) shows the full traceback instead. Any other exception keeps its
traceback, which ends with a one-line detlight hint, unless :func:`translate_error` recognises it as input: an OS error
on a path a config key or ``DETLIGHT_CACHE`` set, a DataLoader worker killed by the out-of-memory killer, a detlight
error jsonargparse wrapped. Ctrl-C exits with status 130 and one line. :class:`FriendlyArgumentParser` shortens
jsonargparse's own messages (a type error inside a ``Union``, an unknown key, an unknown ``class_path``, the reason
nested under "Problem with given class_path") and adds close-match suggestions found with :mod:`difflib`.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import inspect
import os
import pkgutil
import re
import sys
import textwrap
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NoReturn

from lightning.pytorch.cli import LightningArgumentParser

from detlight.exceptions import (
    CheckpointError,
    DataLoaderWorkerError,
    DetLightError,
    PathError,
    UsageError,
    WorkDirError,
)
from detlight.upstream_internals import parser_actions, parser_option_actions

__all__ = [
    "CheckpointError",
    "DetLightError",
    "FriendlyArgumentParser",
    "UsageError",
    "WorkDirError",
    "check_work_dir",
    "check_checkpoint_file",
    "debug_enabled",
    "format_error",
    "run_main",
    "summarize_state_dict_error",
    "translate_error",
]

EXIT_CODE = 2
SUBCOMMANDS = ("fit", "validate", "test", "predict", "check", "convert")


def debug_enabled(argv: Sequence[str] = ()) -> bool:
    """``--debug`` in ``argv`` or ``DETLIGHT_DEBUG`` set to a true value."""
    return "--debug" in argv or os.environ.get("DETLIGHT_DEBUG", "").lower() in ("1", "true", "yes", "on")


# ---------------------------------------------------------------------------------------------------- suggestions
def _close(word: str, candidates: Iterable[str]) -> str | None:
    matches = difflib.get_close_matches(word, sorted(set(candidates)), n=1, cutoff=0.6)
    return matches[0] if matches else None


def _init_params(class_path: str) -> list[str]:
    try:
        module_name, _, name = class_path.rpartition(".")
        obj = getattr(importlib.import_module(module_name), name)
        return [p for p in inspect.signature(obj).parameters if p not in ("self", "args", "kwargs")]
    except Exception:  # noqa: BLE001 - suggestions are best effort
        return []


def _suggest_class_path(class_path: str) -> str | None:
    parts = class_path.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            module = importlib.import_module(".".join(parts[:cut]))
        except Exception:  # noqa: BLE001 - walk up until a module imports
            continue
        names = [n for n in dir(module) if not n.startswith("_")]
        names += [m.name for m in pkgutil.iter_modules(getattr(module, "__path__", []))]
        match = _close(parts[cut], names)
        return ".".join([*parts[:cut], match, *parts[cut + 1 :]]) if match else None
    return None


def _suggest_key(key: str, known: Iterable[str]) -> str | None:
    """Close match for a dotted ``--key``: the longest prefix that matches a known key, plus the rest."""
    known = list(known)
    parts = key.split(".")
    for cut in range(len(parts), 0, -1):
        match = _close(".".join(parts[:cut]), [k for k in known if k.count(".") == cut - 1])
        if match:
            return ".".join([match, *parts[cut:]])
    return None


# ---------------------------------------------------------------------------------------------------- jsonargparse
def shorten_parser_message(message: str, known_keys: Iterable[str] = ()) -> str:
    """One or two lines from a jsonargparse error, with a close-match suggestion where one exists."""
    key_match = re.match(r'Parser key "([^"]+)":', message)
    key = key_match.group(1) if key_match else None
    where = f"`{key}`: " if key else ""
    unrecognized = re.match(r"unrecognized arguments: (.*)", message, re.S)
    if unrecognized:
        args = [a for a in unrecognized.group(1).split() if a not in SUBCOMMANDS]
        if not args:
            return "unrecognized arguments (misplaced subcommand?); run `detlight fit --help`"
        unknown = args[0].split("=", 1)[0]
        hint = _suggest_key(unknown, known_keys) if unknown.startswith("--") else None
        return f"unknown option {unknown}" + (f"; did you mean {hint}?" if hint else "; run `detlight fit --help`")
    option = re.search(r"Option '([^']+)' is not accepted", message)
    if option:
        params = [p for cp in re.findall(r"class_path '([^']+)'|<class '([\w.]+)'>", message) for p in
                  _init_params(cp[0] or cp[1])]
        hint = _close(option.group(1), params)
        return (f"{where}unknown key '{option.group(1)}'" + (f"; did you mean '{hint}'?" if hint else "")
                + (f" (accepted: {', '.join(sorted(set(params)))})" if params and not hint else ""))
    bad_path = re.search(r"class_path '([^']+)'[^\n]*\n\s*(module '[^']+' has no attribute '[^']+'|No module named "
                         r"'[^']+')", message)
    if bad_path:
        hint = _suggest_class_path(bad_path.group(1))
        return (f"{where}unknown class_path '{bad_path.group(1)}' ({bad_path.group(2)})"
                + (f"; did you mean '{hint}'?" if hint else ""))
    not_subclass = re.search(r"Import path ([\w.]+) does not correspond to a subclass of (\w+)", message)
    if not_subclass:
        return where + _wrong_kind(not_subclass.group(1), not_subclass.group(2))
    if "not accessible or invalid" in message or "Import path" in message:
        name = re.search(r"(?:path but|Import path) '?([\w.]+)", message)
        hint = _suggest_class_path(name.group(1)) if name and "." in name.group(1) else None
        return f"{where}cannot import '{name.group(1) if name else '?'}'" + (f"; did you mean '{hint}'?" if hint else "")
    for head, body in _error_items(message):
        nested = re.fullmatch(r"Problem with given class_path '([^']+)':", head)
        if nested and body:  # the reason is in the indented block below the head line
            inner = shorten_parser_message(body, known_keys)
            inner_key = re.match(r"`([^`]+)`: ", inner)
            if inner_key:
                return f"`{key + '.' if key else ''}{inner_key.group(1)}`: {inner[inner_key.end():]}"
            return f"{where}{nested.group(1)}: {inner}"
    body = message[key_match.end():] if key_match else message
    expected = re.fullmatch(r"Expected an? <class '([\w.]+)'>\. Got value: (.*)", " ".join(body.split()))
    if expected:
        return f"{where}expected {expected.group(1).rsplit('.', 1)[-1]}, got {_shown(expected.group(2))}"
    errors = [line.strip()[2:] for line in message.splitlines() if line.strip().startswith("- ")]
    specific = [e for e in errors if not re.fullmatch(r"Expected a <class '[\w.]+'>", e) and e]
    if specific:
        return where + specific[0]
    if errors:
        types = re.findall(r"<class '([\w.]+)'>", message.split("Errors:")[0])
        given = re.search(r"Given value: (.*)", message)
        return (f"{where}expected {' or '.join(t.rsplit('.', 1)[-1] for t in types) or 'another type'}, got "
                f"{given.group(1).strip()!r}" if given else f"{where}{errors[0]}")
    return where + " ".join(body.split())


def _error_items(message: str) -> list[tuple[str, str]]:
    """The ``- item`` entries under jsonargparse's ``Errors:`` line: (first line, dedented lines below it)."""
    lines = message.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == "Errors:"), None)
    if start is None:
        return []
    items: list[list[str]] = []
    indent = None
    for line in lines[start + 1:]:
        stripped = line.lstrip()
        depth = len(line) - len(stripped)
        if indent is None and stripped.startswith("- "):
            indent = depth
        if indent is None or depth < indent or (depth == indent and not stripped.startswith("- ")):
            break
        if depth == indent:
            items.append([stripped[2:]])
        else:
            items[-1].append(line)
    return [(item[0].strip(), textwrap.dedent("\n".join(item[1:])).strip()) for item in items]


def _shown(value: str) -> str:
    """A value from a parser message as the user wrote it: lists, dicts and numbers bare, words quoted."""
    value = value.strip()
    return value if re.fullmatch(r"[\[{].*[\]}]|-?[\d.e+-]+|None|True|False", value) else repr(value)


def _wrong_kind(class_path: str, expected: str) -> str:
    """``'x.Y' is a <kind>, not a <expected>`` with where that kind of class goes."""
    kind, home = "something else", ""
    try:
        module_name, _, name = class_path.rpartition(".")
        obj = getattr(importlib.import_module(module_name), name)
        import torch
        from lightning.pytorch import Callback, LightningDataModule, LightningModule

        if isinstance(obj, type) and issubclass(obj, LightningModule):
            kind, home = "a LightningModule", "it goes under `model` (detlight's is detlight.module.DetectorModule)"
        elif isinstance(obj, type) and issubclass(obj, torch.nn.Module):
            kind, home = "a torch.nn.Module (a detector)", "a detector goes under `model.model`"
        elif isinstance(obj, type) and issubclass(obj, LightningDataModule):
            kind, home = "a LightningDataModule", "a datamodule goes under `data`"
        elif isinstance(obj, type) and issubclass(obj, Callback):
            kind, home = "a Lightning Callback", "a callback goes under `trainer.callbacks`"
        elif isinstance(obj, type):
            kind = f"a class derived from {', '.join(b.__name__ for b in obj.__mro__[1:-1]) or 'object'}"
    except Exception:  # noqa: BLE001 - the description is best effort
        pass
    example = {"LightningDataModule": " such as detlight.data.DetDataModule",
               "Module": " such as detlight.models.CenterNet"}.get(expected, "")
    return (f"'{class_path}' is {kind}, not a {expected}; {home + '; ' if home else ''}give a {expected} subclass"
            f"{example} here")


class FriendlyArgumentParser(LightningArgumentParser):
    """``LightningArgumentParser`` whose usage errors raise :class:`UsageError` with a short message.

    :func:`run_main` prints it as ``detlight: error: ...`` (no usage dump); ``--help`` and ``--print_config`` are
    unaffected.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # A prefix such as --trainer.max_epoch must not silently mean --trainer.max_epochs: typos get a suggestion.
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error:  # an inner parser: jsonargparse catches this to try the next Union member
            super().error(message, ex)
        raise UsageError(shorten_parser_message(message, self._all_option_strings())) from ex

    def _all_option_strings(self) -> list[str]:
        strings = list(parser_option_actions(self))
        for action in parser_actions(self):
            for sub in (getattr(action, "choices", None) or {}).values():
                if isinstance(sub, argparse.ArgumentParser):
                    strings += list(parser_option_actions(sub))
        return [s for s in strings if s.startswith("--")]


# ---------------------------------------------------------------------------------------------------- checkpoints
def summarize_state_dict_error(message: str) -> str | None:
    """``load_state_dict`` strict-mode error -> counts and first keys of missing / unexpected / mismatched entries."""
    if "Error(s) in loading state_dict" not in message:
        return None
    parts = []
    for label, pattern in (("missing", r"Missing key\(s\) in state_dict: (.*)"),
                           ("unexpected", r"Unexpected key\(s\) in state_dict: (.*)")):
        found = re.search(pattern, message)
        if found:
            keys = re.findall(r'"([^"]+)"', found.group(1))
            parts.append(f"{len(keys)} {label} ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})")
    sizes = re.findall(r"size mismatch for ([\w.]+)", message)
    if sizes:
        parts.append(f"{len(sizes)} with another shape ({', '.join(sizes[:3])}{', ...' if len(sizes) > 3 else ''})")
    return ("the checkpoint was saved from a different model: " + "; ".join(parts)
            + ". Use `model.load_from` for a partial (non-strict) weight load.")


def check_checkpoint_file(path: str) -> None:
    """Refuse a missing, corrupt or unsafe (needs arbitrary unpickling) checkpoint before anything is built.

    A folder, a file that is not a torch checkpoint (random bytes, a truncated copy) and a file that needs arbitrary
    unpickling each get their own message; torch's advice to load with ``weights_only=False`` and its note about
    ``mmap`` are not passed on.

    Raises:
        CheckpointError: ``path`` does not exist, is a folder, is corrupt or truncated, needs arbitrary unpickling, or
            is not a Lightning checkpoint (an mmcv ``.pth``, a bare ``state_dict``: those go to ``model.load_from``).
    """
    import torch

    from detlight.checkpoint_io import checkpoint_problem

    if os.path.isdir(path):
        from pathlib import Path

        found = [p for p in Path(path).rglob("*.ckpt") if p.is_file() and not p.name.startswith(".")]
        newest = str(max(found, key=lambda p: p.stat().st_mtime_ns)) if found else None
        raise CheckpointError(f"checkpoint {path} is a folder, not a file; pass a checkpoint file in it"
                              + (f" (the newest is {newest})" if newest else " (it holds no *.ckpt file)")
                              + ", or `--ckpt_path last` for the newest checkpoint of the run")
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    problem = checkpoint_problem(path)
    if problem is not None:
        raise CheckpointError(f"cannot read checkpoint {path}: the file is corrupt or not a torch checkpoint "
                              f"({problem})")
    with open(path, "rb") as f:
        zipped = f.read(4) == b"PK\x03\x04"  # only the zip format can be memory-mapped; legacy files are read
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=zipped)
    except Exception as err:  # noqa: BLE001 - torch raises several types for corrupt or unsafe files
        text = str(err)
        culprit = re.search(r"GLOBAL ([\w.]+)", text) or re.search(r"Unsupported global: ([\w.]+)", text)
        if culprit:
            raise CheckpointError(
                f"refusing to load {path}: it needs arbitrary unpickling ({culprit.group(1)}); "
                "only tensors and plain containers are accepted (weights_only=True). Re-save it with plain types, "
                "or load the weights with `model.load_from`."
            ) from None
        raise CheckpointError(f"cannot read checkpoint {path}: the file is corrupt or not a torch checkpoint "
                              f"({type(err).__name__}: {_torch_load_reason(text)})") from None
    if not isinstance(loaded, dict) or "pytorch-lightning_version" not in loaded:
        what = "an mmcv-style checkpoint (meta / state_dict)" if isinstance(loaded, dict) and "meta" in loaded else (
            "a bare state_dict or other weights" if isinstance(loaded, dict) else f"a {type(loaded).__name__}")
        raise CheckpointError(f"{path} is not a checkpoint of a detlight (Lightning) run but {what}; `ckpt_path` "
                              f"resumes or evaluates such a run. Load these weights with `--model.load_from {path}`")


def _torch_load_reason(text: str) -> str:
    """The reason in a ``torch.load`` error, without torch's advice (``weights_only=False``, ``mmap``)."""
    unpickler = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\n\n|$)", text, re.S)
    if unpickler:
        return " ".join(unpickler.group(1).split())
    lines = [line for line in text.splitlines() if line.strip() and "weights_only" not in line and "mmap" not in line]
    return lines[0].split(". ")[0].strip() if lines else "unreadable"


def check_work_dir(path: str) -> None:
    """Fail fast when the run directory cannot be created or written.

    Raises:
        WorkDirError: the nearest existing ancestor of ``path`` is not a writable directory.
    """
    target = os.path.abspath(path)
    probe = target
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe) or not os.access(probe, os.W_OK | os.X_OK):
        what = "is not a directory" if not os.path.isdir(probe) else "is not writable"
        raise WorkDirError(f"work dir {target} is not writable: {probe} {what}; set `trainer.default_root_dir`")


# ---------------------------------------------------------------------------------------------------- the wrapper
def format_error(exc: BaseException) -> str | None:
    """The one-line message for an error whose message is complete on its own, or ``None`` (keeps its traceback).

    Shortened: :class:`~detlight.exceptions.DetLightError` (and kinds), the argument parser's own errors and
    Lightning's ``MisconfigurationException``. Anything else (a ``KeyError`` in a user's model, a bug) is ``None``.
    """
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    text = str(exc).strip()
    if isinstance(exc, argparse.ArgumentError) or (isinstance(exc, DetLightError) and text.startswith("Parser key")):
        return shorten_parser_message(text)
    if isinstance(exc, (DetLightError, MisconfigurationException)):
        return text or type(exc).__name__
    cause = _detlight_cause(exc)
    if cause is not None and _raised_in(exc, "jsonargparse"):
        # jsonargparse wraps what a class raised while it was being built ("Does not validate against any of the
        # Union subtypes ..."); detlight's own error inside says it better.
        return str(cause).strip() or type(cause).__name__
    translated = translate_error(exc)
    if translated is not None:
        return str(translated)
    return None


def _detlight_cause(exc: BaseException) -> DetLightError | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, DetLightError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _raised_in(exc: BaseException, package: str) -> bool:
    """The innermost frame of ``exc``'s traceback belongs to ``package``."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and str(tb.tb_frame.f_globals.get("__name__", "")).split(".")[0] == package


# ---------------------------------------------------------------------------------------------------- translation
#: Environment variables that name folders detlight writes, with what they default to.
PATH_ENV_VARS = {"DETLIGHT_CACHE": os.path.join("~", ".cache", "detlight")}


def translate_error(exc: BaseException, config: Any = None, workers: int | None = None,
                    batch_size: int | None = None) -> DetLightError | None:
    """The :class:`~detlight.exceptions.DetLightError` to raise in place of ``exc``, or ``None`` (``exc`` stays).

    The CLI and :func:`detlight.fit` both raise what this returns, so a failure reads the same in both:

    * a detlight error that jsonargparse wrapped while building a class (``Does not validate against any of the Union
      subtypes`` with every subtype listed) -> that error itself;
    * torch's "DataLoader worker (pid ...) is killed by signal" ``RuntimeError``, raised by its ``SIGCHLD`` handler
      wherever the main process happens to be -> :class:`DataLoaderWorkerError` with the cause, ``workers`` /
      ``batch_size`` and the remedy;
    * ``load_state_dict``'s strict-mode error -> :class:`CheckpointError` counting the mismatched keys;
    * an ``OSError`` on a path that a key of ``config`` (a parsed config or a dict) or an environment variable such
      as ``DETLIGHT_CACHE`` set -> :class:`PathError` naming the path, that key or variable and the fix. An OS error
      on any other path (a user's code opening its own files) is left alone.
    """
    if isinstance(exc, DetLightError):
        return None
    cause = _detlight_cause(exc)
    if cause is not None and _raised_in(exc, "jsonargparse"):
        return cause
    for err in _chain(exc):
        if isinstance(err, RuntimeError):
            from detlight.data.loader import explain_worker_death

            death = explain_worker_death(err, workers if workers is not None else 0, batch_size)
            if death is not None:
                if workers is None:
                    death = death.replace(", now 0)", ")")
                return DataLoaderWorkerError(death)
    if isinstance(exc, RuntimeError):
        summary = summarize_state_dict_error(str(exc))
        if summary is not None:
            return CheckpointError(summary)
    os_error = next((e for e in _chain(exc) if isinstance(e, OSError) and not isinstance(e, DetLightError)), None)
    if os_error is not None:
        message = describe_path_error(os_error, config)
        if message is not None:
            return PathError(message)
    return None


def _chain(exc: BaseException) -> Iterable[BaseException]:
    """``exc`` and its causes / contexts, innermost last."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        yield current
        seen.add(id(current))
        current = current.__cause__ or current.__context__


def describe_path_error(err: OSError, config: Any = None) -> str | None:
    """One line for an OS error on a path that a config key or environment variable set, or ``None``."""
    filename = err.filename
    if not isinstance(filename, (str, os.PathLike)):
        return None
    path = os.path.abspath(os.fspath(filename))
    source = _path_source(path, config)
    if source is None:
        return None
    what, value, is_env = source
    reason = _os_reason(err, path)
    if is_env:
        fix = f"set {what} to a folder this user can write (unset, it means {PATH_ENV_VARS.get(what, 'its default')})"
    else:
        fix = (f"point `{what}` at a path this user can access, or change the permissions of {value} "
               f"(`ls -ld {value}` shows them)")
    if is_env:
        shown = f"{what}={value}" if value else f"{what}, unset: {PATH_ENV_VARS.get(what, 'its default')}"
    else:
        shown = f"`{what}`: {value}"
    return f"{path}: {reason} (set by {shown}); {fix}"


def _os_reason(err: OSError, path: str) -> str:
    import errno as errno_codes

    if err.errno == errno_codes.ENOTDIR:
        probe = path
        while probe and not os.path.exists(probe) and os.path.dirname(probe) != probe:
            probe = os.path.dirname(probe)
        if os.path.isfile(probe):
            return f"{probe} is a regular file, not a folder"
    if err.errno == errno_codes.EISDIR:
        return "it is a folder, not a file"
    reason = err.strerror or str(err)
    return reason[0].lower() + reason[1:] if reason else "cannot be accessed"


def _path_source(path: str, config: Any) -> tuple[str, str, bool] | None:
    """(key or variable, its value, is it an environment variable) that set ``path``: the longest match."""
    found: list[tuple[int, str, str, bool]] = []
    for key, value in _config_strings(config):
        length = _covers(value, path)
        if length:
            found.append((length, key, value, False))
    for name, default in PATH_ENV_VARS.items():
        env_value = os.environ.get(name)
        length = _covers(env_value or os.path.expanduser(default), path)
        if length:
            found.append((length, name, env_value or "", True))
    if not found:
        return None
    _, key, value, is_env = max(found, key=lambda item: item[0])
    return key, value, is_env


def _covers(value: str | None, path: str) -> int:
    """How much of ``path`` the configured ``value`` explains (0: it is not ``path`` or a folder above it)."""
    if not value or not isinstance(value, str) or "\n" in value or len(value) > 4096:
        return 0
    full = os.path.abspath(os.path.expanduser(value))
    if path == full or path.startswith(full.rstrip(os.sep) + os.sep):
        return len(full)
    relative = os.path.normpath(value)
    if not os.path.isabs(relative) and relative not in (".", "..") and path.endswith(os.sep + relative):
        return len(relative)  # joined to a data_root / img_prefix
    return 0


def _config_strings(config: Any, prefix: str = "") -> Iterable[tuple[str, str]]:
    """(user-facing dotted key, value) for every string in a parsed config (``init_args`` and the subcommand left
    out of the key, as detlight's messages write keys)."""
    if config is None:
        return
    if hasattr(config, "as_dict"):
        config = config.as_dict()
    if isinstance(config, dict):
        for key, value in config.items():
            if key in ("init_args", "dict_kwargs") or (not prefix and key in SUBCOMMANDS):
                yield from _config_strings(value, prefix)
            elif key not in ("class_path", "config", "__path__"):
                yield from _config_strings(value, f"{prefix}{key}.")
    elif isinstance(config, (list, tuple)):
        for i, value in enumerate(config):
            yield from _config_strings(value, f"{prefix}{i}.")
    elif isinstance(config, (str, os.PathLike)) and prefix:
        yield prefix.rstrip("."), os.fspath(config)


#: Ends the traceback of an error detlight did not recognise as bad input (added as an exception note).
TRACEBACK_HINT = ("detlight: not one of detlight's input checks, so the full traceback is kept; its last frames show the "
                  "failing code (your model, hook or callback, or a bug in detlight)")


def run_main(fn: Callable[[list[str]], Any], argv: Sequence[str], exiting: bool = False) -> Any:
    """Call ``fn(argv)`` with friendly errors; ``--debug`` is removed from ``argv`` and enables tracebacks.

    A ``KeyboardInterrupt`` (Ctrl-C) prints one line (its message says where the last checkpoint is, see
    :class:`~detlight.cli_app.DetLightCLI`) and exits with status 130, as shells do for SIGINT. With ``exiting``
    (the console script, whose process ends with the ``SystemExit``), SIGTERM and SIGINT are ignored once the line
    is printed: the process is stopping already, and a scheduler's SIGTERM during the shutdown (workers, loggers)
    must not turn status 2 into -15. Callers that go on running (tests calling ``main([...])``) keep their handlers.

    Raises:
        SystemExit: status 2 after printing ``detlight: error: <message>`` for a known error type; 130 on Ctrl-C.
    """
    argv = list(argv)
    debug = debug_enabled(argv)
    argv = [a for a in argv if a != "--debug"]
    try:
        return fn(argv)
    except SystemExit:
        raise
    except KeyboardInterrupt as exc:
        if debug:
            raise
        if exiting:
            _ignore_stop_signals()
        if "torch" in sys.modules:  # a loader's fd-sharing thread may still hit the closed pipe
            from detlight.data.loader import quiet_resource_sharer_pipes

            quiet_resource_sharer_pipes()
        print(f"detlight: {str(exc).strip() or 'interrupted (Ctrl-C)'}", file=sys.stderr, flush=True)
        raise SystemExit(INTERRUPTED_EXIT_CODE) from None
    except BaseException as exc:
        message = None if debug else format_error(exc)
        if message is None:
            if not debug and TRACEBACK_HINT not in getattr(exc, "__notes__", ()):
                exc.add_note(TRACEBACK_HINT)
            raise
        if exiting:
            _ignore_stop_signals()
        print(f"detlight: error: {message}", file=sys.stderr, flush=True)
        if not isinstance(exc, UsageError):
            print("(run with --debug or DETLIGHT_DEBUG=1 for the full traceback)", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_CODE) from None


#: The exit status after Ctrl-C (128 + SIGINT, what a shell reports for a process SIGINT ended).
INTERRUPTED_EXIT_CODE = 130


def _ignore_stop_signals() -> None:
    """Ignore SIGTERM and SIGINT from here to the exit (the main thread only can set handlers)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signal.SIG_IGN)
