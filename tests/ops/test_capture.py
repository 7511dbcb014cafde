"""capture_mode() tells eager calls from FX tracing, torch.export and torch.compile."""

import torch

from vit5.ops.capture import capture_mode, is_capturing

_FACTOR = {"eager": 1.0, "fx": 2.0, "export": 3.0, "compile": 4.0}


class _ModeScaled(torch.nn.Module):
    """Multiplies by a factor naming the capture mode seen while the graph was made."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * _FACTOR[capture_mode()]


def test_capture_mode_names_each_capture_system() -> None:
    module, x = _ModeScaled(), torch.ones(2)  # products of small integers: exact
    assert torch.equal(module(x), x)
    assert torch.equal(torch.fx.symbolic_trace(module)(x), 2 * x)
    assert torch.equal(torch.export.export(module, (x,)).module()(x), 3 * x)
    assert torch.equal(torch.compile(module, backend="eager", fullgraph=True)(x), 4 * x)
    assert not is_capturing()
