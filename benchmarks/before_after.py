"""Before/after speed protocol: two copies of vit5, measured in alternating subprocesses.

Each row (attention / Hyena-GAP / hybrid ViT-5-S, inference and training, at 224 px batch 8 and
512 px batch 2) is timed ``--reps`` times (default 7) per copy; every repetition is a fresh
process per copy, the two copies alternating and the first one rotating. A row passes if the
median after/before throughput ratio is >= 0.97, or if its 95% interval (bootstrap over the
repetitions) contains 1.0 and the median is >= 0.93.

Usage::

    git worktree add /tmp/vit5-before <commit>      # or any other copy of the code before
    python benchmarks/before_after.py --before /tmp/vit5-before/src --after src
    python benchmarks/before_after.py --before ... --after ... --rows hyena_gap:224:infer --reps 3

Each copy is put first on ``PYTHONPATH`` (a ``src`` folder, or an installed copy's site folder);
a copy needs its fused kernels built (``python -m vit5.ops.build_kernels`` in that copy) or it
measures the PyTorch paths. Results go to stdout and, with ``--out``, to a Markdown file.

``--clock cpu`` is for a machine whose cores other processes share: each process runs on one
intra-op thread and is timed by its thread's CPU time (``time.thread_time``), which other
processes move by a few percent, where two-thread wall-clock steps swing by tens of percent (a
descheduled thread stalls every parallel region). The protocol's rows and pass rule are the
wall-clock ones (the default ``--clock wall``, PyTorch's default threads).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
from pathlib import Path

CONFIGS = {"attention": "vit5_small", "hyena_gap": "vit5_small_hyena_gap", "hybrid": "vit5_small_hybrid"}
ROWS = [f"{c}:{s}:{m}" for s in (224, 512) for c in CONFIGS for m in ("infer", "train")]
BATCH = {224: 8, 512: 2}

STEP = """
import statistics, sys, time, torch
name, mode, size, batch, clock = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
if clock == "cpu":
    torch.set_num_threads(1)
import vit5
timer = time.thread_time if clock == "cpu" else time.perf_counter
torch.manual_seed(0)
model = vit5.create_model(name, image_size=size)
x = torch.randn(batch, size, size, 3)
times = []
if mode == "infer":
    model.eval()
    with torch.inference_mode():
        for _ in range(4):
            t = timer(); model({"input": x}); times.append(timer() - t)
else:
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    for _ in range(3):
        t = timer()
        opt.zero_grad(); model({"input": x})["logits"].logsumexp(-1).sum().backward(); opt.step()
        times.append(timer() - t)
print(batch / statistics.median(times[1:]))
"""


def measure(copy: str, row: str, clock: str = "wall") -> float:
    """Images per second (per CPU second with ``clock="cpu"``) of one row in a fresh process
    running ``copy``."""
    config, size, mode = row.split(":")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([copy, os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-c", STEP, CONFIGS[config], mode, size, str(BATCH[int(size)]), clock],
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
        check=True,
    )
    return float(result.stdout.strip().splitlines()[-1])


def interval(ratios: list[float], draws: int = 2000) -> tuple[float, float]:
    """95% bootstrap interval of the median ratio."""
    rng = random.Random(0)
    medians = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(draws))
    return medians[int(0.025 * draws)], medians[int(0.975 * draws) - 1]


def main() -> int:
    parser = argparse.ArgumentParser(description="before/after speed protocol")
    parser.add_argument("--before", required=True, help="path put first on PYTHONPATH for the old code")
    parser.add_argument("--after", required=True, help="path put first on PYTHONPATH for the new code")
    parser.add_argument(
        "--rows", nargs="*", default=ROWS, help=f"rows CONFIG:SIZE:MODE (default all: {ROWS})"
    )
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="cpu: one thread, thread CPU time (shared machines)",
    )
    parser.add_argument("--out", type=Path, default=None, help="Markdown file for the table")
    args = parser.parse_args()
    unit = "img/CPU-s" if args.clock == "cpu" else "img/s"
    lines = [
        f"| row | before {unit} | after {unit} | median ratio | 95% interval | pass |",
        "|---|---|---|---|---|---|",
    ]
    failed = 0
    for row in args.rows:
        before, after = [], []
        for rep in range(args.reps):
            order = [("before", args.before), ("after", args.after)]
            for label, copy in order if rep % 2 == 0 else order[::-1]:
                (before if label == "before" else after).append(measure(copy, row, args.clock))
        ratios = [a / b for a, b in zip(after, before)]
        median = statistics.median(ratios)
        low, high = interval(ratios)
        ok = median >= 0.97 or (low <= 1.0 <= high and median >= 0.93)
        failed += not ok
        line = (
            f"| {row} | {statistics.median(before):.2f} | {statistics.median(after):.2f} | {median:.3f} | "
            f"{low:.3f}-{high:.3f} | {'yes' if ok else 'NO'} |"
        )
        lines.append(line)
        print(line, flush=True)
    if args.out is not None:
        args.out.write_text("\n".join(lines) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
