"""The fused CPU kernels' C++ extension: built at install time, loaded only when its record matches, optional."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from vit5.ops import native
from vit5.ops.rmsnorm import rms_norm

requires_library = pytest.mark.skipif(
    native.library() is None, reason="the kernels were not built at install time: PyTorch ops run"
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
def test_a_training_step_spawns_no_process_and_writes_no_cache(tmp_path) -> None:
    """In a fresh process with process creation forbidden (an audit hook) and an empty home / cache:
    the kernels run (vit5:: operators in the profiler, with input shapes), nothing is compiled,
    nothing is written."""
    code = """
        import sys, torch
        SPAWN = {"subprocess.Popen", "os.fork", "os.forkpty", "os.posix_spawn", "os.spawn", "os.system", "os.exec"}
        def audit(event, args):
            if event in SPAWN:
                raise AssertionError(f"a process was started: {event} {args}")
        sys.addaudithook(audit)
        import vit5
        model = vit5.create_model("vit5_tiny_hybrid").train()
        x = torch.randn(2, 32, 32, 3)
        with torch.profiler.profile(record_shapes=True) as profile:
            model({"input": x})["logits"].sum().backward()
        events = profile.key_averages(group_by_input_shape=True)
        names = {e.key for e in events}
        assert {"vit5::rms_norm", "vit5::gate", "vit5::rope", "vit5::rms_norm_backward"} <= names, sorted(names)
        shapes = [e.input_shapes for e in events if e.key == "vit5::rms_norm"]
        assert any(s and s[0] and s[0][-1] == 64 for s in shapes), shapes
        print("ok")
    """
    home = tmp_path / "home"
    home.mkdir()
    result = _run(code, HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"))
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]
    assert list(home.rglob("*")) == []


@pytest.mark.parametrize("why", ["switched off", "stale record", "edited source", "other torch", "not built"])
def test_switched_off_or_not_built_everything_runs_on_pytorch_ops(why, tmp_path, monkeypatch) -> None:
    """The PyTorch paths run; a missing or stale library is said once, at the first call that
    would have used a kernel (eager CPU fp32), never to bf16 callers or with VIT5_NATIVE=0."""
    import warnings

    monkeypatch.setattr(native, "_loaded", {})
    if why == "switched off":
        monkeypatch.setenv("VIT5_NATIVE", "0")
    elif why == "stale record":
        record = tmp_path / "record.json"
        record.write_text('{"sources_sha256": "0", "torch": null}')
        monkeypatch.setattr(native, "RECORD", record)
    elif why == "edited source":  # a copy of the sources with one kernel edited
        import shutil

        sources = tmp_path / "csrc"
        shutil.copytree(native.SOURCES, sources)
        (sources / "ops.cpp").write_text((sources / "ops.cpp").read_text() + "// edited\n")
        monkeypatch.setattr(native, "SOURCES", sources)
    elif why == "other torch":
        from vit5.ops.build_kernels import source_hash

        record = tmp_path / "record.json"
        record.write_text(f'{{"sources_sha256": "{source_hash(native.SOURCES)}", "torch": "1.0.0"}}')
        monkeypatch.setattr(native, "RECORD", record)
    else:
        monkeypatch.setattr(native, "LIBRARY", tmp_path / "missing.so")
    x = torch.randn(4, 16, requires_grad=True)
    w = torch.rand(16, requires_grad=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rms_norm(x.bfloat16(), w.bfloat16(), 1e-6)  # no kernel would run: nothing said
        assert not caught, [str(c.message) for c in caught]
        y = rms_norm(x, w, 1e-6)
        rms_norm(x, w, 1e-6)
    assert native.library() is None
    assert "vit5::" not in str(y.grad_fn) and "GeneratedBackwardFor" not in type(y.grad_fn).__name__
    y.sum().backward()
    said = [str(c.message) for c in caught]
    if why == "switched off":
        assert said == []
    else:
        expected = {
            "stale record": "other kernel sources",
            "edited source": "other kernel sources",
            "other torch": "built with torch 1.0.0",
            "not built": "not built at install time",
        }[why]
        assert len(said) == 1 and expected in said[0], said


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


@requires_library
@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs Linux's /proc")
def test_one_threading_runtime_pytorchs() -> None:
    """The kernels' at::parallel_for runs on the OpenMP runtime torch loaded (one libgomp in a
    fresh process that ran a kernel), sized by torch.set_num_threads."""
    code = """
        import pathlib, torch
        from vit5.ops import native
        from vit5.ops.rmsnorm import rms_norm
        assert native.library() is not None
        rms_norm(torch.randn(64, 32), torch.rand(32), 1e-6)
        maps = pathlib.Path("/proc/self/maps").read_text().splitlines()
        print(sorted({line.split()[-1] for line in maps if "libgomp" in line or "libiomp" in line}))
    """
    result = _run(code)
    assert result.returncode == 0, result.stderr[-3000:]
    runtimes = __import__("ast").literal_eval(result.stdout.strip().splitlines()[-1])
    assert len(runtimes) <= 1, runtimes
    assert all(path.startswith(os.path.dirname(torch.__file__)) for path in runtimes), runtimes


@pytest.mark.parametrize("compiler", ["false", "/no/such/compiler", None])
def test_a_failed_build_leaves_no_library(compiler, tmp_path, monkeypatch, capsys) -> None:
    """Installing goes on without a (working) compiler: no library, one line on stderr."""
    from vit5.ops import build_kernels

    if compiler is None:  # none on the PATH
        monkeypatch.delenv("CC", raising=False)
        monkeypatch.setenv("PATH", str(tmp_path))
    assert build_kernels.build(tmp_path, compiler=compiler) is None
    assert list(tmp_path.iterdir()) == []
    assert "vit5:" in capsys.readouterr().err


@requires_library
def test_the_record_ties_the_library_to_its_source_and_torch() -> None:
    import hashlib
    import json

    record = json.loads(native.RECORD.read_text())
    digest = hashlib.sha256()
    for path in sorted(native.SOURCES.iterdir()):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    assert record["sources_sha256"] == digest.hexdigest()
    assert {p.suffix for p in native.SOURCES.iterdir()} == {".cpp", ".h"}
    assert record["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert native.status() == "ok"


@pytest.mark.slow
@pytest.mark.skipif(
    __import__("shutil").which("aarch64-linux-gnu-g++") is None,
    reason="no ARM cross compiler (apt-get install g++-aarch64-linux-gnu)",
)
@pytest.mark.parametrize("source", ["ops.cpp", "fft.cpp"])
def test_the_kernels_compile_for_arm(source, tmp_path) -> None:
    """ARM is checked by compiling only (Debian's g++-aarch64-linux-gnu, ``-c``, no link) against
    the installed torch's headers: ATen's NEON vectors instead of AVX2."""
    from vit5.ops import build_kernels

    include = build_kernels._torch_paths()[0]
    flags = [f if f != "-march=native" else "-march=armv8-a" for f in build_kernels.FLAGS]
    command = build_kernels.compile_command(
        "aarch64-linux-gnu-g++", native.SOURCES / source, tmp_path / "k.o", include, flags
    )
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "k.o").stat().st_size > 0
