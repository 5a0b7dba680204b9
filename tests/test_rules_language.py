"""The rule language: each construct on realistic tools (banking, e-mail, calendar, chat),
`unless` in the deny → ask → allow order, sets, per-user rules, and positioned syntax errors."""

from __future__ import annotations

from typing import Any

import pytest

from loomgraph.governance import (
    PermissionConfigError,
    PermissionTypeError,
    RuleSyntaxError,
    StandardPermissions,
    parse_rule,
)
from loomgraph.protocols import Decision, ToolCall, ToolSpec


def schema(*names: str, **defaults: Any) -> dict[str, Any]:
    props: dict[str, Any] = {n: {} for n in names}
    props.update({n: {"default": v} for n, v in defaults.items()})
    return {"type": "object", "properties": props}


SPECS: dict[str, ToolSpec] = {
    "transfer": {"name": "transfer", "destructive": True, "parameters": schema("to", "amount")},
    "send_email": {
        "name": "send_email",
        "destructive": True,
        "parameters": schema("to", "cc", "subject", "body"),
    },
    "create_event": {
        "name": "create_event",
        "parameters": schema("title", "attendees", "duration_min", visibility="private"),
    },
    "post_message": {"name": "post_message", "parameters": schema("channel", "text")},
    "read_inbox": {"name": "read_inbox", "parameters": schema("folder")},
}


def call(tool: str, **args: Any) -> ToolCall:
    return {"id": "c1", "tool": tool, "args": args}


async def decide(perms: StandardPermissions, c: ToolCall, user: str | None = None) -> Decision:
    return await perms.check(c, SPECS[c["tool"]], user_id=user)


async def verdict(perms: StandardPermissions, c: ToolCall, user: str | None = None) -> str:
    return (await decide(perms, c, user)).verdict


# ---------------------------------------------------------------------------- constructs


async def test_absent_and_present() -> None:
    perms = StandardPermissions(
        allow=["send_email(to=all(*@corp.example), cc=<absent>)"],
        ask=["send_email(cc=<present>)"],
        mode="strict",
    )
    assert await verdict(perms, call("send_email", to=["a@corp.example"])) == "allow"
    assert await verdict(perms, call("send_email", to=["a@corp.example"], cc=[])) == "ask"


async def test_brace_alternatives() -> None:
    perms = StandardPermissions(allow=["send_email(to=*@{corp.com,corp.org})"], mode="strict")
    assert await verdict(perms, call("send_email", to="x@corp.com")) == "allow"
    assert await verdict(perms, call("send_email", to="x@corp.org")) == "allow"
    assert await verdict(perms, call("send_email", to="x@corp.net")) == "deny"
    assert await verdict(perms, call("send_email", to="x@corp.com.evil")) == "deny"
    tools = StandardPermissions(allow=["{read_inbox,post_message}"], mode="strict")
    assert await verdict(tools, call("read_inbox")) == "allow"


async def test_literal_and_named_sets() -> None:
    team = ["alice@corp.com", "bob@corp.com"]
    perms = StandardPermissions(
        allow=[
            "create_event(attendees in $team)",
            "transfer(to in [landlord@bank.example, utility@bank.example])",
        ],
        sets={"team": team},
        mode="strict",
    )
    assert await verdict(perms, call("create_event", attendees=team)) == "allow"
    outsider = call("create_event", attendees=["alice@corp.com", "eve@x.com"])
    assert await verdict(perms, outsider) == "deny"  # every element must be in the set
    assert await verdict(perms, call("transfer", to="landlord@bank.example")) == "allow"
    assert await verdict(perms, call("transfer", to="eve@bank.example")) == "deny"


async def test_a_callable_set_is_read_at_each_check() -> None:
    payees = {"landlord"}
    perms = StandardPermissions(
        allow=["transfer(to in $payees)"], sets={"payees": lambda: payees}, mode="strict"
    )
    assert await verdict(perms, call("transfer", to="landlord")) == "allow"
    payees.discard("landlord")
    assert await verdict(perms, call("transfer", to="landlord")) == "deny"


async def test_a_set_that_cannot_be_read_allows_nothing_and_still_denies() -> None:
    def broken() -> list[str]:
        raise ConnectionError("directory down")

    perms = StandardPermissions(
        allow=["transfer(to in $payees)"],
        deny=["send_email(to in $blocked)"],
        sets={"payees": broken, "blocked": broken},
        mode="bypass",
    )
    assert await verdict(perms, call("send_email", to="a@x.com")) == "deny"
    strict = StandardPermissions(
        allow=["transfer(to in $payees)"], sets={"payees": broken}, mode="strict"
    )
    assert await verdict(strict, call("transfer", to="landlord")) == "deny"


async def test_list_quantifiers() -> None:
    perms = StandardPermissions(
        deny=["send_email(to=any(*@evil.example))"],
        allow=["send_email(to=all(*@corp.example))", "post_message(channel=any(#ops))"],
        mode="strict",
    )
    mixed = call("send_email", to=["a@corp.example", "x@evil.example"])
    assert (await decide(perms, mixed)).rule == "deny:send_email(to=any(*@evil.example))"
    assert await verdict(perms, call("send_email", to=["a@corp.example"])) == "allow"
    assert await verdict(perms, call("send_email", to=["a@corp.example", "b@x.io"])) == "deny"
    assert await verdict(perms, call("post_message", channel=["#dev", "#ops"])) == "allow"


@pytest.mark.parametrize(
    ("rule", "amount", "allowed"),
    [
        ("transfer(amount<=100)", 100, True),
        ("transfer(amount<=100)", 100.5, False),
        ("transfer(amount<100)", 100, False),
        ("transfer(amount>0)", 0, False),
        ("transfer(amount>=0.01)", 0.01, True),
        ("transfer(amount==5)", 5.0, True),
        ("transfer(amount!=5)", 6, True),
        ("transfer(amount<=100)", "50", False),  # a string is not a number for allow
        ("transfer(amount<=100)", True, False),
        ("transfer(amount<=100)", float("nan"), False),
        ("transfer(amount<=100)", float("-inf"), False),
        ("transfer(amount<=100)", None, False),
    ],
)
async def test_numeric_comparisons(rule: str, amount: Any, allowed: bool) -> None:
    perms = StandardPermissions(allow=[rule], mode="strict")
    assert await verdict(perms, call("transfer", to="x", amount=amount)) == (
        "allow" if allowed else "deny"
    )


@pytest.mark.parametrize("amount", ["5000", "lots", None, float("nan"), {"v": 1}, [1, "x"]])
async def test_a_deny_comparison_holds_for_values_it_cannot_rule_out(amount: Any) -> None:
    perms = StandardPermissions(deny=["transfer(amount>1000)"], mode="bypass")
    assert await verdict(perms, call("transfer", to="x", amount=amount)) == "deny"
    assert await verdict(perms, call("transfer", to="x", amount=10)) == "allow"


async def test_an_absent_argument_uses_the_schema_default_for_deny_rules() -> None:
    perms = StandardPermissions(deny=["create_event(visibility=public)"], mode="bypass")
    assert await verdict(perms, call("create_event", title="x")) == "allow"  # default private
    assert await verdict(perms, call("create_event", visibility="public")) == "deny"
    # an argument the schema does not list: the tool does not take it, the rule does not apply
    other = StandardPermissions(deny=["create_event(room=*)"], mode="bypass")
    assert await verdict(other, call("create_event", title="x")) == "allow"
    # listed without a default: it could be anything
    cc = StandardPermissions(deny=["send_email(cc=*@evil.example)"], mode="bypass")
    assert await verdict(cc, call("send_email", to=["a@x.com"])) == "deny"


# ---------------------------------------------------------------------------- unless


async def test_ask_unless() -> None:
    perms = StandardPermissions(
        deny=["transfer(to=*@evil.example)"],
        ask=["transfer unless transfer(amount<=100, to in $payees)"],
        sets={"payees": ["landlord@bank.example"]},
        mode="strict",
    )
    small = await decide(perms, call("transfer", to="landlord@bank.example", amount=50))
    assert small.verdict == "allow"
    assert small.rule == "unless:transfer(amount<=100, to in $payees)"
    assert await verdict(perms, call("transfer", to="landlord@bank.example", amount=500)) == "ask"
    assert await verdict(perms, call("transfer", to="x@bank.example", amount=5)) == "ask"
    # deny rules come first: an unless never excuses a denied call
    assert await verdict(perms, call("transfer", to="m@evil.example", amount=5)) == "deny"
    # the unless is matched as an allow rule: an absent amount is not <= 100
    assert await verdict(perms, call("transfer", to="landlord@bank.example")) == "ask"


async def test_every_matching_ask_rule_must_be_excused() -> None:
    perms = StandardPermissions(
        ask=["transfer unless transfer(amount<=100)", "transfer(to=*@new.example)"],
        mode="strict",
    )
    assert await verdict(perms, call("transfer", to="a@old.example", amount=5)) == "allow"
    late = await decide(perms, call("transfer", to="a@new.example", amount=5))
    assert (late.verdict, late.rule) == ("ask", "ask:transfer(to=*@new.example)")


async def test_unless_structured_form_and_per_user() -> None:
    perms = StandardPermissions(
        ask=[{"rule": "send_email", "unless": ["send_email(to=all(*@corp.example))"]}],
        per_user={"alice": {"ask": ["post_message unless post_message(channel in $mine)"]}},
        sets={"mine": ["#alice"]},
        mode="default",
    )
    assert await verdict(perms, call("send_email", to=["a@corp.example"])) == "allow"
    assert await verdict(perms, call("send_email", to=["a@x.example"])) == "ask"
    own = await decide(perms, call("post_message", channel="#alice", text="hi"), "alice")
    assert (own.verdict, own.rule) == ("allow", "user:alice:unless:post_message(channel in $mine)")
    assert await verdict(perms, call("post_message", channel="#all"), "alice") == "ask"
    assert await verdict(perms, call("post_message", channel="#all"), "bob") == "allow"


async def test_bypass_mode_still_allows_an_unexcused_ask() -> None:
    perms = StandardPermissions(ask=["transfer unless transfer(amount<=1)"], mode="bypass")
    assert (await decide(perms, call("transfer", amount=9))).rule == "mode:bypass"


def test_approval_timeouts() -> None:
    perms = StandardPermissions(
        ask=["send_email", {"rule": "transfer", "approval_timeout_s": 30}],
        per_user={"bob": {"ask": ["post_message"], "approval_timeout_s": 5}},
        approval_timeout_s=600,
    )
    assert perms.approval_timeout("ask:transfer") == 30
    assert perms.approval_timeout("ask:send_email") == 600
    assert perms.approval_timeout("user:bob:ask:post_message") == 5
    assert perms.approval_timeout("mode:default:destructive") == 600
    assert StandardPermissions().approval_timeout("ask:x") is None


# ---------------------------------------------------------------------------- syntax errors


@pytest.mark.parametrize(
    ("rule", "position", "problem"),
    [
        ("", 0, "no tool name"),
        ("read(", 5, "argument name"),
        ("read()", 5, "empty argument list"),
        ("read(path)", 9, "expected ="),
        ("read(path=)", 10, "empty glob"),
        ("read(path=/a,)", 13, "trailing ','"),
        ("read(path=/a, path=/b)", 14, "appears twice"),
        ("re ad", 3, "unexpected 'ad'"),
        ('read(path="/a)', 10, "unterminated"),
        ("transfer(amount<=lots)", 17, "needs a number"),
        ("transfer(amount<=)", 17, "needs a number"),
        ("send(cc=<missing>)", 8, "<absent> or <present>"),
        ("send(to in [])", 12, "empty set"),
        ("send(to in team)", 11, "[item, ...] or $set"),
        ("send(to in [a, b)", 16, "missing ']'"),
        ("send(to in $)", 12, "set name"),
        ("write(path:file=/x)", 11, "unknown kind"),
        ("send(to=all(*@x)", 16, "missing ')'"),
        ("send(to=x) extra", 11, "unexpected 'extra'"),
        ("send(to=x))", 10, "')' without '('"),
        ("send unless", 11, "no tool name"),
        ("x unless y unless z", 11, "only an ask rule"),
        ("se nd(to=x)", 3, "unexpected"),
        ("send(to=a'b)", 9, "quote the whole value"),
        # é is a letter, yet no tool name holds it: the message said "only letters".
        ("bank_transfér", 0, "only ASCII letters and digits"),
    ],
)
def test_syntax_errors_name_the_rule_and_position(rule: str, position: int, problem: str) -> None:
    with pytest.raises(RuleSyntaxError) as info:
        StandardPermissions(ask=[rule])
    err = info.value
    assert (err.rule, err.position) == (rule, position), str(err)
    assert problem in err.problem and f"at position {position}" in str(err)
    assert isinstance(err, ValueError)


def test_unless_only_in_ask_rules() -> None:
    for kind in ("allow", "deny"):
        with pytest.raises(RuleSyntaxError, match="only an ask rule"):
            StandardPermissions(**{kind: ["transfer unless transfer(amount<=1)"]})


def test_configuration_errors_are_typed() -> None:
    with pytest.raises(PermissionConfigError, match=r"unknown set\(s\) \$team"):
        StandardPermissions(allow=["send_email(to in $team)"])
    with pytest.raises(PermissionConfigError, match=r"\$team"):
        StandardPermissions(per_user={"a": {"allow": ["send_email(to in $team)"]}})
    with pytest.raises(PermissionTypeError):
        StandardPermissions(sets={"team": "alice"})
    with pytest.raises(PermissionTypeError):
        StandardPermissions(ask=[{"rule": "x", "unless": "y"}])
    with pytest.raises(PermissionConfigError, match="ask mapping"):
        StandardPermissions(ask=[{"rule": "x", "unles": ["y"]}])
    with pytest.raises(PermissionConfigError, match="seconds > 0"):
        StandardPermissions(approval_timeout_s=0)


@pytest.mark.parametrize(
    "text",
    [
        "send_email(to=all(*@{corp.com,corp.org}), cc=<absent>, subject='a, \"b\"')",
        "transfer(amount<=100.5, to in [a, 'b c']) unless transfer(to in $x)",
        "shell(cmd:command=ls *, cwd:path=/data/**)",
        "mcp_*(n>=-3)",
    ],
)
def test_canonical_text_round_trips(text: str) -> None:
    rule = parse_rule(text)
    again = parse_rule(rule.canonical_text)
    assert (again.tool, again.conds, again.canonical_text) == (
        rule.tool,
        rule.conds,
        rule.canonical_text,
    )


def test_the_documented_examples_parse() -> None:
    import ast
    import re
    from pathlib import Path

    doc = Path(__file__).parent.parent / "docs" / "governance.md"
    text = doc.read_text()
    block = text[text.index("Examples for real tools:") : text.index("**Lists.**")]
    rules = [r for found in re.findall(r"= (\[.*\])", block) for r in ast.literal_eval(found)]
    assert len(rules) > 15
    for rule in rules:
        parse_rule(rule)
