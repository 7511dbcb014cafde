"""Importing vit5 changes nothing process-wide (issue 28, item 5): no module-registration hook.

A hook installed at import would still be registered in this process, which imported every vit5
module through the test suite's imports; the check needs no fresh interpreter."""

from __future__ import annotations

from torch.nn.modules import module as torch_module

import vit5  # noqa: F401
import vit5.modules  # noqa: F401
import vit5.modules.hooks  # noqa: F401
import vit5.networks  # noqa: F401


def test_import_installs_no_global_module_hooks() -> None:
    assert len(torch_module._global_module_registration_hooks) == 0
    assert len(torch_module._global_parameter_registration_hooks) == 0
    assert len(torch_module._global_buffer_registration_hooks) == 0
    assert len(torch_module._global_forward_hooks) == 0
    assert len(torch_module._global_forward_pre_hooks) == 0
