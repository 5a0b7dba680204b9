"""A session's earlier turns reach every model call of the built-in strategies, through the
`history: true` option of `llm`, `subgraph` and `map` nodes; graphs that do not ask for it
send what they sent before.

Found by probing the strategies: `agent.run(..., session_id=)` puts the earlier turns in
`messages`, but `llm` nodes built their conversation from their prompt alone and child graphs
from their input alone, so a follow-up question lost its context (plan-execute: 0 of 5 model
calls saw the earlier turn; reflexion: 0 of 2).
"""

from __future__ import annotations

from typing import Any

import pytest

from loomgraph import Agent
from loomgraph.authoring.loader import graph_from_yaml
from loomgraph.errors import GraphValidationError
from loomgraph.models import ScriptedModel
from loomgraph.protocols import ModelRequest
from loomgraph.testing import run_node

EARLIER = [
    {"role": "user", "content": "My order number is 4711."},
    {"role": "assistant", "content": "Noted."},
]


def respond(**answer: object) -> dict[str, Any]:
    return {"tool_calls": [{"tool": "respond", "args": answer}]}


class Recorder:
    """Answers every strategy's calls, keeping each request."""

    def __init__(self) -> None:
        self.requests: list[ModelRequest] = []

    def __call__(self, request: ModelRequest) -> Any:
        self.requests.append(request)
        if request.tool_choice == "respond":
            prompt = request.messages[-1]["content"]
            if prompt.startswith("Make a short plan"):
                return respond(steps=["answer the question"])
            if prompt.startswith("Task:") and "Score" in prompt:
                return respond(score=0.9)
            return respond(done=True, answer="final")
        return "My answer"


@pytest.mark.parametrize("architecture", ["react", "plan-execute", "reflexion"])
async def test_every_model_call_of_a_follow_up_sees_the_sessions_earlier_turns(
    architecture: str,
) -> None:
    model = Recorder()
    agent = Agent("x", model=ScriptedModel(model), architecture=architecture, memory="memory")
    await agent.run("My order number is 4711.", user_id="u", session_id="s1")
    model.requests.clear()
    result = await agent.run("What is my order number?", user_id="u", session_id="s1")
    assert result.status == "completed", result.reason
    assert model.requests
    for request in model.requests:
        first = request.messages[0]
        assert first == {"role": "user", "content": "My order number is 4711."}
        assert request.messages[-1]["role"] == "user"  # the node's own prompt comes last
    # The run's own prompt is not sent twice: the nodes' prompts restate it.
    assert all(
        [m["content"] for m in r.messages].count("What is my order number?") <= 1
        for r in model.requests
    )


@pytest.mark.parametrize("architecture", ["plan-execute", "reflexion"])
async def test_a_run_without_a_session_sends_what_it_sent_before(architecture: str) -> None:
    model = Recorder()
    agent = Agent("x", model=ScriptedModel(model), architecture=architecture)
    assert (await agent.run("What is my order number?")).status == "completed"
    assert model.requests and all(len(r.messages) == 1 for r in model.requests)


async def test_an_llm_node_with_history_sends_the_earlier_turns_before_its_prompt() -> None:
    asked: list[ModelRequest] = []

    def model(request: ModelRequest) -> Any:
        asked.append(request)
        return respond(steps=["a"])

    question = {"role": "user", "content": "and now?"}
    state = {"input": "and now?", "messages": [*EARLIER, question]}
    await run_node("plan-execute", "plan", state, model=model)
    assert asked[0].messages[:2] == EARLIER and len(asked[0].messages) == 3
    assert asked[0].messages[2]["content"].startswith("Make a short plan for this task: and now?")


GRAPH = """
name: g
entry: ask
state:
  answer: {type: str}
nodes:
  ask: {kind: llm, output: answer, prompt: "Q: {{ input }}"HISTORY}
  child: {kind: subgraph, graph: react, prompt: "Step: {{ input }}"CHILD}
edges:
  - {from: ask, to: child}
  - {from: child, to: END}
"""


def graph(history: str = "", child: str = "") -> Any:
    return graph_from_yaml(GRAPH.replace("HISTORY", history).replace("CHILD", child))


async def test_nodes_without_history_send_what_they_sent_before() -> None:
    model = Recorder()
    agent = Agent("x", model=ScriptedModel(model), architecture=graph(), memory="memory")
    await agent.run("My order number is 4711.", user_id="u", session_id="s1")
    model.requests.clear()
    await agent.run("What is it?", user_id="u", session_id="s1")
    assert [r.messages for r in model.requests] == [
        [{"role": "user", "content": "Q: What is it?"}],
        [{"role": "user", "content": "Step: What is it?"}],
    ]


async def test_a_subgraph_with_history_starts_with_the_earlier_turns() -> None:
    model = Recorder()
    g = graph(", history: true", ", history: true")
    agent = Agent("x", model=ScriptedModel(model), architecture=g, memory="memory")
    await agent.run("My order number is 4711.", user_id="u", session_id="s1")
    model.requests.clear()
    await agent.run("What is it?", user_id="u", session_id="s1")
    earlier = [
        {"role": "user", "content": "My order number is 4711."},
        {"role": "assistant", "content": "My answer"},
    ]
    assert [r.messages for r in model.requests] == [
        [*earlier, {"role": "user", "content": "Q: What is it?"}],
        [*earlier, {"role": "user", "content": "Step: What is it?"}],
    ]


@pytest.mark.parametrize(
    ("history", "child", "problem"),
    [
        (", history: true, reads: [input]", "", "history: true reads 'messages'"),
        ("", ", history: true, reads: [input]", "history: true reads 'messages'"),
        ("", ", history: true, inputs: {messages: messages}", "both give"),
    ],
)
def test_history_is_checked_at_load(history: str, child: str, problem: str) -> None:
    with pytest.raises(GraphValidationError) as raised:
        graph(history, child)
    assert "kind-check" in raised.value.rules and problem in str(raised.value)
