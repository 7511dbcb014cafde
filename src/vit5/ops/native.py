"""Fused fp32 CPU kernels: plain C compiled once per machine, called through ctypes.

On a CPU the elementwise chains around the matrix products (norms, gates, spectral products)
are bound by memory traffic: each PyTorch op reads and writes its whole tensor. The kernels in
``cpu_kernels.c`` (next to this file) do such a chain in one or two passes. They need a C
compiler with OpenMP (``cc``, or ``$CC``), found at first use; the library is built once
(about a second) into ``$VIT5_CACHE_DIR`` (default ``$XDG_CACHE_HOME/vit5`` or
``~/.cache/vit5``), keyed by the source, the flags, the compiler and the CPU, and reused by
every later process (loaded only if this user owns it and nobody else may write it or its
folder). Without a compiler, with ``VIT5_NATIVE=0`` in the environment, or inside
:func:`disabled`, every caller runs its PyTorch expression instead: the same formula, rounded
differently in the last bits.

The kernels take only what they were written for (:func:`usable`): CPU, fp32, contiguous,
eager tensors. Graph capture (compile, export, FX), ``torch.func`` transforms, other dtypes and
other devices take the PyTorch path, so compiled, exported and GPU models never depend on them.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import torch

from vit5.ops.capture import is_capturing

__all__ = ["disabled", "library", "row_blocks", "run", "threads", "usable"]

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("cpu_kernels.c")
# -ffp-contract=off: no fused multiply-adds unless a kernel asks for them (fmaf where PyTorch's own
# kernel fuses, the batched products' tiles), so a kernel doing the ops of a PyTorch expression in
# its order gives its bits; tests check those that claim it (GCC may still recognise idioms, e.g. an
# interleaved complex product, and fuse them). -fno-math-errno / -fno-trapping-math let loops with
# sqrt, clamps and float-to-int conversions vectorise; neither changes a computed value.
FLAGS = (
    "-O3", "-march=native", "-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math",
    "-fopenmp", "-std=c11", "-shared", "-fPIC",
)  # fmt: skip
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
_loaded: dict[str, ctypes.CDLL | None] = {}
_switch = threading.local()


def _cpu_identity() -> str:
    """What ``-march=native`` depends on: the architecture and, on Linux, the CPU's feature flags."""
    identity = platform.machine() + platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features", "model name")):
                identity += line
    return identity


def _cache_dir() -> Path:
    root = os.environ.get("VIT5_CACHE_DIR")
    if not root:
        root = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "vit5")
    return Path(root) / "kernels"


def _compiler() -> str | None:
    name = os.environ.get("CC") or "cc"
    return shutil.which(name)


def _trusted(path: Path) -> bool:
    """A library is loaded only if this user owns it and nobody else may write it or its folder
    (a shared cache folder must not let another user plant code), where POSIX says so."""
    if not hasattr(os, "getuid"):
        return True
    for item in (path, path.parent):
        status = item.stat()
        if status.st_uid != os.getuid() or status.st_mode & 0o022:
            return False
    return True


def _build() -> ctypes.CDLL | None:
    compiler = _compiler()
    if compiler is None:
        logger.info("vit5 native kernels: no C compiler found (cc / $CC); using PyTorch ops")
        return None
    source = SOURCE.read_bytes()
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30).stdout
    key = hashlib.sha256(
        b"\0".join(
            x.encode() if isinstance(x, str) else x for x in (source, *FLAGS, version, _cpu_identity())
        )
    ).hexdigest()[:20]
    directory = _cache_dir()
    target = directory / f"cpu_kernels-{key}.so"
    if not target.exists():
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Each process builds into its own temporary name, then renames atomically: concurrent
        # first uses (DDP ranks) never see a half-written library.
        fd, partial = tempfile.mkstemp(prefix=".build-", suffix=".so", dir=directory)
        os.close(fd)
        try:
            result = subprocess.run(
                [compiler, *FLAGS, str(SOURCE), "-o", partial, "-lm"],
                capture_output=True,
                text=True,
                timeout=120,
            )
            if result.returncode != 0:
                logger.warning(
                    "vit5 native kernels: %s failed (%s); using PyTorch ops",
                    compiler,
                    result.stderr.strip().splitlines()[-1:] or result.returncode,
                )
                return None
            os.replace(partial, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(partial)
    if not _trusted(target):
        logger.warning(
            "vit5 native kernels: %s is writable by other users or not yours; not loading it "
            "(set VIT5_CACHE_DIR to a directory only you can write); using PyTorch ops",
            target,
        )
        return None
    lib = ctypes.CDLL(str(target))
    for name, (argtypes, restype) in SIGNATURES.items():
        function = getattr(lib, name)
        function.argtypes, function.restype = argtypes, restype
    return lib


def library() -> ctypes.CDLL | None:
    """The compiled kernel library, building it on first use; ``None`` if it cannot be had."""
    if os.environ.get(ENV_SWITCH, "1") == "0":
        return None
    if "lib" not in _loaded:
        with _lock:
            if "lib" not in _loaded:
                try:
                    _loaded["lib"] = _build()
                except (OSError, subprocess.SubprocessError, AttributeError) as error:
                    logger.warning("vit5 native kernels unavailable (%s); using PyTorch ops", error)
                    _loaded["lib"] = None
    return _loaded["lib"]


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
        if torch._C._functorch.is_functorch_wrapped_tensor(t):
            return False
    if not all(t.is_contiguous() for t in tensors) or any(row_blocks(t) is None for t in strided):
        return False
    return library() is not None


def run(name: str, *args: object) -> object:
    """Call kernel ``name`` of :func:`library` (which must be available, see :func:`usable`).

    Under ``torch.profiler`` the call is a profiler range named after the kernel, so profiles
    account for its time (a ctypes call is otherwise invisible to the profiler)."""
    function = getattr(library(), name)
    if torch.autograd.profiler._is_profiler_enabled:
        with torch.profiler.record_function(name):
            return function(*args)
    return function(*args)


def threads() -> int:
    """The thread count the kernels use: PyTorch's intra-op setting."""
    return torch.get_num_threads()
