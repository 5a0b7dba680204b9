"""Canonical readings of argument values: the spellings a rule's pattern is matched against.

A value can be read several ways (lexically normalised, resolved through symlinks, NFKC
folded, with lookalikes replaced, each command of a shell string). A deny or ask rule matches
when ANY reading matches; an allow rule only when EVERY reading does, and `strict_readings`
returns None (no allow match at all) for values that are ambiguous in a way readings cannot
capture: lookalike characters, mixed scripts, control characters, shell operators.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import re
import shlex
import unicodedata
from typing import Any
from urllib.parse import unquote, urlsplit

from loomgraph.protocols.spellings import as_latin, without_invisible

__all__ = ["generous_readings", "readings", "strict_readings"]

Reading = tuple[str, bool]  # (text, is one path)

# Characters a POSIX shell treats specially even inside double quotes, or that end a command.
SHELL_META = frozenset(";&|$`<>(){}\n\r\x00")
_ALWAYS_META = frozenset("$`\n\r\x00")  # expanded or splitting even inside quotes
_OPERATOR = re.compile(r"[;&|<>()]+")
_SUBST = re.compile(r"\$\(([^()]*)\)|`([^`]*)`")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_CJK = {"CJK", "HIRAGANA", "KATAKANA", "HANGUL", "IDEOGRAPHIC"}


def readings(value: Any) -> list[Reading]:
    """Every lexical reading of a value, as (text, is one path); the first is the main one.

    A string with whitespace that starts like a path may be one path with spaces or a command
    line: it has both readings, the whole string normalised as a path and word by word.
    """
    if not isinstance(value, str):
        if value is None or isinstance(value, bool | int | float):
            return [(json.dumps(value), False)]
        try:
            return [(json.dumps(value, sort_keys=True, separators=(",", ":"), default=str), False)]
        except (TypeError, ValueError):
            return [(str(value), False)]
    if is_path(value):
        return [(normpath(value), True)]
    out = [(_words(value, normpath), False)]
    if "://" not in value and value.startswith(("/", "~", "./", "../")):
        out.append((normpath(value), True))
    return out


def strict_readings(value: Any, kind: str | None) -> list[Reading] | None:
    """The readings an allow rule must match in full, or None when no allow may match."""
    if not isinstance(value, str):
        return readings(value)
    if unicodedata.normalize("NFKC", value) != value:
        return None  # a lookalike spelling: fullwidth letters, ligatures, compatibility forms
    if kind == "command":
        return _command_strict(value)
    if kind == "path" and _path_spelling(value) != value:
        return None  # a URL, %-escapes or backslashes: which file it names depends on the tool
    found = _resolved(value) if kind == "path" else _with_resolved(value)
    odd = _CONTROL.search(value) or SHELL_META & set(value) or _odd_segment(value)
    if odd and any(is_one_path for _, is_one_path in found):
        return None
    if (kind == "path" or not any(c.isspace() for c in value)) and _mixed_scripts(value):
        return None
    return found


def generous_readings(value: Any, kind: str | None) -> list[Reading]:
    """The readings a deny or ask rule needs one of: folded, lookalike-free, resolved, split."""
    if not isinstance(value, str):
        return readings(value)
    folded = unicodedata.normalize("NFKC", value)
    bare = _visible(folded)
    texts = dict.fromkeys([value, folded, as_latin(folded), bare, as_latin(bare)])
    if kind != "command":
        # As a tool may read a path: a file URL's path, %-escapes decoded, `\` as `/`.
        texts |= dict.fromkeys(_path_spelling(text) for text in list(texts))
    out: list[Reading] = []
    for text in texts:
        out += _resolved(text) if kind == "path" else _with_resolved(text)
        if kind == "command":
            out += [(_words(part, normpath), False) for part in _commands(text)]
    return list(dict.fromkeys(out))


def is_path(text: str) -> bool:
    """A single word that names a file: has a `/` (or is `.`/`..`/`~…`), not a URL."""
    if not text or "://" in text or any(c.isspace() for c in text):
        return False
    return "/" in text or text in (".", "..") or text.startswith("~")


def normpath(text: str) -> str:
    """Lexically normalised; a leading `//` (implementation-defined in POSIX) becomes `/`."""
    norm = posixpath.normpath(text)
    return "/" + norm.lstrip("/") if norm.startswith("//") else norm


def realpath(text: str) -> str:
    """Resolved against the file system (symlinks, `..` after them); relative stays relative."""
    if text.startswith("~") or "\x00" in text:
        return normpath(text)  # `~` is not expanded; a NUL cannot name a file
    try:
        if text.startswith("/"):
            return normpath(os.path.realpath(text))
        here = os.path.realpath(os.getcwd())
        return normpath(os.path.relpath(os.path.realpath(text), here))
    except (OSError, ValueError):
        return normpath(text)


def _words(text: str, fix: Any) -> str:
    return re.sub(r"\S+", lambda m: fix(m.group()) if is_path(m.group()) else m.group(), text)


def _resolved(text: str) -> list[Reading]:
    """A declared path: lexical and resolved, both as one path."""
    return list(dict.fromkeys([(normpath(text), True), (realpath(text), True)]))


def _with_resolved(text: str) -> list[Reading]:
    """The lexical readings, and each again with its paths resolved through symlinks."""
    out = readings(text)
    for reading, is_one_path in list(out):
        if is_one_path:
            out.append((realpath(text), True))
        elif reading != (resolved := _words(text, realpath)):
            out.append((resolved, False))
    return list(dict.fromkeys(out))


def _command_strict(value: str) -> list[Reading] | None:
    """One simple command: no substitution or newline anywhere, no unquoted operator."""
    if _ALWAYS_META & set(value) or _CONTROL.search(value):
        return None
    try:
        lexer = shlex.shlex(value, posix=True, punctuation_chars=";&|<>()")
        lexer.whitespace_split = True
        tokens = list(lexer)
    except ValueError:
        return None  # unbalanced quotes: the shell would read it differently than we do
    if not tokens or any(_OPERATOR.fullmatch(t) for t in tokens) or "{" in tokens[0]:
        return None
    if SHELL_META & set(value):
        # Metacharacters only inside quotes: match the command as the shell will run it.
        joined = " ".join(tokens)
        return list(dict.fromkeys([(_words(joined, f), False) for f in (normpath, realpath)]))
    return _with_resolved(value)


def _commands(text: str) -> list[str]:
    """Each command a shell string runs: split at operators, and substitutions' insides."""
    parts = [m.group(1) or m.group(2) or "" for m in _SUBST.finditer(text)]
    parts += re.split(r"[;&|\n\r()`]+|\$\(", text)
    with contextlib.suppress(ValueError):  # unbalanced quotes: the splits above still count
        parts.append(" ".join(shlex.split(text)))
    return [p.strip() for p in parts if p.strip()]


def _visible(text: str) -> str:
    """The text without invisible format characters (zero-width space, joiners, BOM) and
    without the spaces around it: what a reader sees, and what many tools compare."""
    return without_invisible(text).strip()


def _path_spelling(text: str) -> str:
    """The path a URL-aware or Windows-aware tool may take `text` for."""
    if text[:5].lower() == "file:":
        text = urlsplit(text).path
    return unquote(text).replace("\\", "/")


def _odd_segment(value: str) -> bool:
    """A segment ending in a dot or space (`x.`, `...`): some systems drop those."""
    return any(
        seg not in (".", "..") and seg.endswith((".", " ")) for seg in value.split("/") if seg
    )


def _mixed_scripts(value: str) -> bool:
    """Letters from more than one script (Latin with Cyrillic, ...); CJK scripts are one."""
    scripts = set()
    for ch in value:
        if ch.isalpha():
            first = unicodedata.name(ch, "UNKNOWN").split(" ")[0]
            scripts.add("CJK" if first in _CJK else first)
    return len(scripts) > 1
