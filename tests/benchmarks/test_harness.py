"""The benchmark's FLOP counting and the speed-up ceiling derived from it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn


class ConvAttentionLinear(nn.Module):
    """A grouped convolution, an attention, a batched product and a linear layer, in a row."""

    def __init__(self, channels: int, groups: int, heads: int, classes: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, groups=groups, bias=False)
        self.heads = heads
        self.mixer = nn.Parameter(torch.randn(heads, 1, 1))
        self.head = nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C = x.shape[:2]
        tokens = self.conv(x).flatten(2).transpose(1, 2).contiguous()  # (B, T, C): SDPA's flash kernel
        q = tokens.unflatten(-1, (self.heads, -1)).transpose(1, 2)  # (B, h, T, hd)
        mixed = torch.bmm(self.mixer.expand(-1, q.shape[2], q.shape[2]), q[0])  # left out of the count
        q = q + mixed.sum() * 0
        out = F.scaled_dot_product_attention(q, q, q).transpose(1, 2).reshape(B, -1, C)  # (B, T, C)
        return self.head(out).mean(dim=1)


@pytest.mark.parametrize("groups", [1, 4, 8])
@pytest.mark.parametrize("mode", ["infer", "train"])
def test_layer_matmul_flops_counts_convolutions_attention_and_linear_layers(modules, groups, mode) -> None:
    harness, _ = modules
    B, C, S, heads, K = 2, 8, 6, 2, 5
    T, hd = S * S, C // heads
    torch.manual_seed(0)
    model = ConvAttentionLinear(C, groups, heads, K)
    impl = harness.Impl("vit5", model, lambda m, x: m(x))
    flops = harness.layer_matmul_flops(impl, torch.randn(B, C, S, S), mode)

    conv = 2 * B * T * C * (C // groups) * 9  # one pass of the grouped 3x3 convolution
    scores = 2 * B * heads * T * T * hd  # one of attention's two products
    linear = 2 * B * T * C * K
    if mode == "infer":
        expected = conv + 2 * scores + linear
    else:  # the input needs no gradient: the convolution's backward computes the weight gradient only
        expected = 2 * conv + 6 * scores + 3 * linear
    assert flops == expected
    assert all(p.grad is None for p in model.parameters())  # counting leaves no gradients behind


def test_ceiling_is_reference_time_over_matmul_time_at_the_roofline(modules) -> None:
    _, report = modules
    row = {
        "device": "cpu", "dtype": "fp32", "config": "hybrid", "size": 224, "mode": "train", "batch": 8,
        "reps": 1, "vit5_img_s": 3.0, "reference_img_s": 2.0, "vit5_layer_matmul_flops": 100e9,
    }  # fmt: skip
    # reference: 8 images / 2 img/s = 4 s; matrix products at 50 GFLOP/s: 2 s -> at most 2x
    assert report.ceiling(row, 50e9) == pytest.approx(2.0)
    assert report.ceiling({**row, "vit5_layer_matmul_flops": None}, 50e9) is None
    assert report.ceiling(row, None) is None
    results = {
        "started": "t", "finished": "t", "load_average_start": (0, 0, 0), "load_average_end": (0, 0, 0),
        "machine": {"cpu": "c", "cores": 2, "torch": "t", "threads": 2, "python": "3"},
        "roofline_flops": {"cpu-fp32": 50e9}, "rows": [row],
    }  # fmt: skip
    checks = dict((name, (value, ok)) for name, value, ok in report.targets(results))
    name = "hybrid train 224px (batch 8) >= 1.2x reference (or 90% of the ceiling)"
    assert checks[name] == ("1.50x (ceiling 2.00x)", True)
    # a target above 90% of the ceiling is capped there: 1.15x meets it under a 1.25x ceiling
    slow = {**row, "vit5_img_s": 2.3, "reference_img_s": 2.0, "vit5_layer_matmul_flops": 160e9}
    assert report.ceiling(slow, 50e9) == pytest.approx(1.25)
    assert dict((n, ok) for n, _, ok in report.targets({**results, "rows": [slow]}))[name] is True
    slower = {**slow, "vit5_img_s": 2.2}  # 1.1x < 0.9 * 1.25x
    assert dict((n, ok) for n, _, ok in report.targets({**results, "rows": [slower]}))[name] is False
    row["vit5_outside_matmul_share"], row["vit5_batched_product_share"] = 0.25, 0.05
    table_row = next(line for line in report.markdown(results, "p.png").splitlines() if "| hybrid |" in line)
    assert "| 1.50x | – | 2.00x |" in table_row and table_row.endswith("| 25% | 5% |")  # no paired ratio
    row["paired_ratio"] = 1.45
    table_row = next(line for line in report.markdown(results, "p.png").splitlines() if "| hybrid |" in line)
    assert "| 1.50x | 1.45x | 2.00x |" in table_row
    assert dict((n, v) for n, v, _ in report.targets(results))[name] == "1.50x (paired 1.45x; ceiling 2.00x)"


def test_outside_matmul_share_separates_products_from_elementwise_work(modules) -> None:
    harness, _ = modules
    cpu = torch.device("cpu")
    linear = harness.Impl("linear", nn.Linear(1024, 1024, bias=False), lambda m, x: m(x))
    elementwise = harness.Impl("elementwise", nn.GELU(), lambda m, x: m(x).exp().sin() * 3)
    x = torch.randn(1024, 1024)
    linear.step(x, "infer")  # the first product of a process also pays one-time library set-up
    # best of 3 profiled steps: one step on a shared 2-core machine can be interrupted anywhere
    assert min(harness.step_time_shares(linear, x, "infer", cpu)["outside"] for _ in range(3)) < 0.5
    assert harness.step_time_shares(elementwise, x, "infer", cpu)["outside"] == 1.0
    batched = harness.Impl(
        "batched", nn.Identity(), lambda m, x: torch.bmm(x.view(16, 64, 1024), x.view(16, 1024, 64))
    )
    shares = [harness.step_time_shares(batched, x, "infer", cpu) for _ in range(3)]
    assert max(s["batched"] for s in shares) > 0.5 and min(s["outside"] for s in shares) < 0.5


def test_paired_ratio_cancels_slow_phases_shared_by_a_repetition(modules) -> None:
    harness, _ = modules
    # vit5 always 1.2x faster within a repetition; the machine halves its speed in the second one
    ours, theirs = [1.0, 2.0, 1.0], [1.2, 2.4, 1.2]
    assert harness.paired_ratio(ours, theirs) == pytest.approx(1.2)
    # the median: one disturbed repetition (0.4) does not move it
    assert harness.paired_ratio([1.0, 3.0, 1.0], [1.2, 1.2, 1.5]) == pytest.approx(1.2)
    with pytest.raises(ValueError, match="one time per repetition"):
        harness.paired_ratio([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="one time per repetition"):
        harness.paired_ratio([], [])
