"""`loomgraph validate` checks an agent file's `permissions` and `audit_log` as
`Agent.from_file` does: one check per section (`agent.from_file.SECTION_CHECKS`), run by
both, every problem at once with file and line, a non-zero exit, no secret needed (a key
variable not set is a problem), nothing written. Real files; `validate` also as a real
subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from loomgraph.agent.agent import Agent
from loomgraph.agent.from_file import validate_agent_file
from loomgraph.authoring.agent_file import AgentFileError, load_agent_file
from loomgraph.cli.main import main
from loomgraph.errors import Problem
from loomgraph.governance.permissions import StandardPermissions

HEAD = "schema_version: 1\nname: v\nmodel: echo\n"
KEY_VAR = "LOOMGRAPH_TEST_VALIDATE_KEY"


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty folder, the working directory elsewhere; the audit key variable set, the
    default one not."""
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv(KEY_VAR, "k" * 32)
    monkeypatch.delenv("LOOMGRAPH_AUDIT_KEY", raising=False)
    monkeypatch.delenv("NO_SUCH_VALIDATE_VAR", raising=False)
    agent = tmp_path / "agent"
    agent.mkdir()
    return agent


def write(folder: Path, body: str, name: str = "agent.yaml") -> Path:
    path = folder / name
    path.write_text(HEAD + body)
    return path


def validated(path: Path) -> list[Problem]:
    """The problems `validate_agent_file` reports (what `loomgraph validate` prints)."""
    with pytest.raises(AgentFileError) as caught:
        validate_agent_file(path)
    return caught.value.problems


def built(path: Path) -> list[Problem]:
    """The problems `Agent.from_file` reports."""
    with pytest.raises(AgentFileError) as caught:
        Agent.from_file(path)
    return caught.value.problems


# One bad section per case: (body, rule, line, what the message says).
BAD = [
    pytest.param(
        "permissions: {mode: sloppy}\n", "permissions", 4, "unknown mode 'sloppy'", id="mode"
    ),
    pytest.param(
        "permissions:\n  deny:\n    - shell(cmd=\n",
        "permissions",
        6,
        "invalid permission rule 'shell(cmd=': argument 'cmd' has an empty glob",
        id="rule-syntax",
    ),
    pytest.param(
        "permissions: {allow: [search], colour: blue}\n",
        "permissions",
        4,
        "unknown key 'colour'",
        id="unknown-key",
    ),
    pytest.param(
        "permissions: {allow: ['send(to in $team)']}\n",
        "permissions",
        4,
        "unknown set(s) $team",
        id="unknown-set",
    ),
    pytest.param(
        "permissions: ./perms/missing.yaml\n",
        "permissions",
        4,
        "no permission file at ",
        id="missing-file",
    ),
    pytest.param(
        "permissions: ./perms\n",
        "permissions",
        4,
        "is not a regular file",
        id="file-is-a-folder",
    ),
    pytest.param(
        "permissions: {sets: {team: {file: nobody.txt}}, allow: ['send(to in $team)']}\n",
        "permissions",
        4,
        "cannot read set file",
        id="missing-set-file",
    ),
    pytest.param(
        "audit_log: {file: ./audit.jsonl}\n",
        "audit-log",
        4,
        "the audit log has no key: give `audit_log` a `key_env: NAME` or `key_file: PATH`",
        id="no-key",
    ),
    pytest.param(
        "audit_log:\n  file: ./audit.jsonl\n  key_env: NO_SUCH_VALIDATE_VAR\n",
        "audit-log",
        6,
        "the audit key variable $NO_SUCH_VALIDATE_VAR (`key_env`) is not set",
        id="key-variable-not-set",
    ),
    pytest.param(
        "audit_log:\n  file: ./audit.jsonl\n  key_file: ./no-key.txt\n",
        "audit-log",
        6,
        "no audit key file at ",
        id="missing-key-file",
    ),
    pytest.param(
        "audit_log:\n  file: ./audit.jsonl\n  key_file: ./empty-key.txt\n",
        "audit-log",
        6,
        "is empty, which protects nothing",
        id="empty-key-file",
    ),
    pytest.param(
        f"audit_log: {{file: ./audit.jsonl, key_env: {KEY_VAR}, unsigned: true}}\n",
        "audit-log",
        4,
        "gives `key_env` and `unsigned`: give one key source",
        id="two-key-sources",
    ),
    pytest.param(
        "audit_log:\n  file: ./no/such/folder/audit.jsonl\n  unsigned: true\n",
        "audit-log",
        5,
        "is in a folder that does not exist: create ",
        id="folder-missing",
    ),
    pytest.param(
        "audit_log:\n  file: ./perms\n  unsigned: true\n",
        "audit-log",
        5,
        "is not a regular file",
        id="log-is-a-folder",
    ),
]


@pytest.mark.parametrize(("body", "rule", "line", "said"), BAD)
def test_validate_reports_what_from_file_refuses(
    folder: Path, body: str, rule: str, line: int, said: str
) -> None:
    (folder / "perms").mkdir()
    (folder / "empty-key.txt").write_text("\n")
    path = write(folder, body)
    load_agent_file(path)  # the shape is fine: only the backends' check finds it
    found = validated(path)
    assert [(p.rule, p.file, p.line) for p in found] == [(rule, str(path), line)], found
    assert said in found[0].message, found[0].message
    assert built(path) == found  # one check, called from both: the same problems


def test_cli_validate_exits_1_listing_every_problem_at_once(folder: Path) -> None:
    path = write(
        folder,
        "instructons: hi\n"  # a schema problem does not hide the sections' problems
        "permissions: {deny: ['shell(cmd=']}\n"
        "audit_log:\n  file: ./gone/audit.jsonl\n  key_env: NO_SUCH_VALIDATE_VAR\n",
    )
    done = subprocess.run(
        [sys.executable, "-m", "loomgraph.cli.main", "validate", str(path)],
        capture_output=True,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
        timeout=120,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    said = done.stdout.splitlines()
    assert said[0].startswith(f"{path}:4: [unknown-key] unknown key 'instructons'")
    assert said[1].startswith(f"{path}:5: [permissions] invalid permission rule 'shell(cmd='")
    assert said[2].startswith(f"{path}:7: [audit-log] the audit log ")
    assert "folder that does not exist" in said[2]
    assert said[3] == f"{path}:8: [audit-log] the audit key variable $NO_SUCH_VALIDATE_VAR " + (
        "(`key_env`) is not set"
    )
    assert len(said) == 4, said


def test_cli_validate_of_a_sound_file_is_ok(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (folder / "perms.yaml").write_text("mode: strict\nallow: [search]\n")
    path = write(
        folder,
        f"permissions: perms.yaml\naudit_log: {{file: ./audit.jsonl, key_env: {KEY_VAR}}}\n",
    )
    assert main(["validate", str(path)]) == 0
    assert capsys.readouterr().out.strip() == f"{path}: ok"


def test_a_permission_file_that_does_not_parse_is_reported_at_its_own_line(
    folder: Path,
) -> None:
    perms = folder / "perms.yaml"
    perms.write_text("mode: strict\nallow:\n  - search\n  - 'send(to=all('\n")
    path = write(folder, "permissions: perms.yaml\n")
    [problem] = validated(path)
    assert (problem.rule, problem.file, problem.line) == ("permissions", str(perms), 4)
    assert "invalid permission rule 'send(to=all('" in problem.message
    perms.write_text("mode: strict\nallow: [search\n")  # not YAML
    [problem] = validated(path)
    assert (problem.file, problem.line) == (str(perms), 3)
    perms.write_text("allow: [search]\nper_user: {alice: {mode: sloppy}}\n")
    [problem] = validated(path)
    assert (problem.file, problem.line) == (str(perms), 2) and "sloppy" in problem.message
    perms.write_bytes(b"allow: [caf\xe9]\n")  # not UTF-8: no line of it to point at
    [problem] = validated(path)
    assert (problem.file, problem.line) == (str(path), 4)  # at the agent file's `permissions`
    assert problem.message.startswith(f"{perms}: cannot read permission file")


def test_a_key_variable_not_set_is_a_problem_not_a_crash_and_nothing_is_written(
    folder: Path,
) -> None:
    log = folder / "audit.jsonl"
    torn = b'{"seq": 1}\n{"seq": 2, "tor'  # a torn tail: opening the log would move it aside
    log.write_bytes(torn)
    (folder / "perms.txt").write_text("alice@corp.example\n")
    path = write(
        folder,
        "permissions: {sets: {team: {file: perms.txt}}, allow: ['send(to in $team)']}\n"
        "audit_log: {file: ./audit.jsonl, key_env: NO_SUCH_VALIDATE_VAR}\n",
    )
    before = sorted(p.name for p in folder.iterdir())
    [problem] = validated(path)
    assert problem.rule == "audit-log" and "$NO_SUCH_VALIDATE_VAR" in problem.message
    assert log.read_bytes() == torn  # not healed, not appended to
    assert sorted(p.name for p in folder.iterdir()) == before  # no quarantine file, nothing new


def test_a_section_with_an_unset_variable_reports_only_the_variable(folder: Path) -> None:
    path = write(
        folder,
        "permissions: '${NO_SUCH_VALIDATE_VAR}'\n"
        "audit_log: {file: '${NO_SUCH_VALIDATE_VAR}/audit.jsonl', unsigned: true}\n",
    )
    found = validated(path)
    assert [(p.rule, p.line) for p in found] == [("env-missing", 4), ("env-missing", 5)]


def test_a_section_an_override_replaces_is_not_checked(folder: Path) -> None:
    path = write(
        folder,
        "permissions: {mode: sloppy}\naudit_log: {file: ./gone/audit.jsonl}\n",
    )
    agent = Agent.from_file(path, permissions=StandardPermissions(), audit_log=None)
    assert isinstance(agent.deps.permissions, StandardPermissions)
    assert {p.rule for p in validated(path)} == {"permissions", "audit-log"}


async def test_a_sound_file_builds_the_same_permissions_and_log(folder: Path) -> None:
    (folder / "team.txt").write_text("alice@corp.example\n")
    path = write(
        folder,
        "permissions: {mode: strict, sets: {team: {file: team.txt}}, "
        "allow: ['send(to in $team)']}\n"
        f"audit_log: {{file: ./audit.jsonl, key_env: {KEY_VAR}}}\n",
    )
    assert validate_agent_file(path).spec.name == "v"
    assert not (folder / "audit.jsonl").exists()  # validating made nothing
    agent = Agent.from_file(path)
    try:
        assert agent.deps.permissions.mode == "strict"  # type: ignore[attr-defined]
        assert agent.deps.audit_log.keyed  # type: ignore[attr-defined]
    finally:
        await agent.aclose()
