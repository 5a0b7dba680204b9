"""Permission-rule bypasses found by an outside probe, each reproduced as a test.

A dotted argument name dodged by a literal key of that name, a relative path climbing out of
the working directory past a deny rule on absolute paths, shell spellings of a denied command
(`/bin/rm`, `x=1 rm`, `{ rm; }`, `command rm`, `rm${IFS}-rf`, `>/dev/null rm`, `sh -c -- X`,
`coproc rm`), a shell string whose readings ran away (`sudo eval ` repeated), a huge integer
crashing a numeric comparison, and permission-file errors that did not name their file and line.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from loomgraph.governance import PermissionConfigError, StandardPermissions, shell_words
from loomgraph.governance.canonical import absolute, normpath, realpath
from loomgraph.protocols import ToolCall, ToolSpec

HTTP: ToolSpec = {
    "name": "http",
    "parameters": {"type": "object", "properties": {"url": {}, "headers": {"type": "object"}}},
}
READ: ToolSpec = {"name": "read"}
READ_DECLARED: ToolSpec = {"name": "read", "path_params": ["path"]}
SHELL: ToolSpec = {"name": "shell"}
TRANSFER: ToolSpec = {
    "name": "transfer",
    "parameters": {"type": "object", "properties": {"to": {}, "amount": {}}},
}


def call(tool: str, **args: Any) -> ToolCall:
    return {"id": "c1", "tool": tool, "args": args}


async def verdict(perms: StandardPermissions, spec: ToolSpec, **args: Any) -> str:
    return (await perms.check(call(spec["name"], **args), spec, user_id=None)).verdict


# ------------------------------------------------------------------ 1. dotted names


async def test_a_literal_dotted_key_does_not_hide_the_nested_value_from_a_deny_rule() -> None:
    perms = StandardPermissions(deny=["http(headers.host=*.internal)"])
    nested = {"host": "db.internal"}
    assert await verdict(perms, HTTP, url="u", headers=nested) == "deny"
    shadowed = {"url": "u", "headers": nested, "headers.host": "ok.example"}
    assert await verdict(perms, HTTP, **shadowed) == "deny"
    # ... nor the literal value from it, when that is the one that matches.
    flipped = {"url": "u", "headers": {"host": "ok.example"}, "headers.host": "db.internal"}
    assert await verdict(perms, HTTP, **flipped) == "deny"
    fine = {"url": "u", "headers": {"host": "ok.example"}, "headers.host": "ok.example"}
    assert await verdict(perms, HTTP, **fine) == "allow"


async def test_a_literal_dotted_key_does_not_stand_in_for_a_missing_nested_one() -> None:
    # Without `headers`, the nested header is unknown: the deny rule holds (as documented for
    # a dotted name); adding a literal `headers.host` must not turn that into an allow.
    perms = StandardPermissions(deny=["http(headers.host=*.internal)"])
    assert await verdict(perms, HTTP, url="u") == "deny"
    assert await verdict(perms, HTTP, url="u", **{"headers.host": "ok.example"}) == "deny"
    # A tool whose schema takes the literal name: leaving it out does not dodge the rule.
    literal: ToolSpec = {"name": "http", "parameters": {"properties": {"headers.host": {}}}}
    assert await verdict(perms, literal) == "deny"


async def test_an_allow_rule_on_a_dotted_name_needs_both_readings() -> None:
    perms = StandardPermissions(allow=["http(headers.host=*.example)"], mode="strict")
    both = {"url": "u", "headers": {"host": "ok.example"}, "headers.host": "ok.example"}
    assert await verdict(perms, HTTP, **both) == "allow"
    shadowed = {"url": "u", "headers": {"host": "db.internal"}, "headers.host": "ok.example"}
    assert await verdict(perms, HTTP, **shadowed) == "deny"
    only_literal = {"url": "u", "headers.host": "ok.example"}
    assert await verdict(perms, HTTP, **only_literal) == "deny"
    # A tool whose schema takes the literal name (and no `headers` object) is still allowed.
    literal: ToolSpec = {"name": "http", "parameters": {"properties": {"headers.host": {}}}}
    assert await verdict(perms, literal, **only_literal) == "allow"


async def test_absent_and_present_on_a_dotted_name_see_both_readings() -> None:
    literal_only = {"url": "u", "headers": {}, "headers.host": "x"}
    deny = StandardPermissions(deny=["http(headers.host=<absent>)"])
    assert await verdict(deny, HTTP, **literal_only) == "deny"
    assert await verdict(deny, HTTP, url="u", headers={"host": "x"}) == "allow"
    allow = StandardPermissions(allow=["http(headers.host=<present>)"], mode="strict")
    assert await verdict(allow, HTTP, **literal_only) == "deny"
    assert await verdict(allow, HTTP, url="u", headers={"host": "x"}) == "allow"


# ------------------------------------------------------------------ 2. relative paths


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with `src/a.py` and `data/link`, a symlink to /etc."""
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.py").write_text("")
    (tmp_path / "data").mkdir()
    os.symlink("/etc", tmp_path / "data" / "link")
    monkeypatch.chdir(tmp_path)
    return Path(os.path.realpath(tmp_path))


UP = "../" * 40  # more than enough to reach /


@pytest.mark.parametrize("spec", [READ, READ_DECLARED])
@pytest.mark.parametrize(
    "path", [UP + "etc/hostname", "data/link/passwd", "./data/link/x/../hostname"]
)
@pytest.mark.usefixtures("cwd")
async def test_a_relative_path_out_of_the_working_directory_meets_absolute_rules(
    spec: ToolSpec, path: str
) -> None:
    assert await verdict(StandardPermissions(deny=["read(path=/etc/**)"]), spec, path=path) == (
        "deny"
    )
    assert await verdict(StandardPermissions(ask=["read(path=/etc/**)"]), spec, path=path) == (
        "ask"
    )


async def test_a_bare_name_meets_a_deny_rule_on_the_working_directory(cwd: Path) -> None:
    for spec in (READ, READ_DECLARED):
        perms = StandardPermissions(deny=[f"read(path={cwd}/**)"])
        for path in ("passwd", "my docs/x", "src"):
            assert await verdict(perms, spec, path=path) == "deny", (spec, path)
        assert await verdict(perms, spec, path="/elsewhere/x") == "allow"


@pytest.mark.usefixtures("cwd")
async def test_a_relative_path_inside_a_command_meets_absolute_rules() -> None:
    perms = StandardPermissions(deny=["shell(cmd=cat /etc/*)"])
    assert await verdict(perms, SHELL, cmd=f"cat {UP}etc/passwd") == "deny"
    assert await verdict(perms, SHELL, cmd="cat data/link/passwd") == "deny"


async def test_a_relative_path_is_allowed_by_a_relative_or_an_absolute_rule(cwd: Path) -> None:
    for rule in ("read(path=src/**)", f"read(path={cwd}/src/**)"):
        for spec in (READ, READ_DECLARED):
            perms = StandardPermissions(allow=[rule], mode="strict")
            assert await verdict(perms, spec, path="src/a.py") == "allow", rule
            assert await verdict(perms, spec, path="./src/../src/a.py") == "allow", rule
            assert await verdict(perms, spec, path="src/../data/link/x") == "deny", rule
            assert await verdict(perms, spec, path="data/link/passwd") == "deny", rule
    # A deny rule written relative still holds.
    deny = StandardPermissions(deny=["read(path=data/**)"])
    assert await verdict(deny, READ, path="src/../data/x") == "deny"


# ------------------------------------------------------------------ 3. shell spellings


DENIED_SPELLINGS = [
    "{ rm -rf /; }",
    "x=1 rm -rf /",
    "x='a b' y=2 rm -rf /",
    "/bin/rm -rf /",
    "/usr/bin/rm -rf /",
    "rm${IFS}-rf /",
    "rm$IFS-rf /",
    "command rm -rf /",
    "command -p rm -rf /",
    "exec rm -rf /",
    "builtin rm -rf /",
    "nohup rm -rf /",
    "time rm -rf /",
    "time -p /bin/rm -rf /",
    "ls; (x=1 /bin/rm -rf /)",
    "! rm -rf /",
    "if true; then rm -rf /; fi",
    "while true; do exec rm -rf /; done",
    "{rm,-rf,/}",
    "r\\\nm -rf /",
    "x=1 command exec /bin/rm -rf /",
]


@pytest.mark.parametrize("cmd", DENIED_SPELLINGS)
async def test_shell_spellings_of_a_denied_command_are_denied(cmd: str) -> None:
    for rule in ("shell(cmd=rm *)", "shell(cmd:command=rm *)"):
        assert await verdict(StandardPermissions(deny=[rule]), SHELL, cmd=cmd) == "deny", rule
        assert await verdict(StandardPermissions(ask=[rule]), SHELL, cmd=cmd) == "ask", rule


async def test_the_extra_command_readings_add_to_deny_rules_only() -> None:
    # A deny rule naming the full path still matches the full path after an assignment.
    full = StandardPermissions(deny=["shell(cmd=/bin/rm *)"])
    assert await verdict(full, SHELL, cmd="x=1 /bin/rm -rf /") == "deny"
    # Other commands are not caught by the new readings ...
    perms = StandardPermissions(deny=["shell(cmd=rm *)"], mode="accept_edits")
    for cmd in ("ls -la /", "x=1 ls", "/bin/ls /", "{ ls; }", "command -v ls", "echo rm x"):
        assert await verdict(perms, SHELL, cmd=cmd) == "allow", cmd
    # ... and an allow rule is not widened by them: it matches the command as written.
    allow = StandardPermissions(allow=["shell(cmd=ls *)"], mode="strict")
    assert await verdict(allow, SHELL, cmd="ls -la") == "allow"
    for cmd in ("x=1 ls -la", "/bin/ls -la", "command ls -la", "{ ls -la; }", "ls${IFS}-la"):
        assert await verdict(allow, SHELL, cmd=cmd) == "deny", cmd


async def test_an_allowed_program_is_not_another_file_spelled_with_a_slash(cwd: Path) -> None:
    # `./ls` runs the file `ls` here (one a model may have written), `ls/` a directory's path,
    # `bin/../ls` the file again: none is the `ls` PATH finds, though each normalises to `ls`.
    for rule in ("shell(cmd=ls *)", "shell(cmd:command=ls *)"):
        allow = StandardPermissions(allow=[rule], mode="strict")
        assert await verdict(allow, SHELL, cmd="ls -la ./src") == "allow", rule
        for cmd in ("./ls -la", "ls/ -la", "ls/\t{", "bin/../ls -la", ".//ls x"):
            assert await verdict(allow, SHELL, cmd=cmd) == "deny", (rule, cmd)
    one = StandardPermissions(allow=["shell(cmd:command=ls)"], mode="strict")
    assert await verdict(one, SHELL, cmd="ls") == "allow"
    for cmd in ("./ls", "ls/", "src/../ls"):
        assert await verdict(one, SHELL, cmd=cmd) == "deny", cmd
    # A rule naming a program by its path matches it however the path is spelled.
    script = StandardPermissions(allow=["shell(cmd=./build.sh *)"], mode="strict")
    for cmd in ("./build.sh x", ".//build.sh x", "./src/../build.sh x"):
        assert await verdict(script, SHELL, cmd=cmd) == "allow", cmd
    assert await verdict(script, SHELL, cmd="build.sh x") == "deny"
    full = StandardPermissions(allow=["shell(cmd=/usr/bin/ls *)"], mode="strict")
    assert await verdict(full, SHELL, cmd="/usr//bin/ls x") == "allow"
    # A value of no declared kind may name a program too; declared a path, it is a path.
    note = StandardPermissions(allow=["read(file=notes.txt)"], mode="strict")
    assert await verdict(note, READ, file="./notes.txt") == "deny"
    path = StandardPermissions(allow=["read(file:path=notes.txt)"], mode="strict")
    assert await verdict(path, READ, file="./notes.txt") == "allow"
    # `.` and `..` keep no `./`: `./..` is `..`, which a glob `./**` does not fit.
    here = StandardPermissions(allow=["read(file=./**)"], mode="strict")
    assert await verdict(here, READ, file="./src") == "allow"
    assert await verdict(here, READ, file="./..") == "deny"
    # Deny rules still see every spelling: `./rm` and `rm/` are read as `rm`.
    deny = StandardPermissions(deny=["shell(cmd=rm *)"], mode="bypass")
    for cmd in ("./rm x", "rm/ x", "bin/../rm x"):
        assert await verdict(deny, SHELL, cmd=cmd) == "deny", cmd


REDIRECTED_SPELLINGS = [
    ">/dev/null rm -rf /",
    "2>&1 rm -rf /",
    "</dev/null rm -rf /",
    "< /dev/null rm -rf /",
    "2> /dev/null rm -rf /",
    "x=1 >/tmp/o rm -rf /",
    "&>/dev/null rm -rf /",
    ">>log 2>&1 </dev/null /bin/rm -rf /",
    "<<<x rm -rf /",
    "{fd}>/tmp/o rm -rf /",
    "rm>/dev/null -rf /",
    "ls; 2>&1 >x rm -rf /",
    "exec 2>&1 rm -rf /",
    "sh -c -- 'rm -rf /'",
    "bash -c -- 'rm -rf /'",
    "sh -c -e 'rm -rf /'",
    "bash -o pipefail -c -- 'rm -rf /'",
    "sh -c >/dev/null 'rm -rf /'",
    "coproc rm -rf /",
    "coproc X { rm -rf /; }",
    "function f { rm -rf /; }; f",
]


async def test_redirections_and_sh_options_do_not_hide_a_denied_command() -> None:
    for cmd in REDIRECTED_SPELLINGS:
        for rule in ("shell(cmd=rm *)", "shell(cmd:command=rm *)"):
            perms = StandardPermissions(deny=[rule], allow=["shell"])
            assert await verdict(perms, SHELL, cmd=cmd) == "deny", (rule, cmd)
            assert await verdict(StandardPermissions(ask=[rule]), SHELL, cmd=cmd) == "ask", cmd
    # Read away for deny and ask rules only: other commands are not caught, and an allow rule
    # still matches the command as written, which refuses an unquoted `<` or `>`.
    perms = StandardPermissions(deny=["shell(cmd=rm *)"], mode="accept_edits")
    for cmd in (">/dev/null ls", "ls 2>&1 >rm", "echo rm >x", "sh -c -- ls", "cat <<<rm"):
        assert await verdict(perms, SHELL, cmd=cmd) == "allow", cmd
    allow = StandardPermissions(allow=["shell(cmd=ls *)"], mode="strict")
    for cmd in (">/dev/null ls -la", "ls -la 2>&1", "ls -la >x"):
        assert await verdict(allow, SHELL, cmd=cmd) == "deny", cmd


async def test_a_command_with_runaway_readings_is_read_in_linear_work_and_not_ruled_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Each `sudo` tail and each `eval` in it used to be read again: a 16 KB string split
    # hundreds of megabytes into words. Now the work is bounded by the value's length, and a
    # string that needs more is unreadable: every deny or ask rule on it matches (it cannot be
    # ruled out), whatever command the rule names; allow rules read it as written, as before.
    split: list[int] = []
    real = shell_words._words

    def counted(text: str, *, operators: bool = False) -> tuple[str, ...]:
        split.append(len(text))
        return real(text, operators=operators)

    monkeypatch.setattr(shell_words, "_words", counted)
    cmd = "sudo eval " * 1600
    for rule in ("shell(cmd=rm *)", "shell(cmd=ls *)"):
        split.clear()
        assert await verdict(StandardPermissions(deny=[rule]), SHELL, cmd=cmd) == "deny", rule
        assert sum(split) <= shell_words.WORK_PER_CHAR * len(cmd), sum(split)  # linear
        assert await verdict(StandardPermissions(ask=[rule]), SHELL, cmd=cmd) == "ask", rule
    for wrapper in ("sudo eval ", "env eval ", "sudo x=1 ", "env "):
        with pytest.raises(shell_words.Unreadable):
            shell_words.commands(wrapper * 1600)
    # An ordinary long command is read, not refused: a 40 KB here-document.
    body = "".join(f"line {i}: x = f(a, b) > 0 and 'q' or \"$HOME\"\n" for i in range(900))
    heredoc = f"cat > notes.txt <<'EOF'\n{body}EOF\n"
    assert len(heredoc) > 40_000 and shell_words.commands(heredoc)
    perms = StandardPermissions(deny=["shell(cmd=rm *)"], mode="accept_edits")
    assert await verdict(perms, SHELL, cmd=heredoc) == "allow"
    assert await verdict(perms, SHELL, cmd=heredoc + "rm -rf /\n") == "deny"


def test_a_path_too_long_for_any_system_call_is_not_resolved_component_by_component(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # `os.path.realpath` looked up each of a long text's components on ever longer paths (a
    # 1 MB command starting with `/` took minutes); no system call takes 4096 characters.
    calls: list[str] = []
    real = os.lstat
    monkeypatch.setattr(os, "lstat", lambda path, *a, **k: calls.append(path) or real(path))
    long = "/a/b " * 2000
    assert realpath(long) == normpath(long)
    assert absolute("x/../" * 2000 + "y").endswith("/y")
    assert calls == [] or all(len(str(path)) < 4096 for path in calls)
    assert len(calls) < 100


# ------------------------------------------------------------------ 4. huge numbers


async def test_a_huge_integer_is_compared_exactly_and_never_crashes_the_check() -> None:
    huge = 10**400
    deny = StandardPermissions(deny=["transfer(amount>1000)"])
    assert await verdict(deny, TRANSFER, to="x", amount=huge) == "deny"
    assert await verdict(deny, TRANSFER, to="x", amount=-huge) == "allow"
    small = StandardPermissions(allow=["transfer(amount<5)"], mode="strict")
    assert await verdict(small, TRANSFER, to="x", amount=huge) == "deny"
    assert await verdict(small, TRANSFER, to="x", amount=-huge) == "allow"
    ask = StandardPermissions(ask=["transfer(amount>=1e300)"], mode="strict")
    assert await verdict(ask, TRANSFER, to="x", amount=huge) == "ask"
    # Exactly: 2**53 + 1 is above the float 2**53, which float() would round it to.
    exact = StandardPermissions(deny=["transfer(amount>9007199254740992)"])
    assert await verdict(exact, TRANSFER, to="x", amount=2**53 + 1) == "deny"
    # A numeric string too large for a float cannot be ruled out by a deny rule.
    assert await verdict(deny, TRANSFER, to="x", amount="9" * 400) == "deny"


# ------------------------------------------------------------------ 5. permission files


def test_a_nul_byte_in_a_permission_file_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "nul.yaml"
    path.write_text("mode: strict\ndeny: [shell]\x00\n", encoding="utf-8")
    with pytest.raises(PermissionConfigError) as err:
        StandardPermissions.from_file(path)
    assert err.value.file == str(path)
    assert err.value.line == 2
    assert "#x0000" in err.value.message


def test_a_bad_on_tainted_in_a_permission_file_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "taint.yaml"
    path.write_text("mode: strict\non_tainted: no\n", encoding="utf-8")
    with pytest.raises(PermissionConfigError) as err:
        StandardPermissions.from_file(path)
    assert (err.value.file, err.value.line) == (str(path), 2)
    assert "on_tainted" in err.value.message
    ok = tmp_path / "ok.yaml"
    ok.write_text("on_tainted: deny\n", encoding="utf-8")
    assert StandardPermissions.from_file(ok).on_tainted == "deny"
