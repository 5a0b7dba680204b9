"""Driver errors turned into a backend's typed errors, written once for every backend."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

Translate = Callable[[Exception], Exception]


def keep(err: Exception) -> Exception:
    """No translation: every error passes unchanged."""
    return err


@contextmanager
def translated(translate: Translate, *, hide_cause: bool = False) -> Iterator[None]:
    """Raise `translate(err)` instead of an error of the block (unchanged when it returns
    `err`); `hide_cause` drops the driver's error from the traceback (it may name a password)."""
    try:
        yield
    except Exception as err:
        new = translate(err)
        if new is err:
            raise
        raise new from (None if hide_cause else err)
