"""How text is disguised: invisible format characters, and letters of other scripts that look
like Latin ones. Shared by the permission rules' generous readings (governance) and the
taint check (engine), which may not import each other."""

from __future__ import annotations

import functools
import re
import sys
import unicodedata

__all__ = ["as_latin", "without_invisible"]

# Letters that look like Latin ones; enough for a deny reading, not a full confusables table.
_LOOKS_LIKE = "аеорсухіјѕԁԛԝАВЕКМНОРСТХІЈЅԌαορτυνΑΒΕΖΗΙΚΜΝΟΡΤΥΧℓ"
_LATIN = str.maketrans(_LOOKS_LIKE, "aeopcyxijsdqwABEKMHOPCTXIJSGaoptuvABEZHIKMNOPTYXl")
_LOOKALIKE = re.compile(f"[{_LOOKS_LIKE}]")


def as_latin(text: str) -> str:
    """`text` with lookalike letters read as the Latin ones they imitate."""
    # A search is 100x faster than translating every character, and most text has none.
    return text.translate(_LATIN) if _LOOKALIKE.search(text) else text


def without_invisible(text: str) -> str:
    """`text` without invisible format characters (Unicode category Cf: zero-width space and
    joiners, byte order mark, soft hyphen...)."""
    return text if text.isascii() else _invisible().sub("", text)  # ASCII has none


@functools.cache
def _invisible() -> re.Pattern[str]:
    """The format characters (Unicode category Cf) of this Python's Unicode version."""
    # Cf characters live in planes 0, 1 and 14; scanning those takes ~40 ms, once, when the
    # first non-ASCII text is read (all of Unicode would take 0.2 s). As ranges, the class
    # is searched 10x faster than as single characters.
    ranges: list[list[int]] = []
    for plane in (0, 1, 14):
        for cp in range(plane << 16, min((plane + 1) << 16, sys.maxunicode + 1)):
            if unicodedata.category(chr(cp)) == "Cf":
                if ranges and ranges[-1][1] == cp - 1:
                    ranges[-1][1] = cp
                else:
                    ranges.append([cp, cp])
    spans = (f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in ranges)
    return re.compile("[" + "".join(spans) + "]")
