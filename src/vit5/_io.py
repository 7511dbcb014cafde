"""Crash-safe file writes: write a temporary file in the same folder, flush + fsync, rename."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO


def fsync_directory(path: str | os.PathLike) -> None:
    """Persist a rename/creation inside ``path`` (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Create or replace ``path`` so that readers see either the old file or the complete new one.

    ``write`` receives a binary file object opened on a temporary file next to ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda handle: handle.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def contained_path(base: str | os.PathLike, name: str | os.PathLike, what: str = "a recorded path") -> Path:
    """``base / name`` for a path read from a file (a run's ``meta.json``, ``split.csv``), kept inside ``base``.

    Refused (``ValueError`` naming the value): an absolute path, a ``..`` component, and a path
    that resolves outside ``base`` through a symlink. The place the user named is ``base``; what a
    received file lists can only point below it.
    """
    text = os.fspath(name)
    candidate = Path(text)
    if (
        not text
        or "\x00" in text
        or candidate.is_absolute()
        or ".." in candidate.parts
        or text.startswith("~")
    ):
        raise ValueError(
            f"{what} {text!r} must be a relative path inside {os.fspath(base)} (no '..', not absolute)"
        )
    root = Path(base).resolve()
    target = (Path(base) / candidate).resolve()
    if target != root and root not in target.parents:
        raise ValueError(f"{what} {text!r} leads outside {os.fspath(base)} (through a symlink)")
    return Path(base) / candidate


def contained_paths(base: str | os.PathLike, names: list[str], what: Callable[[int], str]) -> list[Path]:
    """:func:`contained_path` for many names (a manifest's rows), at a few microseconds a name.

    The text rules are checked for every name; symlinks are resolved once per directory, and a
    name's last component only when it is a symlink itself. ``what(i)`` names entry ``i`` in the
    ``ValueError``.
    """
    root = os.path.realpath(base)
    inside: dict[str, bool] = {}

    def contained(real: str) -> bool:
        return real == root or real.startswith(root.rstrip(os.sep) + os.sep)

    separators = "/" + (os.sep if os.sep != "/" else "") + (os.altsep or "")
    paths = []
    for index, text in enumerate(names):
        parts = text.replace(os.sep, "/").replace(os.altsep or "/", "/").split("/") if text else []
        if not text or "\x00" in text or os.path.isabs(text) or ".." in parts or text[0] in "~" + separators:
            raise ValueError(f"{what(index)} {text!r} must be a relative path inside {os.fspath(base)} "
                             "(no '..', not absolute)")  # fmt: skip
        path = os.path.join(base, text)
        parent = os.path.dirname(path)
        if parent not in inside:
            inside[parent] = contained(os.path.realpath(parent))
        if not inside[parent] or (os.path.islink(path) and not contained(os.path.realpath(path))):
            raise ValueError(f"{what(index)} {text!r} leads outside {os.fspath(base)} (through a symlink)")
        paths.append(Path(path))
    return paths


def documented_caches() -> list[Path]:
    """The caches a recorded path may point into although the user did not name them: ``$HF_HOME``
    (default ``~/.cache/huggingface``), ``$HF_DATASETS_CACHE`` (default ``$HF_HOME/datasets``) and
    ``$TORCH_HOME`` (default ``~/.cache/torch``), resolved."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path(os.path.expanduser("~")) / ".cache")
    hf_home = Path(os.environ.get("HF_HOME") or cache / "huggingface")
    places = [hf_home, Path(os.environ.get("HF_DATASETS_CACHE") or hf_home / "datasets"),
              Path(os.environ.get("TORCH_HOME") or cache / "torch")]  # fmt: skip
    return [place.resolve() for place in places]


def in_documented_cache(path: str | os.PathLike) -> bool:
    """Whether ``path`` (absolute, no ``..``) resolves inside one of :func:`documented_caches`."""
    text = os.fspath(path)
    if "\x00" in text or ".." in Path(text).parts or not Path(text).is_absolute():
        return False
    resolved = Path(text).resolve()
    return any(resolved == cache or cache in resolved.parents for cache in documented_caches())
