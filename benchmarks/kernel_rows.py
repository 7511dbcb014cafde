"""Each fused CPU kernel against its plain PyTorch path, at the user-batch shapes.

ViT-5-S widths at 224 px, batch 8 (197 tokens of 384 channels, 6 heads of 64; Hyena on a 14 x 14
grid). Every row runs the public op (``vit5.ops.*``, which picks the ``vit5::`` operator) with
the kernels on and inside :func:`vit5.ops.native.disabled` (the PyTorch expression), in
alternating order, ``--reps`` repetitions of ``--iters`` calls each; reported: the medians of the
per-call times and their ratio. ``infer`` = forward without autograd, ``train`` = forward +
backward. On a shared machine ``--threads 1 --clock cpu`` (the calling thread's CPU time) is the
robust measure.

    python benchmarks/kernel_rows.py --reps 9 --threads 1 --clock cpu --out kernel-rows.md
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable

import torch

from vit5.ops import native
from vit5.ops.dftconv import dft_conv
from vit5.ops.fftplan import plan_fft_conv
from vit5.ops.gates import gate
from vit5.ops.rmsnorm import rms_norm
from vit5.ops.rope import apply_rope
from vit5.ops.scaled_add import scaled_add, scaled_add_into_branch

B, T, D, H, HD, GRID = 8, 197, 384, 6, 64, 14


def _train(forward: Callable[[], torch.Tensor], leaves: list[torch.Tensor]) -> Callable[[], None]:
    def step() -> None:
        for t in leaves:
            t.grad = None
        forward().sum().backward()

    return step


def rows() -> dict[str, Callable[[], object]]:
    g = torch.Generator().manual_seed(0)

    def r(*shape: int, grad: bool = False) -> torch.Tensor:
        return torch.randn(*shape, generator=g).requires_grad_(grad)

    x, w = r(B, T, D, grad=True), (1 + 0.1 * r(D)).requires_grad_(True)
    packed = r(B, T, 3, H, HD, grad=True)
    q = packed[:, :, 0]
    hyena = r(B, GRID, GRID, 3 * D, grad=True)
    gx, gg = hyena[..., :D], hyena[..., D : 2 * D]
    branch, gamma = r(B, T, D, grad=True), r(D, grad=True)
    angles = r(T, HD)
    cos, sin = torch.cos(angles), torch.sin(angles)
    plan = plan_fft_conv((GRID, GRID), (2 * GRID - 1, 2 * GRID - 1), (False, False))
    signal = r(B, GRID, GRID, D, grad=True)
    film = r(B, 2 * GRID - 1, 2 * GRID - 1, D, grad=True)  # per-sample kernels: the DFT path
    fresh = torch.empty(B, T, D)
    out = {
        "rms_norm infer [8,197,384]": lambda: rms_norm(x.detach(), w.detach(), 1e-6),
        "rms_norm train [8,197,384]": _train(lambda: rms_norm(x, w, 1e-6), [x, w]),
        "rms_norm train per-head q [8,197,6,64]": _train(lambda: rms_norm(q, w[:HD], 1e-6), [packed, w]),
        "gate silu+l2 infer [8,14,14,384]": lambda: gate(gx.detach(), gg.detach(), "silu", 1e-12),
        "gate silu+l2 train [8,14,14,384]": _train(lambda: gate(gx, gg, "silu", 1e-12), [hyena]),
        "scaled_add train [8,197,384]": _train(lambda: scaled_add(x, branch, gamma), [x, branch, gamma]),
        "scaled_add_into_branch infer [8,197,384]": lambda: scaled_add_into_branch(
            x.detach(), fresh.copy_(branch.detach()), gamma.detach()
        ),
        "rope infer q [8,197,6,64]": lambda: apply_rope(q.detach(), cos, sin, "interleaved"),
        "rope train q [8,197,6,64]": _train(lambda: apply_rope(q, cos, sin, "interleaved"), [packed]),
        "dft_conv (FiLM kernels) infer [8,14,14,384]": lambda: dft_conv(signal.detach(), film.detach(), plan),
        "dft_conv (FiLM kernels) train [8,14,14,384]": _train(
            lambda: dft_conv(signal, film, plan), [signal, film]
        ),
    }
    with torch.no_grad():
        for name in list(out):
            if "infer" in name:
                body = out[name]
                out[name] = lambda body=body: torch.no_grad()(body)()
    return out


def long_conv_rows() -> dict[str, Callable[[], object]]:
    """The Hyena long convolution (CKConvND of ViT-5-S Hyena-GAP, 14 x 14, 384 channels): fused
    FFT kernels vs the route the planner takes without them."""
    import vit5
    from vit5.modules.ckconv import CKConvND

    model = vit5.create_model("vit5_small_hyena_gap")
    conv = next(m for m in model.modules() if isinstance(m, CKConvND))
    x = torch.randn(B, GRID, GRID, D, requires_grad=True)

    def infer() -> None:
        conv.eval()
        with torch.no_grad():
            conv(x.detach())

    def train() -> None:
        conv.train()
        x.grad = None
        conv.zero_grad(set_to_none=True)
        conv(x).sum().backward()

    return {
        "long conv (CKConvND) infer [8,14,14,384]": infer,
        "long conv (CKConvND) train [8,14,14,384]": train,
    }


def timed(
    step: Callable[[], object], iters: int, off: bool, clock: Callable[[], float] = time.perf_counter
) -> float:
    context = native.disabled() if off else contextlib.nullcontext()
    with context:
        step()  # warm-up
        t = clock()
        for _ in range(iters):
            step()
        return (clock() - t) / iters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=9)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--only", default="", help="substring of the rows to run")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="cpu: this thread's CPU time (with --threads 1: robust to other processes on the machine)",
    )
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.clock == "cpu" and torch.get_num_threads() != 1:
        parser.error("--clock cpu needs --threads 1 (the kernels' work must run on the calling thread)")
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    assert native.library() is not None, native.status()
    table = {**rows(), **long_conv_rows()}
    lines = [
        f"threads: {torch.get_num_threads()}, clock: {args.clock}",
        "",
        "| kernel | plain ms | kernel ms | gain (plain / kernel) | reps |",
        "|---|---|---|---|---|",
    ]
    for name, step in table.items():
        if args.only not in name:
            continue
        on, off = [], []
        for rep in range(args.reps):  # alternate, the first one rotating
            for kernel in (rep % 2 == 0, rep % 2 == 1):
                (on if kernel else off).append(timed(step, args.iters, off=not kernel, clock=clock))
        plain, fused = statistics.median(off), statistics.median(on)
        line = f"| {name} | {plain * 1e3:.3f} | {fused * 1e3:.3f} | {plain / fused:.2f}x | {args.reps} |"
        print(line, flush=True)
        lines.append(line)
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
