"""Text a plain text column of every backend can keep: SQLite cannot encode a lone surrogate
as UTF-8, and Postgres refuses both a lone surrogate and NUL in `text`. The journals and memory
share the rule, and a strategy sizing what it stores (reflexion's lessons) counts by it: free
text is stored with each such character as a visible escape, an id that holds one is refused
(an escaped id would no longer be the id given)."""

from __future__ import annotations

__all__ = ["MAX_ID_CHARS", "escaped", "storable"]

# The longest id a backend indexes (run and user ids of the journals, user ids of memory): an
# index entry of Postgres holds at most 2,704 bytes, and 512 characters are at most 2,048 in
# UTF-8. Every backend refuses a longer one, so they all keep the same ids.
MAX_ID_CHARS = 512


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
