"""The viewer's approval card names the tool's identity — its origin and short digest — in real
headless Chromium: a tool of a real stdio MCP server (`mcp:bank`), a function of the agent,
and a tool whose host names an origin with markup in it, which the page shows as text."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from loomgraph.protocols.tool_identity import ToolIdentity
from serve_process import Server, environment, loomgraph, start_server

# The browser, its bound and its skip mark (no Chromium) as tests/test_serve_ui.py has them.
from test_serve_ui import WAIT, browser, pytestmark, sign_in  # noqa: F401

pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

STEERED = str(Path(__file__).with_name("mcp_steered_server.py"))
AGENT = "identity_agent:make_agent"
# An origin a host named (not an MCP server's checked name): text from outside, with markup.
EVIL = '<script>document.title="owned"</script><b>bank</b>'

AGENT_MODULE = '''
import os
import sys

from loomgraph import Agent, tool
from loomgraph.models import ScriptedModel
from loomgraph.runtime import SqliteRuntime
from loomgraph.tools import MCPServer


@tool(destructive=True)
def pay(to: str, amount: int) -> str:
    """Pay someone."""
    return f"paid {amount} to {to}"


@tool(destructive=True)
def wire(to: str, amount: int) -> str:
    """Wire money."""
    return f"wired {amount} to {to}"


# A tool whose host says where it comes from, in words of its own (ToolSpec.origin).
wire.spec["origin"] = {"kind": "mcp", "name": os.environ["EVIL_ORIGIN"], "reach": "0"}


def script(request):
    prompt = next(m["content"] for m in request.messages if m.get("role") == "user")
    if request.call_index == 0:
        args = {"to": "acme", "amount": 5}
        return {"tool_calls": [{"id": "call_1", "tool": prompt, "args": args}]}
    return "done"


def make_agent(journal=None, **options):
    bank = MCPServer.stdio(
        sys.executable, os.environ["STEERED"], os.environ["BANK_STATE"], name="bank",
        start_timeout=60, timeout=60,
    )
    return Agent(
        "You pay bills.",
        model=ScriptedModel(script),
        tools=[pay, wire, bank],
        runtime=SqliteRuntime(journal or os.environ["SERVE_JOURNAL"]),
        **options,
    )
'''


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("ui_identity")
    (root / "identity_agent.py").write_text(AGENT_MODULE)
    (root / "bank").mkdir()  # no control.json: the server lists `transfer`
    env = environment(root / "journal.db", STEERED=STEERED, BANK_STATE=str(root / "bank"))
    env.update(EVIL_ORIGIN=EVIL, PYTHONPATH=os.pathsep.join([str(root), env["PYTHONPATH"]]))
    made = loomgraph(env, "keys", "add", "alice", "--agent", AGENT, "--approver")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    server: Server = start_server(env, "--agent", AGENT)  # the last --agent is the one used
    driver = browser(root / "profile")
    try:
        sign_in(driver, server.url, key)
        yield {"url": server.url, "key": key, "driver": driver}
    finally:
        driver.quit()
        server.stop()


def waiting(site: dict[str, Any], tool: str) -> tuple[str, ToolIdentity]:
    """Start a run calling `tool`, which waits for approval; its id and the tool's identity
    as the API gives it."""
    headers = {"Authorization": f"Bearer {site['key']}"}
    body = {"input": tool, "background": False}
    started = httpx.post(site["url"] + "/v1/runs", json=body, headers=headers, timeout=120)
    assert started.status_code in (201, 202), started.text
    run_id = str(started.json()["run_id"])
    run = httpx.get(f"{site['url']}/v1/runs/{run_id}", headers=headers, timeout=120).json()
    assert run["status"] == "awaiting_approval", run
    identity = ToolIdentity.from_dict(run["pending"][0]["tool"])
    assert identity is not None
    return run_id, identity


def card(site: dict[str, Any], run_id: str) -> Any:
    driver = site["driver"]
    driver.get(f"{site['url']}/ui/runs/{run_id}")
    return WebDriverWait(driver, WAIT).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, "[data-testid=approval-card]"))
    )


def tool_line(found: Any) -> str:
    text: str = found.find_element(By.CSS_SELECTOR, "[data-testid=approval-tool]").text
    return text


def test_the_card_names_an_mcp_tools_server_and_digest(site: dict[str, Any]) -> None:
    """The card used to name the node, the rule and the call: `transfer` of `bank` and
    `transfer` of any other server looked the same. It names the origin and short digest."""
    run_id, identity = waiting(site, "transfer")
    assert identity.origin == "mcp:bank"
    line = tool_line(card(site, run_id))
    short = identity.shown().rpartition(" ")[2]
    assert line == f"tool transfer from mcp:bank ({short})"


def test_the_card_says_a_local_tool_is_a_function_of_the_agent(site: dict[str, Any]) -> None:
    run_id, identity = waiting(site, "pay")
    assert identity.origin == "local"
    line = tool_line(card(site, run_id))
    assert line == f"tool pay, a function of the agent ({identity.shown().rpartition(' ')[2]})"


def test_an_origin_with_markup_is_shown_as_text(site: dict[str, Any]) -> None:
    """The origin's name is the host's text: on the page it is text, never markup."""
    driver = site["driver"]
    run_id, identity = waiting(site, "wire")
    assert identity.origin == f"mcp:{EVIL}"
    found = card(site, run_id)
    assert f"from mcp:{EVIL} (" in tool_line(found)
    assert not found.find_elements(By.TAG_NAME, "script")
    assert not found.find_elements(By.TAG_NAME, "b")
    assert driver.title != "owned"
