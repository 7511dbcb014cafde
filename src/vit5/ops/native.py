"""Fused fp32 CPU kernels: plain C built when vit5 is installed, called as ``vit5::`` operators.

On a CPU the elementwise chains around the matrix products (norms, gates, spectral products)
are bound by memory traffic: each PyTorch op reads and writes its whole tensor. The kernels in
``cpu_kernels.c`` (next to this file) do such a chain in one or two passes. They are compiled
when the package is installed (:mod:`vit5.ops.build_kernels`, run by ``setup.py``) into
``_cpu_kernels.so`` in this folder, with a record of the source's hash and the torch version;
at run time nothing is compiled, no process is started, and nothing is loaded from anywhere
else. Each kernel is called only through its operator in :mod:`vit5.ops.kernels`.

Without the library (no compiler at install time), with a record that does not match the source
or the running torch, with ``VIT5_NATIVE=0`` in the environment, or inside :func:`disabled`,
every caller runs its PyTorch expression instead: the same formula, rounded differently in the
last bits. A missing or stale library is reported by one warning, the first time an eager CPU
fp32 call would have used a kernel (GPU and bf16 users are not told).

The kernels take only what they were written for (:func:`usable`): CPU, fp32, contiguous,
eager tensors. Graph capture (compile, export, FX), ``torch.func`` transforms and forward-mode
AD (:func:`vit5.ops.capture.is_capturing`), other dtypes and other devices take the PyTorch
path, so compiled, exported and GPU models never depend on them.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

from vit5.ops.capture import is_capturing

__all__ = ["disabled", "library", "row_blocks", "run", "status", "threads", "usable"]

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "cpu_kernels.c"
LIBRARY = HERE / "_cpu_kernels.so"
RECORD = HERE / "_cpu_kernels.json"
#: Environment switch: ``VIT5_NATIVE=0`` keeps every op on its PyTorch path.
ENV_SWITCH = "VIT5_NATIVE"

_P, _I64, _F, _INT = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float, ctypes.c_int
#: Name -> (argument types, return type) of every exported kernel.
SIGNATURES = {
    "vit5_rms_forward": ((_P, _I64, _I64, _I64, _P, _P, _P, _I64, _I64, _F, _INT), None),
    "vit5_rms_backward": ((_P, _I64, _I64, _I64, _P, _P, _P, _P, _P, _I64, _I64, _INT), _INT),
    "vit5_complex_product": ((_P, _P, _P, _I64, _I64, _I64, _INT, _INT, _INT), None),
    "vit5_complex_product_sum": ((_P, _P, _P, _I64, _I64, _I64, _INT), None),
    "vit5_scaled_add": ((_P, _P, _P, _P, _I64, _I64, _I64, _INT, _INT), None),
    "vit5_scaled_add_backward": ((_P, _P, _P, _P, _P, _I64, _I64, _I64, _INT, _INT), _INT),
    "vit5_gate_forward": (
        (_P, *(_I64,) * 3, _P, *(_I64,) * 3, _P, _P, _I64, _I64, _INT, _INT, _F, _INT),
        None,
    ),
    "vit5_gate_backward": (
        (_P, *(_I64,) * 3, _P, *(_I64,) * 3, _P, _P, _P, _P, _I64, _I64, _INT, _INT, _F, _INT),
        None,
    ),
    "vit5_rope": ((_P, _I64, _I64, _I64, _P, _P, _P, _P, _P, _I64, _I64, _I64, _I64, _INT, _INT), None),
    "vit5_batched_matmul": ((_P, _I64, _I64, _I64, _I64, _P, _I64, _I64, _P, _INT), None),
    "vit5_fft_kernel_spectrum": ((_P, *(_I64,) * 10, _P, _P, _INT), _INT),
    "vit5_fft_conv2d_kernel_grad": ((_P, _P, *(_I64,) * 14, _P, *(_I64,) * 5, _P, _INT), _INT),
    "vit5_fft_conv2d": ((_P, *(_I64,) * 7, _P, _I64, _I64, _P, _P, _I64, _I64, _I64, _P, _INT), _INT),
}

_lock = threading.Lock()
_loaded: dict[str, object] = {}
_switch = threading.local()


def status() -> str:
    """Why the library is (not) available: ``"ok"``, or a sentence naming the problem."""
    if not LIBRARY.exists() or not RECORD.exists():
        return (
            f"the fused CPU kernels were not built at install time ({LIBRARY.name} missing; install vit5 "
            "with a C compiler, e.g. `pip install --no-build-isolation -e .`)"
        )
    try:
        record = json.loads(RECORD.read_text())
    except (OSError, ValueError) as error:
        return f"the fused CPU kernels' record {RECORD.name} is unreadable ({error})"
    if record.get("source_sha256") != hashlib.sha256(SOURCE.read_bytes()).hexdigest():
        return (
            f"{LIBRARY.name} was built from another {SOURCE.name} (rebuild: python -m vit5.ops.build_kernels)"
        )
    if record.get("torch") is not None and record["torch"].split("+")[0] != torch.__version__.split("+")[0]:
        return f"{LIBRARY.name} was built with torch {record['torch']}, this is torch {torch.__version__} (rebuild it)"
    return "ok"


def _load() -> ctypes.CDLL | None:
    why = status()
    if why != "ok":
        _loaded["why"] = why
        return None
    try:
        lib = ctypes.CDLL(str(LIBRARY))
        for name, (argtypes, restype) in SIGNATURES.items():
            function = getattr(lib, name)
            function.argtypes, function.restype = argtypes, restype
    except (OSError, AttributeError) as error:
        _loaded["why"] = f"{LIBRARY.name} could not be loaded ({error})"
        return None
    return lib


def library() -> ctypes.CDLL | None:
    """The installed kernel library, loaded on first use; ``None`` if it cannot be had (no
    compiler, compiled without a matching record, switched off)."""
    if os.environ.get(ENV_SWITCH, "1") == "0":
        return None
    if "lib" not in _loaded:
        with _lock:
            if "lib" not in _loaded:
                _loaded["lib"] = _load()
    return _loaded["lib"]  # type: ignore[return-value]


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
    ``[B, T, H, hd]`` of a packed projection); else ``None``."""
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
    if getattr(_switch, "off", False) or is_capturing():
        return False
    for t in (*tensors, *strided, *any_layout):
        if t.device.type != "cpu" or t.dtype != torch.float32:
            return False
    if not all(t.is_contiguous() for t in tensors) or any(row_blocks(t) is None for t in strided):
        return False
    return not _unavailable()


def run(name: str, *args: object) -> object:
    """Call kernel ``name`` of :func:`library` (which must be available, see :func:`usable`);
    only the operators of :mod:`vit5.ops.kernels` call it (the profiler shows those)."""
    return getattr(library(), name)(*args)


def threads() -> int:
    """The thread count the kernels use: PyTorch's intra-op setting."""
    return torch.get_num_threads()
