"""Bounded YAML reading and writing, with nvSubquadratic's two Python tags as data.

nvSubquadratic saves function references with PyYAML's Python tags::

    init_method: !!python/name:nvsubquadratic.utils.init.small_init ''
    init_partial: !!python/object/apply:functools.partial
      args: [&id001 !!python/name:nvsubquadratic.utils.init.trunc_normal_init]
      state: [*id001, [], {std: 0.02}, null]

Here these tags are read as *recorded calls*, never by importing the names:

* ``!!python/name:X`` becomes ``{__target__: vit5.config.yaml_file.python_name, name: X}``, which
  builds the object registered as ``X`` in :mod:`vit5.config.registry` (``nvsubquadratic.*`` names
  map to vit5's object of the same name); an unregistered ``X`` — ``os.system``, or a closure such
  as ``nvsubquadratic.utils.init._factory`` that no loader can rebuild — is a one-line error naming
  the tag, raised while reading;
* ``!!python/object/apply:functools.partial`` becomes ``{__target__: vit5.config.yaml_file.partial,
  func: ..., args: [...], keywords: {...}}`` (from its ``args`` or its pickled ``state``);
* ``!!python/tuple`` (inside a partial's state) is read as a list;
* ``!!python/object:nvsubquadratic.lazy_config._Placeholder {}`` (and vit5's own) is ``PLACEHOLDER``;
* any other Python tag is a one-line error naming it.

:func:`dump_yaml` writes these recorded calls — and registered functions or ``functools.partial``
objects of them found in a tree built in Python — back in the same two forms, as PyYAML's ``dump``
writes them (``state`` as a ``!!python/tuple``), so that PyYAML's unsafe loader rebuilds them too.

Reading is bounded before anything is built: at most :data:`MAX_YAML_BYTES` bytes, nesting depth
:data:`MAX_YAML_DEPTH`, and :data:`MAX_YAML_NODES` values counted with every alias expanded (anchors
and aliases stay allowed; a "billion laughs" file is refused), recursive aliases refused.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

from vit5.config.node import PLACEHOLDER
from vit5.config.registry import TARGET_KEY, config_targets, register_config_target, resolve_config_target

__all__ = [
    "MAX_YAML_BYTES",
    "MAX_YAML_DEPTH",
    "MAX_YAML_NODES",
    "dump_yaml",
    "partial",
    "python_name",
    "read_yaml",
]

MAX_YAML_BYTES = 16 * 2**20
MAX_YAML_DEPTH = 100
MAX_YAML_NODES = 100_000

_NAME_TAG = "tag:yaml.org,2002:python/name:"
_APPLY_TAG = "tag:yaml.org,2002:python/object/apply:"
_PYTHON_TAG = "tag:yaml.org,2002:python/"
_TUPLE_TAG = "tag:yaml.org,2002:python/tuple"
_OBJECT_TAG = "tag:yaml.org,2002:python/object:"
_PLACEHOLDER_CLASSES = ("vit5.config.node._Placeholder", "nvsubquadratic.lazy_config._Placeholder")


def python_name(name: str) -> Callable[..., Any]:
    """The registered class or function ``name`` (what ``!!python/name:name`` refers to).

    Raises:
        ValueError: ``name`` is not registered (nothing is imported).
    """
    return config_targets()[resolve_config_target(name, f"!!python/name:{name}")]


def partial(
    func: Callable[..., Any], args: list | tuple = (), keywords: Mapping[str, Any] | None = None
) -> Any:
    """``functools.partial(func, *args, **keywords)`` (what ``!!python/object/apply:functools.partial`` builds).

    Raises:
        TypeError: ``func`` is not callable or ``keywords`` is not a mapping with string keys.
    """
    if not callable(func):
        raise TypeError(f"partial: func must be callable, got {func!r:.80}")
    if keywords is not None and (
        not isinstance(keywords, Mapping) or not all(isinstance(key, str) for key in keywords)
    ):
        raise TypeError(f"partial: keywords must be a mapping with string keys, got {keywords!r:.80}")
    return functools.partial(func, *list(args), **dict(keywords or {}))


NAME_TARGET = f"{__name__}.python_name"
PARTIAL_TARGET = f"{__name__}.partial"
register_config_target(python_name)
register_config_target(partial)


def _yaml() -> Any:
    try:
        import yaml
    except ImportError as error:  # pragma: no cover - pyyaml ships with the train/test extras
        raise ImportError("saving and loading configs needs PyYAML: pip install 'vit5[train]'") from error
    return yaml


# --------------------------------------------------------------------------------------------------
# Reading


def _check_events(yaml: Any, text: str, source: str) -> None:
    """Nesting depth and raw node count, from the event stream (nothing is built)."""
    depth = 0
    for events, event in enumerate(yaml.parse(text, Loader=yaml.SafeLoader)):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                raise ValueError(f"{source}: YAML nested deeper than {MAX_YAML_DEPTH} levels")
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
        if events > 2 * MAX_YAML_NODES:
            raise ValueError(f"{source}: YAML holds more than {MAX_YAML_NODES} values")


def _expanded_size(yaml: Any, root: Any, source: str) -> int:
    """Number of nodes once every alias is expanded (memoised per node; cycles refused)."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: Any) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise ValueError(f"{source}: recursive YAML alias (an anchor that contains itself)")
        active.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(size(key_node) + size(value_node) for key_node, value_node in node.value)
        active.discard(key)
        sizes[key] = total
        if total > MAX_YAML_NODES:
            raise ValueError(
                f"{source}: YAML expands to more than {MAX_YAML_NODES} values with its aliases expanded"
            )
        return total

    return size(root) if root is not None else 0


def _loader(yaml: Any, source: str) -> type:
    class Loader(yaml.SafeLoader):
        pass

    def construct_name(loader: Any, suffix: str, node: Any) -> dict:
        if not isinstance(node, yaml.ScalarNode) or loader.construct_scalar(node) not in ("", None):
            raise ValueError(f"{source}: YAML tag !!python/name:{suffix} must have an empty value")
        try:
            resolve_config_target(suffix, source)
        except ValueError:
            raise ValueError(
                f"{source}: YAML tag !!python/name:{suffix} names nothing registered as a config target "
                "(refused without importing it; a closure such as a factory's result cannot be reloaded)"
            ) from None
        return {TARGET_KEY: NAME_TARGET, "name": suffix}

    def construct_apply(loader: Any, suffix: str, node: Any) -> dict:
        if suffix != "functools.partial":
            raise ValueError(
                f"{source}: YAML tag !!python/object/apply:{suffix} is refused (only functools.partial is read)"
            )
        if isinstance(node, yaml.SequenceNode):
            fields = {"args": loader.construct_sequence(node, deep=True)}
        else:
            fields = loader.construct_mapping(node, deep=True)
        args, keywords = list(fields.get("args") or []), dict(fields.get("kwds") or {})
        state = fields.get("state")
        if state is not None:
            if not isinstance(state, (list, tuple)) or len(state) != 4:
                raise ValueError(
                    f"{source}: YAML tag !!python/object/apply:functools.partial has a bad state"
                )
            args, keywords = [state[0], *(state[1] or [])], dict(state[2] or {})
        if not args:
            raise ValueError(f"{source}: YAML tag !!python/object/apply:functools.partial names no function")
        return {TARGET_KEY: PARTIAL_TARGET, "func": args[0], "args": args[1:], "keywords": keywords}

    def construct_object(loader: Any, suffix: str, node: Any) -> Any:
        if suffix in _PLACEHOLDER_CLASSES:
            return PLACEHOLDER
        return construct_other(loader, f"object:{suffix}", node)

    def construct_other(loader: Any, suffix: str, node: Any) -> None:
        raise ValueError(
            f"{source}: YAML tag !!python/{suffix} is refused (only python/name and functools.partial)"
        )

    Loader.add_constructor(_TUPLE_TAG, lambda loader, node: loader.construct_sequence(node, deep=True))
    Loader.add_multi_constructor(_NAME_TAG, construct_name)
    Loader.add_multi_constructor(_APPLY_TAG, construct_apply)
    Loader.add_multi_constructor(_OBJECT_TAG, construct_object)
    Loader.add_multi_constructor(_PYTHON_TAG, construct_other)
    return Loader


def read_yaml(text: str, source: str = "the YAML") -> Any:
    """Parse YAML text within this module's bounds, Python tags read as recorded calls.

    Raises:
        ValueError: one line naming ``source``: not YAML, over a bound, or a refused tag.
    """
    yaml = _yaml()
    if len(text) > MAX_YAML_BYTES:
        raise ValueError(f"{source}: YAML file larger than {MAX_YAML_BYTES} bytes")
    try:
        _check_events(yaml, text, source)
        loader = _loader(yaml, source)(text)
        try:
            root = loader.get_single_node()
            _expanded_size(yaml, root, source)
            return loader.construct_document(root) if root is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as error:
        raise ValueError(f"{source}: not a valid vit5 YAML config ({' '.join(str(error).split())})") from None
    except RecursionError:
        raise ValueError(f"{source}: YAML nested too deeply") from None


# --------------------------------------------------------------------------------------------------
# Writing


class _Name:
    def __init__(self, name: str) -> None:
        self.name = name


class _Tuple:
    def __init__(self, items: list) -> None:
        self.items = items


class _Partial:
    def __init__(self, func: Any, args: list, keywords: dict) -> None:
        self.func, self.args, self.keywords = func, args, keywords


def registered_name(obj: Any) -> str | None:
    """The dotted path ``obj`` is registered under (its own path first), or ``None``."""
    table = config_targets()
    own = f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', '')}"
    if table.get(own) is obj:
        return own
    return next((path for path, item in table.items() if item is obj), None)


def to_tagged(value: Any, where: str) -> Any:
    """``value`` with recorded ``python_name`` / ``partial`` calls and callables turned into tag objects.

    Raises:
        TypeError: a callable that is not registered (the message names its key).
    """
    if isinstance(value, Mapping):
        target = value.get(TARGET_KEY)
        if target == NAME_TARGET and isinstance(value.get("name"), str):
            return _Name(value["name"])
        if target == PARTIAL_TARGET and "func" in value:
            return _Partial(
                to_tagged(value["func"], f"{where}.func"),
                [to_tagged(item, f"{where}.args") for item in value.get("args") or []],
                {
                    key: to_tagged(item, f"{where}.{key}")
                    for key, item in (value.get("keywords") or {}).items()
                },
            )
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"cannot save config: key {key!r} at {where or '<root>'} is not a string")
            out[key] = to_tagged(item, f"{where}.{key}" if where else key)
        return out
    if isinstance(value, (list, tuple)):
        return [to_tagged(item, f"{where}[{index}]") for index, item in enumerate(value)]
    if value is PLACEHOLDER:
        return value
    if isinstance(value, functools.partial):
        return _Partial(
            to_tagged(value.func, f"{where}.func"),
            [to_tagged(item, where) for item in value.args],
            {key: to_tagged(item, where) for key, item in value.keywords.items()},
        )
    if callable(value):
        name = registered_name(value)
        if name is None:
            raise TypeError(
                f"cannot save config: value at {where or '<root>'} is {value!r:.80}, a callable that is not "
                "registered as a config target (register it with vit5.register_config_target, or record it "
                "with LazyConfig)"
            )
        return _Name(name)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(
        f"cannot save config: value at {where or '<root>'} is a {type(value).__name__} ({value!r:.80}); only "
        "None, bool, int, float, str, lists, nested configs and registered functions (or functools.partial "
        "of them) can be saved. Record factories with LazyConfig(factory)(...) instead of storing the objects "
        "they return."
    )


def dump_yaml(tree: Any) -> str:
    """YAML text for a plain tree that may hold :func:`to_tagged`'s tag objects."""
    yaml = _yaml()

    class Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return not isinstance(data, (_Name, _Partial))

    def represent_name(dumper: Any, data: _Name) -> Any:
        return dumper.represent_scalar(f"{_NAME_TAG}{data.name}", "")

    def represent_partial(dumper: Any, data: _Partial) -> Any:
        state = _Tuple([data.func, _Tuple(data.args), data.keywords, None])
        fields = {"args": [data.func], "state": state}
        return dumper.represent_mapping(f"{_APPLY_TAG}functools.partial", fields)

    def represent_tuple(dumper: Any, data: _Tuple) -> Any:
        return dumper.represent_sequence(_TUPLE_TAG, data.items)

    Dumper.add_representer(_Name, represent_name)
    Dumper.add_representer(_Partial, represent_partial)
    Dumper.add_representer(_Tuple, represent_tuple)
    Dumper.add_representer(
        type(PLACEHOLDER),
        lambda dumper, _: dumper.represent_mapping(_OBJECT_TAG + _PLACEHOLDER_CLASSES[0], {}),
    )
    return yaml.dump(tree, Dumper=Dumper, sort_keys=False, default_flow_style=False)
