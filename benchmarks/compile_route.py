"""Eager vs ``torch.compile`` (inductor) for one preset: interleaved repetitions, medians, ratios.

    python benchmarks/compile_route.py --preset vit5_small_hyena_gap --image-size 224 --batch 8 \\
        --reps 7 --out benchmarks/results/2026-12-07-compile-route.md

Inference is an eval-mode forward under ``torch.inference_mode``; training a train-mode forward
plus the backward of ``logits.sum()``. The eager and the compiled model share weights (two copies
with one state dict). Each repetition times one eager step and one compiled step, alternating
which goes first, so that a change of machine load hits both; the report gives per-mode medians,
the median of the per-repetition ratios and its spread (min / max), the compile time (first
step) and the largest difference of the outputs.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import time
from pathlib import Path

import torch

import vit5  # the installed copy: run with another checkout's interpreter to measure that one


def _step(model: torch.nn.Module, x: torch.Tensor, mode: str) -> torch.Tensor:
    if mode == "infer":
        with torch.inference_mode():
            return model({"input": x})["logits"]
    for p in model.parameters():
        p.grad = None
    logits = model({"input": x})["logits"]
    logits.sum().backward()
    return logits.detach()


def _timed(model: torch.nn.Module, x: torch.Tensor, mode: str) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    out = _step(model, x, mode)
    return time.perf_counter() - start, out


def measure(preset: str, image_size: int, batch: int, reps: int, mode: str) -> dict:
    torch.manual_seed(0)
    eager = vit5.create_model(preset, image_size=image_size)
    compiled_model = copy.deepcopy(eager)
    eager.train(mode == "train")
    compiled_model.train(mode == "train")
    torch._dynamo.reset()
    compiled = torch.compile(compiled_model, dynamic=False)
    x = torch.randn(batch, image_size, image_size, 3, generator=torch.Generator().manual_seed(0))
    print(f"[{mode}] compiling ...", flush=True)
    compile_s, out_c = _timed(compiled, x, mode)
    _, out_e = _timed(eager, x, mode)  # warm-up (builds the eval caches)
    difference = float((out_c.float() - out_e.float()).abs().max() / out_e.float().abs().max())
    eager_s, compiled_s, ratios = [], [], []
    for rep in range(reps):
        order = (("eager", eager), ("compiled", compiled))
        times = {}
        for name, model in order if rep % 2 == 0 else order[::-1]:
            times[name] = _timed(model, x, mode)[0]
        eager_s.append(times["eager"])
        compiled_s.append(times["compiled"])
        ratios.append(times["eager"] / times["compiled"])
        print(
            f"[{mode}] rep {rep}: eager {times['eager']:.3f} s, compiled {times['compiled']:.3f} s",
            flush=True,
        )
    return dict(
        mode=mode,
        eager_ms=1e3 * statistics.median(eager_s),
        compiled_ms=1e3 * statistics.median(compiled_s),
        ratio=statistics.median(ratios),
        ratio_min=min(ratios),
        ratio_max=max(ratios),
        compile_s=compile_s,
        difference=difference,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="vit5_small_hyena_gap")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--modes", nargs="+", default=["infer", "train"], choices=["infer", "train"])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    load_start = os.getloadavg()
    rows = [measure(args.preset, args.image_size, args.batch, args.reps, mode) for mode in args.modes]
    lines = [
        f"# torch.compile vs eager: {args.preset}, {args.image_size} px, batch {args.batch}",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
        f"{torch.__version__} ({torch.get_num_threads()} threads). Load average at start "
        f"{tuple(round(v, 2) for v in load_start)}, at end {tuple(round(v, 2) for v in os.getloadavg())}.",
        f"Command: `python benchmarks/compile_route.py --preset {args.preset} --image-size "
        f"{args.image_size} --batch {args.batch} --reps {args.reps}`. {args.reps} interleaved "
        "repetitions (the order alternates); medians of the step times, median (min - max) of the "
        "per-repetition ratio eager / compiled (> 1: compiled is faster). `compile` = the first "
        "compiled step; `diff` = max|compiled - eager| / max|eager| of the logits.",
        "",
        "| mode | eager ms | compiled ms | eager / compiled | compile s | diff |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['mode']} | {r['eager_ms']:.0f} | {r['compiled_ms']:.0f} | {r['ratio']:.3f} "
            f"({r['ratio_min']:.3f} - {r['ratio_max']:.3f}) | {r['compile_s']:.0f} | {r['difference']:.1e} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
