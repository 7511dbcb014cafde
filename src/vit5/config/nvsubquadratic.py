"""Import an nvSubquadratic config file under a shim: :func:`load_nvsubquadratic_config`.

nvSubquadratic's experiment configs are Python modules (``examples/vit5_imagenet/...``) that import
``nvsubquadratic.*`` classes, the repository's ``experiments`` package, Apex, DALI, Lightning and
``mamba_ssm``, and return their tree from ``get_config()``. A Python config is **code**: loading
one runs it, with the permissions of the user (use it only on files you trust, as ``--config X.py``).

While (and only while) the file is imported, an import hook is first on ``sys.meta_path``:

* ``nvsubquadratic`` and every submodule are synthetic modules whose attributes are vit5's objects
  of the same name (through the target registry: ``nvsubquadratic.modules.kernels_nd.SIRENKernelND``
  is :class:`vit5.SIRENKernelND`); ``nvsubquadratic.lazy_config`` gives vit5's ``LazyConfig``,
  ``instantiate`` and ``PLACEHOLDER``. A real nvsubquadratic install is hidden meanwhile. Calls of
  the initialiser factories (``trunc_normal_init_factory(std=0.02)``) are recorded as config nodes
  (built into the same functions with the network), so the tree can be saved as YAML.
* ``mamba_ssm``, ``apex``, ``nvidia.dali``, ``lightning``, ``pytorch_lightning``,
  ``lightning_fabric``, the repository's ``experiments`` package, and nvsubquadratic names vit5 does
  not provide become *placeholders*: any attribute is a placeholder class; calling one (as configs
  call ``ExperimentConfig()``) records the call as a config node that accepts any attribute.

After the import every hook, synthetic module and module of the repository is removed again, and
the network's tree (``config[key]``) is returned with its interpolations resolved (``${eval:...}``
included). In it, a recorded call of a placeholder becomes a call of
:func:`~vit5.config.registry.unavailable` (which
raises one line naming the class and the config key when it is built; the tree still saves and
reloads as YAML); everything else builds without nvsubquadratic installed.
"""

from __future__ import annotations

import functools
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import threading
import types
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vit5.config.io import apply_overrides
from vit5.config.node import PLACEHOLDER, TARGET_KEY, ConfigNode, LazyConfig, _accepted_keywords, locate
from vit5.config.registry import UNAVAILABLE_PACKAGES, UNAVAILABLE_TARGET, config_targets, reference_target
from vit5.config.resolve import resolve

__all__ = ["PLACEHOLDER_PACKAGES", "load_nvsubquadratic_config"]

PLACEHOLDER_PACKAGES = tuple(name for name in UNAVAILABLE_PACKAGES if name != "nvsubquadratic")
_REFERENCE = "nvsubquadratic"
_LOCK = threading.Lock()


def _shimmed(name: str) -> bool:
    return any(name == root or name.startswith(root + ".") for root in (_REFERENCE, *PLACEHOLDER_PACKAGES))


def _provided(dotted: str) -> Any:
    """vit5's object for the nvSubquadratic name ``dotted``, or ``None``."""
    if dotted.startswith(f"{_REFERENCE}.lazy_config."):
        from vit5.config import build, io

        helpers = {
            "LazyConfig": LazyConfig, "PLACEHOLDER": PLACEHOLDER, "instantiate": build.instantiate,
            "save_config": io.save_config, "load_config": io.load_config,
        }  # fmt: skip
        return helpers.get(dotted.rsplit(".", 1)[1])
    path = reference_target(dotted)
    if path is None:
        return None
    found = config_targets()[path]
    return _Recorder(found) if found.__name__ in _FACTORIES else found


# Initialiser factories that configs call at load time (``INIT = trunc_normal_init_factory(0.02)``):
# under the shim the call is recorded (a config node built into the same function when the network
# is built), so the tree holds no closure and can be saved as YAML.
_FACTORIES = frozenset(
    {
        "trunc_normal_init",
        "trunc_normal_init_factory",
        "partial_wang_init_fn_with_num_layers",
        "small_init_factory",
    }
)


class _Recorder:
    """Calling it records the call of the factory it wraps (``LazyConfig(factory)(...)``)."""

    def __init__(self, factory: Any) -> None:
        functools.update_wrapper(self, factory)
        self.factory = factory

    def __call__(self, *args: Any, **kwargs: Any) -> ConfigNode:
        return LazyConfig(self.factory)(*args, **kwargs)


# --------------------------------------------------------------------------------------------------
# Placeholders


class _PlaceholderRecord(ConfigNode):
    """A recorded call of a placeholder (``ExperimentConfig()``): a node that accepts any key and
    creates missing sub-nodes on attribute access (``config.wandb.job_group = ...``)."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        if name not in self:
            self._store(name, _PlaceholderRecord())
        return self[name]

    def __setitem__(self, key: Any, value: Any) -> None:
        self._store(key, value)


class _PlaceholderMeta(type):
    def __getattr__(cls, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _placeholder(f"{cls.__module__}.{cls.__qualname__}", name)

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        node = _PlaceholderRecord({TARGET_KEY: f"{cls.__module__}.{cls.__qualname__}"})
        for index, value in enumerate(args):
            node._store(f"_arg{index}", value)
        for key, value in kwargs.items():
            node._store(key, value)
        return node


class Placeholder(metaclass=_PlaceholderMeta):
    """Base of the placeholder classes (a name from a package vit5 does not provide)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # the signature LazyConfig checks
        pass


def _placeholder(module: str, name: str) -> type:
    return _PlaceholderMeta(name, (Placeholder,), {"__module__": module, "__qualname__": name})


# --------------------------------------------------------------------------------------------------
# The import hook


class _ShimModule(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        dotted = f"{self.__name__}.{name}"
        if dotted in sys.modules:
            return sys.modules[dotted]
        provided = _provided(dotted) if dotted.startswith(_REFERENCE + ".") else None
        if provided is not None:
            return provided
        if dotted.startswith(_REFERENCE + ".") and name[:1].islower():
            return importlib.import_module(dotted)  # a submodule (``from nvsubquadratic.modules import mlp``)
        value = _placeholder(self.__name__, name)
        setattr(self, name, value)
        return value


class _ShimFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(
        self, fullname: str, path: Any = None, target: Any = None
    ) -> importlib.machinery.ModuleSpec | None:
        if not _shimmed(fullname):
            return None
        return importlib.machinery.ModuleSpec(fullname, self, is_package=True)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = _ShimModule(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        pass


@contextmanager
def _shim(search_paths: list[str]) -> Iterator[None]:
    """The import hook, hidden real modules and the repository on ``sys.path``, for one load."""
    before = set(sys.modules)
    tops = {name.split(".", 1)[0] for name in before}
    hidden = {name: sys.modules.pop(name) for name in list(sys.modules) if _shimmed(name)}
    finder = _ShimFinder()
    sys.meta_path.insert(0, finder)
    old_path = list(sys.path)
    sys.path[:0] = [path for path in search_paths if path not in sys.path]
    locate.cache_clear()
    _accepted_keywords.cache_clear()
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
        sys.path[:] = old_path
        roots = [Path(path) for path in search_paths]
        doomed = []
        for name in set(sys.modules) - before:
            module = sys.modules[name]
            try:
                places = [getattr(module, "__file__", None), *list(getattr(module, "__path__", None) or [])]
            except (KeyError, TypeError):  # a namespace package whose parent is already gone
                places = []
            inside = any(place and _is_within(Path(place), root) for place in places for root in roots)
            if (
                _shimmed(name)
                or isinstance(module, _ShimModule)
                or (inside and name.split(".", 1)[0] not in tops)
            ):
                doomed.append(name)
        for name in doomed:
            del sys.modules[name]
        sys.modules.update(hidden)
        locate.cache_clear()
        _accepted_keywords.cache_clear()


def _is_within(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except (ValueError, OSError):
        return False
    return True


def _repository_root(path: Path) -> Path:
    for folder in path.parents:
        if any(
            (folder / marker).exists() for marker in (".git", "pyproject.toml", "setup.py", "experiments")
        ):
            return folder
    return path.parent


def _module_name(path: Path, root: Path) -> str:
    try:
        parts = path.with_suffix("").resolve().relative_to(root.resolve()).parts
    except ValueError:
        return "_vit5_nvsubquadratic_config"
    if all(part.isidentifier() for part in parts):
        return ".".join(parts)
    return "_vit5_nvsubquadratic_config"


# --------------------------------------------------------------------------------------------------
# Loading


def load_nvsubquadratic_config(
    path: str | os.PathLike,
    key: str | None = "net",
    *,
    overrides: Sequence[str] = (),
    repo_root: str | os.PathLike | None = None,
) -> ConfigNode:
    """Import nvSubquadratic's config file ``path`` under the shim; return the tree at ``key``.

    The file is **executed** (it is code). Its tree is ``get_config()`` if the module defines it,
    else its ``config`` (or ``cfg``) attribute.

    Args:
        path: The ``.py`` config file.
        key: Dotted key of the network's tree in the config (``"net"``); ``None`` for the whole tree.
        overrides: ``"a.b=value"`` edits of the whole config (``"net.patch_size=8"``), applied before
            interpolations are resolved, so derived values follow.
        repo_root: The repository root put on ``sys.path`` during the import (default: the nearest
            parent folder holding ``.git``, ``pyproject.toml``, ``setup.py`` or ``experiments``).

    Returns:
        The tree with interpolations resolved; recorded calls of placeholders raise one line naming
        the class and the key when built.

    Raises:
        ValueError: not a ``.py`` file, no config in it, no ``key`` in the config, or a bad
            interpolation (one line).
        FileNotFoundError: ``path`` does not exist.
    """
    path = Path(path)
    if path.suffix != ".py":
        raise ValueError(f"{path}: an nvSubquadratic config must be a .py file, got suffix {path.suffix!r}")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such config file")
    root = Path(repo_root) if repo_root is not None else _repository_root(path.resolve())
    name = _module_name(path, root)
    with _LOCK, _shim([str(root), str(path.resolve().parent)]):
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        finally:
            sys.modules.pop(name, None)
        if callable(getattr(module, "get_config", None)):
            tree = module.get_config()
        elif isinstance(getattr(module, "config", None), Mapping):
            tree = module.config
        elif isinstance(getattr(module, "cfg", None), Mapping):
            tree = module.cfg
        else:
            raise ValueError(f"{path}: defines no get_config() and no config mapping")
        tree = _as_node(tree, path)
        if overrides:
            tree = apply_overrides(tree, list(overrides))
        node = _subtree(tree, key, path)
        resolved = resolve(node) if isinstance(node, ConfigNode) else node
    return _mark_unavailable(resolved, key or "")


def _as_node(tree: Any, path: Path) -> ConfigNode:
    if isinstance(tree, ConfigNode):
        return tree
    if isinstance(tree, Mapping) or type(tree).__module__.startswith("omegaconf"):
        return ConfigNode(tree)
    if hasattr(tree, "__dict__"):  # a dataclass-like config object
        return ConfigNode({k: v for k, v in vars(tree).items() if not k.startswith("_")})
    raise ValueError(f"{path}: get_config() returned a {type(tree).__name__}, not a config mapping")


def _subtree(tree: ConfigNode, key: str | None, path: Path) -> Any:
    node: Any = tree
    for part in (key or "").split(".") if key else []:
        if not isinstance(node, Mapping) or part not in node:
            keys = sorted(node) if isinstance(node, Mapping) else []
            raise ValueError(f"{path}: the config has no key {key!r} (at {part!r}; keys: {keys})")
        node = node[part]
    return node


def _mark_unavailable(value: Any, where: str) -> Any:
    if isinstance(value, Mapping):
        target = value.get(TARGET_KEY)
        if isinstance(value, ConfigNode):
            for name, item in list(value.items()):
                if name != TARGET_KEY:
                    dict.__setitem__(
                        value, name, _mark_unavailable(item, f"{where}.{name}" if where else str(name))
                    )
        if (
            (isinstance(target, str) and _shimmed(target))
            or isinstance(target, type)
            and issubclass(target, Placeholder)
        ):
            shown = target if isinstance(target, str) else f"{target.__module__}.{target.__qualname__}"
            dict.__setitem__(value, TARGET_KEY, UNAVAILABLE_TARGET)
            dict.__setitem__(value, "unavailable_target", shown)
            dict.__setitem__(value, "unavailable_key", where)
        return value
    if isinstance(value, list):
        return [_mark_unavailable(item, f"{where}[{index}]") for index, item in enumerate(value)]
    return value
