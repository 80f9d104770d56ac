"""File names as a terminal or a log may show them."""

from __future__ import annotations


def shown(msg: str) -> str:
    """``msg`` as one line of the terminal or a log: a file name's control characters (a newline, a
    terminal escape sequence) and undecodable bytes (surrogate escapes) are written as Python
    escapes. Raw, a name could split a log line in two, retitle or recolour the terminal, or (as a
    lone surrogate on a strict stream) stop the run's log with an encoding error."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in msg)
