"""A deny or ask rule names a tool ignoring case, as its argument globs already compare.

Found by probing MCP tools: a server listing `Transfer` (offered as `bank_Transfer`) ran
under `deny: [bank_transfer]` with `allow: [bank_*]`, in default and strict modes: the
server chooses its tools' names, so a rule written for `transfer` was dodged by a capital.
An allow rule (and an `unless` excuse) still names exactly the tool it allows."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from loomgraph.governance import StandardPermissions
from loomgraph.protocols import ToolCall, ToolSpec


def call(tool: str, **args: Any) -> ToolCall:
    return {"id": "c1", "tool": tool, "args": args}


def spec(tool: str) -> ToolSpec:
    return {"name": tool, "destructive": False}


def verdict(permissions: StandardPermissions, tool: str, **args: Any) -> str:
    """What `permissions` decide for one call of `tool`."""
    checked = permissions.check(call(tool, **args), spec(tool), user_id="u")
    return asyncio.run(checked).verdict


def spellings(name: str) -> st.SearchStrategy[str]:
    """`name` with any of its letters upper- or lower-cased."""
    flips = st.lists(st.booleans(), min_size=len(name), max_size=len(name))
    return flips.map(
        lambda up: "".join(c.upper() if u else c.lower() for c, u in zip(name, up, strict=True))
    )


@settings(max_examples=60, deadline=None)
@given(tool=spellings("bank_transfer"), mode=st.sampled_from(["default", "strict"]))
def test_a_denied_tool_is_denied_whatever_the_case_of_its_name(tool: str, mode: Any) -> None:
    rules = StandardPermissions(deny=["bank_transfer"], allow=["bank_*"], mode=mode)
    assert verdict(rules, tool, to="mallory", amount=10_000) == "deny"


@settings(max_examples=30, deadline=None)
@given(tool=spellings("transfer"))
def test_a_rule_with_arguments_and_an_ask_rule_too(tool: str) -> None:
    rules = StandardPermissions(deny=["transfer(amount>100)"], ask=["TRANSFER"], allow=["*"])
    assert verdict(rules, tool, amount=500) == "deny"
    assert verdict(rules, tool, amount=5) == "ask"


def test_an_allow_rule_names_its_tool_exactly() -> None:
    rules = StandardPermissions(allow=["transfer"], mode="strict")
    assert verdict(rules, "transfer") == "allow"
    assert verdict(rules, "Transfer") != "allow"
    excused = StandardPermissions(ask=["transfer unless transfer"], allow=["*"])
    assert verdict(excused, "transfer") == "allow"
    assert verdict(excused, "TRANSFER") == "ask"
