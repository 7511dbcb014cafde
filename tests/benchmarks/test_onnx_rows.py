"""The benchmark's ONNX Runtime rows (tiny models; no timing is asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import requires_reference

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


@requires_reference
@pytest.mark.slow
def test_tiny_run_adds_onnx_rows(run_module, tmp_path: Path) -> None:
    args = ["--tiny", "--sizes", "224", "512", "--configs", "hyena_gap", "--modes", "infer", "--reps", "1"]
    results = run_module.main(
        [*args, "--no-timm", "--no-gpu", "--no-memory", "--out", str(tmp_path), "--name", "o"]
    )
    rows = results["onnx_rows"]
    assert [(r["config"], r["size"], r["batch"]) for r in rows] == [
        ("hyena_gap", 224, 16),
        ("hyena_gap", 512, 2),
    ]
    for row in rows:
        assert row["vit5_img_s"] > 0 and row["onnxruntime_img_s"] > 0 and row["onnx_bytes"] > 10_000
        assert row["parity_error"] <= 1e-4
    markdown = (tmp_path / "o.md").read_text()
    assert "## ONNX Runtime (CPU, fp32)" in markdown and "| hyena_gap | 512 | 2 |" in markdown
    assert json.loads((tmp_path / "o.json").read_text())["onnx_rows"] == json.loads(json.dumps(rows))


def test_onnx_rows_only_for_inference_at_224_and_512(run_module, monkeypatch) -> None:
    import onnx_rows

    measured = []
    monkeypatch.setattr(onnx_rows, "measure_row", lambda *a, **k: measured.append(a) or {
        "config": a[0], "size": a[1], "vit5_img_s": 1.0, "onnxruntime_img_s": 2.0, "onnx_bytes": 1e6,
        "export_seconds": 1.0, "parity_error": 0.0, "batch": a[2]})  # fmt: skip
    rows = onnx_rows.measure_rows(run_module.plan(run_module.parse_args([])), run_module.BATCH)
    assert [call[:3] for call in measured] == [
        (config, size, run_module.BATCH[(size, "infer")])
        for size in (224, 512)
        for config in ("attention", "hyena_gap", "hybrid")
    ]
    assert "| attention | 224 | 16 | 1.00 | 2.00 | 2.00 | 1.0 |" in onnx_rows.markdown(rows)
