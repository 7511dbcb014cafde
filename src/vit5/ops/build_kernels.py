"""Build the fused CPU kernels when the package is installed (never at run time).

``setup.py`` runs :func:`build` during ``pip install`` (the Makefile installs with
``--no-build-isolation``, so the torch being built against is the one installed and recorded):
it compiles the C++ sources in ``csrc/`` (a ``TORCH_LIBRARY`` extension: ATen headers, no
pybind11) into ``_vit5_ops.so`` next to this file and writes ``_vit5_ops.json`` with the
sources' SHA-256, the torch version, the flags and the compiler. :mod:`vit5.ops.native` loads
the library (``torch.ops.load_library``) only from the package folder and only when that record
matches the sources and the running torch; otherwise every op takes its PyTorch path (one
warning, when an eager CPU fp32 call would have used a kernel). Installing succeeds without a
C++ compiler or without torch (no library, the PyTorch paths). Rebuild by hand with
``python -m vit5.ops.build_kernels``.

This module imports nothing of vit5 (``setup.py`` loads it by path) and does not compile
anything when imported.
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
#: The extension's sources (every file in it is hashed into the record).
SOURCES = HERE / "csrc"
LIBRARY_NAME = "_vit5_ops.so"
RECORD_NAME = "_vit5_ops.json"
#: -march=native: built on the machine that runs it (ATen's AVX2 vectors where the target has
#: them). -ffp-contract=off: no multiply-add is fused unless a kernel asks for it (at::vec::fmadd),
#: so a kernel doing a PyTorch expression's ops in its order rounds as PyTorch's separate ops do.
#: -fno-math-errno / -fno-trapping-math change no computed value.
FLAGS = (
    "-O3", "-march=native", "-std=c++20", "-fPIC", "-fvisibility=hidden", "-ffp-contract=off",
    "-fno-math-errno", "-fno-trapping-math",
)  # fmt: skip


def source_files(sources: Path = SOURCES) -> list[Path]:
    """The extension's source files, sorted by name."""
    return sorted(p for p in sources.iterdir() if p.suffix in (".cpp", ".h")) if sources.is_dir() else []


def source_hash(sources: Path = SOURCES) -> str:
    """SHA-256 over the sources' names and contents (the record ties a library to them)."""
    digest = hashlib.sha256()
    for path in source_files(sources):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def torch_version() -> str | None:
    """The installed torch's version, without importing torch."""
    try:
        from importlib.metadata import version

        return version("torch")
    except Exception:  # noqa: BLE001 (no torch installed: nothing to record)
        return None


def _torch_paths() -> tuple[Path, Path] | None:
    """``(include, lib)`` folders of the installed torch, without importing it."""
    from importlib.util import find_spec

    spec = find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations)))
    include, lib = root / "include", root / "lib"
    return (include, lib) if (include / "torch" / "library.h").exists() and lib.is_dir() else None


def parallel_flags(include: Path) -> tuple[str, ...]:
    """``("-fopenmp",)`` when the installed torch's parallel backend is OpenMP, else ``()``.

    In such a build ``at::parallel_for`` is a header template whose body is ATen's own
    ``#pragma omp parallel`` (``ATen/ParallelOpenMP.h``): compiled without ``-fopenmp`` it runs
    every loop on one thread. The kernels' sources hold no OpenMP code of their own, and the
    library's ``libgomp.so.1`` is the one torch has already loaded (the same soname), so there is
    one thread pool, sized by ``torch.set_num_threads``."""
    try:
        config = (include / "ATen" / "Config.h").read_text()
    except OSError:
        return ()
    return ("-fopenmp",) if "#define AT_PARALLEL_OPENMP 1" in config else ()


def compile_command(compiler: str, source: Path, output: Path, include: Path, flags=FLAGS) -> list[str]:
    """The command compiling one source file to an object file (``-c``, no link)."""
    return [
        compiler,
        *flags,
        *parallel_flags(include),
        "-isystem",
        str(include),
        "-c",
        str(source),
        "-o",
        str(output),
    ]


def _say(message: str) -> None:
    print(
        f"vit5: {message}; the fused CPU kernels are not built (vit5 runs its PyTorch ops)", file=sys.stderr
    )


def build(destination: Path, sources: Path = SOURCES, compiler: str | None = None) -> Path | None:
    """Compile the extension into ``destination`` (library + record); ``None`` (and one line on
    stderr) when no compiler or no torch is found or compiling fails: installing goes on."""
    compiler = compiler or shutil.which(os.environ.get("CXX") or "c++")
    if compiler is None:
        _say("no C++ compiler (c++ / $CXX)")
        return None
    paths = _torch_paths()
    if paths is None:
        _say("no installed torch with C++ headers")
        return None
    include, lib = paths
    destination.mkdir(parents=True, exist_ok=True)
    files = [p for p in source_files(sources) if p.suffix == ".cpp"]
    with tempfile.TemporaryDirectory(prefix="vit5-build-") as tmp:
        objects = [Path(tmp) / f"{p.stem}.o" for p in files]
        try:  # the sources compile in parallel, then link
            jobs = [
                subprocess.Popen(
                    compile_command(compiler, p, o, include),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for p, o in zip(files, objects)
            ]
            results = [(job.wait(timeout=900), job.communicate()[1]) for job in jobs]
            if all(code == 0 for code, _ in results):
                partial = Path(tmp) / LIBRARY_NAME
                link = [
                    compiler,
                    "-shared",
                    *parallel_flags(include),
                    *map(str, objects),
                    "-o",
                    str(partial),
                    f"-L{lib}",
                    "-lc10",
                    "-ltorch_cpu",
                ]
                done = subprocess.run(link, capture_output=True, text=True, timeout=300)
                results.append((done.returncode, done.stderr))
        except (OSError, subprocess.SubprocessError) as error:
            _say(f"could not run {compiler} ({error})")
            return None
        failed = [(code, err) for code, err in results if code != 0]
        if failed:
            code, err = failed[0]
            errors = [line for line in err.splitlines() if "error" in line] or err.strip().splitlines()[-1:]
            _say(f"compiling failed ({errors[0] if errors else code})")
            return None
        target = destination / LIBRARY_NAME
        shutil.copyfile(partial, destination / f".{LIBRARY_NAME}.partial")
        os.replace(destination / f".{LIBRARY_NAME}.partial", target)
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    record = {
        "sources_sha256": source_hash(sources),
        "torch": torch_version(),
        "flags": [*FLAGS, *parallel_flags(include)],
        "compiler": version,
    }
    (destination / RECORD_NAME).write_text(json.dumps(record, indent=1) + "\n")
    return target


if __name__ == "__main__":
    built = build(HERE)
    print(built if built is not None else "not built")
    sys.exit(0 if built is not None else 1)
