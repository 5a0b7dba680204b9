"""The commands a shell string may run, spelled the ways a deny or ask rule must see them.

`deny: shell(cmd=rm *)` is matched against each command of the string: split at operators and
newlines, inside `$(...)` and backticks, and each command again as a shell runs the same
program under another spelling:

- `${IFS}`/`$IFS` read as a space, `$@`, `$*` and `$1`…`$9` as nothing (a shell run without
  arguments), a backslash-newline (line continuation) as nothing;
- the words as `shlex` splits them (`r''m`, `\\rm` and `'rm'` are `rm`);
- without leading `{`, `}`, `(`, `)`, `!`, `if`, `then`, `else`, `elif`, `while`, `until`, `do`,
  `coproc` (and `coproc NAME`/`function NAME` before a `{`) and `VAR=value` assignments;
- without redirections (`>x`, `2>&1`, `< x`, `<<EOF`, `<<<x`, `&>x`, `{fd}>x`): before the command
  word, and wherever they are among the words (a command is also read split at them);
- without a leading `command`, `exec`, `builtin`, `nohup` or `time` and their options;
- after `env`, `sudo`, `doas`, `nice`, `timeout` or `xargs`, each of the next words as where
  the command starts (their options may take values), read the same ways;
- the arguments of `eval`, and the script of `sh -c SCRIPT` (`bash`, `dash`, `zsh`, `ksh`,
  `ash`; the first word after the options, as sh finds it: `sh -e -c X`, `sh -c -- X`,
  `bash -lc X`), read as shell strings in turn (three levels deep);
- a `{a,b,c}` brace list as the command word expanded (`{rm,-rf,/}` is `rm -rf /`);
- the command word by its base name (`/bin/rm` is `rm`).

Every spelling is only ever added, and only deny and ask rules see them: an allow rule is
matched against the command as written (`canonical.strict_readings`), which refuses `$`,
operators and newlines outright, so an added reading can make a call denied, never allowed.

The work is bounded: reading costs units for each character split into words, each character
of each command produced, and each part, word and respelling; a value whose reading would cost
more than `WORK_PER_CHAR` units a character (at least `WORK_FLOOR`, at most `WORK_LIMIT`)
raises `Unreadable`, which a deny or ask rule takes as a match (it cannot be ruled out). The
words are split by a linear scanner that reads as `shlex` does (posix, split at blanks only),
without `shlex`'s quadratic cost on a long word.
"""

from __future__ import annotations

import posixpath
import re

from loomgraph.errors import LoomgraphError

__all__ = ["WORK_FLOOR", "WORK_LIMIT", "WORK_PER_CHAR", "Unreadable", "commands"]

KEYWORDS = frozenset(
    {"{", "}", "(", ")", "!", "if", "then", "else", "elif", "while", "until", "do", "coproc"}
)
NAMED = frozenset({"coproc", "function"})  # `coproc NAME { ...; }`, `function NAME { ...; }`
PREFIXES = frozenset({"command", "exec", "builtin", "nohup", "time"})
WRAPPERS = frozenset({"env", "sudo", "doas", "nice", "timeout", "xargs"})
SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "ash"})
WORK_PER_CHAR = 64  # units of work per character of the value read, at most ...
WORK_FLOOR = 200_000  # ... but at least this many ...
WORK_LIMIT = 4_000_000  # ... and at most this many (about half a second at worst)
_DEPTH = 3  # eval and `sh -c` read this many levels deep
_STEPS = 64  # respellings of one command, and tails read after a wrapper, at most
_STEP = 16  # units of work a part, a word or a respelling costs besides its characters
_SCAN = 2  # units of work per character split into words
_SUBST = re.compile(r"\$\(([^()]*)\)|`([^`]*)`")
_SPLIT = re.compile(r"[;&|\n\r()`]+|\$\(")
_OPERATOR = re.compile(r"[;&|<>()\n\r]+")
# One shell operator of a run `_OPERATOR` found (`;>` is `;` and `>`), the longest first.
_OPERATORS = re.compile(r"&>>|&>|>>|>&|>\||<<<|<<|<&|<>|&&|\|\||;;|\|&|[;&|<>()\n\r]")
_REDIRECT = re.compile(
    r"(?:[0-9]+|\{[A-Za-z_][A-Za-z0-9_]*\})?(?:&>>?|<<<|<<|<>|<&|>&|>>|>\||<|>)(.*)", re.S
)
_IO_NUMBER = re.compile(r"[0-9]+|\{[A-Za-z_][A-Za-z0-9_]*\}")
_LONG_WITH_VALUE = frozenset({"--rcfile", "--init-file"})  # bash long options taking a value
_IFS = re.compile(r"\$\{IFS\}|\$IFS(?![A-Za-z0-9_])")
_EMPTY = re.compile(r"\$\{[@*1-9]\}|\$[@*1-9]")
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\+?=")
# The scanner, one token at a time: a word (plain characters, escapes, quoted strings), a
# comment (to the end of the line, its newline too, as `shlex`), blanks, an operator run (with
# `operators`), and a quote left open or a backslash at the end, with the rest of the text.
_WORD = r"""((?:[^%s'"\\#]++|\\.|'[^']*+'|"[^"\\]*+(?:\\.[^"\\]*+)*+")++)"""
_TOKENS = (
    re.compile(_WORD % " \t\r\n" + r"|\#[^\n]*+\n?|[ \t\r\n]++|()(.).*", re.S),
    re.compile(_WORD % " \t;&|<>()\n\r" + r"|\#[^\n]*+\n?|[ \t]++|([;&|<>()\n\r]++)|(.).*", re.S),
)
_PIECE = re.compile(r"""'([^']*)'|"((?:[^"\\]|\\.)*)"|\\(.)|([^'"\\]+)""", re.S)
_DOUBLE_ESCAPE = re.compile(r'\\(["\\])')


class Unreadable(LoomgraphError):
    """Reading the value would cost more work than its length allows (`WORK_PER_CHAR`)."""


def commands(*texts: str, size: int | None = None) -> list[str]:
    """Each command the `texts` (spellings of one value of `size` characters, by default
    their total length) may run, in every spelling above; the first ones as written. Raises
    `Unreadable` when that would cost more than the value's work budget."""
    length = sum(map(len, texts)) if size is None else size
    reader = _Reader(min(WORK_LIMIT, max(WORK_FLOOR, WORK_PER_CHAR * length)))
    out = [c for text in texts for c in reader.commands(text, 0)]
    return list(dict.fromkeys(out))


class _Reader:
    """One reading of a string: remembers what it split and read, since the same script is
    reached through several readings of an `eval` (and the same text split more than once),
    and counts the work it has left (`left`, in the units above)."""

    def __init__(self, budget: int) -> None:
        self.left = budget
        self.read: dict[tuple[str, int], tuple[str, ...]] = {}
        self.split: dict[tuple[str, bool], tuple[str, ...]] = {}

    def charge(self, units: int) -> None:
        self.left -= units
        if self.left < 0:
            raise Unreadable("the string has more readings than its length allows")

    def commands(self, text: str, depth: int) -> tuple[str, ...]:
        """The commands `text` may run, read `depth` levels inside eval or `sh -c`."""
        self.charge(_STEP)
        if (text, depth) not in self.read:
            out: dict[str, None] = {}
            seen: set[tuple[str, ...]] = set()  # the same words are respelled the same way
            expanded = _EMPTY.sub("", _IFS.sub(" ", text.replace("\\\n", "")))
            for spelled in dict.fromkeys([text, expanded]):
                for part, words in self.parts(spelled):
                    joined = " ".join(words)
                    self.charge(len(part) + len(joined) + _STEP)
                    out[part] = out[joined] = None
                    if (key := tuple(words)) not in seen:
                        seen.add(key)
                        out.update(dict.fromkeys(self.respelled(words, depth)))
            self.read[text, depth] = tuple(c for c in out if c)
        found = self.read[text, depth]
        self.charge(len(found))
        return found

    def words(self, text: str, operators: bool = False) -> list[str]:
        """`_words`, split once per text."""
        if (text, operators) not in self.split:
            self.charge(_SCAN * len(text) + _STEP)
            self.split[text, operators] = _words(text, operators=operators)
        return list(self.split[text, operators])

    def parts(self, text: str) -> list[tuple[str, list[str]]]:
        """The commands of `text`, each as written and as its words: split at operators and
        newlines as written (inside quotes too; their words also split at blanks only), the
        insides of substitutions, the whole as the shell splits it into words, and split at
        the operators it finds outside quotes: at each, and at each but a redirection, which
        is left out with its target (`rm>x -rf /` is `rm -rf /`)."""
        found = [*_SUBST.findall(text), *_SPLIT.split(text)]
        self.charge(_STEP * len(found))
        inside = (p if isinstance(p, str) else p[0] or p[1] for p in found)
        pieces = [p for p in dict.fromkeys(p.strip() for p in inside) if p]
        out = [(p, self.words(p)) for p in pieces]
        out += [(p, p.split()) for p in pieces]  # as written, quotes and `#` kept
        words = self.words(text)
        out.append((" ".join(words), words))
        tokens = self.words(text, operators=True)
        self.charge(_STEP * len(tokens))
        for commands in (_split_at_operators(tokens), _without_redirections(tokens)):
            out += [(" ".join(command), command) for command in commands]
        return out

    def respelled(self, words: list[str], depth: int, *, wrapped: bool = False) -> list[str]:
        """The command `words` run, respelled step by step: each step drops or replaces a word.
        `wrapped`: these words are already one of the tails of a wrapper (`sudo`) being read."""
        out: list[str] = []
        for _ in range(_STEPS):
            if not words:
                break
            word = words[0]
            base = posixpath.basename(word) or word
            redirect = _REDIRECT.fullmatch(word)
            if _brace_list(word):
                words = [*word[1:-1].split(","), *words[1:]]
            elif redirect:
                words = words[1:] if redirect.group(1) else words[2:]
            elif word in NAMED and words[2:3] in (["{"], ["("]):
                words = words[2:]
            elif word in KEYWORDS or _ASSIGNMENT.match(word):
                words = words[1:]
            elif base in PREFIXES:
                words = _without_options(words[1:])
            elif base in WRAPPERS:
                # Every later word may start the command; a wrapper in there is among them too.
                last = 1 if wrapped else min(len(words), _STEPS)
                for i in range(1, last):
                    tail = " ".join(words[i:])
                    self.charge(len(tail) + _STEP)
                    out += [tail, *self.respelled(words[i:], depth, wrapped=True)]
                break
            elif base == "eval" or base in SHELLS:
                scripts = [" ".join(words[1:])] if base == "eval" else _scripts(words[1:])
                for script in scripts if depth < _DEPTH else ():
                    out += self.commands(script, depth + 1)
                break
            elif base != word:
                words = [base, *words[1:]]
            else:
                break
            out.append(" ".join(words))
            self.charge(len(out[-1]) + _STEP)
        return out


def _words(text: str, *, operators: bool = False) -> tuple[str, ...]:
    """The words of `text` as a shell splits them (with `operators`, each run of `; & | < >
    ( )` and each newline a word of its own), as `shlex` (posix, split at blanks) does. An
    unclosed quote or a trailing backslash, which the shell refuses, is read closed at the end;
    failing that, the text is split at blanks."""
    candidate = text
    for _ in range(2):
        tokens = _TOKENS[operators].findall(candidate)
        if not tokens or not tokens[-1][2]:
            return tuple(_unquoted(word) if word else op for word, op, _ in tokens if word or op)
        opened = tokens[-1][2]  # a quote left open, or a backslash at the very end
        odd = (len(candidate) - len(candidate.rstrip("\\"))) % 2
        candidate = text + (opened if opened == "'" or (opened == '"' and not odd) else " ")
    return tuple(text.split())


def _unquoted(word: str) -> str:
    """A word without its quotes, its escapes read (in double quotes only `\"` and `\\`)."""
    if "'" not in word and '"' not in word and "\\" not in word:
        return word
    return "".join(
        single + escaped + plain + (_DOUBLE_ESCAPE.sub(r"\1", double) if double else "")
        for single, double, escaped, plain in _PIECE.findall(word)
    )


def _without_options(words: list[str]) -> list[str]:
    """Past the options of `command -p`, `time -p`, `exec -c` (and `exec -a NAME`)."""
    while words and words[0].startswith("-") and words[0] != "-":
        if words[0] == "--":
            return words[1:]
        words = words[2:] if words[0] == "-a" else words[1:]
    return words


def _scripts(words: list[str]) -> list[str]:
    """The script of `sh -c SCRIPT`: the first word after the options, as sh finds it (`-c`
    among them, `-o NAME` taking a value, `--` or `-` ending them; `-xc`, `sh -e -c X`), with
    the words that look like redirections left out and kept, and the word right after `-c`."""
    out = [_script(words, redirections) for redirections in (True, False)]
    for i, word in enumerate(words[:-1]):
        if word.startswith("-") and not word.startswith("--") and "c" in word[1:]:
            out.append(words[i + 1])
            break
    return list(dict.fromkeys(script for script in out if script is not None))


def _script(words: list[str], redirections: bool) -> str | None:
    """`_scripts`, with or without leaving out the words that look like redirections."""
    script, i = False, 0
    while i < len(words):
        word = words[i]
        redirect = _REDIRECT.fullmatch(word) if redirections else None
        if word in ("--", "-"):
            i += 1
            break
        if redirect:
            i += 1 if redirect.group(1) else 2
        elif word.startswith("--"):
            i += 2 if word in _LONG_WITH_VALUE else 1
        elif len(word) > 1 and word[0] in "-+":
            script = script or (word[0] == "-" and "c" in word)
            i += 2 if set(word) & set("oO") else 1
        else:
            break
    return words[i] if script and i < len(words) else None


def _split_at_operators(tokens: list[str]) -> list[list[str]]:
    """The commands of `tokens` (`_words` with operators), split at every operator."""
    out: list[list[str]] = [[]]
    for token in tokens:
        if _OPERATOR.fullmatch(token):
            out.append([])
        else:
            out[-1].append(token)
    return out


def _without_redirections(tokens: list[str]) -> list[list[str]]:
    """The commands of `tokens`, split at the operators that end a command, each without its
    redirections: the operator, its target and a file descriptor number before it."""
    out: list[list[str]] = [[]]
    target = False
    for token in tokens:
        if not _OPERATOR.fullmatch(token):
            if not target:
                out[-1].append(token)
            target = False
            continue
        for i, operator in enumerate(_OPERATORS.findall(token)):
            target = "<" in operator or ">" in operator
            if target and i == 0 and out[-1] and _IO_NUMBER.fullmatch(out[-1][-1]):
                out[-1].pop()  # `2>x`, or `2 >x`: which one the words no longer tell
            elif not target:
                out.append([])
    return out


def _brace_list(word: str) -> bool:
    """`{a,b,c}`: a brace list (not nested) the shell expands into its items."""
    inner = word[1:-1]
    return word[:1] == "{" and word[-1:] == "}" and "," in inner and not set("{}") & set(inner)
