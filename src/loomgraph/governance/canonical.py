"""Canonical readings of argument values: the spellings a rule's pattern is matched against.

A value can be read several ways (lexically normalised, resolved through symlinks, a relative
path also from `/`, NFKC folded, with lookalikes replaced, each command of a shell string in
the spellings of `shell_words`, the addresses, URL or host of `addresses`). A deny or ask
rule matches when ANY reading matches; an allow rule only when EVERY reading does (of one
spelling: a relative path is spelled relative or absolute), and `strict_readings` returns
None (no allow match at all) for values that are ambiguous in a way readings cannot capture:
lookalike characters, mixed scripts, control characters, shell operators.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shlex
import unicodedata
from collections.abc import Callable
from functools import cache
from typing import Any
from urllib.parse import unquote, urlsplit

from loomgraph.governance.addresses import network_readings
from loomgraph.governance.shell_words import Unreadable, commands
from loomgraph.protocols.spellings import as_latin, without_invisible

__all__ = ["generous_readings", "readings", "strict_readings"]

Reading = tuple[str, bool]  # (text, is one path)

# Characters a POSIX shell treats specially even inside double quotes, or that end a command.
SHELL_META = frozenset(";&|$`<>(){}\n\r\x00")
_ALWAYS_META = frozenset("$`\n\r\x00")  # expanded or splitting even inside quotes
_OPERATOR = re.compile(r"[;&|<>()]+")
# A word (run of non-blanks) with a `/`, or `.`, `..`, or starting with `~`: `is_path` but
# for URLs, found without a Python call for every word.
_PATH_WORD = re.compile(r"(?<!\S)(?=\S*/|\.\.?(?!\S)|~)\S+")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_CJK = {"CJK", "HIRAGANA", "KATAKANA", "HANGUL", "IDEOGRAPHIC"}
# A path this long (in characters, so at least as many bytes) is refused by every system call
# (ENAMETOOLONG): it names a file only once a tool normalises it shorter, as `normpath` does.
_PATH_MAX = 4096


def readings(value: Any, *, program: bool = False) -> list[Reading]:
    """Every lexical reading of a value, as (text, is one path); the first is the main one.

    A string with whitespace that starts like a path may be one path with spaces or a command
    line: it has both readings, the whole string normalised as a path and word by word. With
    `program` (an allow rule's reading), the value or its first word may be a program to run,
    so its normalised spelling keeps a `/` (`_as_program`).
    """
    if not isinstance(value, str):
        if value is None or isinstance(value, bool | int | float):
            return [(json.dumps(value), False)]
        try:
            return [(json.dumps(value, sort_keys=True, separators=(",", ":"), default=str), False)]
        except (TypeError, ValueError):
            return [(str(value), False)]
    norm = _as_program(normpath) if program else normpath
    if is_path(value):
        return [(norm(value), True)]
    out = [(_words(value, normpath, program=program), False)]
    if "://" not in value and value.startswith(("/", "~", "./", "../")):
        out.append((norm(value), True))
    return out


def strict_readings(value: Any, kind: str | None) -> list[list[Reading]] | None:
    """The readings an allow rule must match, or None when no allow may match.

    Each list is every reading of the value in one spelling, and an allow rule must match all
    the readings of one of them: a relative path is spelled relative (as written, and resolved)
    and absolute (joined to the working directory, and resolved), which name the same files.
    """
    if not isinstance(value, str):
        return [readings(value)]
    if unicodedata.normalize("NFKC", value) != value:
        return None  # a lookalike spelling: fullwidth letters, ligatures, compatibility forms
    if kind == "command":
        found = _command_strict(value)
        return None if found is None else [found]
    if kind == "path" and _path_spelling(value) != value:
        return None  # a URL, %-escapes or backslashes: which file it names depends on the tool
    found = _resolved(value) if kind == "path" else _with_resolved(value, program=True)
    odd = _CONTROL.search(value) or SHELL_META & set(value) or _odd_segment(value)
    if odd and any(is_one_path for _, is_one_path in found):
        return None
    if (kind == "path" or not any(c.isspace() for c in value)) and _mixed_scripts(value):
        return None
    if (kind == "path" or is_path(value)) and not value.startswith(("/", "~")):
        return [found, list(dict.fromkeys([(rooted(value), True), (absolute(value), True)]))]
    return [found]


def generous_readings(value: Any, kind: str | None) -> list[Reading] | None:
    """The readings a deny or ask rule needs one of: folded, lookalike-free, resolved, split,
    and for a value of no declared kind its addresses, URL and host (`addresses`).

    None for a command that cannot be read within its work budget (`shell_words.Unreadable`),
    or an address list no parser reads: it cannot be ruled out, so every deny or ask rule on
    it matches.
    """
    if not isinstance(value, str):
        return readings(value)
    folded = unicodedata.normalize("NFKC", value)
    bare = _visible(folded)
    texts = dict.fromkeys([value, folded, as_latin(folded), bare, as_latin(bare)])
    if kind != "command":
        # As a tool may read a path: a file URL's path, %-escapes decoded, `\` as `/`.
        texts |= dict.fromkeys(_path_spelling(text) for text in list(texts))
    # Each path word is resolved once however many readings hold it.
    every = tuple(cache(fix) for fix in (normpath, realpath, rooted, absolute))
    out: list[Reading] = []
    for text in texts:
        out += _resolved(text, every[1:]) if kind == "path" else _with_resolved(text, every[1:])
        if kind is None and _bare_word(text):
            # A name may be a file in the working directory (`passwd`, `my docs/x`): a deny
            # on that directory must not be dodged by leaving out `./`.
            out += [(every[2](text), True), (every[3](text), True)]
    if kind == "command":
        try:
            parts = commands(*texts, size=len(value))
        except Unreadable:
            return None
        out += [(_words(part, fix), False) for part in parts for fix in every]
    elif kind is None:
        # As a mail library or HTTP client may take it: the addresses of an address list, a
        # URL or host with the host in its other spellings (root dot, IDNA, punycode).
        for text in texts:
            found = network_readings(text)
            if found is None:
                return None  # an address list no parser reads: it cannot be ruled out
            out += [(reading, False) for reading in found]
    return list(dict.fromkeys(out))


def is_path(text: str) -> bool:
    """A single word that names a file: has a `/` (or is `.`/`..`/`~…`), not a URL."""
    if not text or "://" in text or any(c.isspace() for c in text):
        return False
    return "/" in text or text in (".", "..") or text.startswith("~")


def _bare_word(text: str) -> bool:
    """What may name a file where it is run: not absolute, `~…` or a URL, one line, and one
    word or a text with a `/` (`passwd`, `my docs/x`); not free text like an e-mail body."""
    if not text or text.startswith(("/", "~")) or "://" in text or "\n" in text:
        return False
    return "/" in text or not any(c.isspace() for c in text)


def normpath(text: str) -> str:
    """Lexically normalised; a leading `//` (implementation-defined in POSIX) becomes `/`."""
    norm = posixpath.normpath(text)
    return "/" + norm.lstrip("/") if norm.startswith("//") else norm


def realpath(text: str) -> str:
    """Resolved against the file system (symlinks, `..` after them); relative stays relative.

    `absolute` is the same file named from `/`: `../../etc/b` may be `/etc/b`.
    """
    if text.startswith("~") or "\x00" in text:
        return normpath(text)  # `~` is not expanded; a NUL cannot name a file
    if len(text) >= _PATH_MAX and len(text := normpath(text)) >= _PATH_MAX:
        return text  # no system call takes it (nor the file system's time to resolve it)
    try:
        if text.startswith("/"):
            return normpath(os.path.realpath(text))
        here = os.path.realpath(os.getcwd())
        return normpath(os.path.relpath(os.path.realpath(text), here))
    except (OSError, ValueError):
        return normpath(text)


def absolute(text: str) -> str:
    """Resolved like `realpath`, a relative path as the absolute path it names."""
    if text.startswith(("/", "~")) or "\x00" in text:
        return realpath(text)
    if len(text) >= _PATH_MAX and len(text := normpath(text)) >= _PATH_MAX:
        return rooted(text)
    try:
        return normpath(os.path.realpath(text))
    except (OSError, ValueError):
        return normpath(text)


def rooted(text: str) -> str:
    """Lexically normalised after joining a relative path to the working directory."""
    if text.startswith(("/", "~")) or "\x00" in text:
        return normpath(text)
    try:
        return normpath(os.path.join(os.path.realpath(os.getcwd()), text))
    except (OSError, ValueError):
        return normpath(text)


# How paths are resolved for an allow rule: relative ones stay relative (`strict_readings`
# spells them absolute separately). A deny or ask rule reads them both ways.
_RELATIVE: tuple[Callable[[str], str], ...] = (realpath,)
_DOTS = frozenset({".", ".."})


def _as_program(fix: Callable[[str], str]) -> Callable[[str], str]:
    """`fix`, but a name it would take every `/` from is spelled `./…`: a program named with a
    `/` (`./ls`, `ls/`, `bin/../ls`) is that file, not the `ls` the shell finds on PATH.
    (`.` and `..` stay as they are: they name directories, not a program, and `./..` would
    fit a glob `./**` that `..` does not.)"""

    def fixed(word: str) -> str:
        out = fix(word)
        return "./" + out if "/" not in out and "/" in word and out not in _DOTS else out

    return fixed


def _words(text: str, fix: Callable[[str], str], *, program: bool = False) -> str:
    """`text` with `fix` applied to each word that `is_path`; with `program`, the first word
    names the program to run (`_as_program`)."""
    first, command = len(text) - len(text.lstrip()), _as_program(fix) if program else fix

    def one(m: re.Match[str]) -> str:
        word = m.group()
        if "://" in word:
            return word
        return command(word) if m.start() == first else fix(word)

    return _PATH_WORD.sub(one, text)


def _resolved(text: str, fixes: tuple[Callable[[str], str], ...] = _RELATIVE) -> list[Reading]:
    """A declared path: lexical and resolved, all as one path."""
    return list(dict.fromkeys([(normpath(text), True), *((fix(text), True) for fix in fixes)]))


def _with_resolved(
    text: str, fixes: tuple[Callable[[str], str], ...] = _RELATIVE, *, program: bool = False
) -> list[Reading]:
    """The lexical readings, and each again with its paths resolved through symlinks."""
    out = readings(text, program=program)
    for reading, is_one_path in list(out):
        for fix in fixes:
            if is_one_path:
                out.append(((_as_program(fix) if program else fix)(text), True))
            elif reading != (resolved := _words(text, fix, program=program)):
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
        found = [(_words(joined, f, program=True), False) for f in (normpath, realpath)]
        return list(dict.fromkeys(found))
    return _with_resolved(value, program=True)


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
