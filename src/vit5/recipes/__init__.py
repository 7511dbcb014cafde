"""Named training recipes, installed with the package: ``vit5 train --config vit5_b_finetune``.

Each recipe is a Python config file (code, as any ``.py`` config: see
:func:`vit5.train.recipes.load_python_config`); ``vit5 list`` names them with their first line.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["list_recipes", "recipe_path"]

_HERE = Path(__file__).resolve().parent


def list_recipes() -> dict[str, str]:
    """``{name: first line of its docstring}`` of every packaged recipe, sorted by name."""
    out = {}
    for path in sorted(_HERE.glob("*.py")):
        if path.name.startswith("_"):
            continue
        text = path.read_text(encoding="utf-8")
        first = text.split('"""', 2)[1].strip().splitlines()[0] if text.startswith('"""') else ""
        out[path.stem] = first.rstrip(":").rstrip()
    return out


def recipe_path(name: str) -> Path:
    """The file of the packaged recipe ``name``.

    Raises:
        ValueError: no such recipe (the message lists them).
    """
    path = _HERE / f"{name}.py"
    if name.startswith("_") or not path.is_file():
        raise ValueError(
            f"--config {name!r}: no packaged recipe of that name; recipes: {', '.join(list_recipes())}"
        )
    return path
