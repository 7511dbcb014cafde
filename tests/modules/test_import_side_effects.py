"""Importing vit5 changes nothing process-wide (item 5 of issue 28): no module-registration hook."""

from __future__ import annotations

import subprocess
import sys


def test_import_installs_no_module_registration_hook() -> None:
    code = (
        "from torch.nn.modules import module as m\n"
        "before = (len(m._global_module_registration_hooks), len(m._global_forward_hooks),"
        " len(m._global_forward_pre_hooks), len(m._global_backward_hooks),"
        " len(m._global_parameter_registration_hooks), len(m._global_buffer_registration_hooks))\n"
        "import vit5, vit5.networks, vit5.modules\n"
        "after = (len(m._global_module_registration_hooks), len(m._global_forward_hooks),"
        " len(m._global_forward_pre_hooks), len(m._global_backward_hooks),"
        " len(m._global_parameter_registration_hooks), len(m._global_buffer_registration_hooks))\n"
        "print(before, after)\n"
        "assert before == after, (before, after)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
