"""Smoke test of the benchmark harness (tiny models; no timing is asserted)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from tests.helpers import requires_reference


@requires_reference
def test_tiny_run_writes_table_json_and_plot(run_module, tmp_path: Path) -> None:
    args = ["--tiny", "--sizes", "224", "--configs", "hybrid", "--modes", "infer", "train"]
    results = run_module.main(
        [*args, "--reps", "1", "--no-timm", "--no-gpu", "--no-onnx", "--out", str(tmp_path), "--name", "t"]
    )
    rows = results["rows"]
    # one run: the benchmark's batch sizes and the user batch (8 at 224 px) where they differ
    assert [(r["config"], r["mode"], r["batch"]) for r in rows] == [
        ("hybrid", "infer", 16), ("hybrid", "infer", 8), ("hybrid", "train", 8)
    ]  # fmt: skip
    assert all(
        0 <= r["vit5_outside_matmul_share"] <= 1 and 0 <= r["vit5_batched_product_share"] <= 1 for r in rows
    )
    for row in rows:
        assert row["vit5_img_s"] > 0 and row["reference_img_s"] > 0
        assert row["vit5_peak_bytes"] > 0 and row["reference_peak_bytes"] > 0
        # the matrix products bound the speed-up: at most the FLOPs of a forward + backward
        assert 0 < row["vit5_layer_matmul_flops"] <= 3 * row["vit5_flops"] * row["batch"]
        if row["mode"] == "infer":
            assert row["parity_error"] <= 1e-5  # identical parameters give the same logits
        # one repetition: the paired ratio is that repetition's, the best-of ratio too
        assert row["paired_ratio"] == pytest.approx(row["vit5_img_s"] / row["reference_img_s"])
        assert row["batch"] / row["vit5_step_seconds"][0] == pytest.approx(row["vit5_img_s"])
    markdown = (tmp_path / "t.md").read_text()
    assert "| hybrid | 224 | infer |" in markdown and "## Targets" in markdown
    assert "| vit5/ref | paired | ceiling |" in markdown and "(paired " in markdown and "ceiling " in markdown
    assert json.loads((tmp_path / "t.json").read_text())["rows"] == json.loads(json.dumps(rows))
    assert (tmp_path / "t.png").read_bytes().startswith(b"\x89PNG")


def test_batch_sizes_cover_the_benchmark_and_the_user_batch(run_module) -> None:
    assert run_module.batch_sizes(224, "infer", user_batch=False) == [16, 8]
    assert run_module.batch_sizes(224, "train", user_batch=False) == [8]
    assert run_module.batch_sizes(512, "train", user_batch=False) == [2]
    assert run_module.batch_sizes(224, "infer", user_batch=True) == [8]
    assert run_module.batch_sizes(224, "infer", user_batch=False, compiled=True) == [16]


def test_plan_selection(run_module) -> None:
    quick = run_module.plan(run_module.parse_args(["--quick"]))
    assert {size for size, *_ in quick} == {224} and all(reps == 1 for *_, reps in quick)
    full = run_module.plan(run_module.parse_args([]))
    assert (1024, "hyena_gap", "infer", 2) in full and not any(
        s == 1024 and m == "train" for s, _, m, _ in full
    )


@requires_reference
@pytest.mark.slow
def test_tiny_run_with_compile_adds_compiled_columns(run_module, tmp_path: Path, caplog) -> None:
    """``--compile`` times vit5 under torch.compile next to eager vit5 (inductor: tens of seconds)."""
    args = ["--tiny", "--sizes", "224", "512", "--configs", "hyena_gap", "--modes", "infer", "--compile"]
    args += ["--reps", "1", "--no-timm", "--no-gpu", "--no-onnx", "--no-memory"]
    args += ["--out", str(tmp_path), "--name", "c"]
    torch._logging.set_logs(recompiles=True)
    try:
        with caplog.at_level(logging.DEBUG):
            results = run_module.main(args)
    finally:
        torch._logging.set_logs()
    assert [row["size"] for row in results["rows"]] == [224, 512]
    for row in results["rows"]:
        assert row["vit5_compiled_img_s"] > 0 and row["vit5_compiled_first_step_s"] > 0
        assert row["compiled_parity_error"] <= 1e-5  # the compiled graph computes the same logits
    # each size gets its own static graph, not a recompiled (dynamic-shape) one
    assert "Recompiling" not in caplog.text
    markdown = (tmp_path / "c.md").read_text()
    assert "compiled/ref" in markdown and "(compiled: " in markdown
