"""Fixtures importing the benchmark scripts (``benchmarks/`` is not a package)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@contextlib.contextmanager
def _imported(*names: str) -> Iterator[tuple[ModuleType, ...]]:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield tuple(__import__(name) for name in names)
    finally:
        sys.path.remove(str(BENCHMARKS))


@pytest.fixture
def run_module() -> Iterator[ModuleType]:
    """``benchmarks/run.py``."""
    with _imported("run") as (run,):
        yield run


@pytest.fixture(scope="module")
def modules() -> Iterator[tuple[ModuleType, ModuleType]]:
    """``benchmarks/harness.py`` and ``benchmarks/report.py``."""
    with _imported("harness", "report") as imported:
        yield imported
