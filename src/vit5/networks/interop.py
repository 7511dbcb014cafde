"""Find a network's weights inside nvSubquadratic / Lightning-style checkpoints (pure mapping).

vit5 networks have the reference library's ``state_dict`` keys, so a plain reference state dict
loads with ``load_state_dict``. Training checkpoints wrap it: Lightning stores the module's state
under ``state_dict`` with the attribute name of the network as a prefix (``net.``, ``model.``),
``torch.compile`` adds ``_orig_mod.``, DistributedDataParallel ``module.``, and EMA copies appear as
another prefix (``ema.module.``, ``model_ema.``, ``ema_model.``) or another entry of the checkpoint
(``state_dict_ema``, ``ema_state_dict``, a callback's state). :func:`extract_state_dict` finds the
copy whose keys are exactly the network's, wherever it is.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from typing import Any

import torch

__all__ = ["extract_state_dict", "find_state_dicts"]

# A location is EMA weights when its path or prefix names one of these (lower-cased).
EMA_MARKERS = ("ema", "averag", "swa")
_MAX_DEPTH = 4


def _walk_tensor_dicts(
    value: Any, path: tuple[str, ...], depth: int
) -> Iterator[tuple[tuple[str, ...], Mapping]]:
    if not isinstance(value, Mapping) or depth > _MAX_DEPTH:
        return
    if any(isinstance(item, torch.Tensor) for item in value.values()):
        yield path, value
    for key, item in value.items():
        if isinstance(item, Mapping):
            yield from _walk_tensor_dicts(item, (*path, str(key)), depth + 1)


def _is_ema(path: tuple[str, ...], prefix: str) -> bool:
    text = ".".join((*path, prefix)).lower()
    return any(marker in text for marker in EMA_MARKERS)


def find_state_dicts(
    checkpoint: Mapping[str, Any], expected_keys: Collection[str]
) -> list[tuple[tuple[str, ...], str, bool]]:
    """Every place in ``checkpoint`` holding all of ``expected_keys``.

    Returns:
        ``(path, prefix, is_ema)`` triples: ``checkpoint[path[0]][path[1]]...`` is a mapping in which
        every expected key ``k`` exists as ``prefix + k``; ``is_ema`` tells whether the path or prefix
        names an EMA / averaged copy.
    """
    expected = sorted(expected_keys)
    if not expected:
        raise ValueError("expected_keys is empty: the network has no state to load")
    anchor = max(expected, key=len)  # the most specific name finds the fewest false prefixes
    found = []
    for path, tensors in _walk_tensor_dicts(checkpoint, (), 0):
        prefixes = {
            key[: len(key) - len(anchor)]
            for key in tensors
            if isinstance(key, str)
            and key.endswith(anchor)
            and key[: len(key) - len(anchor)][-1:] in ("", ".")
        }
        for prefix in sorted(prefixes, key=len):
            if all(prefix + key in tensors for key in expected):
                found.append((path, prefix, _is_ema(path, prefix)))
    return found


def _describe(location: tuple[tuple[str, ...], str, bool]) -> str:
    path, prefix, _ = location
    where = "".join(f"[{part!r}]" for part in path) or "<top level>"
    return f"{where} with prefix {prefix!r}"


def _get(checkpoint: Mapping, path: tuple[str, ...]) -> Mapping:
    for part in path:
        checkpoint = checkpoint[part]
    return checkpoint


def _same_tensors(a: Mapping, b: Mapping) -> bool:
    return all(a[k].shape == b[k].shape and torch.equal(a[k], b[k]) for k in a)


def extract_state_dict(
    checkpoint: Mapping[str, Any],
    expected_keys: Collection[str],
    *,
    ema: bool = False,
    prefix: str | None = None,
) -> dict[str, torch.Tensor]:
    """The network weights inside a (Lightning-style) checkpoint, with vit5's keys.

    Looks through the checkpoint's nested mappings for a copy of every key in ``expected_keys``
    under some prefix (``""``, ``"net."``, ``"model."``, ``"model._orig_mod."``,
    ``"ema.module."``, ...). Among the copies, EMA ones (path or prefix mentioning ``ema``,
    ``averag`` or ``swa``) are used when ``ema`` is set, the others otherwise; the shortest
    location wins, and several different copies at the same depth are an error.

    Args:
        checkpoint: A state dict, a Lightning checkpoint (``{"state_dict": ...}``) or any nesting of
            mappings holding one.
        expected_keys: The network's ``state_dict()`` keys.
        ema: Use the EMA copy.
        prefix: Use only copies under exactly this prefix (e.g. ``"net."``).

    Returns:
        The tensors under the chosen prefix, prefix removed. Keys under the same prefix that are
        not expected are kept (so ``load_state_dict(strict=True)`` reports them), except those that
        belong to another copy (e.g. ``ema.*`` next to the model's own keys at the top level).

    Raises:
        TypeError: ``checkpoint`` is not a mapping.
        ValueError: no (EMA) copy of the weights exists, or it is ambiguous; the message lists what
            was found and the keys that are missing from the closest candidate.
    """
    if not isinstance(checkpoint, Mapping):
        raise TypeError(
            f"checkpoint must be a mapping (a state dict or a checkpoint), got {type(checkpoint).__name__}"
        )
    found = find_state_dicts(checkpoint, expected_keys)
    if prefix is not None:
        found = [location for location in found if location[1] == prefix]
    chosen = [location for location in found if location[2] == ema]
    if not chosen:
        kind = "EMA weights" if ema else "model weights (not EMA)"
        if found:
            other = "; ".join(_describe(location) for location in found)
            hint = "pass ema=False" if ema else "pass ema=True to use them"
            raise ValueError(f"no {kind} in the checkpoint; found only {other} ({hint})")
        raise ValueError(
            f"no {kind} in the checkpoint with the network's {len(expected_keys)} keys"
            + (f" under prefix {prefix!r}" if prefix is not None else "")
            + f"; {_closest_miss(checkpoint, expected_keys)}"
        )
    depth = min(len(path) + prefix.count(".") for path, prefix, _ in chosen)
    best = [loc for loc in chosen if len(loc[0]) + loc[1].count(".") == depth]
    tensors = {loc: _get(checkpoint, loc[0]) for loc in best}
    first = best[0]
    for other in best[1:]:
        a = {k: tensors[first][first[1] + k] for k in expected_keys}
        b = {k: tensors[other][other[1] + k] for k in expected_keys}
        if not _same_tensors(a, b):
            raise ValueError(
                "the checkpoint holds several different copies of the weights: "
                f"{'; '.join(_describe(loc) for loc in best)}; choose one with prefix="
            )
    path, chosen_prefix, _ = first
    source = tensors[first]
    others = [p for q, p, _ in found if q == path and p != chosen_prefix and p.startswith(chosen_prefix)]
    expected = set(expected_keys)

    def keep(key: str) -> bool:  # the network's keys, and extras that belong to no other copy
        rest = key[len(chosen_prefix) :]
        if rest in expected:
            return True
        return not any(key.startswith(p) for p in others) and not _is_ema((), rest.split(".")[0])

    return {
        key[len(chosen_prefix) :]: value
        for key, value in source.items()
        if isinstance(key, str)
        and key.startswith(chosen_prefix)
        and isinstance(value, torch.Tensor)
        and keep(key)
    }


def _closest_miss(checkpoint: Mapping, expected_keys: Collection[str]) -> str:
    """Describe the tensor dict that is closest to holding the expected keys (for error messages)."""
    best = None
    for path, tensors in _walk_tensor_dicts(checkpoint, (), 0):
        names = [k for k in tensors if isinstance(k, str)]
        for start in {""} | {k.split(".", 1)[0] + "." for k in names if "." in k}:
            missing = [k for k in expected_keys if start + k not in tensors]
            if best is None or len(missing) < len(best[2]):
                best = (path, start, missing)
    if best is None:
        return "the checkpoint contains no tensors"
    path, start, missing = best
    where = "".join(f"[{part!r}]" for part in path) or "<top level>"
    return f"closest: {where} with prefix {start!r}, missing {len(missing)} keys: {sorted(missing)[:12]}"
