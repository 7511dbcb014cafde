"""Side-by-side speed and memory benchmark: vit5 vs nvsubquadratic==0.2.0 vs timm's ViT-S.

One process measures, for the ViT-5-S attention, Hyena-GAP and hybrid ("HA" * 6) configurations at
224 and 512 px (attention and Hyena also at 1024 px, inference only):

* training (forward + backward) and inference throughput (img/s, best of N repetitions; the
  repetitions are interleaved between implementations, rotating which one goes first);
* peak memory of one step (bytes allocated on top of the model, see ``harness.peak_memory``);
* the fp32 matmul roofline (best of 5 products of two 2048 x 2048 matrices) and, per inference row,
  ``img/s * flop_count(inference=True) / roofline``;
* the parity of the logits vit5 and the reference produce from identical parameters;
* per row, the ``ceiling``: the vit5/reference ratio reached if vit5 spent no time outside its
  unavoidable matrix products (``harness.layer_matmul_flops``) and ran those at the roofline;
* ONNX Runtime inference (CPU, fp32) against vit5 eager at 224 / 512 px, with file sizes
  (``onnx_rows.py``; skipped with ``--no-onnx`` or without onnxruntime).

It writes ``benchmarks/results/<date>.md`` (table, ratios, targets), ``<date>.json`` (raw numbers)
and ``<date>.png`` (inference throughput against resolution). On a CUDA machine the same plan also
runs under bf16 autocast on the GPU and reports MFU against the measured bf16 matmul roofline.

Usage::

    python benchmarks/run.py                # the full plan (~15-20 min on a 2-core CPU)
    python benchmarks/run.py --quick        # 224 px only, 1 repetition (a few minutes)
    python benchmarks/run.py --sizes 512 --configs hyena_gap --modes infer --reps 2
    python benchmarks/run.py --compile --sizes 224  # adds torch.compile'd vit5 (minutes per config)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
import onnx_rows  # noqa: E402
import report  # noqa: E402

#: (image size, configs, modes) in the order they run.
PLAN = [
    (224, ("attention", "hyena_gap", "hybrid"), ("infer", "train")),
    (512, ("attention", "hyena_gap", "hybrid"), ("infer", "train")),
    (1024, ("attention", "hyena_gap"), ("infer",)),
]
#: CPU batch sizes per (image size, mode); GPUs use ``GPU_BATCH_SCALE`` times more.
BATCH = {(224, "infer"): 16, (224, "train"): 8, (512, "infer"): 2, (512, "train"): 2, (1024, "infer"): 1}
GPU_BATCH_SCALE = 8
#: ``--user-batch``: one batch size per image size for every mode (batch 8 at 224 px, 2 at 512 px),
#: the sizes the issue's independent benchmark uses: a user's batch size is not ours to pick.
USER_BATCH = {224: 8, 512: 2, 1024: 1}
DEFAULT_REPS = {224: 5, 512: 3, 1024: 2}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="224 px only, 1 repetition")
    parser.add_argument("--reps", type=int, default=None, help="repetitions per measurement (best of N)")
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="subset of 224 512 1024")
    parser.add_argument("--configs", nargs="+", default=None, choices=sorted(harness.PRESETS))
    parser.add_argument("--modes", nargs="+", default=None, choices=["infer", "train"])
    parser.add_argument("--no-timm", action="store_true", help="skip timm's vit_small_patch16_224")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory steps")
    parser.add_argument("--no-gpu", action="store_true", help="CPU only, even with CUDA available")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument(
        "--compile", action="store_true", help="also time vit5 under torch.compile (inductor)"
    )
    parser.add_argument("--tiny", action="store_true", help="tiny models at 16/32 px (smoke test)")
    parser.add_argument("--no-onnx", action="store_true", help="skip the ONNX Runtime rows (onnx_rows.py)")
    parser.add_argument(
        "--user-batch", action="store_true", help="batch 8 at 224 px, 2 at 512 px, 1 at 1024 px in every mode"
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--name", default=None, help="output file stem (default: today's date)")
    return parser.parse_args(argv)


def plan(args: argparse.Namespace) -> list[tuple[int, str, str, int]]:
    """``(image size, config, mode, reps)`` measurements selected by the arguments."""
    sizes = [224] if args.quick else args.sizes
    selected = []
    for size, configs, modes in PLAN:
        if sizes is not None and size not in sizes:
            continue
        reps = args.reps or (1 if args.quick else DEFAULT_REPS[size])
        for config in configs:
            if args.configs is not None and config not in args.configs:
                continue
            selected.extend(
                (size, config, mode, reps) for mode in modes if args.modes is None or mode in args.modes
            )
    return selected


def batch_sizes(size: int, mode: str, user_batch: bool, compiled: bool = False) -> list[int]:
    """The batch sizes one (size, mode) is measured at: :data:`BATCH`'s, then :data:`USER_BATCH`'s
    when it differs (one run covers both); only the latter with ``--user-batch``. With
    ``--compile`` only the first: every further batch size would compile another static graph
    per model (minutes each)."""
    if user_batch:
        return [USER_BATCH[size]]
    sizes = list(dict.fromkeys([BATCH[(size, mode)], USER_BATCH[size]]))
    return sizes[:1] if compiled else sizes


def measure_group(
    size: int, config: str, modes: list[tuple[str, int]], device: torch.device, args: argparse.Namespace
) -> list[dict[str, Any]]:
    """Every mode of one (config, size) on one device: interleaved best-of-N timing, memory, parity."""
    amp = torch.bfloat16 if device.type == "cuda" else None
    image = size // 8 if args.tiny else size
    impls = harness.build_impls(
        config, image, device, with_timm=not args.no_timm, tiny=args.tiny, compiled=args.compile
    )
    rows = []
    runs = [
        (mode, reps, batch)
        for mode, reps in modes
        for batch in batch_sizes(size, mode, args.user_batch, args.compile)
    ]
    for mode, reps, batch in runs:
        batch *= GPU_BATCH_SCALE if device.type == "cuda" else 1
        inputs = {impl.name: harness.make_input(impl, batch, image, device) for impl in impls}
        warmup = {}  # allocator, one-off caches, lazy init; torch.compile compiles here
        for impl in impls:
            warmup[impl.name] = harness.time_step(impl, inputs[impl.name], mode, device, amp).seconds
        best: dict[str, harness.Timing] = {}
        seconds: dict[str, list[float]] = {impl.name: [] for impl in impls}
        for rep in range(reps):
            order = impls[rep % len(impls) :] + impls[: rep % len(impls)]
            for impl in order:
                timing = harness.time_step(impl, inputs[impl.name], mode, device, amp)
                seconds[impl.name].append(timing.seconds)
                if impl.name not in best or timing.seconds < best[impl.name].seconds:
                    best[impl.name] = timing
        row: dict[str, Any] = {
            "device": device.type, "dtype": "bf16-autocast" if amp else "fp32", "config": config,
            "size": size, "mode": mode, "batch": batch, "reps": reps,
        }  # fmt: skip
        for impl in impls:
            row[f"{impl.name}_img_s"] = batch / best[impl.name].seconds
            row[f"{impl.name}_cpu_fraction"] = best[impl.name].cpu_fraction
            if impl.flops is not None:
                row[f"{impl.name}_flops"] = impl.flops
        row["paired_ratio"] = harness.paired_ratio(seconds["vit5"], seconds["reference"])
        for impl in impls:  # every repetition, in order, for whoever wants another statistic
            row[f"{impl.name}_step_seconds"] = seconds[impl.name]
        if "vit5_compiled" in warmup:
            row["vit5_compiled_first_step_s"] = warmup["vit5_compiled"]
        if mode == "infer":
            logits = {impl.name: impl.last_logits for impl in impls}
            row["parity_error"] = harness.relative_error(logits["vit5"], logits["reference"])
            if "vit5_compiled" in logits:
                row["compiled_parity_error"] = harness.relative_error(
                    logits["vit5_compiled"], logits["reference"]
                )
        row["vit5_layer_matmul_flops"] = harness.layer_matmul_flops(impls[0], inputs["vit5"], mode)
        shares = harness.step_time_shares(impls[0], inputs["vit5"], mode, device, amp)
        row["vit5_outside_matmul_share"] = shares["outside"]
        row["vit5_batched_product_share"] = shares["batched"]
        if not args.no_memory:
            for impl in impls:
                row[f"{impl.name}_peak_bytes"] = harness.peak_memory(
                    impl, inputs[impl.name], mode, device, amp
                )
        rows.append(row)
        print(
            report.row_summary(row),
            f"vit5 outside matmuls {row['vit5_outside_matmul_share']:.0%}",
            flush=True,
        )
    del impls
    return rows


def machine_info() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }  # fmt: skip
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    selected = plan(args)
    if not selected:
        raise SystemExit("nothing selected: check --sizes / --configs / --modes")
    devices = [torch.device("cpu")]
    if torch.cuda.is_available() and not args.no_gpu:
        devices.append(torch.device("cuda"))
    started = dt.datetime.now()
    results: dict[str, Any] = {
        "started": started.isoformat(timespec="seconds"),
        "machine": machine_info(),
        "load_average_start": os.getloadavg(),
        "roofline_flops": {},
        "rows": [],
    }
    for device in devices:
        size = 256 if args.tiny else 2048
        roofline = harness.matmul_roofline(device, torch.float32, size)
        results["roofline_flops"][f"{device.type}-fp32"] = roofline
        print(f"{device.type} fp32 matmul roofline: {roofline / 1e9:.1f} GFLOP/s", flush=True)
        if device.type == "cuda":
            bf16 = harness.matmul_roofline(device, torch.bfloat16, 8192)
            results["roofline_flops"]["cuda-bf16"] = bf16
            print(f"cuda bf16 matmul roofline: {bf16 / 1e12:.1f} TFLOP/s", flush=True)
        groups: dict[tuple[int, str], list[tuple[str, int]]] = {}
        for image_size, config, mode, reps in selected:
            groups.setdefault((image_size, config), []).append((mode, reps))
        for (image_size, config), modes in groups.items():
            results["rows"].extend(measure_group(image_size, config, modes, device, args))
    if not args.no_onnx and onnx_rows.available():
        batches = {(s, "infer"): USER_BATCH[s] for s in USER_BATCH} if args.user_batch else BATCH
        results["onnx_rows"] = onnx_rows.measure_rows(selected, batches, tiny=args.tiny)
    results["finished"] = dt.datetime.now().isoformat(timespec="seconds")
    results["load_average_end"] = os.getloadavg()
    stem = args.name or started.strftime("%Y-%m-%d")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(results, indent=1))
    markdown = report.markdown(results, png_name=f"{stem}.png")
    (args.out / f"{stem}.md").write_text(markdown + onnx_rows.markdown(results.get("onnx_rows", [])))
    report.plot(results, args.out / f"{stem}.png")
    print(f"wrote {args.out / stem}.md / .json / .png")
    return results


if __name__ == "__main__":
    main()
