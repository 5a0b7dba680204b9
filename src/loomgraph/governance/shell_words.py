"""The commands a shell string may run, spelled the ways a deny or ask rule must see them.

`deny: shell(cmd=rm *)` is matched against each command of the string: split at operators and
newlines, inside `$(...)` and backticks, and each command again as a shell runs the same
program under another spelling:

- `${IFS}`/`$IFS` read as a space, `$@`, `$*` and `$1`…`$9` as nothing (a shell run without
  arguments), a backslash-newline (line continuation) as nothing;
- the words as `shlex` splits them (`r''m`, `\\rm` and `'rm'` are `rm`);
- without leading `{`, `}`, `(`, `)`, `!`, `if`, `then`, `else`, `elif`, `while`, `until`, `do` and
  `VAR=value` assignments;
- without a leading `command`, `exec`, `builtin`, `nohup` or `time` and their options;
- after `env`, `sudo`, `doas`, `nice`, `timeout` or `xargs`, each of the next words as where
  the command starts (their options may take values), read the same ways;
- the arguments of `eval`, and the script of `sh -c SCRIPT` (`bash`, `dash`, `zsh`, `ksh`,
  `ash`), read as shell strings in turn (three levels deep);
- a `{a,b,c}` brace list as the command word expanded (`{rm,-rf,/}` is `rm -rf /`);
- the command word by its base name (`/bin/rm` is `rm`).

Every spelling is only ever added, and only deny and ask rules see them: an allow rule is
matched against the command as written (`canonical.strict_readings`), which refuses `$`,
operators and newlines outright, so an added reading can make a call denied, never allowed.
"""

from __future__ import annotations

import posixpath
import re
import shlex

__all__ = ["commands"]

KEYWORDS = frozenset(
    {"{", "}", "(", ")", "!", "if", "then", "else", "elif", "while", "until", "do"}
)
PREFIXES = frozenset({"command", "exec", "builtin", "nohup", "time"})
WRAPPERS = frozenset({"env", "sudo", "doas", "nice", "timeout", "xargs"})
SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "ash"})
_DEPTH = 3  # eval and `sh -c` read this many levels deep
_STEPS = 64  # respellings of one command, and tails read after a wrapper, at most
_SUBST = re.compile(r"\$\(([^()]*)\)|`([^`]*)`")
_SPLIT = re.compile(r"[;&|\n\r()`]+|\$\(")
_PUNCTUATION = ";&|<>()\n\r"
_OPERATOR = re.compile(r"[;&|<>()\n\r]+")
_IFS = re.compile(r"\$\{IFS\}|\$IFS(?![A-Za-z0-9_])")
_EMPTY = re.compile(r"\$\{[@*1-9]\}|\$[@*1-9]")
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\+?=")


def commands(text: str) -> list[str]:
    """Each command `text` may run, in every spelling above; the first ones as written."""
    return list(_Reader().commands(text, 0))


class _Reader:
    """One reading of a string: remembers what it split and read, since the same script is
    reached through several readings of an `eval` (and the same text split more than once)."""

    def __init__(self) -> None:
        self.read: dict[tuple[str, int], tuple[str, ...]] = {}
        self.split: dict[tuple[str, bool], tuple[str, ...]] = {}

    def commands(self, text: str, depth: int) -> tuple[str, ...]:
        """The commands `text` may run, read `depth` levels inside eval or `sh -c`."""
        if (text, depth) not in self.read:
            out: list[str] = []
            expanded = _EMPTY.sub("", _IFS.sub(" ", text.replace("\\\n", "")))
            for spelled in dict.fromkeys([text, expanded]):
                for part, words in self.parts(spelled):
                    out += [part, " ".join(words), *self.respelled(words, depth)]
            self.read[text, depth] = tuple(c for c in dict.fromkeys(out) if c)
        return self.read[text, depth]

    def words(self, text: str, operators: bool = False) -> list[str]:
        """`_words`, split once per text."""
        if (text, operators) not in self.split:
            self.split[text, operators] = _words(text, operators=operators)
        return list(self.split[text, operators])

    def parts(self, text: str) -> list[tuple[str, list[str]]]:
        """The commands of `text`, each as written and as its words: split at operators and
        newlines as written (inside quotes too; their words also split at blanks only), the
        insides of substitutions, the whole as `shlex` reads it, and split at the operators
        `shlex` finds outside quotes."""
        parts = [m.group(1) or m.group(2) or "" for m in _SUBST.finditer(text)]
        parts += _SPLIT.split(text)
        out = [(p.strip(), self.words(p.strip())) for p in parts if p.strip()]
        out += [(p, p.split()) for p, _ in list(out)]  # as written, quotes and `#` kept
        words = self.words(text)
        out.append((" ".join(words), words))
        command: list[str] = []
        for token in [*self.words(text, operators=True), ";"]:
            if _OPERATOR.fullmatch(token):
                out.append((" ".join(command), command))
                command = []
            else:
                command.append(token)
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
            if _brace_list(word):
                words = [*word[1:-1].split(","), *words[1:]]
            elif word in KEYWORDS or _ASSIGNMENT.match(word):
                words = words[1:]
            elif base in PREFIXES:
                words = _without_options(words[1:])
            elif base in WRAPPERS:
                # Every later word may start the command; a wrapper in there is among them too.
                last = 1 if wrapped else min(len(words), _STEPS)
                for i in range(1, last):
                    out += [" ".join(words[i:]), *self.respelled(words[i:], depth, wrapped=True)]
                break
            elif base == "eval" or base in SHELLS:
                script = " ".join(words[1:]) if base == "eval" else _script(words[1:])
                if script is not None and depth < _DEPTH:
                    out += self.commands(script, depth + 1)
                break
            elif base != word:
                words = [base, *words[1:]]
            else:
                break
            out.append(" ".join(words))
        return out


def _words(text: str, *, operators: bool = False) -> tuple[str, ...]:
    """The words of `text` as a shell splits them (with `operators`, each run of `; & | < >
    ( )` and each newline a word of its own). An unclosed quote or a trailing backslash, which
    the shell refuses, is read closed at the end; failing that, the text is split at blanks."""
    candidate = text
    for _ in range(2):
        lexer = shlex.shlex(candidate, posix=True, punctuation_chars=_PUNCTUATION * operators)
        lexer.whitespace_split = True
        if operators:
            lexer.whitespace = " \t"
        try:
            return tuple(lexer)
        except ValueError:
            state = str(getattr(lexer, "state", None) or "")  # where the text ended
            inside = str(getattr(lexer, "escapedstate", None) or "")
            closing = state if state in "'\"" else " " + (inside if inside in "'\"" else "")
            candidate = text + closing
    return tuple(text.split())


def _without_options(words: list[str]) -> list[str]:
    """Past the options of `command -p`, `time -p`, `exec -c` (and `exec -a NAME`)."""
    while words and words[0].startswith("-") and words[0] != "-":
        if words[0] == "--":
            return words[1:]
        words = words[2:] if words[0] == "-a" else words[1:]
    return words


def _script(words: list[str]) -> str | None:
    """The script of `sh -c SCRIPT` (`-c` maybe among other options, `-xc`), if any."""
    for i, word in enumerate(words[:-1]):
        if word.startswith("-") and not word.startswith("--") and "c" in word[1:]:
            return words[i + 1]
    return None


def _brace_list(word: str) -> bool:
    """`{a,b,c}`: a brace list (not nested) the shell expands into its items."""
    inner = word[1:-1]
    return word[:1] == "{" and word[-1:] == "}" and "," in inner and not set("{}") & set(inner)
