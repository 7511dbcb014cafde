"""Build the fused CPU kernels when the package is installed (never at run time).

``setup.py`` runs :func:`build` during ``pip install`` (the Makefile installs with
``--no-build-isolation``, so the torch being installed against is the one recorded): it compiles
``cpu_kernels.c`` into ``_cpu_kernels.so`` next to it and writes ``_cpu_kernels.json`` with the
source's SHA-256, the flags, the compiler and the torch version. :mod:`vit5.ops.native` loads
the library only from the package folder and only when that record matches the source and the
running torch; otherwise every op takes its PyTorch path (one warning, when an eager CPU fp32
call would have used a kernel). Installing succeeds without a C compiler (no library, the
PyTorch paths). Rebuild by hand with ``python -m vit5.ops.build_kernels``.

This module imports nothing of vit5 and needs no torch to compile (``setup.py`` loads it by
path); it does not run when vit5 is imported.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE_NAME = "cpu_kernels.c"
LIBRARY_NAME = "_cpu_kernels.so"
RECORD_NAME = "_cpu_kernels.json"
# -ffp-contract=off: no fused multiply-adds unless a kernel asks for them (fmaf where PyTorch's own
# kernel fuses), so a kernel doing the ops of a PyTorch expression in its order gives its bits;
# -fno-math-errno / -fno-trapping-math let loops with sqrt, clamps and float-to-int conversions
# vectorise; neither changes a computed value. -march=native: built on the machine that runs it.
FLAGS = (
    "-O3", "-march=native", "-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math",
    "-fopenmp", "-std=c11", "-shared", "-fPIC",
)  # fmt: skip


def source_hash(source: Path) -> str:
    """SHA-256 of the kernel source (the record ties a library to it)."""
    return hashlib.sha256(source.read_bytes()).hexdigest()


def torch_version() -> str | None:
    """The installed torch's version, without importing torch."""
    try:
        from importlib.metadata import version

        return version("torch")
    except Exception:  # noqa: BLE001 (no torch installed: nothing to record)
        return None


def build(destination: Path, source: Path | None = None, compiler: str | None = None) -> Path | None:
    """Compile the kernels into ``destination`` (library + record); ``None`` (and a message on
    stderr) when no compiler is found or compiling fails: installing goes on without them."""
    source = source or HERE / SOURCE_NAME
    compiler = compiler or shutil.which(os.environ.get("CC") or "cc")
    if compiler is None:
        print("vit5: no C compiler (cc / $CC); the fused CPU kernels are not built", file=sys.stderr)
        return None
    destination.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(prefix=".build-", suffix=".so", dir=destination)
    os.close(fd)
    try:
        try:
            result = subprocess.run(
                [compiler, *FLAGS, str(source), "-o", partial, "-lm"],
                capture_output=True,
                text=True,
                timeout=600,
            )
        except (OSError, subprocess.SubprocessError) as error:
            print(
                f"vit5: could not run {compiler} ({error}); the fused CPU kernels are not built",
                file=sys.stderr,
            )
            return None
        if result.returncode != 0:
            last = result.stderr.strip().splitlines()[-1:] or [str(result.returncode)]
            print(f"vit5: compiling the fused CPU kernels failed ({last[0]}); not built", file=sys.stderr)
            return None
        target = destination / LIBRARY_NAME
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    record = {
        "source_sha256": source_hash(source),
        "torch": torch_version(),
        "flags": list(FLAGS),
        "compiler": subprocess.run([compiler, "--version"], capture_output=True, text=True).stdout.split(
            "\n"
        )[0],
    }
    (destination / RECORD_NAME).write_text(json.dumps(record, indent=1) + "\n")
    return target


if __name__ == "__main__":
    built = build(HERE)
    print(built if built is not None else "not built")
    sys.exit(0 if built is not None else 1)
