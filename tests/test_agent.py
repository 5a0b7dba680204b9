"""The Agent surface: defaults, concurrency, streaming, tools, memory, resume and fork."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from loomgraph import Agent, tool
from loomgraph.agent.checkpoints import ResumeError
from loomgraph.agent.config_errors import ConfigError
from loomgraph.agent.deps import current_run
from loomgraph.authoring.library import UnknownGraph, load_graph
from loomgraph.authoring.loader import graph_from_yaml
from loomgraph.errors import GraphValidationError
from loomgraph.memory import InMemoryMemory
from loomgraph.models import EchoModel, ScriptedModel
from loomgraph.nodes.structured import OutputValidationError
from loomgraph.protocols import ModelRequest, UnknownRun
from loomgraph.runtime import InMemoryRuntime


async def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


async def test_model_is_the_only_required_argument() -> None:
    result = await Agent("You echo.", model="echo").run("hello")
    assert result.status == "completed" and result.output == "hello"
    assert isinstance(Agent(model=EchoModel()).deps.model, EchoModel)


def test_bad_configuration_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown model 'gpt-9'.*'echo'"):
        Agent(model="gpt-9")
    with pytest.raises(UnknownGraph, match=r"built-in graphs: .*react"):
        Agent(model="echo", architecture="nonsense")
    with pytest.raises(UnknownGraph, match="no graph file"):
        Agent(model="echo", architecture=tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nentry: nowhere\nnodes: {}\n")
    with pytest.raises(GraphValidationError):
        Agent(model="echo", architecture=bad)
    with pytest.raises(ConfigError, match="runtime"):
        Agent(model="echo", runtime="carrier-pigeon:x")
    with pytest.raises(ConfigError, match="Memory protocol"):
        Agent(model="echo", memory=object())  # type: ignore[arg-type]


@pytest.mark.parametrize("architecture", [None, 5, ["react"], b"react"])
def test_an_architecture_of_another_type_is_a_type_error_naming_it(architecture: Any) -> None:
    shown = type(architecture).__name__
    with pytest.raises(TypeError, match=rf"architecture must be .* not {shown}"):
        Agent(model="echo", architecture=architecture)
    with pytest.raises(TypeError, match=rf"architecture must be .* not {shown}"):
        load_graph(architecture)


def test_an_unknown_graph_is_said_without_python_only_advice(tmp_path: Path) -> None:
    # The CLI says the same message: "pass a Graph object" is no advice for a shell user.
    for name in ("nonsense", str(tmp_path / "missing.yaml")):
        with pytest.raises(UnknownGraph) as info:
            load_graph(name)
        assert "Graph object" not in str(info.value) and "react" in str(info.value)


async def test_hundred_concurrent_runs_of_different_users_do_not_cross() -> None:
    def script(request: ModelRequest) -> dict[str, object]:
        prompt = request.messages[0]["content"]
        if request.call_index == 0:
            return {"tool_calls": [{"tool": "whoami", "args": {"name": prompt}}]}
        return {"text": f"answer for {prompt}: {request.messages[-1]['content']}"}

    async def whoami(name: str) -> str:
        """Say who asks."""
        await asyncio.sleep(0)  # let the other runs interleave
        run = current_run.get()
        return f"{name}/{run.user_id if run else '?'}"

    agent = Agent("x", model=ScriptedModel(script), tools=[whoami])

    async def one(i: int) -> tuple[int, list[object], object]:
        events = [e async for e in agent.stream(f"p{i}", user_id=f"user{i}", session_id=f"s{i}")]
        return i, events, events[-1].payload["result"]

    for i, events, result in await asyncio.gather(*(one(i) for i in range(100))):
        assert result["output"] == f"answer for p{i}: p{i}/user{i}"  # type: ignore[index]
        assert {e.user_id for e in events} == {f"user{i}"}  # type: ignore[attr-defined]
        assert len({e.run_id for e in events}) == 1  # type: ignore[attr-defined]


async def test_breaking_out_of_stream_cancels_the_run_cleanly() -> None:
    started = asyncio.Event()
    never = asyncio.Event()

    async def wait_forever() -> str:
        """Never returns by itself."""
        started.set()
        await never.wait()
        return "unreachable"

    runtime = InMemoryRuntime()
    agent = Agent(
        "x",
        model=ScriptedModel([{"tool_calls": [{"tool": "wait_forever"}]}]),
        tools=[wait_forever],
        runtime=runtime,
    )
    run_id = None
    # aclosing() closes the generator at once; a bare `break` closes it when it is collected.
    async with contextlib.aclosing(agent.stream("go")) as events:
        async for event in events:
            run_id = event.run_id
            if event.kind == "tool_call":
                break
    assert run_id is not None and started.is_set()
    record = await runtime.load_run(run_id)
    assert record is not None and record.status == "cancelled"


async def test_add_and_remove_tool() -> None:
    script = ScriptedModel([{"tool_calls": [{"tool": "add", "args": {"a": 1, "b": 1}}]}, "ok"])
    agent = Agent("x", model=script)
    agent.add_tool(add)
    events = [e async for e in agent.stream("go")]
    assert next(e for e in events if e.kind == "tool_result").payload["result"]["content"] == "2"
    agent.remove_tool("add")
    events = [e async for e in agent.stream("go")]
    result = next(e for e in events if e.kind == "tool_result").payload["result"]
    assert result["error_type"] == "unknown_tool"


async def test_decorated_tool_is_offered_with_its_schema() -> None:
    @tool(name="lookup", description="Look a word up.")
    def lookup(word: str) -> str:
        return word.upper()

    seen: list[ModelRequest] = []

    def script(request: ModelRequest) -> str:
        seen.append(request)
        return "done"

    await Agent("x", model=ScriptedModel(script), tools=[lookup]).run("go")
    spec = seen[0].tools[0]
    assert spec["name"] == "lookup" and spec["description"] == "Look a word up."
    assert spec["parameters"]["properties"]["word"]["type"] == "string"


async def test_a_session_continues_across_runs_and_users_are_apart() -> None:
    memory = InMemoryMemory()
    agent = Agent("x", model="echo", memory=memory)
    await agent.run("my name is Ada", user_id="alice", session_id="conv")
    seen: list[ModelRequest] = []

    def script(request: ModelRequest) -> str:
        seen.append(request)
        return "ok"

    other = Agent("x", model=ScriptedModel(script), memory=memory)
    await other.run("who am I?", user_id="alice", session_id="conv")
    await other.run("who am I?", user_id="bob", session_id="conv")
    alice, bob = ([m["content"] for m in r.messages] for r in seen)
    assert alice == ["my name is Ada", "my name is Ada", "who am I?"]
    assert bob == ["who am I?"]


class Weather(BaseModel):
    city: str
    celsius: float


async def test_output_schema_parses_a_fitting_answer_without_another_call() -> None:
    agent = Agent("x", model=ScriptedModel(['{"city": "Tokyo", "celsius": 21.5}']))
    result = await agent.run("weather?", output_schema=Weather)
    assert result.parsed == Weather(city="Tokyo", celsius=21.5)
    assert result.turns == 1


async def test_output_schema_forces_the_answer_and_retries_once_on_errors() -> None:
    seen: list[ModelRequest] = []
    turns = [
        "It is sunny in Tokyo.",
        {"tool_calls": [{"tool": "respond", "args": {"city": "Tokyo"}}]},
        {"tool_calls": [{"tool": "respond", "args": {"city": "Tokyo", "celsius": 21}}]},
    ]

    def script(request: ModelRequest) -> object:
        seen.append(request)
        return turns[request.call_index]

    agent = Agent("x", model=ScriptedModel(script))
    result = await agent.run("weather?", output_schema=Weather)
    assert result.parsed == Weather(city="Tokyo", celsius=21.0)
    assert seen[1].tool_choice == "respond" and seen[1].tools[0]["name"] == "respond"
    feedback = seen[2].messages[-1]
    assert feedback["role"] == "tool" and feedback["is_error"] and "celsius" in feedback["content"]
    history = await agent.history(result.run_id)
    assert history[-1].node == "structured_output"
    assert history[-1].state["output"] == {"city": "Tokyo", "celsius": 21.0}


async def test_an_answer_that_never_fits_raises_with_the_last_raw_output() -> None:
    bad = {"tool_calls": [{"tool": "respond", "args": {"city": "Tokyo", "celsius": "warm"}}]}
    runtime = InMemoryRuntime()
    agent = Agent("x", model=ScriptedModel(["sunny", bad, bad, bad]), runtime=runtime)
    with pytest.raises(OutputValidationError) as err:
        await agent.run("w", output_schema=Weather)
    assert err.value.raw == {"city": "Tokyo", "celsius": "warm"}
    assert "3 attempt(s)" in str(err.value)
    # Where and what, once: not pydantic's dump of every error with the answer it quotes.
    assert str(err.value).endswith(
        "after 3 attempt(s): celsius: Input should be a valid number, "
        "unable to parse string as a number"
    )
    assert err.value.errors[0]["input"] == "warm"  # kept whole on the error
    [record] = await runtime.runs()
    assert record.status == "failed" and "structured_output" in record.reason


async def test_a_graph_node_whose_answer_never_fits_fails_the_run_without_raising() -> None:
    """Only the agent's own `output_schema` step raises from `run()`: reflexion's critic whose
    evaluation never fits used to raise `OutputValidationError` (and the CLI exit 2, "bad
    usage") for a run journaled `failed` like any other node failure."""
    never = {"tool_calls": [{"tool": "respond", "args": {"verdict": "good"}}]}
    model = ScriptedModel(["an answer", never, never, never])
    result = await Agent("x", model=model, architecture="reflexion").run("task")
    assert result.status == "failed" and "evaluate" in result.reason
    # The reason says what did not fit, short: it used to quote the answer and the feedback
    # it was shown, nested, at every attempt (a screenful for `--model echo`).
    assert result.reason.endswith(
        "score: Field required; verdict: Extra inputs are not permitted"
    ), result.reason


async def test_echo_answers_a_schema_with_the_prompt() -> None:
    result = await Agent("x", model="echo").run(
        '{"city": "Lima", "celsius": 19}', output_schema=Weather
    )
    assert result.parsed == Weather(city="Lima", celsius=19)
    assert (await Agent("x", model="echo").run("7", output_schema=int)).parsed == 7


async def test_resume_a_finished_run_executes_nothing() -> None:
    calls: list[int] = []

    async def count(n: int) -> int:
        """Count calls."""
        calls.append(n)
        return n

    agent = Agent(
        "x",
        model=ScriptedModel([{"tool_calls": [{"tool": "count", "args": {"n": 1}}]}, "done"]),
        tools=[count],
    )
    first = await agent.run("go")
    again = await agent.resume(first.run_id)
    assert again.output == first.output == "done" and calls == [1]
    with pytest.raises(UnknownRun, match="nope"):
        await agent.resume("nope")


async def test_resume_after_an_interrupt_replays_finished_effects() -> None:
    calls: list[int] = []
    gate = {"open": False}

    async def count(n: int) -> int:
        """Count calls; fails the first time the gate is shut."""
        calls.append(n)
        return n

    def script(request: ModelRequest) -> object:
        if request.call_index == 0:
            return {"tool_calls": [{"tool": "count", "args": {"n": 7}}]}
        if not gate["open"]:
            raise RuntimeError("provider down")
        return "seven"

    runtime = InMemoryRuntime()
    agent = Agent("x", model=ScriptedModel(script), tools=[count], runtime=runtime)
    failed = await agent.run("go")
    assert failed.status == "failed" and "provider down" in failed.reason
    gate["open"] = True
    resumed = await agent.resume(failed.run_id)
    assert resumed.status == "completed" and resumed.output == "seven"
    assert calls == [7]  # the tool ran once: its transition was already journaled
    assert [c.node for c in await agent.history(failed.run_id)] == ["", "model", "tools", "model"]


async def test_resume_moves_to_a_changed_graph_only_when_asked(tmp_path: Path) -> None:
    runtime = InMemoryRuntime()
    a = Agent("x", model=ScriptedModel([RuntimeError("down"), "ok"]), runtime=runtime)
    failed = await a.run("go")
    assert failed.status == "failed"
    changed = graph_from_yaml(
        (Path(__file__).parents[1] / "graphs/react.yaml")
        .read_text()
        .replace('version: "1"', 'version: "2"')
    )
    b = Agent("x", model=ScriptedModel(["ok"]), runtime=runtime, architecture=changed)
    assert b.compiled.hash != a.compiled.hash
    with pytest.raises(ResumeError, match="'pinned' or 'current'"):
        await b.resume(failed.run_id, graph="new")  # type: ignore[arg-type]
    assert (await b.resume(failed.run_id, graph="current")).status == "completed"
    record = await runtime.load_run(failed.run_id)
    assert record is not None and record.graph_hash == b.compiled.hash  # moved for good


async def test_fork_starts_a_new_run_from_a_checkpoint_with_a_patch() -> None:
    agent = Agent(
        "x",
        model=ScriptedModel(
            [{"tool_calls": [{"tool": "add", "args": {"a": 1, "b": 2}}]}, "three", "forked answer"]
        ),
        tools=[add],
    )
    first = await agent.run("go")
    history = await agent.history(first.run_id)
    fork = await agent.fork(
        first.run_id, at=2, patch={"messages": [{"role": "user", "content": "and now?"}]}
    )
    assert fork.run_id != first.run_id and fork.status == "completed"
    runs = {r.run_id: r for r in await agent.runs()}
    assert runs[fork.run_id].parent_run_id == first.run_id
    assert runs[fork.run_id].parent_seq == 2
    forked = await agent.history(fork.run_id)
    assert forked[0].seq == 0 and forked[0].state["messages"][-1]["content"] == "and now?"
    assert forked[1].state["messages"][-2]["content"] == "and now?"
    assert history[2].state["messages"][-1]["role"] == "tool"
    with pytest.raises(ValueError, match="no checkpoint 99"):
        await agent.fork(first.run_id, at=99)


def test_a_graph_built_in_python_is_validated_like_a_file() -> None:
    from loomgraph.graph.spec import EdgeSpec, Graph, NodeSpec

    bad = Graph(
        name="py",
        entry="model",
        nodes={"model": NodeSpec(kind="model")},
        edges=[EdgeSpec(source="model", target="nowhere")],
    )
    with pytest.raises(GraphValidationError) as err:
        Agent(model="echo", architecture=bad)
    assert "unknown-endpoint" in err.value.rules
