"""Reading user-supplied files without tracebacks: every library error becomes a one-line
``JoDiffusionError`` that names the file and says what to do.

safetensors, ``json``, PyYAML and UTF-8 decoding each raise their own exception types, some with
multi-line messages (PyYAML's point at the offending column over several lines). The helpers here turn
them into one line. They only read: nothing is written or changed when they raise.

A full disk is recognised here too (``is_disk_full``) so that the atomic writers and checkpoint saves
can say so in one line after removing their temporary files.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import re
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import safe_open
from safetensors.torch import load_file

from jodiffusion.errors import CheckpointError, ConfigError, JoDiffusionError

_MAX_DETAIL = 240  # characters of a library's message quoted in ours


class DiskFullError(JoDiffusionError):
    """A write failed because the file system is full (or over quota)."""


class UnknownPresetError(ConfigError, KeyError):
    """A preset name that is not in a registry: a ConfigError for the CLI, a KeyError for lookups."""

    __str__ = Exception.__str__  # KeyError's would quote the message


def one_line(exc: BaseException | str) -> str:
    """A library message squeezed onto one line and shortened: what goes between parentheses in ours."""
    text = str(exc) if not isinstance(exc, str) else exc
    text = " ".join(text.split()) or type(exc).__name__
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 3] + "..."


# --- full disk ---------------------------------------------------------------------------------------

_DISK_FULL_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
_DISK_FULL_TEXT = ("no space left on device", "storagefull", "disk quota exceeded", "os error 28")


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk (or quota) is full: an OSError with ENOSPC / EDQUOT, or an error of a
    library that wraps it in its own type (safetensors: ``IoError(Os { code: 28, kind: StorageFull })``)."""
    if isinstance(exc, OSError) and exc.errno in _DISK_FULL_ERRNOS:
        return True
    text = str(exc).lower()
    return any(t in text for t in _DISK_FULL_TEXT)


def disk_full_error(path: str | os.PathLike, what: str = "") -> DiskFullError:
    where = f"{what} {path}" if what else str(path)
    return DiskFullError(f"no space left on the device while writing {where}; nothing was half-written (the "
                         "temporary file was removed, an earlier version is unchanged). Free some space and run "
                         "the command again")


# --- text, JSON, YAML -------------------------------------------------------------------------------

def read_text(path: str | os.PathLike, what: str = "file", hint: str = "",
              error: type[JoDiffusionError] = JoDiffusionError) -> str:
    """``path`` as UTF-8 text; a missing file, a folder, unreadable bytes or binary data raise ``error``
    naming the file (``what``: e.g. "prompts file") and ``hint`` (what to do)."""
    path = Path(path)
    tail = f"; {hint}" if hint else ""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist{tail}") from None
    except IsADirectoryError:
        raise error(f"{what} {path} is a folder, not a file{tail}") from None
    except OSError as exc:
        raise error(f"cannot read {what} {path} ({one_line(exc.strerror or exc)}){tail}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{what} {path} is not UTF-8 text (byte {exc.start}: {data[exc.start:exc.start + 1]!r}); "
                    f"save it as UTF-8{tail}") from None
    if "\0" in text:
        raise error(f"{what} {path} holds binary data (a NUL byte), not text{tail}") from None
    return text


def read_json(path: str | os.PathLike, what: str = "JSON file", hint: str = "",
              error: type[JoDiffusionError] = CheckpointError, expect: type | None = dict) -> Any:
    """Parse ``path`` as JSON; any problem (missing, not UTF-8, not JSON, not an ``expect``) raises ``error``."""
    path = Path(path)
    tail = f"; {hint}" if hint else ""
    text = read_text(path, what, hint, error)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{what} {path} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
                    f"{tail}") from None
    if expect is not None and not isinstance(data, expect):
        raise error(f"{what} {path} holds a JSON {type(data).__name__}, expected a{_an(expect)} "
                    f"{_json_name(expect)}{tail}") from None
    return data


def parse_yaml(text: str, source: str, hint: str = "", error: type[JoDiffusionError] = ConfigError) -> Any:
    """``yaml.safe_load(text)``; a syntax error raises ``error`` with its position on one line."""
    tail = f"; {hint}" if hint else ""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise error(f"{source}: not valid YAML ({yaml_problem(exc)}){tail}") from None


def read_yaml(path: str | os.PathLike, what: str = "YAML file", hint: str = "",
              error: type[JoDiffusionError] = ConfigError) -> Any:
    path = Path(path)
    return parse_yaml(read_text(path, what, hint, error), f"{what} {path}", hint, error)


def yaml_problem(exc: BaseException) -> str:
    """PyYAML's multi-line message as one line: the problem and where (line, column, 1-based)."""
    problem = getattr(exc, "problem", None)
    mark = getattr(exc, "problem_mark", None)
    if problem:
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        context = getattr(exc, "context", None)
        return one_line(f"{context + ': ' if context else ''}{problem}{where}")
    return one_line(exc)


def _an(kind: type) -> str:
    return "n" if _json_name(kind)[0] in "aeiou" else ""


def _json_name(kind: type) -> str:
    return {dict: "object {...}", list: "array [...]", str: "string"}.get(kind, kind.__name__)


# --- safetensors -------------------------------------------------------------------------------------

def _tensor_file_error(path: Path, exc: BaseException, hint: str, error: type[JoDiffusionError]):
    tail = f"; {hint}" if hint else ""
    if isinstance(exc, FileNotFoundError):
        return error(f"{path} does not exist{tail}")
    if isinstance(exc, IsADirectoryError):
        return error(f"{path} is a folder, not a safetensors file{tail}")
    if _looks_like_pickle(path):
        return error(f"cannot read {path}: it is a pickle (torch.save) file renamed .safetensors, not a "
                     f"safetensors file (pickles are never loaded){tail}")
    detail = one_line(exc).removeprefix("Error while deserializing header: ")
    return error(f"cannot read {path}: truncated, corrupt or not a safetensors file ({detail}){tail}")


def _looks_like_pickle(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return head[:1] == b"\x80" or head == b"PK\x03\x04"  # pickle protocol 2+, or torch's zip container


def load_safetensors(path: str | os.PathLike, device: str = "cpu", hint: str = "",
                     error: type[JoDiffusionError] = CheckpointError) -> dict:
    """``safetensors.torch.load_file`` raising ``error`` (one line, naming the file) instead of
    SafetensorError / OSError for a missing, truncated, garbage or pickled file."""
    path = Path(path)
    try:
        return load_file(str(path), device=device)
    except Exception as exc:  # SafetensorError (not exported under a stable name), OSError, ValueError
        raise _tensor_file_error(path, exc, hint, error) from None


@contextmanager
def open_safetensors(path: str | os.PathLike, hint: str = "", error: type[JoDiffusionError] = CheckpointError):
    """``safetensors.safe_open(path, framework="pt")``; a file that cannot be opened raises ``error``."""
    path = Path(path)
    try:
        handle = safe_open(str(path), framework="pt")
    except Exception as exc:
        raise _tensor_file_error(path, exc, hint, error) from None
    with handle as f:
        yield f


# --- torch (pickle-based) weight files ----------------------------------------------------------------

_ZIP_MAGIC = b"PK\x03\x04"
_UNSUPPORTED_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


def weight_file_problem(path: str | os.PathLike) -> str | None:
    """What is wrong with the weight file ``path`` that can be told without reading it as weights: empty,
    or a zip archive (torch's format since 1.6) cut short (its central directory, at the end, is missing).
    None when nothing is seen (the file may still be unreadable)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return None  # missing or unreadable: the loader's own error names it
    if size == 0:
        return "the file is empty (0 bytes): it was cut short while being written or copied; copy it again"
    if head == _ZIP_MAGIC and not zipfile.is_zipfile(path):
        return (f"a truncated zip archive ({size} bytes, its end is missing): it was cut short while being "
                "written or copied; copy it again")
    return None


def check_weight_folder(folder: str | os.PathLike, what: str) -> None:
    """Refuse, naming the file, an empty or truncated weight file (``*.bin``, ``*.pt``, ``*.pth``,
    ``*.safetensors``) at the top of the model folder ``folder`` before a library (transformers,
    diffusers) reads it and ends in EOFError or a zip reader's RuntimeError. ``what``: e.g. "the CLIP
    text encoder"."""
    folder = Path(folder)
    try:
        files = sorted(p for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".safetensors"))
    except OSError:
        return  # not a folder: the library's own error names it
    for path in files:
        problem = weight_file_problem(path)
        if problem is not None:
            raise CheckpointError(f"cannot load {what}: {path}: {problem}")


def pickle_refusal(path: str | os.PathLike, exc: BaseException | None = None, hint: str = "") -> str:
    """Our message for a weight file that holds pickled objects other than tensors. Never torch's own
    advice (loading with ``weights_only=False`` runs whatever code the file holds)."""
    found = _UNSUPPORTED_GLOBAL.search(str(exc)) if exc is not None else None
    names = f" (it names {found.group(1)})" if found else ""
    tail = f"; {hint}" if hint else ""
    return (f"{path} holds pickled objects other than tensors{names}; jodiffusion never runs code from a weight "
            "file, since an untrusted one can run any command. Give the weights as a .safetensors file (or a "
            f"plain state dict of tensors) from a source you trust{tail}")


def load_torch_weights(path: str | os.PathLike, hint: str = "", error: type[JoDiffusionError] = CheckpointError,
                       mmap: bool = False) -> Any:
    """``torch.load(path, weights_only=True)`` raising ``error`` (one line naming the file) for an empty,
    truncated, garbage or pickled file instead of EOFError, RuntimeError or UnpicklingError."""
    path = Path(path)
    tail = f"; {hint}" if hint else ""
    problem = weight_file_problem(path)
    if problem is not None:
        raise error(f"cannot read {path}: {problem}{tail}")
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except RuntimeError:
            if not mmap:
                raise
            return torch.load(path, map_location="cpu", weights_only=True)  # legacy files cannot be mapped
    except pickle.UnpicklingError as exc:
        if _UNSUPPORTED_GLOBAL.search(str(exc)) or _looks_like_pickle(path):  # a real pickle, refused
            raise error(pickle_refusal(path, exc, hint)) from None
        raise error(f"cannot read {path}: corrupt or not a torch weight file (its bytes do not unpickle){tail}") \
            from None
    except FileNotFoundError:
        raise error(f"{path} does not exist{tail}") from None
    except IsADirectoryError:
        raise error(f"{path} is a folder, not a weight file{tail}") from None
    except Exception as exc:  # EOFError, RuntimeError (zip), ValueError, OSError: not a readable torch file
        detail = one_line(str(exc).split(". ")[0] or type(exc).__name__)
        if "weights_only" in detail:  # never torch's advice to load unsafely
            detail = type(exc).__name__
        raise error(f"cannot read {path}: truncated, corrupt or not a torch weight file ({detail}){tail}") from None


# --- seeds -------------------------------------------------------------------------------------------

def check_seed(seed, what: str = "--seed", limit: int | None = None,
               error: type[JoDiffusionError] = ConfigError) -> int:
    """``seed`` as a non-negative int (below ``limit`` when given); else ``error`` naming ``what``."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0 or (limit is not None and seed >= limit):
        bound = f"in 0 .. {limit - 1}" if limit is not None else "an integer >= 0"
        sep = " " if what.startswith("-") else "="  # a flag (--seed -1) or a config key (train.seed=-1)
        raise error(f"{what}{sep}{seed!r}: a seed must be {bound}; give e.g. {what}{sep}0")
    return seed


def link_note(path: str | os.PathLike | None) -> str:
    """`` (a symlink to TARGET)`` for a symbolic link, else ``""``: an error about a file that is a link
    names where it points, which is what the user has to fix."""
    if path is None or not Path(path).is_symlink():
        return ""
    try:
        target = os.readlink(path)
    except OSError:
        return " (a symlink)"
    resolved = (Path(path).parent / target)
    missing = "" if resolved.exists() else ", which does not exist"
    return f" (a symlink to {target}{missing})"


def os_error_line(exc: OSError) -> str:
    """One line for an OSError no command turned into its own message: what failed, on which path."""
    if is_disk_full(exc):
        return str(disk_full_error(exc.filename or "a file"))
    paths = " -> ".join(str(p) for p in (exc.filename, exc.filename2) if p is not None)
    what = one_line(exc.strerror or exc)
    return f"{paths}: {what}; check that path (a file where a folder belongs? permissions?)" if paths else \
        f"{what}; check the paths given and their permissions"


__all__ = ["DiskFullError", "UnknownPresetError", "check_seed", "check_weight_folder", "disk_full_error",
           "is_disk_full", "link_note", "load_safetensors", "load_torch_weights", "one_line", "open_safetensors",
           "os_error_line", "parse_yaml", "pickle_refusal", "read_json", "read_text", "read_yaml",
           "weight_file_problem", "yaml_problem"]
