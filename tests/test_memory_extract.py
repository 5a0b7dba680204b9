"""Auto-extraction of facts from episodes, the background Extractor, and the memory tools."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from loomgraph import Agent
from loomgraph.agent.deps import current_run
from loomgraph.memory import (
    ExtractionError,
    Extractor,
    InMemoryMemory,
    MemoryStore,
    extract_facts,
    memory_tools,
)
from loomgraph.memory.extract import FACTS_TOOL, RECORD_FACTS
from loomgraph.memory.sqlite import SqliteMemory
from loomgraph.models.scripted import ScriptedModel
from loomgraph.protocols import Episode, ModelChunk, ModelRequest

EPISODE = Episode(
    "alice",
    "s1",
    "run-1",
    "I moved to Porto last month, I'm vegetarian",
    "Welcome to Porto!",
    ["maps"],
    100.0,
)
FACTS = [
    {"subject": "user", "predicate": "lives in", "object": "Porto", "confidence": 0.9},
    {"subject": "user", "predicate": "diet", "object": "vegetarian"},
]


def recording(turn: object, seen: list[ModelRequest]) -> ScriptedModel:
    def script(request: ModelRequest) -> object:
        seen.append(request)
        return turn

    return ScriptedModel(script)  # type: ignore[arg-type]


async def test_extract_facts_forces_the_record_facts_tool() -> None:
    seen: list[ModelRequest] = []
    model = recording({"tool_calls": [{"tool": RECORD_FACTS, "args": {"facts": FACTS}}]}, seen)
    facts = await extract_facts(model, EPISODE)
    assert [(f.subject, f.predicate, f.object, f.confidence) for f in facts] == [
        ("user", "lives in", "Porto", 0.9),
        ("user", "diet", "vegetarian", 1.0),
    ]
    assert all(f.user_id == "alice" and f.source_run == "run-1" for f in facts)
    request = seen[0]
    assert request.tool_choice == RECORD_FACTS and list(request.tools) == [FACTS_TOOL]
    assert "I moved to Porto" in request.messages[0]["content"]


@pytest.mark.parametrize(
    "text",
    [
        '{"facts": [{"subject": "user", "predicate": "lives in", "object": "Porto"}]}',
        'Here you go:\n```json\n[{"subject": "user", "predicate": "lives in", '
        '"object": "Porto"}]\n```',
    ],
)
async def test_extract_facts_accepts_json_text(text: str) -> None:
    facts = await extract_facts(ScriptedModel([text]), EPISODE)
    assert [f.object for f in facts] == ["Porto"]


@pytest.mark.parametrize(
    "text", ["I could not find any facts.", '{"facts": [{"subject": "user"}]}', '{"facts": "none"}']
)
async def test_extract_facts_refuses_answers_without_usable_facts(text: str) -> None:
    with pytest.raises(ExtractionError):
        await extract_facts(ScriptedModel([text]), EPISODE)


class GatedModel:
    """Answers with FACTS once `gate` is set, so a test controls when extraction finishes."""

    name = "gated"

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.started = asyncio.Event()

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        self.started.set()
        await self.gate.wait()
        yield {
            "type": "tool_call",
            "call": {"id": "c1", "tool": RECORD_FACTS, "args": {"facts": FACTS}},
        }


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> MemoryStore:
    return InMemoryMemory() if request.param == "memory" else SqliteMemory(tmp_path / "m.db")


async def test_the_extractor_runs_in_the_background_and_drain_waits(store: MemoryStore) -> None:
    async with store as memory:
        model, stored = GatedModel(), []
        extractor = Extractor(on_facts=lambda ep, facts: stored.extend(facts))
        await memory.remember(EPISODE)  # facts are kept only of an episode memory holds
        extractor.schedule(memory, model, EPISODE)
        assert extractor.pending == 1 and await memory.facts("alice") == []  # not waited for
        model.gate.set()
        await extractor.drain()
        assert extractor.pending == 0
        assert {f.object for f in await memory.facts("alice")} == {"Porto", "vegetarian"}
        assert [f.source_run for f in stored] == ["run-1", "run-1"]


async def test_a_failing_extraction_is_reported_never_raised(store: MemoryStore) -> None:
    async with store as memory:
        errors: list[tuple[str, str]] = []

        async def on_error(episode: Episode, error: BaseException) -> None:
            errors.append((episode.run_id, str(error)))

        extractor = Extractor(on_error=on_error)
        extractor.schedule(memory, ScriptedModel([RuntimeError("provider down")]), EPISODE)
        extractor.schedule(memory, ScriptedModel(["no json here"]), EPISODE)
        await extractor.drain()
        assert sorted(e[1][:13] for e in errors) == ["no record_fac", "provider down"]
        assert await memory.facts("alice") == []


async def test_a_broken_error_callback_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    def on_error(episode: Episode, error: BaseException) -> None:
        raise ValueError("reporter broke")

    extractor = Extractor(on_error=on_error)
    extractor.schedule(InMemoryMemory(), ScriptedModel([RuntimeError("down")]), EPISODE)
    with caplog.at_level(logging.ERROR, logger="loomgraph.memory"):
        await extractor.drain()
    assert "callback failed for run run-1" in caplog.text


async def test_forget_cancels_the_users_pending_extraction(store: MemoryStore) -> None:
    async with store as memory:
        model = GatedModel()
        extractor = Extractor()
        mine = extractor.schedule(memory, model, EPISODE)
        bob = Episode("bob", "s1", "run-2", "I live in Porto", "ok")
        await memory.remember(bob)
        extractor.schedule(memory, model, bob)
        await model.started.wait()
        await memory.forget("alice")
        assert mine.cancelled() and extractor.pending == 1
        model.gate.set()
        await extractor.drain()
        assert await memory.facts("alice") == []
        assert len(await memory.facts("bob")) == 2
        assert await extractor.cancel("bob") == 0


async def test_memory_tools_write_for_the_user_the_getter_names() -> None:
    memory = InMemoryMemory()
    user = "alice"
    remember_fact, update_block, recall = memory_tools(
        memory, lambda: user, run_id_getter=lambda: "run-9", editable_blocks={"notes"}
    )
    assert await remember_fact("user", "likes", "green tea", 0.8) == (
        "remembered: user likes green tea"
    )
    assert (await memory.facts("alice"))[0].source_run == "run-9"
    await update_block("notes", "prefers short answers")
    assert await memory.get_blocks("alice") == {"notes": "prefers short answers"}
    with pytest.raises(ValueError, match="not editable"):
        await update_block("persona", "evil")
    assert "green tea" in await recall("green tea")
    assert await update_block("notes", "") == "deleted block 'notes'"
    user = "bob"
    assert await recall("green tea") == "nothing found"


async def test_an_agent_edits_its_own_working_memory_through_the_tools() -> None:
    memory = InMemoryMemory()
    seen: list[ModelRequest] = []

    def user() -> str | None:
        run = current_run.get()
        return run.user_id if run else None

    def script(request: ModelRequest) -> object:
        seen.append(request)
        if request.messages[-1]["role"] == "user" and "remember" in str(
            request.messages[-1]["content"]
        ):
            return {
                "tool_calls": [
                    {"tool": "update_block", "args": {"name": "prefs", "text": "likes haiku"}},
                    {
                        "tool": "remember_fact",
                        "args": {"subject": "user", "predicate": "likes", "object": "haiku"},
                    },
                ]
            }
        return "ok"

    agent = Agent("x", model=ScriptedModel(script), memory=memory, tools=memory_tools(memory, user))
    await agent.run("please remember I like haiku", user_id="alice", session_id="a")
    await agent.run("write me a poem about haiku", user_id="alice", session_id="b")
    await agent.run("write me a poem about haiku", user_id="bob", session_id="b")
    assert "likes haiku" in seen[-2].system and "user likes haiku" in seen[-2].system
    assert "haiku" not in seen[-1].system
    assert [f.object for f in await memory.facts("alice")] == ["haiku"]
