"""Former home of the config-target registry; it lives in :mod:`vit5.config.registry` now."""

from vit5.config.registry import (
    ConfigTargetError,
    check_config_targets,
    config_targets,
    register_config_target,
    resolve_config_target,
)

__all__ = [
    "ConfigTargetError",
    "check_config_targets",
    "config_targets",
    "register_config_target",
    "resolve_config_target",
]
