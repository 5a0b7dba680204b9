"""Properties of canonical matching, over random paths in a real tree with symlinks and over
random shell strings:

- an allow decision for `fs(path:path=ROOT/**)` (or the undeclared `fs(path=ROOT/**)`) implies
  `os.path.realpath(value)` is inside ROOT;
- a deny rule `fs(path=OUTSIDE/**)` denies every value whose real path is inside OUTSIDE;
- an allow decision for `shell(cmd:command=ls *)` implies the value is one simple `ls` command:
  no substitution or newline anywhere, no unquoted operator, and `ls` as its first word.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import shlex
import shutil
import tempfile
from functools import cache
from typing import Any

from hypothesis import given, settings
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
