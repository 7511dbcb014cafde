"""Lazy configs: record calls now, build modules later.

A config is a tree of :class:`ConfigNode` (a ``dict`` with attribute access). A node holding the
key ``"__target__"`` (a dotted import path) is a *recorded call*; its other keys are the keyword
arguments. ``LazyConfig(cls)(**kwargs)`` records a call, :func:`instantiate` performs it.

The semantics follow ``nvsubquadratic``'s ``LazyConfig`` so that its config trees build the same
networks here after changing only the imports:

* nested recorded calls of **factory functions** (not ``nn.Module`` classes) are called when the
  enclosing call is instantiated, and their result is passed;
* nested recorded calls of **module classes** are passed *unbuilt* (the receiving ``__init__``
  instantiates them itself, possibly several times), unless ``recursive_instantiate=True``;
* a nested config containing :data:`PLACEHOLDER` anywhere is passed through unbuilt;
* keyword ``overrides`` of :func:`instantiate` are injected at the top level only;
* strings made only of digits and ``+ - * / % ( ) .`` are evaluated as arithmetic ("384*3" -> 1152);
* ``${a.b}`` interpolations refer to other entries of the tree; ``${eval:EXPR}`` evaluates EXPR
  (after its inner interpolations) with a whitelist arithmetic evaluator
  (:mod:`vit5.config.arithmetic`), never Python's ``eval``;
* saved YAML may hold ``!!python/name:X`` and ``!!python/object/apply:functools.partial`` tags,
  read as recorded calls of registered objects (:mod:`vit5.config.yaml_file`), never imported;
* :func:`load_nvsubquadratic_config` imports one of nvSubquadratic's Python config files under an
  import shim (:mod:`vit5.config.nvsubquadratic`).

Where vit5 differs (on purpose):

* keyword names are checked against the target's signature when the call is *recorded* (and when a
  key is set later), so a misspelled keyword fails immediately with a ``TypeError``;
* interpolations are resolved over the whole tree (from its root) before anything is built;
* :func:`save_config` refuses runtime objects (a ``TypeError`` naming the key) other than registered
  functions and ``functools.partial`` of them (written as the reference writes them);
  :func:`load_config` returns a tree that builds again;
* the target registry (:mod:`vit5.config.registry`) is a passive table filled by the packages that
  define targets; configs read from files may only name registered targets;
* :func:`apply_overrides` edits a tree from ``"a.b.c=value"`` strings and rejects unknown keys
  (:func:`set_value` does the same for one key and a Python value).

A node keeps a link to its parent so that ``instantiate(root.model.norm)`` still resolves
``${model.hidden_dim}``. Assigning a node into another tree copies it (as OmegaConf does), so a
node has exactly one parent and editing the original later does not change the tree.
"""

from vit5.config.build import build_callable, eval_arithmetic, instantiate
from vit5.config.io import apply_overrides, load_config, parse_value, save_config, set_value, to_container
from vit5.config.node import PLACEHOLDER, TARGET_KEY, ConfigNode, LazyConfig, locate, target_path
from vit5.config.nvsubquadratic import load_nvsubquadratic_config
from vit5.config.resolve import resolve

__all__ = [
    "PLACEHOLDER",
    "TARGET_KEY",
    "ConfigNode",
    "LazyConfig",
    "apply_overrides",
    "build_callable",
    "eval_arithmetic",
    "instantiate",
    "load_config",
    "load_nvsubquadratic_config",
    "locate",
    "parse_value",
    "resolve",
    "save_config",
    "set_value",
    "target_path",
    "to_container",
]
