"""Reading and writing weight files without ever running code from them.

* ``.safetensors``: :func:`save_weights` / :func:`load_weights` (vit5 writes its config, data spec
  and a SHA-256 of the tensors into the metadata; foreign files without them read too).
* ``torch.save`` pickles (``.pth``, ``.pt``, ``.bin``): :func:`torch_load_safely` is
  ``torch.load(weights_only=True)`` with exactly one extra type, ``argparse.Namespace`` (the
  ``args`` entry of DeiT-style training checkpoints such as the official ViT-5 ones).
* Pickles of richer objects (a Lightning ``.ckpt`` whose ``hyper_parameters`` hold OmegaConf
  containers): :func:`load_pickle_inert` still uses the ``weights_only`` unpickler, but stands an
  inert :class:`ForeignObject` in for every global outside torch's allow-list. A placeholder only
  records the arguments and state the pickle gives it; no foreign class or function is imported or
  called, so a crafted pickle (``os.system``, ``eval``, ...) cannot run. Tensors come out as
  tensors, OmegaConf containers as plain data (:func:`plain_data`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from vit5._io import atomic_write
from vit5.io.pickle_scan import MAX_DEPTH, PickleBombError, check_loaded, check_torch_file

__all__ = [
    "FORMAT",
    "CheckpointError",
    "ForeignObject",
    "file_digest",
    "load_pickle_inert",
    "load_weights",
    "plain_data",
    "read_weights_file",
    "save_weights",
    "tensor_digest",
    "torch_load_safely",
]

FORMAT = "vit5-checkpoint"
#: Extra types ``torch_load_safely`` accepts beyond tensors and plain values.
SAFE_EXTRA_GLOBALS = (argparse.Namespace,)
_PICKLE_MAGIC = (b"PK\x03\x04", b"\x80")  # zip archive (torch.save), legacy pickle
#: Modules whose classes training checkpoints pickle as data (Lightning hyper-parameters hold
#: OmegaConf containers, typing/enum metadata, paths, AttributeDicts, numpy scalars). They are
#: read as inert placeholders; a pickle naming anything else (``os.system``, ``builtins.eval``,
#: ``subprocess.*``, ...) is refused as crafted.
INERT_MODULES = ("omegaconf", "typing", "enum", "pathlib", "collections", "argparse", "numpy",
                 "lightning", "pytorch_lightning", "lightning_fabric", "nvsubquadratic")  # fmt: skip
INERT_BUILTINS = frozenset(("dict", "list", "tuple", "set", "frozenset", "int", "float", "complex", "str",
                            "bool", "bytes", "bytearray", "object", "slice", "range", "type"))  # fmt: skip


#: Most entries the plain copy of a checkpoint's hyper-parameters may have (real ones: hundreds).
MAX_HYPER_NODES = 100_000


class CheckpointError(ValueError):
    """A weights file is missing, damaged, unsafe, or not what was expected; the message names it."""


# --------------------------------------------------------------------------------------------------
# Digests and safetensors


def tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of ``tensors`` (in sorted key order)."""
    digest = hashlib.sha256()
    for key in sorted(tensors):
        tensor = tensors[key].detach().cpu().contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_weights(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> Path:
    """Write a safetensors file atomically; ``metadata`` values are JSON-encoded."""
    from safetensors.torch import save

    tensors = {key: value.detach().cpu().contiguous() for key, value in tensors.items()}
    header = {key: json.dumps(value) for key, value in metadata.items()}
    header["format"] = FORMAT
    header["vit5_sha256"] = tensor_digest(tensors)
    return atomic_write(path, lambda handle: handle.write(save(tensors, metadata=header)))


def load_weights(
    path: str | os.PathLike, *, sha256: str | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a safetensors file and verify vit5's checksum when it has one.

    The file is read into memory once; every check (``sha256`` of the file's bytes when given, the
    header, vit5's tensor checksum) applies to those bytes, which are the ones parsed.

    Returns:
        The tensors and the decoded metadata (``config``, ``data``, ... for vit5 files; values that
        are not JSON stay strings). The metadata is data: nothing in it is imported or called.

    Raises:
        CheckpointError: the file is missing, truncated, corrupted, or not safetensors.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    data = path.read_bytes()
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise CheckpointError(f"{path}: checksum mismatch (the file is truncated or corrupted)")
    try:
        tensors = load(data)
        header_size = int.from_bytes(data[:8], "little")
        raw = json.loads(data[8 : 8 + header_size]).get("__metadata__", {}) or {}
    except (SafetensorError, ValueError, OverflowError, AttributeError, RecursionError, MemoryError) as error:
        raise CheckpointError(
            f"{path}: not a readable safetensors file (truncated or corrupted?): {error}"
        ) from error
    expected = raw.get("vit5_sha256")
    if expected is not None and tensor_digest(tensors) != expected:
        raise CheckpointError(f"{path}: checksum mismatch, the weights are corrupted")
    metadata = {}
    for key, value in raw.items():
        if key in ("format", "vit5_sha256"):
            continue
        try:
            metadata[key] = json.loads(value)
        except (json.JSONDecodeError, TypeError):
            metadata[key] = value
        except RecursionError:
            raise CheckpointError(
                f"{path}: metadata entry {key!r} is nested too deeply (a crafted file)"
            ) from None
    try:
        check_loaded(metadata, f"{path} (metadata)")
    except PickleBombError as error:
        raise CheckpointError(str(error)) from None
    return tensors, metadata


# --------------------------------------------------------------------------------------------------
# Pickles


def torch_load_safely(path: str | os.PathLike) -> Any:
    """``torch.load(path, weights_only=True)`` accepting ``argparse.Namespace``, with clear errors.

    Raises:
        CheckpointError: the file is missing or damaged, or holds objects other than tensors, plain
            values and ``argparse.Namespace`` (e.g. a pickle crafted to run code): it is refused and
            nothing is executed.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    return _weights_only_load(path, SAFE_EXTRA_GLOBALS)


def _weights_only_load(path: Path, extra_globals: Any, *, inert: bool = False) -> Any:
    """``torch.load(weights_only=True)`` with ``extra_globals`` allowed; torch's errors as one line.

    The file is opened once: its structure is checked (:func:`vit5.io.pickle_scan.check_torch_file`) and then read
    through the same descriptor, so what was checked is what is loaded. The result is checked too
    (:func:`vit5.io.pickle_scan.check_loaded`: tensors own their data, bounded size and depth).
    """
    try:
        with open(path, "rb") as handle:
            check_torch_file(handle, path)
            handle.seek(0)
            extra_globals = [*extra_globals, *(_inert_stand_ins(handle, path) if inert else [])]
            handle.seek(0)
            with torch.serialization.safe_globals(list(extra_globals)):
                loaded = torch.load(handle, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"{path}: refused to load: the file contains Python objects other than tensors and plain values "
            f"(loading it could run code; nothing from the file was run): {_reason(error)}"
        ) from error
    except PickleBombError as error:
        raise CheckpointError(str(error)) from None
    except (
        RuntimeError,
        EOFError,
        ValueError,
        OSError,
        zipfile.BadZipFile,
        MemoryError,
        RecursionError,
    ) as error:
        raise CheckpointError(
            f"{path}: not a readable checkpoint (truncated or corrupted?): {_first_line(error)}"
        ) from error
    try:
        check_loaded(loaded, str(path))
    except PickleBombError as error:
        raise CheckpointError(str(error)) from None
    return loaded


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _reason(error: BaseException) -> str:
    """The line of torch's unpickling error that names what was refused."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for line in lines:
        if any(word in line for word in ("GLOBAL", "global", "blocked", "Unsupported", "Can only")):
            return line.removeprefix("WeightsUnpickler error: ")
    return lines[-1] if lines else type(error).__name__


class ForeignObject:
    """An inert stand-in for an object of a class outside the allow-list, read from a pickle.

    It records what the pickle gave it (``name``: the dotted path of the class or function the
    pickle named; ``args``: constructor/call arguments; ``state``: the ``__setstate__`` payload)
    and does nothing else.
    """

    name = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args
        self.kwargs = kwargs
        self.state: Any = None

    def __new__(cls, *args: Any, **kwargs: Any) -> ForeignObject:
        obj = super().__new__(cls)
        obj.args, obj.kwargs, obj.state = args, kwargs, None
        return obj

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<foreign {self.name}>"


def _stand_in(full_name: str) -> type[ForeignObject]:
    return type("ForeignObject", (ForeignObject,), {"name": full_name, "__module__": __name__})


def _inert_global(name: str) -> bool:
    module, _, attribute = name.rpartition(".")
    if module == "builtins":
        return attribute in INERT_BUILTINS
    return module.split(".")[0] in INERT_MODULES


def load_pickle_inert(path: str | os.PathLike) -> Any:
    """Read a ``torch.save`` file, replacing every non-allow-listed global by an inert placeholder.

    Torch's ``weights_only`` unpickler does the reading (tensors, containers, plain values); each
    global outside its allow-list and :data:`SAFE_EXTRA_GLOBALS` is mapped to a fresh
    :class:`ForeignObject` subclass, so the file's classes and functions are never imported or
    called. Use :func:`plain_data` to turn OmegaConf containers into dicts and lists. A pickle
    naming a global outside :data:`INERT_MODULES` (a crafted payload) is refused before unpickling.
    A legacy (non-zip) pickle is read with :func:`torch_load_safely`.

    Raises:
        CheckpointError: the file is missing or damaged, or names a global outside the modules
            above (the message lists it).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    if not zipfile.is_zipfile(path):
        return torch_load_safely(path)  # legacy pickles: plain values only
    return _weights_only_load(path, SAFE_EXTRA_GLOBALS, inert=True)


def _inert_stand_ins(handle: Any, path: Path) -> list[Any]:
    """Placeholders for the foreign globals a zip checkpoint names; a crafted global is refused."""
    try:
        foreign = torch.serialization.get_unsafe_globals_in_checkpoint(handle)
    except (RuntimeError, ValueError, OSError, zipfile.BadZipFile, pickle.UnpicklingError) as error:
        raise CheckpointError(
            f"{path}: not a readable checkpoint (truncated or corrupted?): {error}"
        ) from error
    allowed = {f"{obj.__module__}.{obj.__qualname__}" for obj in SAFE_EXTRA_GLOBALS}
    crafted = sorted(name for name in foreign if name not in allowed and not _inert_global(name))
    if crafted:
        raise CheckpointError(
            f"{path}: refused to load: the pickle calls {', '.join(crafted[:5])}, which a checkpoint has no reason "
            "to contain (loading it could run code; nothing from the file was run)"
        )
    return [(_stand_in(name), name) for name in foreign if name not in allowed]


def plain_data(value: Any, callables: Callable[[str], Any] | None = None) -> Any:
    """``value`` with inert OmegaConf containers read back as dicts / lists / plain values.

    An OmegaConf ``DictConfig`` / ``ListConfig`` pickles its items in ``state["_content"]`` and a
    value node its value in ``state["_val"]``; those fields are read as data. A bare reference to a
    foreign class or function (the nvSubquadratic configs store ``small_init`` itself) becomes
    ``callables(dotted_name)`` when given (e.g. the registered vit5 equivalent), else stays its
    placeholder class. Any other foreign object stays a :class:`ForeignObject`.

    Raises:
        CheckpointError: the copy would exceed :data:`MAX_HYPER_NODES` entries
            (shared references expand once per place they appear) or nest deeper than
            :data:`~vit5.io.pickle_scan.MAX_DEPTH` (a cycle).
    """
    budget = [MAX_HYPER_NODES]
    return _plain(value, callables, budget, 0)


def _plain(value: Any, callables: Callable[[str], Any] | None, budget: list[int], depth: int) -> Any:
    budget[0] -= 1
    if budget[0] < 0:
        raise CheckpointError(
            f"hyper-parameters expand to more than {MAX_HYPER_NODES} entries (shared references; a crafted file)"
        )
    if depth > MAX_DEPTH:
        raise CheckpointError(
            f"hyper-parameters nest deeper than {MAX_DEPTH} levels (a cyclic or crafted file)"
        )
    if isinstance(value, type) and issubclass(value, ForeignObject):
        return callables(value.name) if callables is not None else value
    if isinstance(value, ForeignObject):
        state = value.state
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], dict):
            state = state[0]
        if isinstance(state, dict):
            if "_content" in state:
                return _plain(state["_content"], callables, budget, depth + 1)
            if "_val" in state:
                return _plain(state["_val"], callables, budget, depth + 1)
        return value
    if isinstance(value, dict):
        return {key: _plain(item, callables, budget, depth + 1) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item, callables, budget, depth + 1) for item in value]
    return value


# --------------------------------------------------------------------------------------------------
# Any weights file


def read_weights_file(path: str | os.PathLike, *, inert: bool = False) -> Any:
    """Read a ``.safetensors`` file (its tensors) or a ``torch.save`` file (its contents), safely.

    Args:
        path: The file.
        inert: For pickles holding foreign objects (Lightning hyper-parameters), read them with
            :func:`load_pickle_inert` instead of refusing.

    Raises:
        CheckpointError: the file is missing, damaged, a directory, or unsafe (refused unread).
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, expected a weights file")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    with open(path, "rb") as handle:
        head = handle.read(9)
    looks_safetensors = len(head) == 9 and head[8:9] == b"{" and not head.startswith(_PICKLE_MAGIC)
    if path.suffix == ".safetensors" or looks_safetensors:
        return load_weights(path)[0]
    if not head.startswith(_PICKLE_MAGIC):
        raise CheckpointError(
            f"{path}: not a weights file (expected .safetensors or a torch.save .pth/.pt/.ckpt file)"
        )
    return load_pickle_inert(path) if inert else torch_load_safely(path)
