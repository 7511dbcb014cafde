"""File formats that model-side code may use: safe weight files (and, re-exported, the config-target
registry of :mod:`vit5.config.registry`).

One module per format, behind :func:`vit5.load_model` (:mod:`vit5.io.loader`): vit5 run checkpoints
(:mod:`vit5.io.run`, the only place that knows their layout), saved Hub models
(:mod:`vit5.io.hub_repo`), official ViT-5 (:mod:`vit5.io.official`) and nvSubquadratic
(:mod:`vit5.io.nvsubq`) checkpoints; where a file comes from (a path, a published name, ``hf-hub:``,
a URL) is :mod:`vit5.io.sources` / :mod:`vit5.io.download`. Those import the networks, so this
package's ``__init__`` does not import them (import them by module).

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
