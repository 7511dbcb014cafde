"""Names are data: text from files (class names, paths, keys) shown on a terminal or written to CSV.

* :func:`terminal_text`: control characters (Unicode category Cc: ``\\x00``-``\\x1f``,
  ``\\x7f``-``\\x9f``), line/paragraph separators and bidirectional-text controls (which reorder
  what a terminal shows) are written as escapes (``\\x1b``, ``\\u202e``), so a name can neither
  move the cursor, recolour the terminal, forge a new output line nor reverse the text around it.
* :func:`csv_field`: a field starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return
  gets a leading ``'`` so a spreadsheet shows it as text instead of evaluating it as a formula.
* JSON needs nothing: ``json.dumps`` escapes control characters itself.
"""

from __future__ import annotations

import unicodedata

__all__ = ["csv_field", "terminal_text"]

#: Bidirectional controls (Unicode's "Bidi_Control" property) and the line/paragraph separators.
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u2028\u2029")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def terminal_text(text: object) -> str:
    """``str(text)`` with control and bidi characters escaped (one line, shown as written)."""
    text = str(text)
    if text.isprintable() and not any(char in _BIDI for char in text):
        return text
    return "".join(
        _escape(char) if char in _BIDI or unicodedata.category(char) == "Cc" else char for char in text
    )


def csv_field(value: object) -> object:
    """A CSV cell for ``value``: strings starting like a formula get a leading ``'``; others as they are."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value
