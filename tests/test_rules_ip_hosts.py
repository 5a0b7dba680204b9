"""A deny rule on an IP address holds for the address's other spellings (one number, hex,
short forms, IPv4-mapped IPv6)."""

from __future__ import annotations

import http.server
import threading
import urllib.request
from pathlib import Path
from typing import Any, ClassVar

import pytest

from loomgraph import Agent, tool
from loomgraph.governance import StandardPermissions
from loomgraph.governance.addresses import IP_SCAN, host_spellings, ip_spellings
from loomgraph.models import ScriptedModel
from loomgraph.protocols import ToolCall, ToolSpec
from mcp_tiny_http import WAIT

# ------------------------------------------------------------ 4. permission host readings


class _Hits(http.server.BaseHTTPRequestHandler):
    hits: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.hits.append(self.path)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"the secret page")

    def log_message(self, *args: Any) -> None:
        pass


async def test_a_deny_rule_on_an_ip_host_holds_for_its_other_spellings(tmp_path: Path) -> None:
    """A deny rule names a host by its IP address (`fetch(url=http://127.0.0.1*)`, as one
    guards the cloud metadata address 169.254.169.254). The model writes the same address as
    one number (`http://2130706433:PORT/`), in hex (`0x7f000001`), short (`127.1`) or as an
    IPv4-mapped IPv6 literal (`[::ffff:127.0.0.1]`): every HTTP client connects to 127.0.0.1,
    and the call is allowed, the page fetched. The user should see each denied: a host's
    other spellings (as the root dot and punycode are now) include an IPv4 address's."""

    class handler(_Hits):
        hits: ClassVar[list[str]] = []

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()

    @tool
    def fetch(url: str) -> str:
        """Fetch a web page."""
        with urllib.request.urlopen(url, timeout=WAIT) as answer:
            return str(answer.read().decode())

    spellings = [
        f"http://2130706433:{port}/a",
        f"http://0x7f000001:{port}/b",
        f"http://127.1:{port}/c",
        f"http://[::ffff:127.0.0.1]:{port}/d",
    ]
    turns: list[Any] = [{"tool_calls": [{"tool": "fetch", "args": {"url": u}}]} for u in spellings]
    agent = Agent(
        "x",
        model=ScriptedModel([*turns, "done"]),
        tools=[fetch],
        permissions=StandardPermissions(allow=["fetch"], deny=["fetch(url=http://127.0.0.1*)"]),
    )
    try:
        result = await agent.run("read the page")
    finally:
        httpd.shutdown()
        thread.join(WAIT)
    assert result.status == "completed"
    assert handler.hits == [], f"denied host reached through: {handler.hits}"


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


@pytest.mark.parametrize(
    ("rule", "args"),
    [
        ("connect(host=10.0.0.5)", {"host": "167772165"}),  # one number
        ("connect(host=10.0.0.5)", {"host": "0xa000005"}),  # hex
        ("connect(host=10.0.0.5)", {"host": "0xA.0.0.5"}),  # hex parts
        ("connect(host=10.0.0.5)", {"host": "012.0.0.5"}),  # octal parts, as inet_aton reads
        ("connect(host=10.0.0.5)", {"host": "010.000.000.005"}),  # leading zeros, decimal
        ("connect(host=10.0.0.5)", {"host": "10.5"}),  # short form
        ("connect(host=10.0.0.5)", {"host": "10.0.5"}),
        ("connect(host=10.0.0.5)", {"host": "10.0.0.5."}),  # root dot
        ("connect(host=10.0.0.5)", {"host": "::ffff:10.0.0.5"}),  # IPv4-mapped IPv6
        ("connect(host=10.0.0.5)", {"host": "::FFFF:a00:5"}),  # the same in hex
        ("connect(host=10.0.0.5)", {"host": "[::ffff:10.0.0.5]"}),
        ("connect(host=10.0.0.5*)", {"host": "[::ffff:10.0.0.5]:5432"}),
        ("connect(host=10.0.0.5*)", {"host": "167772165:5432"}),
        ("connect(host=10.0.0.5)", {"host": "::10.0.0.5"}),  # IPv4-compatible IPv6
        ("connect(host=::1)", {"host": "0:0:0:0:0:0:0:1"}),  # compressed
        ("fetch(url=http://169.254.169.254/*)", {"url": "http://2852039166/latest"}),
        ("fetch(url=http://169.254.169.254/*)", {"url": "http://0xa9fea9fe/latest"}),
        ("fetch(url=http://169.254.169.254/*)", {"url": "http://169.254.43518/latest"}),
        ("fetch(url=http://169.254.169.254/*)", {"url": "http://[::ffff:a9fe:a9fe]/x"}),
        ("fetch(url=http://?::1?*)", {"url": "http://[0:0::1]:8080/x"}),  # `?`: the brackets
        ("send(to=*@10.0.0.5)", {"to": "bob@167772165"}),  # an address's domain
    ],
)
async def test_other_spellings_of_an_ip_address_do_not_dodge_a_deny_rule(
    rule: str, args: dict[str, Any]
) -> None:
    """A plain host value (`167772165`, `::ffff:10.0.0.5`) or a URL's host in another
    spelling of the address a deny rule names was allowed: every client connects to the
    named address. Expected: deny."""
    perms = StandardPermissions(deny=[rule])
    assert await _verdict(perms, rule.split("(")[0], args) == "deny"


async def test_an_ask_rule_reads_an_ip_address_spellings_too() -> None:
    """As a deny rule does: `connect(host=10.0.0.5)` asks about `167772165`."""
    perms = StandardPermissions(ask=["connect(host=10.0.0.5)"], allow=["connect"])
    assert await _verdict(perms, "connect", {"host": "167772165"}) == "ask"


@pytest.mark.parametrize(
    ("rule", "args"),
    [
        ("connect(host=10.0.0.5)", {"host": "10.0.0.50"}),
        ("connect(host=10.0.0.5)", {"host": "ten.0.0.5"}),
        ("connect(host=10.0.0.5)", {"host": "4294967296"}),  # past 32 bits: no address
        ("connect(host=10.0.0.5)", {"host": "::ffff:10.0.0.6"}),
        ("connect(host=10.0.0.5)", {"host": "2001:db8::a00:5"}),  # neither mapped nor compatible
        ("connect(host=0.0.0.1)", {"host": "::1"}),  # IPv6 loopback, not an IPv4 address
        ("fetch(url=http://127.0.0.1*)", {"url": "http://127.0.0.2/x"}),
        ("fetch(url=http://127.0.0.1*)", {"url": "http://[::ffff:127.0.0.2]/x"}),
    ],
)
async def test_other_addresses_stay_allowed_by_an_ip_deny_rule(
    rule: str, args: dict[str, Any]
) -> None:
    """Only spellings of the named address are denied."""
    perms = StandardPermissions(deny=[rule])
    assert await _verdict(perms, rule.split("(")[0], args) == "allow"


@pytest.mark.parametrize("host", ["167772165", "::ffff:10.0.0.5", "10.5"])
async def test_an_allow_rule_does_not_allow_other_spellings_of_an_address(host: str) -> None:
    """The address readings are for deny and ask rules only: an allow rule naming the
    address matches it as written, so `strict` mode asks about the other spellings."""
    perms = StandardPermissions(allow=["connect(host=10.0.0.5)"], mode="strict")
    assert await _verdict(perms, "connect", {"host": host}) != "allow"
    assert await _verdict(perms, "connect", {"host": "10.0.0.5"}) == "allow"


def test_ip_spellings_are_read_only_for_what_may_be_an_address() -> None:
    """A name has no address spellings, nor has a value longer than `IP_SCAN`; an address
    has its dotted quad, its decimal parts and its compressed IPv6 form."""
    assert ip_spellings("example.com") == []
    assert ip_spellings("deadbeef") == []  # hex letters without 0x: a name
    assert ip_spellings("127.0.0.1") == []  # already the one spelling
    assert ip_spellings("2130706433") == ["127.0.0.1"]
    assert ip_spellings("010.0.0.5") == ["8.0.0.5", "10.0.0.5"]
    assert ip_spellings("[::ffff:127.0.0.1]") == ["[::ffff:7f00:1]", "127.0.0.1"]
    assert ip_spellings("1" * (IP_SCAN + 1)) == []
    assert host_spellings("127.1.") == ["127.1", "127.0.0.1"]
