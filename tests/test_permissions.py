"""StandardPermissions: rule syntax, canonical arguments, deny → ask → allow, modes, per-user
rules, policies, and a property: a call matched by a deny rule is never allowed."""

from __future__ import annotations

import posixpath
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loomgraph.governance import (
    PermissionConfigError,
    RuleSyntaxError,
    StandardPermissions,
    canonical,
    parse_rule,
)
from loomgraph.protocols import Decision, Permissions, ToolCall, ToolSpec

SPECS: dict[str, ToolSpec] = {
    "read": {
        "name": "read",
        "destructive": False,
        "parameters": {"properties": {"path": {}, "opts": {}, "limit": {"default": 10}}},
    },
    "write": {"name": "write", "destructive": True},
    "shell": {"name": "shell", "destructive": True},
    "fetch": {"name": "fetch"},
}


def call(tool: str, **args: Any) -> ToolCall:
    return {"id": "c1", "tool": tool, "args": args}


async def decide(perms: StandardPermissions, c: ToolCall, user: str | None = None) -> Decision:
    return await perms.check(c, SPECS.get(c["tool"]), user_id=user)


async def verdict(perms: StandardPermissions, c: ToolCall, user: str | None = None) -> str:
    return (await decide(perms, c, user)).verdict


def test_is_permissions() -> None:
    assert isinstance(StandardPermissions(), Permissions)


# ---------------------------------------------------------------------------- rule syntax


@pytest.mark.parametrize(
    "rule",
    [
        "",
        "  ",
        "read(",
        "read()",
        "read(path)",
        "read(path=)",
        "read(path=/a,)",
        "read(1=x)",
        "read(path=/a, path=/b)",
        "re ad",
        'read(path="/a)',
        'read(path="/a" x)',
        'read(path=/a"b)',
        "read)(",
        "read(a.=x)",
    ],
)
def test_bad_rules_raise_naming_the_rule(rule: str) -> None:
    with pytest.raises(RuleSyntaxError, match="invalid permission rule") as info:
        StandardPermissions(allow=[rule])
    assert isinstance(info.value, ValueError) and info.value.rule == rule
    assert 0 <= info.value.position <= len(rule)
    assert repr(rule.strip()) in str(info.value) or repr(rule) in str(info.value)


def test_rules_must_be_a_list() -> None:
    with pytest.raises(TypeError, match="list of rules"):
        StandardPermissions(deny="shell")


def test_rule_forms_parse() -> None:
    assert parse_rule("read").args == ()
    assert parse_rule("mcp_*").tool == "mcp_*"
    rule = parse_rule('shell(cmd="rm -rf *, now", cwd = /tmp/*, opts.force=true)')
    assert rule.args == (("cmd", "rm -rf *, now"), ("cwd", "/tmp/*"), ("opts.force", "true"))
    assert parse_rule("x(q='it\\'s')").args == (("q", "it's"),)


async def test_each_rule_form_matches() -> None:
    perms = StandardPermissions(
        deny=[
            "shell(cmd=rm *)",
            "mcp_*",
            "fetch(url=https://evil.example/*)",
            "write(path=/data/*, mode=overwrite)",
            "read(opts.recursive=true)",
            "read(limit=[5-9]?)",
        ],
        mode="bypass",
    )
    assert await verdict(perms, call("shell", cmd="rm -rf /")) == "deny"
    assert await verdict(perms, call("shell", cmd="ls")) == "allow"
    # no cmd, and no schema saying shell takes none: it could be anything, so the deny holds
    assert await verdict(perms, call("shell")) == "deny"
    SPECS["mcp_search"] = {"name": "mcp_search"}
    try:
        assert await verdict(perms, call("mcp_search", q="x")) == "deny"
    finally:
        del SPECS["mcp_search"]
    assert await verdict(perms, call("fetch", url="https://evil.example/a")) == "deny"
    assert await verdict(perms, call("fetch", url="https://good.example/a")) == "allow"
    # every constrained argument must match
    assert await verdict(perms, call("write", path="/data/x", mode="overwrite")) == "deny"
    assert await verdict(perms, call("write", path="/data/x", mode="append")) == "allow"
    # nested (dotted) and non-string arguments match on their JSON form
    assert await verdict(perms, call("read", opts={"recursive": True})) == "deny"
    assert await verdict(perms, call("read", opts={"recursive": False})) == "allow"
    no = {"recursive": False}
    assert await verdict(perms, call("read", limit=70, opts=no)) == "deny"
    assert await verdict(perms, call("read", limit=7, opts=no)) == "allow"
    # left out, an argument stands for its schema default (10 does not match [5-9]?) ...
    assert await verdict(perms, call("read", opts=no)) == "allow"
    # ... or, without one, for any value: `opts.recursive` could be true
    assert await verdict(perms, call("read", limit=7)) == "deny"
    assert await verdict(perms, call("read", limit=7, opts={})) == "deny"


async def test_list_arguments_deny_on_any_allow_on_every() -> None:
    perms = StandardPermissions(
        deny=["shell(paths=/etc/**)"], allow=["write(paths=/tmp/**)"], mode="strict"
    )
    assert await verdict(perms, call("shell", paths=["/tmp/a", "/etc/passwd"])) == "deny"
    assert await verdict(perms, call("write", paths=["/tmp/a", "/tmp/b/c"])) == "allow"
    assert await verdict(perms, call("write", paths=["/tmp/a", "/home/x"])) == "deny"


# ---------------------------------------------------------------------------- canonical paths


def test_canonical_form() -> None:
    assert canonical("/data/../etc/passwd") == "/etc/passwd"
    assert canonical("//etc//passwd") == "/etc/passwd"
    assert canonical("./a/./b/") == "a/b"
    assert canonical("cat /data/../etc/passwd") == "cat /etc/passwd"
    assert canonical("https://x.example//a/../b") == "https://x.example//a/../b"
    assert canonical(3) == "3" and canonical(True) == "true" and canonical(None) == "null"
    assert canonical({"b": 1, "a": [2]}) == '{"a":[2],"b":1}'


async def test_paths_are_canonical_before_matching() -> None:
    perms = StandardPermissions(
        allow=["read(path=/data/**)"], deny=["read(path=/etc/**)"], mode="strict"
    )
    assert await verdict(perms, call("read", path="/data/a/b.txt")) == "allow"
    traversal = await decide(perms, call("read", path="/data/../etc/passwd"))
    assert traversal.verdict == "deny" and traversal.rule == "deny:read(path=/etc/**)"
    assert await verdict(perms, call("read", path="//etc/passwd")) == "deny"
    assert await verdict(perms, call("read", path="/data/../home/x")) == "deny"  # strict
    # a path with spaces that climbs out is read both ways: never allowed
    assert await verdict(perms, call("read", path="/data/x y/../../../etc/passwd")) == "deny"
    assert await verdict(perms, call("read", path="/data/x y/z")) == "allow"


async def test_star_stays_in_a_segment_for_paths_only() -> None:
    perms = StandardPermissions(allow=["read(path=/data/*)", "shell(cmd=ls *)"], mode="strict")
    assert await verdict(perms, call("read", path="/data/a")) == "allow"
    assert await verdict(perms, call("read", path="/data/a/b")) == "deny"
    assert await verdict(perms, call("shell", cmd="ls /data/a/b")) == "allow"
    globstar = StandardPermissions(allow=["read(path=/data/**/x.txt)"], mode="strict")
    assert await verdict(globstar, call("read", path="/data/x.txt")) == "allow"
    assert await verdict(globstar, call("read", path="/data/a/b/x.txt")) == "allow"
    assert await verdict(globstar, call("read", path="/data/a/y.txt")) == "deny"


# ---------------------------------------------------------------------------- order and modes


async def test_deny_then_ask_then_allow_first_match_wins() -> None:
    perms = StandardPermissions(
        allow=["shell", "read"],
        ask=["shell(cmd=git *)", "read"],
        deny=["shell(cmd=git push*)", "shell(cmd=*)"],
    )
    denied = await decide(perms, call("shell", cmd="git push origin"))
    assert (denied.verdict, denied.rule) == ("deny", "deny:shell(cmd=git push*)")
    asked = await decide(perms, call("read", path="/a"))
    assert (asked.verdict, asked.rule) == ("ask", "ask:read")
    allowed = await decide(StandardPermissions(allow=["shell"]), call("shell", cmd="x"))
    assert (allowed.verdict, allowed.rule) == ("allow", "allow:shell")


@pytest.mark.parametrize(
    ("mode", "plain", "destructive", "asked", "denied"),
    [
        ("default", "allow", "ask", "ask", "deny"),
        ("accept_edits", "allow", "allow", "ask", "deny"),
        ("bypass", "allow", "allow", "allow", "deny"),
        ("strict", "deny", "deny", "ask", "deny"),
    ],
)
async def test_modes(mode: Any, plain: str, destructive: str, asked: str, denied: str) -> None:
    perms = StandardPermissions(ask=["fetch"], deny=["shell"], mode=mode)
    read = await decide(perms, call("read", path="/a"))
    assert read.verdict == plain and read.rule.startswith(f"mode:{mode}:")
    write = await decide(perms, call("write", path="/a"))
    assert write.verdict == destructive
    assert write.rule == (
        "mode:default:destructive" if mode == "default" else f"mode:{mode}:{destructive}"
    )
    assert await verdict(perms, call("fetch", url="u")) == asked
    assert await verdict(perms, call("shell", cmd="x")) == denied


async def test_explicit_allow_lets_a_destructive_tool_run_in_default_mode() -> None:
    perms = StandardPermissions(allow=["write(path=/tmp/**)"])
    assert await verdict(perms, call("write", path="/tmp/x")) == "allow"
    assert await verdict(perms, call("write", path="/home/x")) == "ask"


async def test_unknown_tools_are_always_denied() -> None:
    perms = StandardPermissions(allow=["*"], mode="bypass", policy=lambda c, s, u: "allow")
    result = await decide(perms, call("nope"))
    assert (result.verdict, result.rule) == ("deny", "unknown_tool")


def test_unknown_mode() -> None:
    with pytest.raises(PermissionConfigError, match="unknown permission mode"):
        StandardPermissions(mode="yolo")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- per user


async def test_per_user_rules_add_to_the_global_ones() -> None:
    perms = StandardPermissions(
        deny=["shell(cmd=rm *)"],
        mode="strict",
        per_user={
            "alice": {"allow": ["shell", "read"]},
            "bob": StandardPermissions(allow=["shell(cmd=rm *)"], mode="bypass"),
            "carol": {"mode": "default"},
        },
    )
    assert await verdict(perms, call("read", path="/a")) == "deny"  # strict, no rule
    alice = await decide(perms, call("read", path="/a"), "alice")
    assert (alice.verdict, alice.rule) == ("allow", "user:alice:allow:read")
    assert await verdict(perms, call("shell", cmd="ls"), "alice") == "allow"
    # the global deny holds for every user, whatever their own rules or mode
    bob = await decide(perms, call("shell", cmd="rm -rf /"), "bob")
    assert (bob.verdict, bob.rule) == ("deny", "deny:shell(cmd=rm *)")
    assert await verdict(perms, call("write", path="/a"), "bob") == "allow"  # bypass
    assert await verdict(perms, call("write", path="/a"), "carol") == "ask"  # default mode
    assert await verdict(perms, call("read", path="/a"), "dave") == "deny"  # global


def test_per_user_entries_are_checked() -> None:
    with pytest.raises(ValueError, match="unknown keys"):
        StandardPermissions(per_user={"alice": {"allw": ["read"]}})
    with pytest.raises(ValueError, match="invalid permission rule 'read\\('"):
        StandardPermissions(per_user={"alice": {"allow": ["read("]}})
    with pytest.raises(TypeError, match="per_user"):
        StandardPermissions(per_user={"alice": ["read"]})  # type: ignore[dict-item]


def test_a_users_own_on_tainted_is_refused_not_ignored() -> None:
    # It holds for the whole agent: a user's entry setting it would be silently ignored.
    alice = StandardPermissions(on_tainted="deny")
    with pytest.raises(PermissionConfigError, match=r"per_user\['alice'\].*on_tainted"):
        StandardPermissions(on_tainted="allow", per_user={"alice": alice})
    with pytest.raises(PermissionConfigError, match="unknown keys"):
        StandardPermissions(per_user={"alice": {"on_tainted": "deny"}})
    # An entry that leaves it unset is taken, whatever the agent's setting.
    kept = StandardPermissions(on_tainted="deny", per_user={"alice": StandardPermissions()})
    assert kept.on_tainted == "deny"


# ---------------------------------------------------------------------------- policies


async def test_policy_decides_after_the_rules() -> None:
    seen: list[tuple[str, str | None]] = []

    def policy(c: ToolCall, spec: ToolSpec | None, user: str | None) -> Decision | str:
        seen.append((c["tool"], user))
        if c["tool"] == "fetch":
            return Decision("deny", "no-network", "offline")
        return "allow" if user == "admin" else "default"

    perms = StandardPermissions(allow=["read"], policy=policy)
    assert await verdict(perms, call("read")) == "allow"
    assert seen == []  # a matching rule decided: the policy was not asked
    fetch = await decide(perms, call("fetch", url="u"))
    assert (fetch.verdict, fetch.rule, fetch.reason) == ("deny", "policy:no-network", "offline")
    assert await verdict(perms, call("write", path="/a"), "admin") == "allow"
    assert (await decide(perms, call("write", path="/a"), "bob")).rule == "mode:default:destructive"


async def test_async_policy_and_per_user_policy() -> None:
    async def strict_policy(c: ToolCall, spec: ToolSpec | None, user: str | None) -> str:
        return "ask"

    perms = StandardPermissions(per_user={"alice": {"policy": strict_policy}})
    assert await verdict(perms, call("read"), "alice") == "ask"
    assert await verdict(perms, call("read"), "bob") == "allow"


def _raises(c: ToolCall, spec: ToolSpec | None, user: str | None) -> str:
    raise RuntimeError("policy store down")


@pytest.mark.parametrize(
    "policy",
    [
        _raises,
        lambda c, s, u: None,
        lambda c, s, u: 42,
        lambda c, s, u: "maybe",
        lambda c, s, u: Decision("sometimes"),  # type: ignore[arg-type]
    ],
)
async def test_a_raising_or_junk_policy_denies(policy: Any) -> None:
    perms = StandardPermissions(mode="bypass", policy=policy)
    result = await decide(perms, call("read", path="/a"))
    assert (result.verdict, result.rule) == ("deny", "policy:error")
    assert result.reason


# ---------------------------------------------------------------------------- property

TOOLS = ["read", "write", "shell", "fetch"]
SEGMENTS = st.sampled_from(["data", "etc", "secret", "..", ".", "", "a b", "x"])
PATHS = st.lists(SEGMENTS, min_size=1, max_size=6).map(
    lambda parts: "/" + "/".join(parts)
) | st.sampled_from(["/data/../secret/x", "//secret/x", "/secret/./x", "/x/../../secret/a/b"])
GLOBS = st.sampled_from(
    ["/data/**", "/etc/**", "/secret/*", "*", "/data/*", "**/x", "/etc/passwd", "x*"]
)
RULES = st.builds(
    lambda tool, glob: tool if glob is None else f"{tool}(path={glob})",
    st.sampled_from([*TOOLS, "*", "re*"]),
    st.none() | GLOBS,
)
RULE_LISTS = st.lists(RULES, max_size=4)
ENTRIES = st.fixed_dictionaries(
    {
        "allow": RULE_LISTS,
        "ask": RULE_LISTS,
        "mode": st.sampled_from(["default", "accept_edits", "bypass", "strict"]),
    }
)


@settings(max_examples=300, deadline=None)
@given(
    deny=RULE_LISTS,
    allow=RULE_LISTS,
    ask=RULE_LISTS,
    user_entry=ENTRIES,
    mode=st.sampled_from(["default", "accept_edits", "bypass", "strict"]),
    always_allow=st.booleans(),
    tool=st.sampled_from(TOOLS),
    paths=st.lists(PATHS, min_size=1, max_size=3),
    as_list=st.booleans(),
    user=st.sampled_from(["alice", "bob", None]),
)
def test_property_a_call_matched_by_a_deny_rule_is_never_allowed(
    deny: list[str],
    allow: list[str],
    ask: list[str],
    user_entry: dict[str, Any],
    mode: Any,
    always_allow: bool,
    tool: str,
    paths: list[str],
    as_list: bool,
    user: str | None,
) -> None:
    import asyncio

    policy = (lambda c, s, u: "allow") if always_allow else None
    perms = StandardPermissions(
        allow=allow,
        ask=ask,
        deny=[*deny, "read(path=/secret/**)"],
        mode=mode,
        per_user={"alice": user_entry},
        policy=policy,
    )
    c = call(tool, path=paths if as_list else paths[0])
    result = asyncio.run(perms.check(c, SPECS[tool], user_id=user))
    rules = [parse_rule(r) for r in deny]
    if any(r.matches(c) for r in rules):
        assert result.verdict == "deny", (c, deny, result)
    # An independent oracle for traversal: whatever the path's spelling, once normalised it
    # is inside /secret, so reading it is denied.
    inside = [
        posixpath.normpath("/" + p.lstrip("/")).startswith("/secret/")
        for p in (paths if as_list else paths[:1])
        if " " not in p
    ]
    if tool == "read" and any(inside):
        assert result.verdict == "deny", (c, result)
