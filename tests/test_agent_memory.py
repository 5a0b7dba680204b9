"""The Agent with a memory store: seeding, extraction in the background, memory tools."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from loomgraph import Agent
from loomgraph.agent.config_errors import ConfigError
from loomgraph.memory import SqliteMemory
from loomgraph.models import ScriptedModel
from loomgraph.protocols import ModelRequest


class Recorder:
    """Hooks that keep every event they hear (all other hooks do nothing)."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    async def before_node(self, node: str, state: Any) -> None: ...
    async def after_node(self, node: str, patch: Any) -> None: ...
    async def before_tool(self, call: Any) -> None: ...
    async def after_tool(self, call: Any, result: Any) -> None: ...

    async def on_event(self, event: Any) -> None:
        self.events.append(event)


async def test_facts_are_extracted_after_the_run_and_seed_the_next(tmp_path: Path) -> None:
    memory = SqliteMemory(tmp_path / "bot.db")
    extractor = ScriptedModel(
        [
            {
                "tool_calls": [
                    {
                        "tool": "record_facts",
                        "args": {
                            "facts": [
                                {"subject": "user", "predicate": "lives in", "object": "Porto"}
                            ]
                        },
                    }
                ]
            }
        ]
    )
    seen: list[ModelRequest] = []

    def answer(request: ModelRequest) -> str:
        seen.append(request)
        return "Noted."

    agent = Agent(
        "x", model=ScriptedModel(answer), memory=memory, auto_extract=True, extract_model=extractor
    )
    await agent.run("I live in Porto.", user_id="alice", session_id="s1")
    await agent.aclose()  # waits for the extraction
    facts = await memory.facts("alice")
    assert [(f.subject, f.predicate, f.object) for f in facts] == [("user", "lives in", "Porto")]
    again = Agent("x", model=ScriptedModel(answer), memory=SqliteMemory(tmp_path / "bot.db"))
    await again.run("Where do I live?", user_id="alice", session_id="s2")
    assert "Porto" in seen[-1].system
    await again.aclose()
    await memory.close()


async def test_a_failing_extraction_is_reported_not_raised(tmp_path: Path) -> None:
    hooks = Recorder()
    agent = Agent(
        "x",
        model=ScriptedModel(["ok"]),
        memory=SqliteMemory(tmp_path / "m.db"),
        auto_extract=True,
        extract_model=ScriptedModel([RuntimeError("down")]),
        hooks=hooks,
    )
    result = await agent.run("hello", user_id="bob")
    assert result.ok
    await agent.aclose()
    failed = [e for e in hooks.events if e.kind == "memory_extraction_failed"]
    assert len(failed) == 1 and "down" in failed[0].payload["error"]
    assert failed[0].user_id == "bob"


async def test_extraction_is_off_by_default_for_zero_key_models(tmp_path: Path) -> None:
    agent = Agent("x", model=ScriptedModel(["ok"]), memory=SqliteMemory(tmp_path / "m.db"))
    assert agent.extraction is None
    with pytest.raises(ConfigError, match="memory backend"):
        Agent("x", model="echo", auto_extract=True)


async def test_memory_tools_edit_the_users_own_blocks(tmp_path: Path) -> None:
    memory = SqliteMemory(tmp_path / "m.db")
    script = ScriptedModel(
        [
            {
                "tool_calls": [
                    {
                        "tool": "update_block",
                        "args": {"name": "preferences", "text": "likes short answers"},
                    }
                ]
            },
            "Saved.",
        ]
    )
    agent = Agent("x", model=script, memory=memory, memory_tools=True)
    await agent.run("Keep it short from now on.", user_id="carol")
    assert await memory.get_blocks("carol") == {"preferences": "likes short answers"}
    assert await memory.get_blocks("dave") == {}
    await agent.aclose()


async def test_reflexion_keeps_its_lessons_for_the_users_later_runs(tmp_path: Path) -> None:
    systems: list[str] = []
    score = {"value": 0.2}

    def script(request: ModelRequest) -> object:
        prompt = request.messages[0]["content"]
        if request.tool_choice == "respond":
            value, score["value"] = score["value"], 0.9
            return {"tool_calls": [{"tool": "respond", "args": {"score": value}}]}
        if prompt.startswith("Task:"):
            return "always cite a source"
        systems.append(request.system)
        return "an answer"

    memory = SqliteMemory(tmp_path / "m.db")
    agent = Agent("x", model=ScriptedModel(script), memory=memory, architecture="reflexion")
    assert (await agent.run("Explain tides.", user_id="erin")).ok
    assert await memory.get_blocks("erin") == {"lessons": "- always cite a source"}
    assert "always cite a source" not in systems[0]
    await agent.run("Explain waves.", user_id="erin")
    assert "always cite a source" in systems[-1]  # a later run starts with the lesson
    assert await memory.get_blocks("frank") == {}
    await agent.aclose()
