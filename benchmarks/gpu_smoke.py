"""GPU smoke test for the long-convolution route (at most a few minutes on one GPU).

Checks, on ``cuda``, for the attention, Hyena and hybrid presets (tiny at 32 px, ViT-5-S
Hyena-GAP at 224 px): the route of every long convolution is ``torch.fft`` (``plan_long_conv``
with the device), the GPU logits match the CPU's
(fp32, tolerance for reduction order), a training step gives finite gradients to every
parameter, a gradient penalty runs (double backward), bf16 autocast runs; then it times
inference and a training step. Exits with status 1 on any failure.

Usage::

    python benchmarks/gpu_smoke.py            # everything (about 1-3 minutes on an H100)
    python benchmarks/gpu_smoke.py --quick    # the tiny presets only
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

import vit5
from vit5.ops import longconv_plan

DEVICE = "cuda"


def _sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def _route_is_fft(model: torch.nn.Module) -> list[str]:
    seen: list[str] = []
    original = longconv_plan.plan_long_conv

    def spy(**kwargs: object) -> longconv_plan.LongConvPlan:
        chosen = original(**kwargs)
        seen.append(f"{kwargs['device']}:{chosen.path.value}")
        return chosen

    import vit5.modules.ckconv as ckconv

    ckconv.plan_long_conv = spy
    try:
        with torch.no_grad():
            model.eval()({"input": torch.randn(2, model.image_size, model.image_size, 3, device=DEVICE)})
    finally:
        ckconv.plan_long_conv = original
    return seen


def check(name: str, overrides: dict, batch: int, failures: list[str]) -> None:
    torch.manual_seed(0)
    cpu = vit5.create_model(name, **overrides).eval()
    gpu = vit5.create_model(name, **overrides).eval()
    gpu.load_state_dict(cpu.state_dict())
    gpu = gpu.to(DEVICE)
    x = torch.randn(batch, cpu.image_size, cpu.image_size, 3)
    routes = _route_is_fft(gpu)
    if DEVICE == "cuda" and any(r != "cuda:fft" for r in routes):
        failures.append(f"{name}: route {sorted(set(routes))} (expected cuda:fft)")
    with torch.no_grad():
        want = cpu({"input": x})["logits"]
        got = gpu({"input": x.to(DEVICE)})["logits"]
    err = (got.cpu() - want).abs().max().item() / max(want.abs().max().item(), 1e-6)
    if not err < 1e-3:
        failures.append(f"{name}: GPU vs CPU logits relative error {err:.2e}")
    gpu.train()
    xg = x.to(DEVICE).requires_grad_()
    with sdpa_kernel(SDPBackend.MATH):  # fused attention kernels have no double backward
        loss = gpu({"input": xg})["logits"].logsumexp(-1).sum()
        (g,) = torch.autograd.grad(loss, xg, create_graph=True)
        ((g**2).sum() + loss).backward()
    missing = [n for n, p in gpu.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    if missing:
        failures.append(f"{name}: {len(missing)} parameters without a finite gradient, e.g. {missing[:3]}")
    with torch.autocast(DEVICE, dtype=torch.bfloat16), torch.no_grad():
        out = gpu.eval()({"input": x.to(DEVICE)})["logits"]
    if not torch.isfinite(out).all():
        failures.append(f"{name}: non-finite bf16 logits")
    with torch.no_grad():
        for _ in range(3):
            gpu({"input": x.to(DEVICE)})
        _sync()
        start = time.perf_counter()
        for _ in range(10):
            gpu({"input": x.to(DEVICE)})
        _sync()
    infer = 10 * batch / (time.perf_counter() - start)
    gpu.train()
    optimizer = torch.optim.SGD(gpu.parameters(), lr=1e-3)
    _sync()
    start = time.perf_counter()
    for _ in range(5):
        optimizer.zero_grad()
        gpu({"input": x.to(DEVICE)})["logits"].sum().backward()
        optimizer.step()
    _sync()
    train = 5 * batch / (time.perf_counter() - start)
    print(
        f"{name} {overrides or ''} batch {batch}: rel err {err:.1e}, {infer:.0f} img/s infer, {train:.0f} img/s train"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny presets only")
    parser.add_argument("--device", default="cuda", help="'cpu' for a dry run of the script itself")
    args = parser.parse_args()
    global DEVICE
    DEVICE = args.device
    if DEVICE == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 1
    failures: list[str] = []
    for name in ("vit5_tiny_attention", "vit5_tiny_hyena", "vit5_tiny_hybrid"):
        check(name, {}, 8, failures)
    if not args.quick:
        check("vit5_small_hyena_gap", {}, 8, failures)
    for failure in failures:
        print("FAIL", failure)
    print("ok" if not failures else f"{len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
