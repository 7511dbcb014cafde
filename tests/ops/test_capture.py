"""capture_mode() tells eager calls from FX tracing, torch.export and torch.compile."""

import torch

from vit5.ops.capture import capture_mode, is_capturing


class _Recorder(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(capture_mode())
        return x * 2


def test_capture_mode_names_each_capture_system() -> None:
    module = _Recorder()
    module(torch.ones(2))
    torch.fx.symbolic_trace(module)
    torch.export.export(module, (torch.ones(2),))
    torch.compile(module, backend="eager", fullgraph=True)(torch.ones(3))
    assert module.seen == ["eager", "fx", "export", "compile"]
    assert not is_capturing()
