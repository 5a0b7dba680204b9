"""Permission rules on network names, nested lists and large bounds (found by probe 32).

A deny rule on an e-mail domain was dodged by a display name (`Bob <bob@competitor.example>`)
and by other spellings of the domain (root dot, ideographic full stop, punycode of a
lookalike); a deny rule on a host by its root dot, a URL's port or user info; an `any(...)`
deny rule by a nested list; and a large integer bound was rounded to a float. Each test says
what a user saw and what they should see. Allow rules must not get more permissive.
"""

from __future__ import annotations

from typing import Any

import pytest

from loomgraph import Agent, tool
from loomgraph.governance import StandardPermissions
from loomgraph.governance.addresses import ADDRESS_SCAN, host_spellings
from loomgraph.models import ScriptedModel
from loomgraph.protocols import ToolCall, ToolSpec


def _spec(name: str, *params: str) -> ToolSpec:
    """A tool spec whose schema lists `params` (no types, no defaults)."""
    props = {p: {} for p in params}
    return ToolSpec(  # type: ignore[typeddict-item]
        name=name, description="", parameters={"type": "object", "properties": props}
    )


async def _verdict(perms: StandardPermissions, tool_name: str, args: dict[str, Any]) -> str:
    call = ToolCall(id="c1", tool=tool_name, args=args)
    decision = await perms.check(call, _spec(tool_name, *args), user_id=None)
    return decision.verdict


# The docs' own e-mail example (docs/governance.md, "Rule language").
COMPETITOR = StandardPermissions(deny=["send_email(to=any(*@competitor.example))"])
LOOKALIKE = "\u0441\u043empetitor"  # Cyrillic es and o, then "mpetitor"


def _mailer(sent: list[Any]) -> Any:
    @tool
    def send_email(to: list, body: str = "") -> str:  # type: ignore[type-arg]
        """Send an e-mail."""
        sent.append(to)
        return "sent"

    return send_email


# ----------------------------------------------------------- e-mail addresses in deny rules


@pytest.mark.parametrize(
    "to",
    [
        "Bob <bob@competitor.example>",  # RFC 5322 name-addr: what every mail library sends
        "<bob@competitor.example>",  # angle-addr alone
        ["Bob <bob@competitor.example>"],
        "bob@competitor.example (Bob)",  # a comment after the address
        "bob@ (x) competitor.example",  # a comment inside it
        "<@relay.example:bob@competitor.example>",  # an obsolete source route
        "team: a@ok.example, bob@competitor.example;",  # a group
        '"Bob ' + "(" * 2000 + '" <bob@competitor.example>',  # parens the parser recurses on
        "Bob " + "(" * 2000 + " <bob@competitor.example>",  # ... and cannot read at all
        "x" * (ADDRESS_SCAN + 1) + " <bob@competitor.example.>",  # too long to parse
    ],
)
async def test_display_name_address_does_not_dodge_an_email_deny_rule(to: Any) -> None:
    """A deny rule on a recipient domain (`send_email(to=any(*@competitor.example))`, the
    docs' example) let `to="Bob <bob@competitor.example>"` run: the verdict was `allow`
    (`mode:default:allow`), and smtplib / email.utils deliver it to bob@competitor.example.
    Expected: deny, as for the bare address — an address in a name-addr or angle-addr is the
    same recipient; so is one with comments, a route or in a group."""
    assert await _verdict(COMPETITOR, "send_email", {"to": to}) == "deny"


@pytest.mark.parametrize(
    "to",
    [
        "bob@competitor.example.",  # fully qualified: the same domain in DNS
        "bob@competitor\u3002example",  # ideographic full stop: IDNA maps it to "."
        "bob@competitor\uff0eexample",  # fullwidth full stop
        "bob@competitor\uff61example.",  # halfwidth ideographic full stop, and a root dot
        "bob@" + LOOKALIKE.encode("idna").decode() + ".example",  # lookalike, punycode
        "bob@XN--MPETITOR-MBH3A.example",  # punycode is case-insensitive too
        "Bob <bob@" + LOOKALIKE + "\u3002example.>",  # all at once, in a name-addr
    ],
)
async def test_equivalent_domain_spellings_do_not_dodge_an_email_deny_rule(to: str) -> None:
    """`bob@competitor.example.` (trailing dot), `bob@competitor。example` (U+3002, which
    IDNA turns into a dot) and `bob@xn--mpetitor-…example` (the punycode of a Cyrillic
    lookalike, whose Unicode spelling the docs say is denied) were all allowed by the deny
    rule `*@competitor.example`. Expected: deny — each names the same (or the lookalike)
    domain, and "an ambiguity can make a call be denied or asked about, never allowed"."""
    assert await _verdict(COMPETITOR, "send_email", {"to": to}) == "deny"


@pytest.mark.parametrize(
    ("rule", "to"),
    [
        ("send_email(to=*@xn--bcher-kva.example)", "a@b\u00fccher.example"),  # rule in ASCII
        ("send_email(to=*@b\u00fccher.example)", "a@xn--bcher-kva.example"),  # rule in Unicode
        ("send_email(to=bob@competitor.example)", "Bob <BOB@competitor.example.>"),
        ("send_email(to in [bob@competitor.example])", "Bob <bob@competitor.example>"),
    ],
)
async def test_a_deny_rule_on_an_idn_or_one_address_matches_every_spelling(
    rule: str, to: str
) -> None:
    """A rule may name the domain in punycode or in Unicode, or one exact recipient (a glob
    or a set): each holds for the other spellings of the same address."""
    perms = StandardPermissions(deny=[rule])
    assert await _verdict(perms, "send_email", {"to": to}) == "deny"


@pytest.mark.parametrize(
    "to",
    [
        "bob@competitor.example.com",  # another domain
        "Bob <bob@ok.example>",
        "competitor.example <bob@ok.example>",  # the domain only in the display name
        "bob@competitor.example..",  # two dots: not the root dot, no host
    ],
)
async def test_other_domains_stay_allowed_by_an_email_deny_rule(to: str) -> None:
    """The address readings deny the domain the rule names, not one that merely contains it."""
    assert await _verdict(COMPETITOR, "send_email", {"to": to}) == "allow"


@pytest.mark.parametrize(
    "to",
    [
        "Bob <b@corp.example>",
        "b@corp.example.",
        "b@corp\u3002example",
        "b@xn--orp-3ed.example",  # punycode of "corp" with a Cyrillic es for its c
    ],
)
async def test_an_allow_rule_does_not_allow_other_spellings(to: str) -> None:
    """The new readings are for deny and ask rules only: an allow rule still matches a value
    only as written, so no spelling above is allowed by `to=*@corp.example` in strict mode."""
    perms = StandardPermissions(allow=["send_email(to=*@corp.example)"], mode="strict")
    assert await _verdict(perms, "send_email", {"to": to}) == "deny"
    assert await _verdict(perms, "send_email", {"to": "b@corp.example"}) == "allow"


async def test_an_ask_rule_reads_addresses_too() -> None:
    """Ask rules are on the generous side as well: a display name does not skip the ask."""
    perms = StandardPermissions(ask=["send_email(to=*@new-payee.example)"])
    assert await _verdict(perms, "send_email", {"to": "N <n@new-payee.example.>"}) == "ask"


async def test_display_name_address_never_reaches_the_tool_through_an_agent() -> None:
    """End to end: a model called `send_email(to="Bob <bob@competitor.example>")` under the
    documented deny rule and the tool ran. Expected: the call is denied and never runs."""
    sent: list[str] = []

    @tool
    def send_email(to: str, body: str = "") -> str:
        """Send an e-mail."""
        sent.append(to)
        return "sent"

    turns = [
        {
            "tool_calls": [
                {
                    "id": "c1",
                    "tool": "send_email",
                    "args": {"to": "Bob <bob@competitor.example>", "body": "the roadmap"},
                }
            ]
        },
        {"text": "done"},
    ]
    perms = StandardPermissions(deny=["send_email(to=*@competitor.example)"])
    agent = Agent("Mail.", model=ScriptedModel(turns), tools=[send_email], permissions=perms)
    result = await agent.run("mail bob")
    await agent.aclose()
    assert result.status == "completed"
    assert sent == [], f"a denied recipient was mailed: {sent}"


# ----------------------------------------------------------------------- hosts and URLs


@pytest.mark.parametrize(
    ("rule", "args"),
    [
        ("http(headers.host=*.internal)", {"headers": {"host": "db.internal."}}),
        ("http(headers.host=*.internal)", {"headers": {"host": "db\u3002internal"}}),
        ("http(headers.host=*.internal)", {"headers": {"host": "db.internal:5432"}}),  # Host:
        ("http(headers.host=*.internal)", {"headers": {"host": "db.internal.:80"}}),
        ("fetch(url=https://evil.example/*)", {"url": "https://evil.example./x"}),
        ("fetch(url=https://evil.example/*)", {"url": "https://evil\uff0eexample/x"}),
        ("fetch(url=https://evil.example/*)", {"url": "https://evil.example:443/x"}),
        ("fetch(url=https://evil.example/*)", {"url": "https://u:p@evil.example/x"}),
        ("fetch(url=https://evil.example/*)", {"url": "https://ok.example@evil.example./x"}),
        ("fetch(url=https://evil.example/*)", {"url": "https://evil.example"}),  # path: /
        ("fetch(url=https://evil.example/*)", {"url": "https://evil.example?q=1"}),
        ("fetch(url=http://localhost:6379/*)", {"url": "http://localhost.:6379/x"}),
        ("fetch(url=https://paypal.example/*)", {"url": "https://xn--pypal-4ve.example/"}),
    ],
)
async def test_other_spellings_of_a_host_do_not_dodge_a_deny_rule(rule: str, args: Any) -> None:
    """A host with its root dot (`db.internal.`, `https://evil.example./x`), which resolvers
    and HTTP clients treat as the same host, was allowed where the deny rule names the host;
    so were a URL with a port (`:443`) or user info (`u@`), a Host header with a port, and a
    URL without a path. Expected: deny — each is fetched from the host the rule names."""
    perms = StandardPermissions(deny=[rule])
    assert await _verdict(perms, rule.split("(")[0], args) == "deny"


@pytest.mark.parametrize(
    ("rule", "args"),
    [
        ("fetch(url=https://evil.example/*)", {"url": "https://evil.example.com/x"}),
        ("fetch(url=https://evil.example/*)", {"url": "https://evil.example@ok.example/x"}),
        ("fetch(url=https://evil.example/*)", {"url": "https://[::1/x"}),  # no URL at all
        ("http(headers.host=*.internal)", {"headers": {"host": "db.internal.example"}}),
        ("note(text=12)", {"text": "12:30"}),  # not a host and a port
    ],
)
async def test_other_hosts_stay_allowed_by_a_host_deny_rule(rule: str, args: Any) -> None:
    """The user info is not the host (`evil.example@ok.example` fetches from ok.example)."""
    perms = StandardPermissions(deny=[rule])
    assert await _verdict(perms, rule.split("(")[0], args) == "allow"


def test_host_spellings_fold_to_the_latin_ascii_name() -> None:
    """The readings of one host: stops as dots, one root dot dropped, punycode decoded and
    folded to Latin; a Unicode name also in punycode. An ASCII name is its only spelling."""
    assert host_spellings("Db.Internal.") == ["Db.Internal"]
    assert "competitor.example" in host_spellings("xn--mpetitor-mbh3a\uff61example.")
    assert "xn--bcher-kva.example" in host_spellings("b\u00fccher.example")
    assert host_spellings("xn--!bad.example") == ["xn--!bad.example"]  # kept, not decoded


# --------------------------------------------------------------------- nested list elements


async def test_a_nested_list_element_does_not_dodge_an_any_deny_rule() -> None:
    """`send_email(to: list)` called with `to=["a@ok.example", ["bob@competitor.example"]]`
    ran under `deny: send_email(to=any(*@competitor.example))`: the inner list was read as
    its JSON text, which the glob does not match, and pydantic passes a nested list to an
    untyped `list` parameter. Expected: the tool never runs (a deny or ask rule matches when
    any element matches, at any depth)."""
    sent: list[Any] = []
    turns = [
        {
            "tool_calls": [
                {
                    "id": "c1",
                    "tool": "send_email",
                    "args": {"to": ["a@ok.example", ["bob@competitor.example"]], "body": "hi"},
                }
            ]
        },
        {"text": "done"},
    ]
    agent = Agent(
        "Mail.", model=ScriptedModel(turns), tools=[_mailer(sent)], permissions=COMPETITOR
    )
    result = await agent.run("mail them")
    await agent.aclose()
    assert result.status == "completed"
    assert sent == [], f"a denied recipient was mailed: {sent}"


@pytest.mark.parametrize(
    ("rule", "to", "expected"),
    [
        (
            "send_email(to=any(*@competitor.example))",
            ["a@ok", [["bob@competitor.example"]]],
            "deny",
        ),
        ("send_email(to=*@competitor.example)", [("a@ok",), ["bob@competitor.example"]], "deny"),
        ("send_email(to=all(*@corp.example))", ["a@corp.example", ["b@corp.example"]], "deny"),
        ("send_email(to=all(*@corp.example))", ["a@corp.example", ["b@ok.example"]], "allow"),
        ("send_email(to=any(*))", [[]], "deny"),  # the nested list itself is still read
        ("transfer(amount>100)", [[5], [[500]]], "deny"),
    ],
)
async def test_a_deny_rule_reads_list_elements_at_any_depth(
    rule: str, to: Any, expected: str
) -> None:
    """`any` (and an unquantified deny) holds when an element at any depth matches, `all`
    when every scalar at any depth does."""
    perms = StandardPermissions(deny=[rule])
    name = "amount" if rule.startswith("transfer") else "to"
    assert await _verdict(perms, rule.split("(")[0], {name: to}) == expected


async def test_a_list_that_holds_itself_is_read_once() -> None:
    """A call built in Python may hold a cycle: reading it ends, and an element still counts."""
    to: list[Any] = ["bob@competitor.example"]
    to.append(to)
    assert await _verdict(COMPETITOR, "send_email", {"to": to}) == "deny"


@pytest.mark.parametrize(
    ("rule", "to"),
    [
        ("send_email(to=all(*@corp.example))", ["a@corp.example", ["b@corp.example"]]),
        ("send_email(to=any(*@corp.example))", ["a@corp.example", ["b@evil.example"]]),
        ("send_email(to=all(*))", ["a@corp.example", {"to": "b@evil.example"}]),
        ("send_email(to in [a@corp.example])", ["a@corp.example", ["a@corp.example"]]),
    ],
)
async def test_an_allow_rule_refuses_a_nested_element(rule: str, to: Any) -> None:
    """An allow rule's list match never covers a nested list or object: which recipients a
    tool takes from one is not something the rule can say. Strict mode then denies."""
    perms = StandardPermissions(allow=[rule], mode="strict")
    assert await _verdict(perms, "send_email", {"to": to}) == "deny"
    assert await _verdict(perms, "send_email", {"to": ["a@corp.example"]}) == "allow"


# ------------------------------------------------------------------- numeric comparisons


async def test_a_large_integer_bound_in_a_rule_is_compared_exactly() -> None:
    """`deny: transfer(amount<9007199254740993)` allowed `amount=9007199254740992`, which is
    below the bound: the rule's number was parsed as a float and rounded to 2**53. The docs
    say an int "is compared exactly however large". Expected: deny."""
    perms = StandardPermissions(deny=["transfer(amount<9007199254740993)"])
    assert await _verdict(perms, "transfer", {"amount": 2**53}) == "deny"
    assert await _verdict(perms, "transfer", {"amount": 2**53 + 1}) == "allow"


async def test_large_integers_compare_exactly_in_rules_and_numeric_strings() -> None:
    """A bound of any size is exact (10**30 + 1 is not 1e30), and a deny rule reads a numeric
    string the way a tool's `int()` does: `"9007199254740993"` is above 2**53."""
    bound = StandardPermissions(deny=[f"transfer(amount=={10**30 + 1})"])
    assert await _verdict(bound, "transfer", {"amount": 10**30 + 1}) == "deny"
    assert await _verdict(bound, "transfer", {"amount": 10**30}) == "allow"
    above = StandardPermissions(deny=["transfer(amount>9007199254740992)"])
    assert await _verdict(above, "transfer", {"amount": "9007199254740993"}) == "deny"
    allow = StandardPermissions(allow=["transfer(amount<=9007199254740992)"], mode="strict")
    assert await _verdict(allow, "transfer", {"amount": 2**53 + 1}) == "deny"
    assert await _verdict(allow, "transfer", {"amount": 2**53}) == "allow"


def test_an_integer_bound_keeps_its_canonical_text() -> None:
    """The fingerprint's text of a bound: an int as written (also when huge, now exact), a
    float as before, so `amount<=100` and `amount<=100.0` still hash alike."""
    texts = [r for r in StandardPermissions(deny=["t(a<=100)", "t(b<=100.0)"]).to_data()["deny"]]
    assert [str(t).split("(")[1] for t in texts] == ["a<=100)", "b<=100)"]
    huge = StandardPermissions(deny=["t(a<9007199254740993)", "t(b<1e300)"]).to_data()["deny"]
    assert [str(t).split("(")[1] for t in huge] == ["a<9007199254740993)", "b<1e+300)"]
    with pytest.raises(ValueError, match="needs a number"):
        StandardPermissions(deny=["t(a<" + "9" * 5000 + ")"])


# ------------------------------------------- allow rules naming addresses: every address fits

CORP_ONLY = ["send_email(to=all(*@{corp.com,corp.org}))"]  # the docs' allow example


@pytest.mark.parametrize(
    "to",
    [
        "x@evil.com, y@corp.com",  # a `*` spans the comma: as written it fits `*@corp.com`
        "Mallory <x@evil.com>, y@corp.com",
        "x@evil.com; y@corp.org",
        "y@corp.com x@evil.com",
    ],
)
@pytest.mark.parametrize("rule", [CORP_ONLY, ["send_email(to in [y@corp.com, y@corp.org])"]])
async def test_an_allow_rule_naming_addresses_needs_every_address_of_a_list(
    to: str, rule: list[str]
) -> None:
    """The docs' allow example let `to="x@evil.com, y@corp.com"` through in strict mode: a
    mail library sends to both, the rule names only corp.com addresses."""
    strict = StandardPermissions(allow=rule, mode="strict")
    assert await _verdict(strict, "send_email", {"to": to}) == "deny"


@pytest.mark.parametrize("to", ["y@corp.com", "y@corp.org", ["y@corp.com", "y@corp.org"]])
async def test_an_allow_rule_naming_addresses_still_allows_them(to: Any) -> None:
    strict = StandardPermissions(allow=CORP_ONLY, mode="strict")
    assert await _verdict(strict, "send_email", {"to": to}) == "allow"


async def test_an_allow_rule_naming_no_address_reads_the_value_as_written() -> None:
    """Free text with an `@` in it is not read as addresses by a rule that names none."""
    strict = StandardPermissions(allow=["post(text=Meeting*)"], mode="strict")
    assert await _verdict(strict, "post", {"text": "Meeting at 10, ping @bob"}) == "allow"
