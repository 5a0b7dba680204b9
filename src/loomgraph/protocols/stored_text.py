"""Text a plain text column of every backend can keep: SQLite cannot encode a lone surrogate
as UTF-8, and Postgres refuses both a lone surrogate and NUL in `text`. The journals and memory
share the rule, and a strategy sizing what it stores (reflexion's lessons) counts by it: free
text is stored with each such character as a visible escape, an id that holds one is refused
(an escaped id would no longer be the id given)."""

from __future__ import annotations

__all__ = ["MAX_ID_BYTES", "MAX_ID_CHARS", "escaped", "id_length_problem", "storable"]

# The longest id a backend indexes (run and user ids of the journals, user and session ids of
# memory): an index entry of Postgres holds at most 2,704 bytes, and memory indexes two ids in
# one entry (user and session, user and run), so an id is at most 512 characters and 1,024
# bytes in UTF-8. Every backend refuses a longer one, so they all keep the same ids.
MAX_ID_CHARS = 512
MAX_ID_BYTES = 1024


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


def id_length_problem(value: str) -> str | None:
    """Why `value` is too long for an indexed id (`MAX_ID_CHARS`, `MAX_ID_BYTES`), or None."""
    if len(value) > MAX_ID_CHARS:
        return f"{len(value):,} characters, over the limit of {MAX_ID_CHARS}"
    if not value.isascii():
        size = len(value.encode("utf-8", "surrogatepass"))
        if size > MAX_ID_BYTES:
            return f"{size:,} bytes in UTF-8, over the limit of {MAX_ID_BYTES:,}"
    return None


def escaped(text: str) -> str:
    """`text` with each lone surrogate written as its escape (`\\udcff`) and each NUL as
    `\\x00`, visibly: the same text on every backend. Storable text is returned as it is."""
    if storable(text):
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
