"""Measurement helpers for ``benchmarks/run.py``: models under test, timing, peak memory, roofline.

Every implementation is wrapped in an :class:`Impl` exposing one ``step(mode)``: ``"infer"`` is an
eval-mode forward under ``torch.inference_mode``; ``"train"`` is a train-mode forward plus
backward of ``logits.sum()`` (gradients are reset to ``None`` before each step, outside the
timed region). Timing is wall clock of one step (``cuda.synchronize`` on GPUs); repetitions are
interleaved between implementations by the caller and the best of N is kept.
"""

from __future__ import annotations

import contextlib
import gc
import math
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # tests/reference.py builds the reference twin of a vit5 config
    sys.path.insert(0, str(ROOT))

from tests.reference import build_reference  # noqa: E402

from vit5.config import instantiate  # noqa: E402
from vit5.networks.presets import model_config, vit5_config  # noqa: E402

#: Benchmark config name -> vit5 preset.
PRESETS = {
    "attention": "vit5_small_ref",
    "hyena_gap": "vit5_small_hyena_gap",
    "hybrid": "vit5_small_hybrid",
}
#: Tiny stand-ins (same layouts, D 32, depth 2, patch 4) for smoke tests of the harness itself.
TINY_PATTERNS = {"attention": ("A", "cls", 4), "hyena_gap": ("H", "gap", 0), "hybrid": ("HA", "cls", 4)}


def build_config(name: str, image_size: int, tiny: bool = False) -> Any:
    """vit5 LazyConfig of benchmark config ``name`` at ``image_size`` (the Hyena ``L_cache`` follows the grid)."""
    if not tiny:
        return model_config(PRESETS[name], image_size=image_size)
    pattern, readout, registers = TINY_PATTERNS[name]
    return vit5_config(
        hidden_dim=32, num_blocks=2, num_heads=2, pattern=pattern, patch_size=4, image_size=image_size,
        num_classes=10, num_registers=registers, readout=readout, siren_hidden_dim=16,
    )  # fmt: skip


@dataclass
class Impl:
    """One implementation under test: a model and how to call it on the benchmark input."""

    name: str
    model: nn.Module
    call: Callable[[nn.Module, torch.Tensor], torch.Tensor]
    flops: int | None = None  # forward FLOPs per image (inference count), if the model reports them
    last_logits: torch.Tensor | None = field(default=None, repr=False)

    def step(self, x: torch.Tensor, mode: str) -> None:
        """One inference forward, or one training forward + backward (gradients reset before)."""
        if mode == "infer":
            self.model.eval()
            with torch.inference_mode():
                self.last_logits = self.call(self.model, x)
        else:
            self.model.train()
            self.call(self.model, x).float().sum().backward()


def _vit5_call(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model({"input": x})["logits"]


def _reference_call(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model({"input": x, "condition": None})["logits"]


def _timm_call(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x)


def build_impls(
    name: str,
    image_size: int,
    device: torch.device,
    with_timm: bool,
    tiny: bool = False,
    compiled: bool = False,
) -> list[Impl]:
    """vit5, the reference with vit5's exact parameters, and (attention only) timm's ViT-S.

    With ``compiled``, also ``vit5_compiled``: the same vit5 model behind ``torch.compile``
    (inductor; its first step, the caller's warm-up, compiles).
    """
    cfg = build_config(name, image_size, tiny)
    torch.manual_seed(0)
    ours = instantiate(cfg)
    reference = build_reference(cfg)
    ours.load_state_dict(reference.state_dict(), strict=True)
    impls = [
        Impl("vit5", ours.to(device), _vit5_call, ours.flop_count(inference=True)),
        Impl("reference", reference.to(device), _reference_call, reference.flop_count(inference=True)),
    ]
    if compiled:
        # A fresh dynamo state per model: torch.compile caches per code object, so the second size
        # would otherwise get a slower dynamic-shape graph, and more than 8 sizes/modes fall back
        # to eager without a word (dynamo's recompile limit).
        torch._dynamo.reset()
        forward = torch.compile(ours, dynamic=False)
        impls.append(
            Impl("vit5_compiled", ours, lambda _, x: forward({"input": x})["logits"], impls[0].flops)
        )
    if with_timm and name == "attention":
        import timm

        arch = dict(embed_dim=32, depth=2, num_heads=2, patch_size=4) if tiny else {}
        model = timm.create_model(
            "vit_small_patch16_224",
            pretrained=False,
            img_size=image_size,
            num_classes=cfg.num_classes,
            **arch,
        )
        impls.append(Impl("timm", model.to(device), _timm_call))
    return impls


def make_input(impl: Impl, batch: int, image_size: int, device: torch.device, seed: int = 0) -> torch.Tensor:
    """The benchmark batch in the layout ``impl`` takes (channels-last for vit5 and the reference)."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, image_size, image_size, 3, generator=generator)
    if impl.name == "timm":
        x = x.permute(0, 3, 1, 2).contiguous()  # timm takes NCHW
    return x.to(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@contextlib.contextmanager
def _autocast(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    if dtype is None:
        yield
    else:
        with torch.autocast(device_type=device.type, dtype=dtype):
            yield


@dataclass
class Timing:
    seconds: float  # wall clock of one step
    cpu_fraction: float  # process CPU time / (wall * threads): < ~0.9 means something else ran


def time_step(
    impl: Impl, x: torch.Tensor, mode: str, device: torch.device, amp_dtype: torch.dtype | None = None
) -> Timing:
    """Wall-clock seconds of one step (gradients cleared and garbage collected beforehand)."""
    impl.model.zero_grad(set_to_none=True)
    gc.collect()
    _sync(device)
    cpu0, t0 = _cpu_seconds(), time.perf_counter()
    with _autocast(device, amp_dtype):
        impl.step(x, mode)
    _sync(device)
    wall = time.perf_counter() - t0
    threads = torch.get_num_threads() if device.type == "cpu" else 1
    return Timing(wall, (_cpu_seconds() - cpu0) / (wall * threads))


def paired_ratio(ours: list[float], theirs: list[float]) -> float:
    """Median over repetitions of ``theirs[i] / ours[i]``: each repetition's two steps run back to
    back, so a slow phase of a shared machine that lasts longer than one repetition slows both
    and cancels out, where best-of-N against best-of-N may pair a fast phase of one with a slow
    phase of the other.

    Raises:
        ValueError: empty or unequal lists.
    """
    if not ours or len(ours) != len(theirs):
        raise ValueError(f"need one time per repetition for both, got {len(ours)} and {len(theirs)}")
    return statistics.median(t / o for o, t in zip(ours, theirs))


def peak_memory(
    impl: Impl, x: torch.Tensor, mode: str, device: torch.device, amp_dtype: torch.dtype | None = None
) -> int:
    """Peak bytes allocated during one step on top of what existed before it.

    CUDA: ``max_memory_allocated``. CPU: the allocation/free events the profiler records
    (``profile_memory=True``), summed in time order, so every implementation is measured the same way.
    """
    impl.model.zero_grad(set_to_none=True)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        with _autocast(device, amp_dtype):
            impl.step(x, mode)
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    from torch.profiler import ProfilerActivity, profile

    with (
        profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof,
        _autocast(device, amp_dtype),
    ):
        impl.step(x, mode)
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    current = peak = 0
    for event in events:
        current += event.nbytes()
        peak = max(peak, current)
    impl.model.zero_grad(set_to_none=True)
    return peak


def matmul_roofline(
    device: torch.device, dtype: torch.dtype = torch.float32, size: int = 2048, repeats: int = 5
) -> float:
    """Best-of-``repeats`` FLOP/s of ``size x size`` matrix products (after one warm-up product)."""
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(device, dtype)
    b = torch.randn(size, size, generator=generator).to(device, dtype)
    torch.mm(a, b)
    best = math.inf
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def _conv_backward_flops(grad_out_shape, x_shape, w_shape, *args, out_shape=None, **kwargs) -> int:
    """``convolution_backward``: one forward's FLOPs per requested gradient (input, weight).

    torch's own formula counts the weight gradient of a grouped (e.g. depthwise) convolution as if
    it were dense; this one does not.
    """
    transposed, output_mask = args[4], args[-1]
    per_pass = 2 * math.prod(x_shape if transposed else grad_out_shape) * math.prod(w_shape[1:])
    return per_pass * (int(output_mask[0]) + int(output_mask[1]))


def _sdpa_products(q_shape, k_shape) -> int:
    """FLOPs of one ``q k^T`` (or ``p v``) product: ``2 B H Tq Tk hd``."""
    return 2 * math.prod(q_shape[:-1]) * k_shape[-2] * q_shape[-1]


def _sdpa_flops(q_shape, k_shape, v_shape, *args, out_shape=None, **kwargs) -> int:
    return 2 * _sdpa_products(q_shape, k_shape)  # scores, weighted sum


def _sdpa_backward_flops(grad_shape, q_shape, k_shape, v_shape, *args, out_shape=None, **kwargs) -> int:
    return 4 * _sdpa_products(q_shape, k_shape)  # d(values), d(weights), d(queries), d(keys)


#: Ops whose FLOPs make up ``layer_matmul_flops``: the linear layers, the convolutions (patch
#: embedding, short depthwise convolutions) and attention's two products. ``bmm`` is left out: in
#: vit5 it is only the dense form of the Hyena long convolution, which the FFT form can replace.
LAYER_MATMUL_OPS = (
    "aten.mm", "aten.addmm", "aten.convolution", "aten.convolution_backward",
    "aten._scaled_dot_product_flash_attention_for_cpu",
    "aten._scaled_dot_product_flash_attention_for_cpu_backward",
)  # fmt: skip


def layer_matmul_flops(impl: Impl, x: torch.Tensor, mode: str) -> int:
    """FLOPs of the matrix products one step of ``impl`` cannot avoid (``LAYER_MATMUL_OPS``).

    At the matmul roofline these alone take ``flops / roofline`` seconds, so
    ``reference seconds / (flops / roofline)`` bounds the speed-up over the reference that any
    implementation doing these products can reach on the machine. Counted with
    ``torch.utils.flop_counter.FlopCounterMode`` (plus formulas for the CPU attention kernel and a
    groups-aware convolution backward). Attention products are counted where the CPU flash kernel
    runs; SDPA's math fallback (``bmm``) and CUDA kernels are not counted, which only loosens the bound.
    """
    from torch.utils.flop_counter import FlopCounterMode

    aten = torch.ops.aten
    counter = FlopCounterMode(
        display=False,
        custom_mapping={
            aten.convolution_backward: _conv_backward_flops,
            aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_flops,
            aten._scaled_dot_product_flash_attention_for_cpu_backward: _sdpa_backward_flops,
        },
    )
    impl.model.zero_grad(set_to_none=True)
    with counter:
        impl.step(x, mode)
    impl.model.zero_grad(set_to_none=True)
    counts = counter.get_flop_counts().get("Global", {})
    return sum(flops for op, flops in counts.items() if str(op) in LAYER_MATMUL_OPS)


#: Profiler op names of matrix products (linear layers, convolutions, attention, the dense form of
#: the Hyena long convolution): everything else in a step counts as "outside matrix products".
PROFILED_MATMUL_OPS = frozenset(
    {
        "aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm", "aten::addbmm",
        "aten::mkldnn_convolution", "aten::convolution_backward", "aten::_mkl_linear",
        "aten::_scaled_dot_product_flash_attention_for_cpu",
        "aten::_scaled_dot_product_flash_attention_for_cpu_backward",
        "aten::_scaled_dot_product_efficient_attention", "aten::_scaled_dot_product_flash_attention",
        "aten::_scaled_dot_product_cudnn_attention",
    }
)  # fmt: skip


#: Batched products: in vit5 only the long convolution's machinery (DFT transforms, dense
#: operator) uses them; the layers every implementation must run use ``PROFILED_MATMUL_OPS`` less these.
LONG_CONV_PRODUCT_OPS = frozenset({"aten::bmm", "aten::baddbmm"})


def step_time_shares(
    impl: Impl, x: torch.Tensor, mode: str, device: torch.device, amp_dtype: torch.dtype | None = None
) -> dict[str, float]:
    """Shares of one step's self time (``torch.profiler``, CPU ops; CUDA kernels on a GPU):
    ``outside`` matrix products (``PROFILED_MATMUL_OPS``: FFTs, elementwise ops, norms, copies) and
    ``batched`` products (``LONG_CONV_PRODUCT_OPS``, CPU only: the long convolution's DFT or dense
    products, matrix products that other algorithms avoid)."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CUDA] if cuda else [ProfilerActivity.CPU]
    impl.model.zero_grad(set_to_none=True)
    with profile(activities=activities) as prof:
        with _autocast(device, amp_dtype):
            impl.step(x, mode)
        _sync(device)
    impl.model.zero_grad(set_to_none=True)
    events = prof.key_averages()
    if cuda:
        times = {e.key: e.self_device_time_total for e in events}
        matmul = sum(
            t for k, t in times.items() if any(w in k.lower() for w in ("gemm", "flash", "conv", "attention"))
        )
        batched = float("nan")
    else:
        times = {e.key: e.self_cpu_time_total for e in events}
        matmul = sum(t for k, t in times.items() if k in PROFILED_MATMUL_OPS)
        batched = sum(t for k, t in times.items() if k in LONG_CONV_PRODUCT_OPS)
    total = sum(times.values())
    if not total:
        return {"outside": float("nan"), "batched": float("nan")}
    return {"outside": 1.0 - matmul / total, "batched": batched / total}


def relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    """``max|ours - reference| / max(1, max|reference|)`` (the parity metric of the spec)."""
    scale = max(1.0, reference.abs().max().item())
    return (ours.double() - reference.double()).abs().max().item() / scale
