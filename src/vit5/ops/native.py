"""Fused fp32 CPU kernels: a C++ ``TORCH_LIBRARY`` extension built when vit5 is installed.

On a CPU the elementwise chains around the matrix products (norms, gates, spectral products)
are bound by memory traffic: each PyTorch op reads and writes its whole tensor. The kernels in
``csrc/`` (next to this file) do such a chain in one or two passes, as ``vit5::`` operators
whose schemas and CPU implementations are C++ (threads from ATen's ``at::parallel_for``, i.e.
PyTorch's intra-op pool; SIMD from ``at::vec``). They are compiled when the package is installed
(:mod:`vit5.ops.build_kernels`, run by ``setup.py``) into ``_vit5_ops.so`` in this folder, with a
record of the sources' hash and the torch version; at run time nothing is compiled, no process
is started, and nothing is loaded from anywhere else. :mod:`vit5.ops.kernels` adds their fake
implementations and autograd formulas and is the only caller.

Without the library (no compiler at install time), with a record that does not match the
sources or the running torch, with ``VIT5_NATIVE=0`` in the environment, or inside
:func:`disabled`, every caller runs its PyTorch expression instead: the same formula, rounded
differently in the last bits. A missing or stale library is reported by one warning, the first
time an eager CPU fp32 call would have used a kernel (GPU and bf16 users are not told).

The kernels take only what they were written for (:func:`usable`): CPU, fp32, contiguous,
eager tensors. Graph capture (compile, export, FX), ``torch.func`` transforms and forward-mode
AD (:func:`vit5.ops.capture.is_capturing`), other dtypes and other devices take the PyTorch
path, so compiled, exported and GPU models never depend on them.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from vit5.ops.build_kernels import LIBRARY_NAME, RECORD_NAME, source_hash
from vit5.ops.capture import is_capturing

__all__ = ["disabled", "enabled", "library", "on_load", "row_blocks", "status", "threads", "usable"]

HERE = Path(__file__).resolve().parent
#: The extension's C++ sources (hashed into the record at build time).
SOURCES = HERE / "csrc"
LIBRARY = HERE / LIBRARY_NAME
RECORD = HERE / RECORD_NAME
#: Environment switch: ``VIT5_NATIVE=0`` keeps every op on its PyTorch path.
ENV_SWITCH = "VIT5_NATIVE"

_lock = threading.Lock()
_loaded: dict[str, object] = {}
_switch = threading.local()
#: Called once, right after the extension is loaded (vit5.ops.kernels registers its Python parts).
_hooks: list[Callable[[], None]] = []
#: The library file this process loaded (a process loads it at most once).
_in_process: list[Path] = []


def status() -> str:
    """Why the library is (not) usable: ``"ok"``, or a sentence naming the problem."""
    if not LIBRARY.exists() or not RECORD.exists():
        return (
            f"the fused CPU kernels were not built at install time ({LIBRARY.name} missing; install vit5 "
            "with a C++ compiler, e.g. `pip install --no-build-isolation -e .`)"
        )
    try:
        record = json.loads(RECORD.read_text())
    except (OSError, ValueError) as error:
        return f"the fused CPU kernels' record {RECORD.name} is unreadable ({error})"
    if record.get("sources_sha256") != source_hash(SOURCES):
        return (
            f"{LIBRARY.name} was built from other kernel sources than {SOURCES.name}/ holds "
            "(rebuild: python -m vit5.ops.build_kernels)"
        )
    if str(record.get("torch")).split("+")[0] != torch.__version__.split("+")[0]:
        return f"{LIBRARY.name} was built with torch {record.get('torch')}, this is torch {torch.__version__} (rebuild it)"
    return "ok"


def _load() -> Path | None:
    why = status()
    if why != "ok":
        _loaded["why"] = why
        return None
    if not _in_process:
        try:
            torch.ops.load_library(str(LIBRARY))
        except (OSError, RuntimeError) as error:
            _loaded["why"] = f"{LIBRARY.name} could not be loaded ({str(error).splitlines()[0]})"
            return None
        _in_process.append(LIBRARY)
        for hook in _hooks:
            hook()
    return _in_process[0]


def library() -> Path | None:
    """The installed kernel library, loaded on first use; ``None`` if it cannot be had (no
    compiler at install time, a record that does not match, switched off)."""
    if os.environ.get(ENV_SWITCH, "1") == "0":
        return None
    if "lib" not in _loaded:
        with _lock:
            if "lib" not in _loaded:
                _loaded["lib"] = _load()
    return _loaded["lib"]  # type: ignore[return-value]


def on_load(hook: Callable[[], None]) -> None:
    """Run ``hook`` once the extension is loaded (now, if it already is)."""
    with _lock:
        _hooks.append(hook)
        loaded = bool(_in_process)
    if loaded:
        hook()


def _unavailable() -> bool:
    """True (after one warning per process) when the kernels would run but are not available."""
    if library() is not None:
        return False
    if os.environ.get(ENV_SWITCH, "1") != "0" and not _loaded.get("warned"):
        _loaded["warned"] = True
        warnings.warn(f"vit5: {_loaded.get('why')}; using PyTorch ops", RuntimeWarning, stacklevel=3)
    return True


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Run the block on the PyTorch paths (this thread only), e.g. to compare the two."""
    previous = getattr(_switch, "off", False)
    _switch.off = True
    try:
        yield
    finally:
        _switch.off = previous


def row_blocks(t: torch.Tensor) -> tuple[int, int, int] | None:
    """``(inner, outer_stride, inner_stride)`` addressing the rows of ``t`` ``[..., D]`` in two
    levels (row ``i`` at ``(i // inner) * outer_stride + (i % inner) * inner_stride``), when its
    channels are contiguous and its leading dimensions collapse into two (e.g. the per-head ``q``
    ``[B, T, H, hd]`` of a packed projection); else ``None``. The kernels read such rows in place."""
    if t.dim() == 0 or (t.shape[-1] > 1 and t.stride(-1) != 1):
        return None
    if t.dim() == 1:
        return 1, t.shape[-1], t.shape[-1]
    try:
        view = t.view(-1, t.shape[-2], t.shape[-1])  # (O, I, D)
    except RuntimeError:
        return None
    return view.shape[1], view.stride(0), view.stride(1)


def usable(
    *tensors: torch.Tensor, strided: tuple[torch.Tensor, ...] = (), any_layout: tuple[torch.Tensor, ...] = ()
) -> bool:
    """Whether the kernels may run on ``tensors`` (contiguous), ``strided`` (rows addressed in two
    levels, :func:`row_blocks`) and ``any_layout`` (read through their strides): eager CPU fp32, not under a
    ``torch.func`` transform, not disabled, and the library available."""
    if is_capturing():
        return False
    for t in (*tensors, *strided, *any_layout):
        if t.device.type != "cpu" or t.dtype != torch.float32:
            return False
    if not all(t.is_contiguous() for t in tensors) or any(row_blocks(t) is None for t in strided):
        return False
    return enabled()


def enabled() -> bool:
    """Whether the kernels may run at all here: not switched off (``VIT5_NATIVE=0``,
    :func:`disabled` in this thread) and the library loaded (else one warning per process). The
    tensor and capture checks are the caller's (:func:`usable`, :func:`vit5.ops.route.use_kernel`)."""
    return not getattr(_switch, "off", False) and not _unavailable()


def threads() -> int:
    """PyTorch's intra-op thread count, which the kernels use (``at::parallel_for``)."""
    return torch.get_num_threads()
