"""MCP servers as tool sources, against real servers: mcp-server-time and mcp-server-git
(stdio, from the package index) and a FastMCP server over streamable HTTP on loopback."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from loomgraph import Agent
from loomgraph.governance import StandardPermissions
from loomgraph.models import ScriptedModel
from loomgraph.observability import OTelTelemetry
from loomgraph.observability.file_audit import FileAuditLog
from loomgraph.protocols import EffectStatus
from loomgraph.runtime import InMemoryRuntime
from loomgraph.tools import MCPServer, MCPServerError, ToolNameCollision
from loomgraph.tools.mcp import IDEMPOTENCY_META, SERVER_ERROR
from mcp_servers import PNG, PYTHON, TOKEN, WAIT, DocsServer

TIME = ("-m", "mcp_server_time", "--local-timezone", "UTC")
SLOW = {"start_timeout": 600.0, "timeout": 600.0}  # a loaded machine starts Python slowly


class Recording(ScriptedModel):
    """A ScriptedModel that keeps each request (and may wait before answering one)."""

    def __init__(self, script: list[Any], before: Any = None) -> None:
        super().__init__(script)
        self.requests: list[Any] = []
        self.before = before

    async def stream(self, request: Any) -> Any:  # type: ignore[override]
        self.requests.append(request)
        if self.before is not None:
            await self.before(len(self.requests))
        async for chunk in super().stream(request):
            yield chunk


def calls(*pairs: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    return {"tool_calls": [{"tool": name, "args": args} for name, args in pairs]}


def results_of(events: list[Any]) -> list[dict[str, Any]]:
    return [e.payload["result"] for e in events if e.kind == "tool_result"]


def results_by_tool(events: list[Any]) -> dict[str, dict[str, Any]]:
    """Results keyed by tool: calls of one turn run at once and finish in any order."""
    return {
        e.payload["call"]["tool"]: e.payload["result"] for e in events if e.kind == "tool_result"
    }


@pytest.fixture
def docs() -> Any:
    with DocsServer() as server:
        yield server


def docs_server(server: DocsServer, **options: Any) -> MCPServer:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    options = {**SLOW, **options}
    return MCPServer.http(server.url, headers=headers, name="docs", prefix="docs", **options)


def test_import_loomgraph_does_not_import_mcp() -> None:
    code = (
        "import sys, loomgraph; from loomgraph.tools import MCPServer, Tool; "
        "MCPServer.stdio('x', name='x'); "
        "print(sorted(m for m in ('mcp', 'jsonschema', 'docstring_parser', 'httpx') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


async def test_time_server_in_a_react_run_is_journaled_audited_and_gated(tmp_path: Path) -> None:
    time = MCPServer.stdio(PYTHON, *TIME, name="time", prefix="time", **SLOW)
    runtime = InMemoryRuntime()
    audit = FileAuditLog(tmp_path / "audit.jsonl", unsigned=True)
    model = Recording(
        [calls(("time_get_current_time", {"timezone": "Europe/Paris"})), "it is late"]
    )
    permissions = StandardPermissions(allow=["time_*"])
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    async with Agent(
        "x",
        model=model,
        tools=[time],
        runtime=runtime,
        audit_log=audit,
        permissions=permissions,
        telemetry=OTelTelemetry(provider),
    ) as agent:
        events = [e async for e in agent.stream("what time is it in Paris?")]
        assert time.started
    assert not time.started  # the agent's close stopped it
    decision = next(e.payload for e in events if e.kind == "permission_decision")
    assert (decision["verdict"], decision["rule"]) == ("allow", "allow:time_*")
    (result,) = results_of(events)
    assert not result["is_error"]
    assert json.loads(result["content"])["timezone"] == "Europe/Paris"
    run_id = events[0].run_id
    (effect,) = [e for e in await runtime.effects(run_id) if e.kind == "tool"]
    assert effect.status == EffectStatus.DONE and effect.outcome == dict(result)
    actions = [entry["action"] for entry in audit.entries(run_id=run_id)]
    assert "tool_request" in actions and "tool_result" in actions
    # The model saw the server's tools, prefixed, marked destructive and open-world.
    offered = {t["name"]: t for t in model.requests[0].tools}
    assert set(offered) == {"time_get_current_time", "time_convert_time"}
    assert offered["time_convert_time"]["destructive"] and offered["time_convert_time"]["egress"]
    # An MCP tool is an "extension" in the GenAI conventions: it runs in the server's process.
    (span,) = [s for s in spans.get_finished_spans() if s.name.startswith("execute_tool")]
    assert span.attributes is not None and span.attributes["gen_ai.tool.type"] == "extension"


async def test_untrusted_mcp_tools_ask_in_the_default_mode() -> None:
    time = MCPServer.stdio(PYTHON, *TIME, name="time", **SLOW)
    model = ScriptedModel([calls(("get_current_time", {"timezone": "UTC"})), "x"])
    async with Agent("x", model=model, tools=[time]) as agent:
        result = await agent.run("time?")
    assert result.status == "awaiting_approval"
    assert result.pending is not None and result.pending.call is not None
    assert result.pending.call["tool"] == "get_current_time"


async def test_git_server_on_a_temporary_repository(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@e"]
    subprocess.run([*git[:3], "init", "-q"], check=True)
    (repo / "notes.txt").write_text("hello\n")
    subprocess.run([*git, "add", "notes.txt"], check=True)
    subprocess.run([*git, "commit", "-qm", "first notes"], check=True)
    (repo / "draft.txt").write_text("draft\n")
    server = MCPServer.stdio(
        PYTHON, "-m", "mcp_server_git", "--repository", str(repo), name="git", **SLOW
    )
    model = ScriptedModel(
        [
            calls(("git_status", {"repo_path": str(repo)}), ("git_log", {"repo_path": str(repo)})),
            "done",
        ]
    )
    async with Agent(
        "x", model=model, tools=[server], permissions=StandardPermissions(allow=["git_*"])
    ) as agent:
        events = [e async for e in agent.stream("status?")]
    results = results_by_tool(events)
    status, log = results["git_status"], results["git_log"]
    assert "draft.txt" in status["content"] and not status["is_error"]
    assert "first notes" in log["content"]


async def test_http_server_needs_its_headers(docs: DocsServer) -> None:
    anonymous = MCPServer.http(docs.url, name="docs", **SLOW)
    agent = Agent("x", model=ScriptedModel(["x"]), tools=[anonymous])
    with pytest.raises(MCPServerError, match="docs"):
        await agent.run("hi")
    assert "" in docs.auth_seen
    await agent.aclose()


async def test_http_structured_output_images_resources_errors_and_the_key(
    docs: DocsServer,
) -> None:
    runtime = InMemoryRuntime()
    model = ScriptedModel(
        [
            calls(
                ("docs_forecast", {"city": "Oslo"}),
                ("docs_picture", {}),
                ("docs_manual", {}),
                ("docs_broken", {}),
            ),
            "done",
        ]
    )
    async with Agent(
        "x",
        model=model,
        tools=[docs_server(docs)],
        runtime=runtime,
        permissions=StandardPermissions(allow=["docs_*"]),
    ) as agent:
        events = [e async for e in agent.stream("go")]
    assert f"Bearer {TOKEN}" in docs.auth_seen
    results = results_by_tool(events)
    forecast, picture, manual, broken = (
        results[f"docs_{name}"] for name in ("forecast", "picture", "manual", "broken")
    )
    assert json.loads(forecast["content"]) == {"city": "Oslo", "degrees": 21}
    assert picture["content"].startswith("[image: image/png,")  # for models without eyes
    assert picture["images"] == [
        {"media_type": "image/png", "data": base64.b64encode(PNG).decode()}
    ]
    assert "docs://manual" in manual["content"] and "Turn it off" in manual["content"]
    assert broken["is_error"] and "the index is corrupt" in broken["content"]
    # The idempotency key travelled in _meta, and it is the journal's key for the call.
    (meta,) = docs.metas
    effects = {e.key: e for e in await runtime.effects(events[0].run_id) if e.kind == "tool"}
    assert meta[IDEMPOTENCY_META] in effects


async def test_a_list_change_reaches_the_next_model_turn(docs: DocsServer) -> None:
    server = docs_server(docs)
    # No waiting here: a call during which the server announced a change returns once the
    # new listing is in.
    model = Recording([calls(("docs_grow", {})), "done"])
    async with Agent(
        "x",
        model=model,
        tools=[server],
        permissions=StandardPermissions(allow=["docs_*"]),
    ) as agent:
        await agent.run("grow")
    first, second = ({t["name"] for t in r.tools} for r in model.requests)
    assert "docs_fresh" not in first and "docs_fresh" in second


async def test_a_slow_call_times_out_and_the_server_is_told_to_cancel(docs: DocsServer) -> None:
    server = docs_server(docs, timeout=3.0)
    model = ScriptedModel([calls(("docs_slow", {})), calls(("docs_forecast", {"city": "A"})), "x"])
    async with Agent(
        "x", model=model, tools=[server], permissions=StandardPermissions(allow=["docs_*"])
    ) as agent:
        events = [e async for e in agent.stream("go")]
    slow, after = results_of(events)
    assert slow["is_error"] and slow["error_type"] == "timeout"
    assert await asyncio.to_thread(docs.slow_cancelled.wait, WAIT)
    assert after.get("error_type") != SERVER_ERROR  # the connection lives on


async def test_cancelling_a_run_cancels_the_mcp_call(docs: DocsServer) -> None:
    server = docs_server(docs)
    model = ScriptedModel([calls(("docs_slow", {})), "x"])
    async with Agent(
        "x", model=model, tools=[server], permissions=StandardPermissions(allow=["docs_*"])
    ) as agent:
        task = asyncio.create_task(agent.run("go"))
        assert await asyncio.to_thread(docs.slow_started.wait, WAIT)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await asyncio.to_thread(docs.slow_cancelled.wait, WAIT)


async def test_name_collisions_name_both_sides(docs: DocsServer) -> None:
    one = MCPServer.stdio(PYTHON, *TIME, name="one", **SLOW)
    two = MCPServer.stdio(PYTHON, *TIME, name="two", **SLOW)
    runtime = InMemoryRuntime()
    agent = Agent("x", model=ScriptedModel(["x"]), tools=[one, two], runtime=runtime)
    with pytest.raises(ToolNameCollision, match=r"'one'.*'two'") as caught:
        await agent.run("hi")
    assert caught.value.name in {"get_current_time", "convert_time"}
    assert await runtime.runs() == []  # refused before anything was written
    await agent.aclose()

    def get_current_time() -> str:
        """A local tool of the same name."""
        return "now"

    agent = Agent("x", model=ScriptedModel(["x"]), tools=[get_current_time, one])
    with pytest.raises(ToolNameCollision, match=r"local tool.*'one'"):
        await agent.run("hi")
    await agent.aclose()


async def test_trust_lets_annotations_decide(docs: DocsServer) -> None:
    untrusted, trusted = docs_server(docs), docs_server(docs, trust=True)
    for server in (untrusted, trusted):
        await server.start()
    try:
        assert untrusted.spec("docs_forecast") == {
            **untrusted.spec("docs_forecast"),  # type: ignore[dict-item]
            "destructive": True,
            "egress": True,
            "trusted": False,
        }
        forecast = trusted.spec("docs_forecast")  # read-only, closed world
        assert forecast is not None
        assert (forecast["destructive"], forecast["egress"], forecast["trusted"]) == (
            False,
            False,
            True,
        )
        slow = trusted.spec("docs_slow")  # read-only, open world by default
        assert slow is not None
        assert (slow["destructive"], slow["egress"], slow["trusted"]) == (False, True, False)
        broken = trusted.spec("docs_broken")  # no annotations: MCP's defaults
        assert broken is not None and broken["destructive"] and broken["egress"]
    finally:
        for server in (untrusted, trusted):
            await server.close()


def test_server_error_type_is_documented() -> None:
    assert SERVER_ERROR == "mcp_server_error"


async def test_an_mcp_image_reaches_claude_as_an_image_block(docs: DocsServer) -> None:
    from fake_servers import FakeServer, Reply, sse_message
    from loomgraph.models.anthropic import AnthropicModel

    claude = FakeServer().start()
    try:
        claude.add(
            Reply(
                events=sse_message(
                    [("tool", ("tu_1", "docs_picture", ["{}"]))], stop_reason="tool_use"
                )
            ),
            Reply(events=sse_message([("text", ["one red pixel"])])),
        )
        model = AnthropicModel("claude-sonnet-4-6", api_key="test-key", base_url=claude.url)
        async with Agent(
            "x",
            model=model,
            tools=[docs_server(docs)],
            permissions=StandardPermissions(allow=["docs_*"]),
        ) as agent:
            result = await agent.run("what is in the picture?")
        assert result.output == "one red pixel"
        (turn,) = [
            m for m in claude.bodies[1]["messages"] if m["content"][0]["type"] == "tool_result"
        ]
        text, image = turn["content"][0]["content"]
        assert text["type"] == "text" and text["text"].startswith("[image: image/png,")
        assert image == {
            "type": "image",
            "source": {
                "type": "base64",
                "media_type": "image/png",
                "data": base64.b64encode(PNG).decode(),
            },
        }
    finally:
        claude.stop()


async def test_images_past_the_result_size_limit_are_left_out_and_said_so(
    docs: DocsServer,
) -> None:
    from loomgraph.protocols import SizeLimits

    model = ScriptedModel([calls(("docs_picture", {})), "x"])
    async with Agent(
        "x",
        model=model,
        tools=[docs_server(docs)],
        permissions=StandardPermissions(allow=["docs_*"]),
        size_limits=SizeLimits(tool_result_chars=60),  # the image line fits, its base64 not
    ) as agent:
        events = [e async for e in agent.stream("look")]
    (picture,) = results_of(events)
    assert "images" not in picture
    assert "[... 1 image(s) left out:" in picture["content"]
