"""The fused CPU kernel library: built once per machine into the cache, reused, and optional."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from vit5.ops import native
from vit5.ops.rmsnorm import rms_norm

requires_library = pytest.mark.skipif(
    native._compiler() is None, reason="no C compiler: the kernels fall back to PyTorch ops"
)


def _run(code: str, **env: str) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter (a fresh library state) with ``env`` added."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


@requires_library
def test_the_library_is_built_once_into_the_cache_and_reused(tmp_path) -> None:
    code = """
        import torch
        from vit5.ops import native
        lib = native.library()
        assert lib is not None
        print(lib._name)
    """
    first = _run(code, VIT5_CACHE_DIR=str(tmp_path))
    assert first.returncode == 0, first.stderr
    built = list((tmp_path / "kernels").glob("cpu_kernels-*.so"))
    assert [str(p) for p in built] == [first.stdout.strip()]
    stamp = built[0].stat().st_mtime_ns
    second = _run(code, VIT5_CACHE_DIR=str(tmp_path))
    assert second.returncode == 0 and second.stdout == first.stdout
    assert built[0].stat().st_mtime_ns == stamp  # reused, not rebuilt
    assert not list((tmp_path / "kernels").glob(".build-*"))  # no partial files left behind


def test_switched_off_or_without_a_compiler_everything_runs_on_pytorch_ops(tmp_path) -> None:
    code = """
        import torch
        from vit5.ops import native
        from vit5.ops.rmsnorm import rms_norm
        assert native.library() is None
        x = torch.randn(4, 16, requires_grad=True)
        w = torch.rand(16, requires_grad=True)
        y = rms_norm(x, w, 1e-6)
        assert type(y.grad_fn).__name__ != "_RMSNormKernelBackward", y.grad_fn
        y.sum().backward()
        print("ok")
    """
    for env in ({"VIT5_NATIVE": "0"}, {"CC": "false"}):
        result = _run(code, VIT5_CACHE_DIR=str(tmp_path), **env)
        assert result.returncode == 0 and result.stdout.strip() == "ok", (env, result.stderr)
        if env.get("CC") == "false":  # a compiler that fails: said once, as a warning
            assert "failed" in result.stderr


@requires_library
def test_usable_only_for_eager_cpu_fp32_tensors_of_the_right_layout(monkeypatch) -> None:
    x = torch.randn(4, 6)
    assert native.usable(x)
    assert not native.usable(x.t())  # not contiguous
    assert not native.usable(x.double()) and not native.usable(x.bfloat16())
    with native.disabled():
        assert not native.usable(x)
    assert native.usable(x)
    monkeypatch.setattr(native, "is_capturing", lambda: True)  # compile, export, FX
    assert not native.usable(x)


@requires_library
def test_usable_is_false_under_torch_func_transforms() -> None:
    seen = []

    def probe(t: torch.Tensor) -> torch.Tensor:
        seen.append(native.usable(t))
        return t.sum()

    torch.func.grad(probe)(torch.randn(3))
    torch.func.vmap(probe)(torch.randn(2, 3))
    assert seen == [False, False]


def test_row_blocks_address_rows_in_at_most_two_levels() -> None:
    base = torch.randn(2, 5, 4, 24)
    q, k, _ = base.split(8, dim=-1)
    assert native.row_blocks(k) == (4, 96, 24)  # rows of 8 channels, 24 floats apart
    assert native.row_blocks(base) == (4, 96, 24)
    assert native.row_blocks(base.transpose(1, 2)) is None  # three levels
    assert native.row_blocks(base[..., ::2]) is None  # channels not contiguous
    assert native.row_blocks(torch.randn(7)) == (1, 7, 7)
    assert native.usable(strided=(q, k)) == (native.library() is not None)
    assert not native.usable(q)  # q is not contiguous


@requires_library
def test_kernels_use_the_thread_count_and_stay_deterministic() -> None:
    x = torch.randn(257, 33, requires_grad=True)
    w = torch.rand(33, requires_grad=True)
    g = torch.randn(257, 33)
    results = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 2, 1, 2):
            torch.set_num_threads(n)
            y = rms_norm(x, w, 1e-6)
            results.append((y, *torch.autograd.grad(y, (x, w), g)))
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(results[0], results[2]):
        assert torch.equal(a, b)  # same thread count, same bits
    for a, b in zip(results[0], results[1]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("compiler", ["false", "no-such-compiler"])
def test_build_failure_is_logged_not_raised(compiler, monkeypatch, caplog, tmp_path) -> None:
    monkeypatch.setenv("VIT5_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CC", compiler)
    monkeypatch.setattr(native, "_loaded", {})
    with caplog.at_level(logging.INFO, logger="vit5.ops.native"):
        assert native.library() is None
        assert native.library() is None  # tried once
    said = [r.getMessage() for r in caplog.records if r.name == "vit5.ops.native"]
    assert len(said) == 1 and ("failed" in said[0] or "no C compiler" in said[0])
    assert not native.usable(torch.randn(3))
    assert not list(tmp_path.rglob("*.so"))


@requires_library
def test_kernel_calls_are_profiler_ranges() -> None:
    """Under torch.profiler each kernel call is a range named after it (ctypes calls are
    otherwise invisible, and the benchmark's step-time shares would miss them)."""
    from torch.profiler import ProfilerActivity, profile

    x = torch.randn(64, 32, requires_grad=True)
    w = torch.rand(32, requires_grad=True)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        rms_norm(x, w, 1e-6).sum().backward()
    names = {e.key for e in prof.key_averages()}
    assert {"vit5_rms_forward", "vit5_rms_backward"} <= names


@requires_library
@pytest.mark.skipif(not hasattr(os, "getuid"), reason="POSIX permissions")
def test_a_library_others_can_write_is_not_loaded(monkeypatch, caplog, tmp_path) -> None:
    monkeypatch.setenv("VIT5_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(native, "_loaded", {})
    assert native.library() is not None  # built into tmp_path/kernels
    folder = tmp_path / "kernels"
    assert folder.stat().st_mode & 0o777 == 0o700
    folder.chmod(0o777)  # a shared folder: anyone could have replaced the library
    monkeypatch.setattr(native, "_loaded", {})
    with caplog.at_level(logging.WARNING, logger="vit5.ops.native"):
        assert native.library() is None
    assert "writable by other users" in caplog.text
