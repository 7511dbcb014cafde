"""ONNX Runtime inference rows of the benchmark: vit5 eager vs the same network as an ONNX file.

For each selected inference (config, size) with size 224 or 512 (the ViT-5-S attention, Hyena-GAP
and hybrid configurations), the vit5 network is exported with :func:`vit5.export_onnx` (dynamic
batch, default opset) and timed against itself in eager mode, both fp32 on the CPU with the same
number of threads (``torch.get_num_threads()``; ONNX Runtime with all graph optimisations):
best of N interleaved repetitions at the benchmark's inference batch. Each row reports both
throughputs, their ratio, the file size, the export time and the logits' parity
(``max|a - b| / max|a|``).

``run.py`` calls :func:`measure_rows` after its own rows (unless ``--no-onnx`` or onnxruntime is not
installed) and appends :func:`markdown` to its report.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import harness  # benchmarks/harness.py (run.py puts this folder on sys.path)
import torch

from vit5.config import instantiate
from vit5.export import export_onnx

ONNX_SIZES = (224, 512)


def available() -> bool:
    """Whether onnx, onnxscript and onnxruntime are importable."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        return False
    return True


def _session(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def measure_row(config: str, size: int, batch: int, reps: int, tiny: bool = False) -> dict[str, Any]:
    """One row: eager vit5 vs ONNX Runtime on ``config`` at ``size`` px (``size // 8`` if ``tiny``)."""
    image = size // 8 if tiny else size
    torch.manual_seed(0)
    model = instantiate(harness.build_config(config, image, tiny)).eval()
    x = torch.randn(batch, image, image, 3, generator=torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.onnx"
        started = time.perf_counter()
        export_onnx(model, path)
        export_seconds = time.perf_counter() - started
        file_bytes = path.stat().st_size
        session = _session(path)
    feed = {"input": x.numpy()}

    def eager() -> torch.Tensor:
        with torch.inference_mode():
            return model({"input": x})["logits"]

    def onnxruntime() -> torch.Tensor:
        return torch.from_numpy(session.run(["logits"], feed)[0])

    runs = {"vit5": eager, "onnxruntime": onnxruntime}
    logits = {name: run() for name, run in runs.items()}  # warm-up (allocator, lazy init)
    best = dict.fromkeys(runs, float("inf"))
    for rep in range(reps):
        for name in list(runs)[rep % 2 :] + list(runs)[: rep % 2]:  # rotate which goes first
            started = time.perf_counter()
            logits[name] = runs[name]()
            best[name] = min(best[name], time.perf_counter() - started)
    reference = logits["vit5"].double()
    error = ((logits["onnxruntime"].double() - reference).abs().max() / reference.abs().max()).item()
    return {
        "device": "cpu", "dtype": "fp32", "config": config, "size": size, "mode": "infer-onnx",
        "batch": batch, "reps": reps, "vit5_img_s": batch / best["vit5"],
        "onnxruntime_img_s": batch / best["onnxruntime"], "onnx_bytes": file_bytes,
        "export_seconds": export_seconds, "parity_error": error,
    }  # fmt: skip


def measure_rows(
    selected: list[tuple[int, str, str, int]], batches: dict[tuple[int, str], int], tiny: bool = False
) -> list[dict[str, Any]]:
    """Rows for the selected ``(size, config, "infer", reps)`` measurements at 224 / 512 px."""
    rows = []
    for size, config, mode, reps in selected:
        if mode == "infer" and size in ONNX_SIZES:
            rows.append(measure_row(config, size, batches[(size, "infer")], reps, tiny))
            print(row_summary(rows[-1]), flush=True)
    return rows


def row_summary(row: dict[str, Any]) -> str:
    ratio = row["onnxruntime_img_s"] / row["vit5_img_s"]
    return (
        f"{row['config']:>9} {row['size']:>4} px onnx: vit5 eager {row['vit5_img_s']:.2f} img/s, "
        f"onnxruntime {row['onnxruntime_img_s']:.2f} img/s ({ratio:.2f}x), "
        f"{row['onnx_bytes'] / 1e6:.1f} MB, parity {row['parity_error']:.1e}"
    )


def markdown(rows: list[dict[str, Any]]) -> str:
    """The report section (empty without rows)."""
    if not rows:
        return ""
    lines = [
        "",
        "## ONNX Runtime (CPU, fp32)",
        "",
        "vit5 eager vs the same network exported with `vit5.export_onnx` (dynamic batch), same thread "
        "count, best of N interleaved repetitions. Parity: max|a-b|/max|a| of the logits.",
        "",
        "| config | size | batch | vit5 eager img/s | onnxruntime img/s | ort/eager | file MB | export s | parity |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['config']} | {row['size']} | {row['batch']} | {row['vit5_img_s']:.2f} | "
            f"{row['onnxruntime_img_s']:.2f} | {row['onnxruntime_img_s'] / row['vit5_img_s']:.2f} | "
            f"{row['onnx_bytes'] / 1e6:.1f} | {row['export_seconds']:.0f} | {row['parity_error']:.1e} |"
        )
    return "\n".join(lines) + "\n"
