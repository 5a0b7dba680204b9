"""Text a plain text column of every backend can keep: SQLite cannot encode a lone surrogate
as UTF-8, and Postgres refuses both a lone surrogate and NUL in `text`. The journals and memory
share the rule, and a strategy sizing what it stores (reflexion's lessons) counts by it: free
text is stored with each such character as a visible escape, an id that holds one is refused
(an escaped id would no longer be the id given)."""

from __future__ import annotations

__all__ = ["escaped", "storable"]


def storable(text: str) -> bool:
    """Whether every backend can keep `text` in a text column as it is."""
    if "\x00" in text:
        return False
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def escaped(text: str) -> str:
    """`text` with each lone surrogate written as its escape (`\\udcff`) and each NUL as
    `\\x00`, visibly: the same text on every backend. Storable text is returned as it is."""
    if storable(text):
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
