"""File names as a terminal or a log may show them."""

from __future__ import annotations

import sys
import unicodedata

# Escaped: control characters (a newline, a tab, ESC and the sequences it starts, C1 controls),
# lone surrogates (bytes of a name that is not UTF-8), line and paragraph separators, and the
# bidirectional overrides (they can make a name read as another). Kept: every other character,
# format characters included (the zero-width joiner inside an emoji family).
_ESCAPED = {"Cc", "Cs", "Zl", "Zp"}
_BIDI = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def shown(msg: str) -> str:
    """``msg`` as one line of the terminal or a log, a file name's dangerous characters (above)
    written as Python escapes. Raw, a name could split a log line in two, retitle or recolour the
    terminal, or (as a lone surrogate on a strict stream) stop the run's log with an encoding error.
    (A backslash in a name is left as it is: ``a\\nb.png`` and a name with a newline read alike.)"""
    return "".join(c.encode("unicode_escape").decode("ascii") if unicodedata.category(c) in _ESCAPED or c in _BIDI
                   else c for c in msg)


def shown_lines(text: str) -> str:
    """``shown`` for each line of a block (the summary table)."""
    return "\n".join(shown(line) for line in text.split("\n"))


def tolerant_output() -> None:
    """stdout writes what its encoding cannot (``PYTHONIOENCODING=ascii``, an old locale) as
    escapes instead of raising, as Python's stderr already does: a run that finished must not end
    in an encoding error over a folder's name in its summary."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None and getattr(stream, "errors", "") == "strict":
            try:
                reconfigure(errors="backslashreplace")
            except (ValueError, OSError):  # a stream that cannot change now: left as it is
                pass
