"""Properties of canonical matching, over random paths in a real tree with symlinks and over
random shell strings:

- an allow decision for `fs(path:path=ROOT/**)` (or the undeclared `fs(path=ROOT/**)`) implies
  `os.path.realpath(value)` is inside ROOT;
- a deny rule `fs(path=OUTSIDE/**)` denies every value whose real path is inside OUTSIDE;
- an allow decision for `shell(cmd:command=ls *)` implies the value is one simple `ls` command:
  no substitution or newline anywhere, no unquoted operator, and `ls` as its first word;
- the same two for relative paths, from several working directories, and rules written
  absolute or relative;
- adding a reading never turns a deny into an allow: a shell string denied by
  `shell(cmd=rm *)` stays denied behind an assignment, `command`, `{`, `sudo`, ...; every
  spelling of `rm -rf /` built from those is denied, and so is `rm -rf /` behind redirections
  (`>/dev/null`, `2>&1`, `<<<x`), keywords, wrappers and `sh -c --`; a dotted name is denied
  when its nested value or its literal key matches, and allowed only when both do;
- a deny rule on an e-mail domain denies an address there in every form a mail library takes
  (display name, angle brackets, comment, among others) and every spelling of the domain
  (case, Cyrillic lookalikes, punycode, any full stop, a root dot), and an allow rule on the
  domain allows none of them but the bare address spelled as the rule.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import email.utils
import os
import shlex
import shutil
import tempfile
from encodings import idna
from functools import cache
from typing import Any

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from loomgraph.governance import StandardPermissions

SPEC: Any = {"name": "fs"}
SHELL: Any = {"name": "shell"}


@cache
def tree() -> tuple[str, str]:
    """base/root (allowed) and base/outside, with symlinks in and out and a loop."""
    base = os.path.realpath(tempfile.mkdtemp(prefix="lg-rules-"))
    atexit.register(shutil.rmtree, base, ignore_errors=True)
    root, outside = os.path.join(base, "root"), os.path.join(base, "outside")
    os.makedirs(os.path.join(root, "a", "deep"))
    os.makedirs(outside)
    open(os.path.join(root, "b"), "w").close()
    open(os.path.join(outside, "secret"), "w").close()
    os.symlink(outside, os.path.join(root, "out"))  # escapes
    os.symlink(os.path.join(root, "a"), os.path.join(root, "in"))  # stays inside
    os.symlink("../..", os.path.join(root, "a", "up"))  # relative, escapes to base
    os.symlink("../out/secret", os.path.join(root, "a", "s"))  # a chain that escapes
    os.symlink("loop", os.path.join(root, "loop"))  # a loop
    os.symlink("/etc", os.path.join(root, "etc"))
    return root, outside


SEGMENTS = st.sampled_from(
    [
        "a", "b", "deep", "out", "in", "up", "s", "loop", "etc", "secret", "root", "outside",
        "..", ".", "", "x.", "...", "a ", "\u0430", "\uff41", "nope", "passwd",
    ]
)  # fmt: skip
SEPARATORS = st.sampled_from(["/", "//", "/./"])


@st.composite
def paths(draw: Any) -> str:
    root, outside = tree()
    start = draw(st.sampled_from([root, root + "/", os.path.dirname(root), outside, "/"]))
    parts = draw(st.lists(st.tuples(SEPARATORS, SEGMENTS), max_size=6))
    return start + "".join(sep + seg for sep, seg in parts)


def inside(path: str, root: str) -> bool:
    real = os.path.realpath(path)
    return real == root or real.startswith(root + "/")


def run(perms: StandardPermissions, tool: str, spec: Any, **args: Any) -> str:
    call: Any = {"id": "c", "tool": tool, "args": args}
    return asyncio.run(perms.check(call, spec, user_id=None)).verdict


@settings(max_examples=500, deadline=None)
@given(path=paths(), declared=st.booleans())
def test_an_allowed_path_is_really_inside_the_root(path: str, declared: bool) -> None:
    root, _ = tree()
    rule = f"fs(path{':path' if declared else ''}={root}/**)"
    if run(StandardPermissions(allow=[rule], mode="strict"), "fs", SPEC, path=path) == "allow":
        assert inside(path, root), (path, os.path.realpath(path))


@settings(max_examples=500, deadline=None)
@given(path=paths(), declared=st.booleans())
def test_a_path_really_outside_is_denied(path: str, declared: bool) -> None:
    _, outside = tree()
    rule = f"fs(path{':path' if declared else ''}={outside}/**)"
    if inside(path, outside) and os.path.realpath(path) != outside:
        assert run(StandardPermissions(deny=[rule], mode="bypass"), "fs", SPEC, path=path) == (
            "deny"
        ), (path, os.path.realpath(path))


def test_the_tree_has_the_cases_the_properties_need() -> None:
    root, _ = tree()
    perms = StandardPermissions(allow=[f"fs(path={root}/**)"], mode="strict")
    assert run(perms, "fs", SPEC, path=f"{root}/in/deep") == "allow"
    for escape in ("out/secret", "a/up/outside", "a/s", "etc/passwd", "a/../../outside"):
        assert run(perms, "fs", SPEC, path=f"{root}/{escape}") == "deny", escape


WORDS = st.sampled_from(
    [
        "ls", "rm", "-rf", "/", "a", ";", "&&", "||", "|", "&", "$(", ")", "(", "`", "'", '"',
        "\n", ">", "<", "#", "\\", "{", "}", "*", "$HOME", "ls;", "x'y;z'", "\"a|b\"", "\t",
        "./ls", "ls/", "bin/../ls",
    ]
)  # fmt: skip


def one_ls_command(value: str) -> bool:
    """The oracle: no `$`, backtick or newline, no unquoted operator, first word `ls`."""
    if any(c in value for c in "$`\n\r\x00"):
        return False
    try:
        lexer = shlex.shlex(value, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        tokens = list(lexer)
    except ValueError:
        return False
    operators = set(";&|<>()")
    if any(t and set(t) <= operators for t in tokens):
        return False
    return bool(tokens) and tokens[0] == "ls"


@settings(max_examples=1000, deadline=None)
@given(words=st.lists(WORDS, min_size=1, max_size=8), glue=st.sampled_from([" ", ""]))
def test_an_allowed_command_is_one_ls(words: list[str], glue: str) -> None:
    value = glue.join(words)
    for rule in ("shell(cmd:command=ls *)", "shell(cmd=ls *)"):
        perms = StandardPermissions(allow=[rule], mode="strict")
        if run(perms, "shell", SHELL, cmd=value) == "allow":
            no_meta = not any(c in value for c in ";&|$`<>(){}\n\r\x00")
            assert (no_meta and value.startswith("ls ")) or one_ls_command(value), value


# ---------------------------------------------------------------------------- relative paths


@st.composite
def relative_paths(draw: Any) -> tuple[str, str]:
    """A working directory in the tree and a relative path from it."""
    root, outside = tree()
    base = os.path.dirname(root)
    cwd = draw(st.sampled_from([root, os.path.join(root, "a"), base, outside]))
    start = draw(st.sampled_from(["", "./", "../", "../../", "../" * 12]))
    parts = draw(st.lists(st.tuples(SEPARATORS, SEGMENTS), min_size=1, max_size=6))
    rest = "".join(sep + seg for sep, seg in parts).lstrip("/")
    return cwd, (start + rest) or "."


@settings(max_examples=500, deadline=None)
@given(case=relative_paths(), declared=st.booleans())
def test_an_allowed_relative_path_is_really_inside_the_root(
    case: tuple[str, str], declared: bool
) -> None:
    cwd, path = case
    root, _ = tree()
    kind = ":path" if declared else ""
    with contextlib.chdir(cwd):
        # A rule written relative from a directory below the root (`../**`) would cover
        # more than the root: only ancestors of the root write it relative here.
        below = os.path.relpath(root, cwd).startswith("..")
        for pattern in (root,) if below else (root, os.path.relpath(root, cwd)):
            perms = StandardPermissions(allow=[f"fs(path{kind}={pattern}/**)"], mode="strict")
            if run(perms, "fs", SPEC, path=path) == "allow":
                assert inside(path, root), (cwd, path, pattern, os.path.realpath(path))


@settings(max_examples=500, deadline=None)
@given(case=relative_paths(), declared=st.booleans())
def test_a_relative_path_really_outside_is_denied(case: tuple[str, str], declared: bool) -> None:
    cwd, path = case
    _, outside = tree()
    kind = ":path" if declared else ""
    with contextlib.chdir(cwd):
        if inside(path, outside) and os.path.realpath(path) != outside:
            perms = StandardPermissions(deny=[f"fs(path{kind}={outside}/**)"], mode="bypass")
            assert run(perms, "fs", SPEC, path=path) == "deny", (cwd, path)


# ---------------------------------------------------------- added readings only ever deny

DENY_RM = StandardPermissions(deny=["shell(cmd=rm *)"], mode="bypass")
PREFIXES = st.sampled_from(
    [
        "x=1 ", "A='a b' ", "command ", "command -p ", "exec ", "builtin ", "nohup ",
        "time ", "time -p ", "{ ", "( ", "! ", "if true; then ", "while :; do ", "sudo ",
        "sudo -u root ", "env ", "env -i X=1 ", "nice -n 5 ", "xargs ", "ls; ", "ls && ",
        "ls | ", "eval ", "sh -c ", "bash -xc ",
    ]
)  # fmt: skip
RM = st.sampled_from(
    [
        "rm -rf /", "/bin/rm -rf /", "/usr/bin/rm -rf /", "rm${IFS}-rf /", "rm$IFS-rf${IFS}/",
        "{rm,-rf,/}", "r''m -rf /", "\\rm -rf /", "'rm' -rf /", "r\\\nm -rf /", "RM -rf /",
        "r$@m -rf /", "x=1 {/bin/rm,-rf,/}",
    ]
)  # fmt: skip


@settings(max_examples=500, deadline=None)
@given(
    words=st.lists(WORDS, min_size=1, max_size=8),
    glue=st.sampled_from([" ", ""]),
    # A prefix ending in an operator starts a new command, read on its own: that is what the
    # next property checks. Behind one, `rm ;` (rm with nothing) is no longer read as `rm *`.
    prefix=PREFIXES.filter(lambda p: not set(p) & set(";&|")),
)
def test_a_denied_command_stays_denied_behind_a_prefix(
    words: list[str], glue: str, prefix: str
) -> None:
    value = glue.join(words)
    # `rm ` with a trailing blank matches `rm *` only as written (and runs rm with nothing);
    # so does `rm #…`, whose comment a shell reads away.
    assume(value == value.rstrip())
    with contextlib.suppress(ValueError):  # unbalanced quotes: never read as rm with nothing
        assume(shlex.split(value, comments=True) != ["rm"])
    if prefix in ("eval ", "sh -c ", "bash -xc "):
        value = shlex.quote(value)  # the script is one argument
    if run(DENY_RM, "shell", SHELL, cmd=glue.join(words)) == "deny":
        assert run(DENY_RM, "shell", SHELL, cmd=prefix + value) == "deny", prefix + value


@settings(max_examples=500, deadline=None)
@given(prefixes=st.lists(PREFIXES, max_size=3), rm=RM)  # eval and sh -c: three levels
def test_every_spelling_of_rm_is_denied(prefixes: list[str], rm: str) -> None:
    value = rm
    for prefix in reversed(prefixes):
        quoted = prefix in ("eval ", "sh -c ", "bash -xc ")
        value = prefix + (shlex.quote(value) if quoted else value)
    assert run(DENY_RM, "shell", SHELL, cmd=value) == "deny", value


REDIRECTIONS = st.sampled_from(
    [
        ">/dev/null ", "2>&1 ", "</dev/null ", "< x ", "2> x ", ">>log ", "&>x ", "<<<x ",
        "{fd}>x ", ">&2 ", "1>|x ", "x=1 ", "coproc ", "! ", "time -p ", "sudo -- ", "env ",
        "exec ", "command ", "nohup ", "{ ",
    ]
)  # fmt: skip
SHELL_CS = st.sampled_from(["sh -c ", "sh -c -- ", "bash -lc ", "sh -e -c ", "bash -c -x -- "])


@settings(max_examples=500, deadline=None)
@given(
    prefixes=st.lists(REDIRECTIONS, max_size=4),
    shell=st.one_of(st.none(), SHELL_CS),
    inner=st.lists(REDIRECTIONS, max_size=2),
    rm=RM,
)
def test_rm_behind_redirections_and_wrappers_is_denied(
    prefixes: list[str], shell: str | None, inner: list[str], rm: str
) -> None:
    value = "".join(inner) + rm
    if shell is not None:
        value = shell + shlex.quote(value)
    value = "".join(prefixes) + value
    assert run(DENY_RM, "shell", SHELL, cmd=value) == "deny", value


HOSTS = st.sampled_from(["db.internal", "ok.example", "DB.INTERNAL", "x.internal.example", ""])
HTTP: Any = {"name": "http", "parameters": {"properties": {"url": {}, "headers": {}}}}


@settings(max_examples=200, deadline=None)
@given(nested=HOSTS, literal=HOSTS)
def test_a_dotted_name_is_denied_by_either_reading_and_allowed_by_both(
    nested: str, literal: str
) -> None:
    args = {"url": "u", "headers": {"host": nested}, "headers.host": literal}
    deny = StandardPermissions(deny=["http(headers.host=*.internal)"], mode="bypass")
    denied = any(h.casefold().endswith(".internal") for h in (nested, literal))
    assert (run(deny, "http", HTTP, **args) == "deny") == denied
    allow = StandardPermissions(allow=["http(headers.host=*.internal)"], mode="strict")
    allowed = all(h.endswith(".internal") for h in (nested, literal))
    assert (run(allow, "http", HTTP, **args) == "allow") == allowed


# ------------------------------------------------ an e-mail domain in any of its spellings

MAIL: Any = {"name": "send_email", "parameters": {"properties": {"to": {}}}}
DENY_DOMAIN = StandardPermissions(deny=["send_email(to=any(*@competitor.example))"])
ALLOW_DOMAIN = StandardPermissions(
    allow=["send_email(to=all(*@competitor.example))"], mode="strict"
)
# Latin letters of the domain and Cyrillic letters that look like them.
LOOKALIKE = {
    "c": "\u0441",
    "o": "\u043e",
    "e": "\u0435",
    "p": "\u0440",
    "x": "\u0445",
    "a": "\u0430",
}
NAMES = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=12)


@st.composite
def domain_spellings(draw: Any) -> str:
    """competitor.example with letters upper-cased or replaced by lookalikes, a label in
    punycode, its dot as any full stop IDNA maps to a dot, and maybe a root dot."""
    labels = []
    for label in ("competitor", "example"):
        text = "".join(draw(st.sampled_from([c, c.upper(), LOOKALIKE.get(c, c)])) for c in label)
        if not text.isascii() and draw(st.booleans()):
            text = idna.ToASCII(text).decode()
        labels.append(text)
    stop = draw(st.sampled_from([".", "\u3002", "\uff0e", "\uff61"]))
    return labels[0] + stop + labels[1] + draw(st.sampled_from(["", ".", "\u3002"]))


@st.composite
def recipients(draw: Any) -> tuple[str, Any]:
    """A recipient at a spelling of competitor.example, in one of the forms a mail library
    takes (bare, angle-addr, name-addr with any display name, with a comment), maybe among
    other recipients in one string or a list. Also the form's name, for the allow oracle."""
    local = draw(st.sampled_from(["bob", "b.o.b", "bob+x", '"bob smith"']))
    addr = f"{local}@{draw(domain_spellings())}"
    form = draw(st.sampled_from(["bare", "angle", "name", "comment"]))
    one = {
        "bare": addr,
        "angle": f"<{addr}>",
        "name": f'"{email.utils.quote(draw(NAMES))}" <{addr}>',
        "comment": f"{addr} (Bob)",
    }[form]
    among = draw(st.sampled_from(["alone", "string", "list"]))
    if among == "string":
        return form, f"a@ok.example, {one}"
    return form, [one, "a@ok.example"] if among == "list" else one


@settings(max_examples=500, deadline=None)
@given(case=recipients())
def test_a_deny_on_a_domain_denies_every_spelling_of_an_address_there(
    case: tuple[str, Any],
) -> None:
    form, to = case
    assert run(DENY_DOMAIN, "send_email", MAIL, to=to) == "deny", to
    if run(ALLOW_DOMAIN, "send_email", MAIL, to=to) == "allow":
        # The readings never widen an allow rule: only the bare address, spelled as the rule.
        assert form == "bare" and isinstance(to, str) and to.endswith("@competitor.example"), to
