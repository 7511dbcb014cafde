"""Whole-network steps of two copies of vit5, one thread, timed in CPU time: for a shared machine.

The user-batch rows (attention / Hyena-GAP / hybrid ViT-5-S, inference and training, 224 px
batch 8) as in ``before_after.py`` (fresh processes, the two copies alternating, the first one
rotating), but each process runs on one intra-op thread and reports the median CPU time of its
steps (``time.thread_time``): on a machine whose cores other processes share, wall-clock times of
two-thread steps swing by tens of percent (a descheduled thread stalls every parallel region),
while one thread's CPU time moves by a few. Reported per row: the medians and the median of the
per-repetition after/before time ratios (< 1: the after copy is faster).

    python benchmarks/network_cpu_ab.py --before /tmp/vit5-before/src --after src --reps 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

CONFIGS = {"attention": "vit5_small", "hyena_gap": "vit5_small_hyena_gap", "hybrid": "vit5_small_hybrid"}
ROWS = [f"{c}:224:{m}" for c in CONFIGS for m in ("infer", "train")]

STEP = """
import statistics, sys, time, torch
torch.set_num_threads(1)
import vit5
name, mode, size, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
torch.manual_seed(0)
model = vit5.create_model(name, image_size=size)
x = torch.randn(batch, size, size, 3)
times = []
if mode == "infer":
    model.eval()
    with torch.inference_mode():
        for _ in range(4):
            t = time.thread_time(); model({"input": x}); times.append(time.thread_time() - t)
else:
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    for _ in range(3):
        t = time.thread_time()
        opt.zero_grad(); model({"input": x})["logits"].logsumexp(-1).sum().backward(); opt.step()
        times.append(time.thread_time() - t)
print(statistics.median(times[1:]))
"""


def measure(copy: str, row: str) -> float:
    """CPU seconds of one step of ``row`` in a fresh one-thread process running ``copy``."""
    config, size, mode = row.split(":")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([copy, os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-c", STEP, CONFIGS[config], mode, size, "8"],
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
        check=True,
    )
    return float(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", required=True)
    parser.add_argument("--after", required=True)
    parser.add_argument("--rows", nargs="*", default=ROWS)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    lines = [
        "| row | before CPU ms/step | after CPU ms/step | median after/before time | reps |",
        "|---|---|---|---|---|",
    ]
    for row in args.rows:
        before, after = [], []
        for rep in range(args.reps):
            order = [("before", args.before), ("after", args.after)]
            for label, copy in order if rep % 2 == 0 else order[::-1]:
                (before if label == "before" else after).append(measure(copy, row))
        ratio = statistics.median(a / b for a, b in zip(after, before))
        line = (
            f"| {row} | {statistics.median(before) * 1e3:.0f} | {statistics.median(after) * 1e3:.0f} | "
            f"{ratio:.3f} | {args.reps} |"
        )
        print(line, flush=True)
        lines.append(line)
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
