"""Builds the fused CPU kernels' C++ extension at install time (src/vit5/ops/build_kernels.py).

Everything else about the package is in pyproject.toml. Install with
``pip install --no-build-isolation -e .`` (the Makefile does) so the extension is compiled
against, and its record names, the torch installed in the environment; without a C++ compiler
(or without torch) the install succeeds and vit5 runs its PyTorch paths.
"""

import importlib.util
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
OPS = HERE / "src" / "vit5" / "ops"


def _builder():
    spec = importlib.util.spec_from_file_location("vit5_build_kernels", OPS / "build_kernels.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildWithKernels(build_py):
    """``build_py`` that also compiles ``ops/csrc`` (next to the sources in editable mode)."""

    def run(self) -> None:
        super().run()
        editable = getattr(self, "editable_mode", False)
        destination = OPS if editable else Path(self.build_lib) / "vit5" / "ops"
        try:
            _builder().build(destination, sources=OPS / "csrc")
        except Exception as error:  # noqa: BLE001 (optional: installing goes on without the kernels)
            print(f"vit5: the fused CPU kernels were not built ({error}); vit5 runs its PyTorch ops")


setup(cmdclass={"build_py": BuildWithKernels})
