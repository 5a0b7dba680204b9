"""Characters that make shown text read other than it is, and how they are shown: one rule
for the terminal (`cli.console.safe`) and the run viewer (`serve.pages.shown`).

C0 controls and DEL (ESC starts terminal sequences: colours, the window title, clipboard
writes), C1 controls (0x9b is CSI on its own), and Unicode format characters: bidi marks,
embeddings, overrides and isolates (U+202E draws what follows right to left), zero-width and
other invisible ones (not the joiners emoji and scripts need), line and paragraph separators.
Each is shown as its escape (`\\x1b`, `\\u202e`); printable text, any script, stays as it is.
"""

from __future__ import annotations

__all__ = ["DISGUISING", "shown_escape"]

# The characters, as the body of a regular expression's character class.
DISGUISING = "\x00-\x1f\x7f-\x9f\u061c\u200b\u200e\u200f\u2028-\u202e\u2060-\u206f\ufeff"


def shown_escape(char: str) -> str:
    """One character as its visible escape: `\\xNN` below U+0100, else `\\uNNNN`."""
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
