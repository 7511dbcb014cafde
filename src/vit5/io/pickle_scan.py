"""Bounds on a pickle before it is unpickled, and on the tensors that come out of it.

``torch.load(weights_only=True)`` runs no code, but the callables it allows can still allocate
what a file declares: ``bytearray(2**40)`` or ``torch.FloatStorage(2**40)`` in an 800-byte file,
a storage record declaring more elements than the file holds, a tensor with stride 0 whose shape
asks for terabytes once copied into a parameter. :func:`scan_pickle` walks the opcode stream
(:mod:`pickletools`, nothing is built) with a small abstract stack and refuses such calls;
:func:`check_loaded` then checks every tensor that came out (real storage for its shape, a
plain CPU strided tensor) and the size and depth of the containers around them.
:func:`check_torch_file` applies the scan to a ``torch.save`` file through an open descriptor (the
one torch then reads), after checking that a zip archive's records do not inflate beyond the file.
"""

from __future__ import annotations

import io
import os
import pickletools
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = ["MAX_DEPTH", "MAX_NODES", "PickleBombError", "check_loaded", "check_torch_file", "scan_pickle"]

#: Most objects a checkpoint may hold; also the most entries a copy of a tree read from a file
#: may expand to (shared references counted once per place they appear).
MAX_NODES = 1_000_000
#: Deepest container nesting a checkpoint may have (real ones nest a handful of levels).
MAX_DEPTH = 100
#: Largest pickle stream (``data.pkl``) scanned; real training dicts are a few MB.
MAX_PICKLE_BYTES = 256 << 20


class PickleBombError(ValueError):
    """A pickle or its contents would take more memory or time than the file justifies."""


class _Global:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


_OPAQUE = object()
#: Allowed callables that allocate memory sized by an integer argument.
_ALLOCATOR_SUFFIXES = ("Storage", "Tensor")


def _allocates(name: str) -> bool:
    module, _, attribute = name.rpartition(".")
    if name in ("builtins.bytearray", "builtins.bytes", "__builtin__.bytearray", "__builtin__.bytes"):
        return True
    return (
        module.split(".")[0] == "torch" and attribute.endswith(_ALLOCATOR_SUFFIXES) and "_rebuild" not in name
    )


def _ints(value: Any, depth: int = 0) -> list[int]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int):
        return [value]
    if isinstance(value, tuple) and depth < 4:
        return [i for item in value for i in _ints(item, depth + 1)]
    return []


def scan_pickle(stream: io.BufferedIOBase | io.BytesIO, budget: int, what: str) -> None:
    """Walk one pickle (up to its STOP) and refuse allocations larger than ``budget`` bytes.

    Refused: a call of ``bytearray`` / ``bytes`` / a torch storage or legacy tensor class with an
    integer argument above ``budget``; a persistent storage reference declaring more elements
    than ``budget``; a truncated or malformed stream (declared lengths beyond the data).

    Args:
        stream: Positioned at the pickle's first opcode; left after its STOP.
        budget: The file's size in bytes: no declared size may exceed what the file can hold.
        what: The file, for messages.

    Raises:
        PickleBombError: One line naming the file and what it declared.
    """
    stack: list[Any] = []
    marks: list[int] = []
    memo: dict[int, Any] = {}
    try:
        for opcode, arg, _ in pickletools.genops(stream):
            name = opcode.name
            if name in ("PROTO", "FRAME", "STOP"):
                continue
            if name == "MARK":
                marks.append(len(stack))
                continue
            if name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[arg] = stack[-1] if stack else _OPAQUE
                continue
            if name == "MEMOIZE":
                memo[len(memo)] = stack[-1] if stack else _OPAQUE
                continue
            if name in ("GET", "BINGET", "LONG_BINGET"):
                if arg not in memo:
                    raise PickleBombError(
                        f"{what}: damaged pickle (memo entry {arg} read before it was written)"
                    )
                stack.append(memo[arg])
                continue
            if name == "DUP":
                stack.append(stack[-1] if stack else _OPAQUE)
                continue
            if name == "GLOBAL":
                value = _Global(str(arg).replace(" ", "."))
            elif name == "STACK_GLOBAL":
                attribute, module = stack.pop() if stack else None, stack.pop() if stack else None
                value = (
                    _Global(f"{module}.{attribute}")
                    if isinstance(module, str) and isinstance(attribute, str)
                    else _OPAQUE
                )
            elif name in ("REDUCE", "NEWOBJ", "NEWOBJ_EX"):
                if name == "NEWOBJ_EX":
                    stack.pop() if stack else None
                args = stack.pop() if stack else None
                func = stack.pop() if stack else None
                _check_call(func, args, budget, what)
                value = _OPAQUE
            elif name in ("BINPERSID", "PERSID"):
                pid = stack.pop() if (name == "BINPERSID" and stack) else arg
                if isinstance(pid, tuple) and pid and pid[0] == "storage":
                    declared = max([i for item in pid[1:] for i in _ints(item)] or [0])
                    if declared > budget:
                        raise PickleBombError(
                            f"{what}: a tensor storage declares {declared} elements but the file holds {budget} "
                            "bytes (a crafted or damaged file)"
                        )
                value = _OPAQUE
            elif name in ("TUPLE", "TUPLE1", "TUPLE2", "TUPLE3", "EMPTY_TUPLE"):
                count = {"TUPLE1": 1, "TUPLE2": 2, "TUPLE3": 3, "EMPTY_TUPLE": 0}.get(name)
                start = marks.pop() if count is None else len(stack) - count
                start = max(start, 0)
                value = tuple(stack[start:]) if len(stack) - start <= 64 else _OPAQUE
                del stack[start:]
            elif name in ("INST", "OBJ"):
                start = marks.pop() if marks else 0
                args = tuple(stack[start:])
                del stack[start:]
                func = _Global(str(arg).replace(" ", ".")) if name == "INST" else (args[0] if args else None)
                _check_call(func, args if name == "INST" else args[1:], budget, what)
                value = _OPAQUE
            elif not opcode.stack_before and len(opcode.stack_after) == 1:
                value = _constant(name, arg)
            else:
                if pickletools.markobject in opcode.stack_before:
                    start = marks.pop() if marks else 0
                    del stack[start:]
                    pops = opcode.stack_before.index(pickletools.markobject)
                else:
                    pops = len(opcode.stack_before)
                for _ in range(pops):
                    if stack:
                        stack.pop()
                if not opcode.stack_after:
                    continue
                value = _OPAQUE
            stack.append(value)
    except PickleBombError:
        raise
    except (ValueError, IndexError, KeyError, OverflowError, EOFError) as error:
        raise PickleBombError(
            f"{what}: damaged pickle ({str(error).splitlines()[0] if str(error) else type(error).__name__})"
        ) from None


def _constant(name: str, arg: Any) -> Any:
    if name == "NONE":
        return None
    if name in ("NEWTRUE", "NEWFALSE"):
        return name == "NEWTRUE"
    if isinstance(arg, (int, float)) or (isinstance(arg, (str, bytes)) and len(arg) < 256):
        return arg
    return _OPAQUE


def _check_call(func: Any, args: Any, budget: int, what: str) -> None:
    if not isinstance(func, _Global) or not _allocates(func.name):
        return
    for value in _ints(args):
        if value > budget:
            raise PickleBombError(
                f"{what}: the pickle calls {func.name}({value}), allocating far more than the file's {budget} bytes "
                "(a crafted file; nothing was allocated)"
            )


def check_loaded(value: Any, what: str, *, max_nodes: int = MAX_NODES, max_depth: int = MAX_DEPTH) -> None:
    """Check a loaded checkpoint: bounded size and depth, and tensors that own their data.

    Every tensor must be a CPU strided tensor whose storage holds at least ``numel`` elements (a
    stride-0 view of one number cannot stand in for a parameter); nested, sparse, meta and
    wrapper-subclass tensors are refused. Each object is visited once (cycles, such as OmegaConf's
    parent links, end there); more than ``max_nodes`` objects or nesting deeper than ``max_depth``
    is refused. (Code that copies a tree, :func:`vit5.io.plain_data`, bounds the expansion of
    shared references itself.)

    Raises:
        PickleBombError: One line naming the file, the entry and what was wrong.
    """
    count, seen = 0, set()
    stack: list[tuple[Any, int, str]] = [(value, 0, "")]
    while stack:
        item, depth, where = stack.pop()
        if id(item) in seen:
            continue
        if isinstance(item, (Mapping, list, tuple, set, frozenset, torch.Tensor)) or hasattr(
            item, "__dict__"
        ):
            seen.add(id(item))
        count += 1
        if count > max_nodes:
            raise PickleBombError(
                f"{what}: the checkpoint expands to more than {max_nodes} entries (shared references or a huge "
                "container; a crafted file)"
            )
        if depth > max_depth:
            raise PickleBombError(
                f"{what}: containers nested deeper than {max_depth} levels at {_short(where) or 'the top'} (a cyclic or "
                "crafted file)"
            )
        if isinstance(item, torch.Tensor):
            _check_tensor(item, what, where)
        elif isinstance(item, Mapping):
            stack.extend((v, depth + 1, f"{where}.{k}" if where else str(k)) for k, v in item.items())
        elif isinstance(item, (list, tuple, set, frozenset)):
            stack.extend((v, depth + 1, f"{where}[{i}]") for i, v in enumerate(item))
        elif hasattr(item, "__dict__") and not isinstance(item, type):
            stack.extend((v, depth + 1, f"{where}.{k}") for k, v in vars(item).items())


def _short(where: str) -> str:
    return where if len(where) <= 80 else f"{where[:40]}...{where[-37:]}"


def _check_tensor(tensor: torch.Tensor, what: str, where: str) -> None:
    name = _short(where) or "the top-level tensor"
    if (
        tensor.is_nested
        or tensor.layout != torch.strided
        or type(tensor) not in (torch.Tensor, torch.nn.Parameter)
    ):
        raise PickleBombError(f"{what}: entry {name} is a {type(tensor).__name__} with layout {tensor.layout}, "
                              "expected a plain dense tensor")  # fmt: skip
    if tensor.device.type != "cpu":
        raise PickleBombError(
            f"{what}: entry {name} is on device {tensor.device.type}, expected data in the file"
        )
    needed = tensor.numel() * tensor.element_size()
    try:
        held = tensor.untyped_storage().nbytes()
    except (RuntimeError, NotImplementedError):
        held = -1
    if needed > held:
        raise PickleBombError(
            f"{what}: entry {name} has shape {tuple(tensor.shape)} ({needed} bytes) but its storage holds "
            f"{max(held, 0)} bytes (an expanded or stride-0 view; a crafted file)"
        )


class _Bounded(io.RawIOBase):
    """A read-only view of ``handle`` whose reads never ask for more than the file holds."""

    def __init__(self, handle: Any, size: int) -> None:
        self.handle, self.size = handle, size

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        left = max(self.size - self.handle.tell(), 0)
        return self.handle.read(left if n is None or n < 0 else min(n, left))

    def readline(self, limit: int = -1) -> bytes:
        return self.handle.readline(1 << 16 if limit is None or limit < 0 else min(limit, 1 << 16))

    def tell(self) -> int:
        return self.handle.tell()


def check_torch_file(handle: Any, path: Path) -> None:
    """Refuse a ``torch.save`` file whose declared sizes exceed what it holds, before torch reads it.

    A zip archive (the torch.save format) may not inflate beyond its own size (torch writes its
    records uncompressed) and its ``data.pkl`` is scanned by :func:`scan_pickle`; a legacy
    pickle's header pickles are scanned the same way (each read bounded by the file's size).
    """
    size = os.fstat(handle.fileno()).st_size
    if zipfile.is_zipfile(handle):
        handle.seek(0)
        with zipfile.ZipFile(handle) as archive:
            entries = archive.infolist()
            inflated = sum(entry.file_size for entry in entries)
            if inflated > size + (1 << 20) + 1024 * len(entries):
                raise PickleBombError(
                    f"{path}: the archive's entries inflate to {inflated} bytes from a {size}-byte file "
                    "(torch.save stores records uncompressed; a crafted file)"
                )
            pickles = [
                entry for entry in entries if entry.filename.endswith(".pkl")
            ]  # every one torch might read
            for entry in pickles:
                if entry.file_size > MAX_PICKLE_BYTES:
                    raise PickleBombError(
                        f"{path}: data.pkl is {entry.file_size} bytes, more than a checkpoint needs"
                    )
                scan_pickle(io.BytesIO(archive.read(entry)), size, str(path))
        return
    handle.seek(0)
    bounded = _Bounded(handle, size)
    for _ in range(5):  # magic number, protocol, system info, the object, the storage keys
        if handle.tell() >= size:
            break
        scan_pickle(bounded, size, str(path))
