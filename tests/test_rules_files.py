"""Permission files (`from_file`, `from_dict`): the grammar in YAML, errors with file:line,
and the policy fingerprint (`to_data`, `fingerprint`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from loomgraph.governance import (
    PermissionConfigError,
    PermissionTypeError,
    RuleSyntaxError,
    StandardPermissions,
)
from loomgraph.protocols import ToolCall

FILE = """\
mode: strict
approval_timeout_s: 600
sets:
  payees: [landlord@bank.example, utility@bank.example]
  team: {file: team.txt}
deny:
  - "send_email(to=any(*@evil.example))"
ask:
  - "transfer unless transfer(amount<=100, to in $payees)"
  - {rule: wire, unless: ["wire(amount<=10)"], approval_timeout_s: 60}
allow:
  - read_inbox
  - "send_email(to in $team, cc=<absent>)"
per_user:
  alice:
    mode: default
    allow: ["transfer(amount<=1000, to in $payees)"]
"""

SPEC: Any = {"name": "t", "parameters": {"properties": {"to": {}, "cc": {}, "amount": {}}}}


def call(tool: str, **args: Any) -> ToolCall:
    return {"id": "c1", "tool": tool, "args": args}


async def verdict(perms: StandardPermissions, c: ToolCall, user: str | None = None) -> str:
    return (await perms.check(c, SPEC, user_id=user)).verdict


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "team.txt").write_text("# the team\nalice@corp.example\n\nbob@corp.example\n")
    path = tmp_path / "permissions.yaml"
    path.write_text(text)
    return path


async def test_a_permission_file(tmp_path: Path) -> None:
    perms = StandardPermissions.from_file(write(tmp_path, FILE))
    assert perms.mode == "strict"
    asked = await perms.check(call("wire", amount=50), SPEC, user_id=None)
    assert asked.rule == "ask:wire unless wire(amount<=10)"
    assert perms.approval_timeout(asked.rule) == 60
    assert perms.approval_timeout("ask:transfer unless transfer(amount<=100, to in $payees)") == 600
    assert await verdict(perms, call("read_inbox")) == "allow"
    assert await verdict(perms, call("send_email", to=["bob@corp.example"])) == "allow"
    assert await verdict(perms, call("send_email", to=["eve@x.example"])) == "deny"
    assert await verdict(perms, call("send_email", to=["bob@corp.example", "m@evil.example"])) == (
        "deny"
    )
    assert await verdict(perms, call("transfer", to="landlord@bank.example", amount=5)) == "allow"
    assert await verdict(perms, call("transfer", to="landlord@bank.example", amount=500)) == "ask"
    assert await verdict(perms, call("wire", amount=5)) == "allow"
    assert await verdict(perms, call("wire", amount=50)) == "ask"
    assert await verdict(perms, call("other"), "alice") == "allow"  # her mode is default


def test_from_dict_matches_from_file(tmp_path: Path) -> None:
    import yaml

    data = yaml.safe_load(FILE)
    data["sets"]["team"] = ["alice@corp.example", "bob@corp.example"]
    a = StandardPermissions.from_dict(data)
    b = StandardPermissions.from_file(write(tmp_path, FILE))
    assert a.fingerprint() == b.fingerprint()


@pytest.mark.parametrize(
    ("text", "line", "error", "message"),
    [
        ("mode: strict\nallw: [x]\n", 2, PermissionConfigError, "unknown key 'allw'"),
        ("mode: yolo\n", 1, PermissionConfigError, "unknown mode"),
        ("allow:\n  - read\n  - 'read(path=)'\n", 3, RuleSyntaxError, "empty glob"),
        ("deny:\n  - 'x unless y'\n", 2, RuleSyntaxError, "only an ask rule"),
        ("allow: read\n", 1, PermissionTypeError, "list of rules"),
        ("allow:\n  - 'x(a in $nope)'\n", 2, PermissionConfigError, "$nope"),
        ("ask:\n  - {rule: x, when: y}\n", 2, PermissionConfigError, "ask mapping"),
        ("per_user:\n  bob:\n    polcy: x\n", 3, PermissionConfigError, "unknown key 'polcy'"),
        ("per_user:\n  bob:\n    allow: ['y(a in $t)']\n", 3, PermissionConfigError, "$t"),
        ("sets:\n  t: alice\n", 2, PermissionTypeError, "list of strings"),
        ("sets:\n  t: {file: missing.txt}\n", 2, PermissionConfigError, "cannot read set"),
        ("approval_timeout_s: -1\n", 1, PermissionConfigError, "seconds > 0"),
        # No time at all: it passed, then every durable journal refused the run's start.
        ("approval_timeout_s: .inf\n", 1, PermissionConfigError, "finite"),
        ("ask:\n  - {rule: x, approval_timeout_s: .inf}\n", 2, PermissionConfigError, "finite"),
        ("mode: strict\nmode: bypass\n", 2, PermissionConfigError, "appears twice"),
        ("a: &x [1]\nb: *x\n", 2, PermissionConfigError, "aliases"),
        ("allow:\n  " + "[" * 400 + "]" * 400 + "\n", 2, PermissionConfigError, "nested more"),
        (
            "mode: default\napproval_timeout_s: " + "9" * 5000 + "\n",
            2,
            PermissionConfigError,
            "too long",
        ),
        ("allow: [\n", 2, PermissionConfigError, ""),
        ("- read\n", 1, PermissionTypeError, "mapping"),
    ],
)
def test_file_errors_name_file_and_line(
    tmp_path: Path, text: str, line: int, error: type[Exception], message: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(error) as info:
        StandardPermissions.from_file(path)
    err = info.value
    assert isinstance(err, PermissionConfigError)
    assert (err.file, err.line) == (str(path), line), str(err)
    assert message in str(err) and f"{path}:{line}" in str(err)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"allow": None},
        {"ask": None},
        {"deny": None},
        {"allow": 5},
        {"allow": {"read", "write"}},  # a set has no order; rules are tried in order
        {"sets": 5},
        {"per_user": ["alice"]},
        {"per_user": {"alice": 5}},
    ],
)
def test_the_constructor_refuses_what_from_dict_refuses(kwargs: dict[str, Any]) -> None:
    # Plain TypeErrors and AttributeErrors before ('NoneType' object is not iterable).
    name = next(iter(kwargs))
    with pytest.raises(PermissionTypeError, match=name):
        StandardPermissions(**kwargs)
    with pytest.raises(PermissionTypeError, match=name):
        StandardPermissions.from_dict(kwargs)


def test_approval_timeout_is_finite_in_python_too() -> None:
    with pytest.raises(PermissionConfigError, match="finite"):
        StandardPermissions(ask=["x"], approval_timeout_s=float("inf"))


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PermissionConfigError, match="cannot read"):
        StandardPermissions.from_file(tmp_path / "nope.yaml")


# ---------------------------------------------------------------------------- fingerprint


def test_fingerprint_is_stable_and_ignores_spelling() -> None:
    a = StandardPermissions(
        allow=["send_email(to=*@corp.com ,  cc=<absent>)"], sets={"t": ["b", "a"]}, mode="strict"
    )
    b = StandardPermissions(
        allow=['send_email(to="*@corp.com", cc=<absent>)'], sets={"t": ["a", "b"]}, mode="strict"
    )
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint().startswith("sha256:") and len(a.fingerprint()) == 7 + 64
    assert a.to_data()["allow"] == ['send_email(to="*@corp.com", cc=<absent>)']
    assert a.to_data()["pinnable"] is True


@pytest.mark.parametrize(
    "change",
    [
        {"mode": "default"},
        {"allow": ["send_email(to=*@corp.org)"]},
        {"allow": ["send_email(to=*@corp.com)", "read"]},
        {"deny": ["x"]},
        {"ask": ["x unless x(a<=1)"]},
        {"sets": {"t": ["a"]}},
        {"per_user": {"bob": {"allow": ["x"]}}},
        {"approval_timeout_s": 5},
    ],
)
def test_fingerprint_changes_with_anything_that_decides(change: dict[str, Any]) -> None:
    base: dict[str, Any] = {
        "allow": ["send_email(to=*@corp.com)"],
        "sets": {"t": ["a", "b"]},
        "mode": "strict",
    }
    assert (
        StandardPermissions(**base).fingerprint()
        != StandardPermissions(**{**base, **change}).fingerprint()
    )


def test_rule_order_changes_the_fingerprint() -> None:
    a = StandardPermissions(allow=["a", "b"])
    b = StandardPermissions(allow=["b", "a"])
    assert a.fingerprint() != b.fingerprint()


def team() -> list[str]:
    return ["a"]


def test_code_is_named_and_marked_not_pinnable() -> None:
    perms = StandardPermissions(sets={"t": team}, policy=lambda c, s, u: "default")
    data = perms.to_data()
    assert data["sets"] == {"t": {"callable": f"{__name__}.team"}}
    assert data["policy"] == {
        "callable": f"{__name__}.test_code_is_named_and_marked_not_pinnable.<locals>.<lambda>"
    }
    assert data["pinnable"] is False
