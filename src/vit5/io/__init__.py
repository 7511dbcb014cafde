"""File formats that model-side code may use: safe weight files (and, re-exported, the config-target
registry of :mod:`vit5.config.registry`).

Nothing here imports training code; reading a file never runs code from it.
"""

from vit5.config.registry import (
    ConfigTargetError,
    check_config_targets,
    config_targets,
    register_config_target,
    resolve_config_target,
)
from vit5.io.weights_file import (
    CheckpointError,
    file_digest,
    load_pickle_inert,
    load_weights,
    plain_data,
    read_weights_file,
    save_weights,
    tensor_digest,
    torch_load_safely,
)

__all__ = [
    "CheckpointError",
    "ConfigTargetError",
    "check_config_targets",
    "config_targets",
    "file_digest",
    "load_pickle_inert",
    "load_weights",
    "plain_data",
    "read_weights_file",
    "register_config_target",
    "resolve_config_target",
    "save_weights",
    "tensor_digest",
    "torch_load_safely",
]
