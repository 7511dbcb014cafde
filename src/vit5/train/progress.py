"""Progress bars (tqdm: rate, ETA, current loss) when stderr is a terminal; log lines otherwise.

In CI, files and ``nohup`` (stderr not a terminal) the periodic log lines stay as they were;
``VIT5_PROGRESS=0`` turns the bars off in a terminal too, ``VIT5_PROGRESS=1`` forces them.
"""

from __future__ import annotations

import os
import sys
from typing import Any

__all__ = ["progress_bar", "use_bars"]


def use_bars() -> bool:
    """Whether to draw bars: ``VIT5_PROGRESS`` if set (0 / 1), else whether stderr is a terminal."""
    forced = os.environ.get("VIT5_PROGRESS")
    if forced in ("0", "1"):
        return forced == "1"
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


def progress_bar(total: int, description: str, initial: int = 0, unit: str = "step") -> Any:
    """A tqdm bar on stderr that disappears when closed (the epoch's log line stays)."""
    from tqdm import tqdm

    try:
        width = os.get_terminal_size(sys.stderr.fileno()).columns
    except (OSError, ValueError, AttributeError):
        width = 0
    # a terminal that reports no size (a fresh pseudo-terminal) would get an empty bar: 100 columns
    return tqdm(total=total, initial=initial, desc=description, unit=unit, file=sys.stderr, leave=False,
                dynamic_ncols=width > 0, ncols=None if width > 0 else 100, smoothing=0.1)  # fmt: skip
