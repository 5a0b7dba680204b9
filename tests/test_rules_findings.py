"""The findings of issue 12 about rule matching, each reproduced as a test.

Symlinks escaping an allowed root, shell strings riding on an allowed command or path, a
deny rule dodged by leaving its argument out, and lookalike characters.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from loomgraph.governance import StandardPermissions
from loomgraph.protocols import ToolCall, ToolSpec

SPECS: dict[str, ToolSpec] = {
    "fs_write": {"name": "fs_write", "destructive": True},
    "shell": {"name": "shell", "destructive": True},
    "run": {"name": "run", "destructive": True},
    "send_email": {
        "name": "send_email",
        "parameters": {
            "type": "object",
            "properties": {"to": {"type": "array"}, "cc": {"type": "array"}, "body": {}},
        },
    },
}


def call(tool: str, **args: Any) -> ToolCall:
    return {"id": "c1", "tool": tool, "args": args}


async def verdict(perms: StandardPermissions, c: ToolCall, spec: Any = None) -> str:
    found = spec if spec is not None else SPECS[c["tool"]]
    return (await perms.check(c, found, user_id=None)).verdict


# ---------------------------------------------------------------------------- symlinks


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A data root with a file, a subdirectory, and `x` a symlink to an outside directory."""
    root = tmp_path / "data"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "ok.txt").write_text("ok")
    outside = tmp_path / "etc"
    outside.mkdir()
    (outside / "passwd").write_text("root")
    os.symlink(outside, root / "x")
    return root


@pytest.mark.parametrize("rule", ["fs_write(path={root}/**)", "fs_write(path:path={root}/**)"])
async def test_a_symlink_out_of_the_allowed_root_is_not_allowed(data: Path, rule: str) -> None:
    perms = StandardPermissions(allow=[rule.format(root=data)], mode="strict")
    assert await verdict(perms, call("fs_write", path=f"{data}/sub/ok.txt")) == "allow"
    assert await verdict(perms, call("fs_write", path=f"{data}/x/passwd")) == "deny"
    assert await verdict(perms, call("fs_write", path=f"{data}/x")) == "deny"


async def test_a_deny_rule_sees_through_a_symlink(data: Path) -> None:
    outside = data.parent / "etc"
    perms = StandardPermissions(deny=[f"fs_write(path={outside}/**)"], mode="bypass")
    assert await verdict(perms, call("fs_write", path=f"{data}/x/passwd")) == "deny"


async def test_path_params_declared_by_the_tool_are_resolved(data: Path) -> None:
    spec: Any = {"name": "run", "path_params": ["target"]}
    perms = StandardPermissions(allow=[f"run(target={data}/**)"], mode="strict")
    assert await verdict(perms, call("run", target=f"{data}/sub/ok.txt"), spec) == "allow"
    assert await verdict(perms, call("run", target=f"{data}/x/passwd"), spec) == "deny"


# ---------------------------------------------------------------------------- shell strings


@pytest.mark.parametrize("rule", ["shell(cmd=ls *)", "shell(cmd:command=ls *)"])
@pytest.mark.parametrize(
    "cmd",
    [
        "ls && rm -rf /",
        "ls; rm -rf /",
        "ls | sh",
        "ls $(rm -rf /)",
        "ls `rm -rf /`",
        'ls "$(rm -rf /)"',
        "ls\nrm -rf /",
        "ls > /etc/passwd",
        "ls & rm -rf /",
    ],
)
async def test_a_shell_string_never_rides_on_an_allowed_command(rule: str, cmd: str) -> None:
    perms = StandardPermissions(allow=[rule], mode="strict")
    assert await verdict(perms, call("shell", cmd=cmd)) == "deny"


async def test_a_plain_command_is_still_allowed() -> None:
    perms = StandardPermissions(allow=["shell(cmd:command=ls *)"], mode="strict")
    assert await verdict(perms, call("shell", cmd="ls -la /data")) == "allow"
    assert await verdict(perms, call("shell", cmd="ls 'a;b'")) == "allow"  # quoted: one arg
    assert await verdict(perms, call("shell", cmd="rm -rf /")) == "deny"


async def test_a_deny_rule_sees_every_command_in_a_shell_string() -> None:
    perms = StandardPermissions(deny=["shell(cmd=rm *)"], mode="bypass")
    assert await verdict(perms, call("shell", cmd="ls && rm -rf /")) == "deny"
    assert await verdict(perms, call("shell", cmd="ls $(rm -rf /)")) == "deny"
    assert await verdict(perms, call("shell", cmd="ls")) == "allow"


async def test_a_shell_string_never_rides_on_an_allowed_path() -> None:
    perms = StandardPermissions(allow=["fs_write(path=/data/**)"], mode="strict")
    assert await verdict(perms, call("fs_write", path="/data/a && rm -rf /")) == "deny"
    assert await verdict(perms, call("fs_write", path="/data/a; rm -rf /")) == "deny"
    assert await verdict(perms, call("fs_write", path="/data/a b")) == "allow"


# ---------------------------------------------------------------------------- absent arguments


async def test_a_deny_rule_is_not_dodged_by_leaving_the_argument_out() -> None:
    perms = StandardPermissions(deny=["send_email(cc=*)"], mode="bypass")
    assert await verdict(perms, call("send_email", to=["a@x.com"], cc=["b@x.com"])) == "deny"
    assert await verdict(perms, call("send_email", to=["a@x.com"])) == "deny"


async def test_an_allow_glob_never_matches_an_absent_argument() -> None:
    perms = StandardPermissions(allow=["send_email(cc=*)"], mode="strict")
    assert await verdict(perms, call("send_email", to=["a@x.com"])) == "deny"
    absent = StandardPermissions(allow=["send_email(cc=<absent>)"], mode="strict")
    assert await verdict(absent, call("send_email", to=["a@x.com"])) == "allow"
    assert await verdict(absent, call("send_email", cc=["b@x.com"])) == "deny"


# ---------------------------------------------------------------------------- lookalikes


@pytest.mark.parametrize(
    "value",
    [
        "/data/\uff41",  # fullwidth a: NFKC turns it into `a`
        "/dat\u0430/x",  # Cyrillic a in a Latin word
        "/data/x.",  # a trailing dot
        "/data/...",
        "/data/x\x00y",
    ],
)
async def test_lookalikes_and_odd_spellings_never_match_an_allow_rule(value: str) -> None:
    perms = StandardPermissions(allow=["fs_write(path=/**)", "send_email(to=*)"], mode="strict")
    assert await verdict(perms, call("fs_write", path=value)) == "deny"


async def test_a_deny_rule_sees_through_lookalikes() -> None:
    perms = StandardPermissions(deny=["send_email(to=*@evil.com)"], mode="bypass")
    assert await verdict(perms, call("send_email", to=["x@\u0435vil.com"])) == "deny"  # Cyrillic
    assert await verdict(perms, call("send_email", to=["x@\uff45vil.com"])) == "deny"  # fullwidth
    assert await verdict(perms, call("send_email", to=["x@EVIL.com"])) == "deny"


# ------------------------------------------------------------ invisible and encoded spellings

READ: ToolSpec = {"name": "read", "path_params": ["path"]}
SEND: ToolSpec = {"name": "send"}


@pytest.mark.parametrize(
    "to",
    ["mallory\u200b", "mal\u200dlory", "\ufeffmallory", " mallory", "mallory ", "mallory\t"],
    ids=["zero-width space", "zero-width joiner", "byte order mark", "leading", "trailing", "tab"],
)
async def test_a_deny_rule_is_not_dodged_by_invisible_characters_or_spaces(to: str) -> None:
    perms = StandardPermissions(allow=["send"], deny=["send(to=mallory)"])
    assert await verdict(perms, call("send", to=to), SEND) == "deny"


@pytest.mark.parametrize(
    "path",
    ["file:///etc/passwd", "/data/%2e%2e/etc/passwd", "/data/..\\etc\\passwd", "%2Fetc%2Fpasswd"],
    ids=["file url", "percent-encoded dots", "backslashes", "percent-encoded slashes"],
)
async def test_a_deny_rule_on_paths_reads_urls_escapes_and_backslashes(path: str) -> None:
    perms = StandardPermissions(allow=["read(path=/data/**)"], deny=["read(path=/etc/**)"])
    assert await verdict(perms, call("read", path=path), READ) == "deny"


@pytest.mark.parametrize(
    "path",
    ["/data/%2e%2e/etc/passwd", "/data/..\\etc\\passwd", "file:///data/a"],
    ids=["percent-encoded dots", "backslashes", "file url"],
)
async def test_an_allow_rule_on_paths_does_not_take_ambiguous_spellings(path: str) -> None:
    perms = StandardPermissions(allow=["read(path=/data/**)"])
    destructive: ToolSpec = {**READ, "destructive": True}  # unmatched: asked, not allowed
    decision = await perms.check(call("read", path=path), destructive, user_id=None)
    assert (decision.verdict, decision.rule) == ("ask", "mode:default:destructive")


async def test_plain_values_are_still_allowed() -> None:
    perms = StandardPermissions(allow=["read(path=/data/**)", "send"], deny=["send(to=mallory)"])
    assert await verdict(perms, call("read", path="/data/a b/c.txt"), READ) == "allow"
    assert await verdict(perms, call("send", to="bob"), SEND) == "allow"
