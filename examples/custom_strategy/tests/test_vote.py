"""Unit tests of the `vote` node with `loomgraph.testing.run_node` and `ScriptedModel`.

They run against the *installed* package: `kind: vote` is found through the `loomgraph.nodes`
entry point, exactly as in a user's program (install with `pip install -e .` first).
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

import pytest
from loomgraph import Agent, Graph, tool
from loomgraph.authoring.loader import graph_from_data
from loomgraph.errors import GraphValidationError
from loomgraph.graph.registry import node_kind
from loomgraph.models import ScriptedModel
from loomgraph.protocols import ModelRequest
from loomgraph.testing import run_node

from loomgraph_debate import VoteNode, graph_path

GRAPH = graph_path("self_consistency")
QUESTION = {
    "input": "What is the capital of Australia?",
    "findings": "lookup(Australia) returned Canberra.",
}


def vote_graph(**params: Any) -> Graph:
    """A one-node graph around a `vote` node with these parameters."""
    return graph_from_data(
        {
            "name": "vote-only",
            "entry": "vote",
            "state": {"votes": {"type": "list[str]"}, "agreement": {"type": "float"}},
            "nodes": {
                "vote": {
                    "kind": "vote",
                    "prompt": "{{ input }}",
                    "votes": "votes",
                    "agreement": "agreement",
                    **params,
                }
            },
            "edges": [{"from": "vote", "to": "END"}],
        }
    )


def test_the_kind_is_registered_by_the_entry_point() -> None:
    (ep,) = [ep for ep in entry_points(group="loomgraph.nodes") if ep.name == "vote"]
    assert ep.value == "loomgraph_debate.vote:VoteNode"
    assert node_kind("vote") is VoteNode


async def test_the_majority_answer_wins_and_every_vote_is_kept() -> None:
    seen: list[ModelRequest] = []
    replies = [
        "Sydney is largest, but ANSWER: Canberra",
        "ANSWER: Sydney",
        "ANSWER: canberra.",
        "I think ANSWER: Melbourne",
        "ANSWER:  Canberra",
    ]

    def model(request: ModelRequest) -> str:
        seen.append(request)
        return replies[request.call_index]

    run = await run_node(GRAPH, "vote", QUESTION, model=model)

    assert run.patch["output"] == "Canberra"  # 3 of 5, compared loosely
    assert run.patch["votes"] == ["Canberra", "Sydney", "canberra.", "Melbourne", "Canberra"]
    assert run.patch["agreement"] == pytest.approx(0.6)
    assert run.patch["usage"]["model_calls"] == 5
    assert run.patch["usage"]["input_tokens"] == 50
    # Every sample is a journaled model effect, asked through the context.
    assert [e.kind for e in run.effects] == ["model"] * 5
    assert all(e.status == "done" for e in run.effects)
    # The prompt template saw both the question and the research notes.
    assert len(seen) == 5
    prompt = seen[0].messages[0]["content"]
    assert "capital of Australia" in prompt and "returned Canberra" in prompt
    (tally,) = [e for e in run.events if e.kind == "vote_tally"]
    assert tally.payload["counts"] == {"Canberra": 3, "Sydney": 1, "Melbourne": 1}
    assert tally.node == "vote"


async def test_a_tie_goes_to_the_answer_that_came_first() -> None:
    run = await run_node(
        vote_graph(samples=4, concurrency=1),
        "vote",
        {"input": "?"},
        model=["blue", "Green", "green", "Blue!"],
    )
    assert run.patch["output"] == "blue"
    assert run.patch["agreement"] == pytest.approx(0.5)


async def test_exact_matching_keeps_variants_apart() -> None:
    run = await run_node(
        vote_graph(samples=3, loose=False), "vote", {"input": "?"}, model=["Blue", "blue", "blue"]
    )
    assert run.patch["output"] == "blue"
    assert run.patch["agreement"] == pytest.approx(2 / 3)


async def test_replies_without_an_answer_abstain() -> None:
    run = await run_node(
        vote_graph(samples=3, extract=r"ANSWER:\s*(\w+)"),
        "vote",
        {"input": "?"},
        model=["no idea", "ANSWER: 7", "still thinking"],
    )
    assert run.patch["votes"] == ["", "7", ""]
    assert run.patch["output"] == "7"
    assert run.patch["agreement"] == pytest.approx(1 / 3)  # of all samples, not of answers

    none = await run_node(
        vote_graph(samples=2, extract=r"ANSWER:\s*(\w+)"),
        "vote",
        {"input": "?"},
        model=["hmm", "hmm"],
    )
    assert none.patch["output"] == ""
    assert none.patch["agreement"] == 0.0


async def test_a_failed_sample_fails_the_node_with_its_own_error() -> None:
    with pytest.raises(ConnectionError):
        await run_node(
            vote_graph(samples=3),
            "vote",
            {"input": "?"},
            model=["a", ConnectionError("provider down"), "a"],
        )


async def test_a_resumed_run_asks_again_only_for_the_samples_that_failed() -> None:
    # Every sample goes through ctx.call_model, so each one is journaled: after a crash or a
    # failure, `agent.resume` replays the finished samples instead of paying for them again.
    asked: list[int] = []
    provider_up = False

    def model(request: ModelRequest) -> str:
        asked.append(request.call_index)
        if request.call_index == 2 and not provider_up:
            raise ConnectionError("provider down")
        return ["A", "B", "A"][request.call_index]

    # One sample at a time, so the first two are surely finished when the third fails.
    agent = Agent("", model=ScriptedModel(model), architecture=vote_graph(samples=3, concurrency=1))
    failed = await agent.run("?")
    assert failed.status == "failed" and "ConnectionError" in failed.reason
    before = len(asked)

    provider_up = True
    resumed = await agent.resume(failed.run_id)
    assert resumed.status == "completed"
    assert before == 3
    assert asked[before:] == [2]  # samples 0 and 1 came from the journal
    assert resumed.output == "A"
    history = await agent.history(failed.run_id)
    assert history[-1].state["votes"] == ["A", "B", "A"]


def test_bad_parameters_are_load_time_errors() -> None:
    with pytest.raises(GraphValidationError) as bad_regex:
        vote_graph(extract="ANSWER: (")
    assert "kind-check" in bad_regex.value.rules
    assert "not a regular expression" in str(bad_regex.value)

    with pytest.raises(GraphValidationError) as no_samples:
        vote_graph(samples=0, temperature=1)
    assert no_samples.value.rules == {"bad-params"}
    assert "samples" in str(no_samples.value) and "temperature" in str(no_samples.value)


@tool
def lookup(country: str) -> str:
    """The capital of a country."""
    return {"australia": "Canberra"}.get(country.lower(), "unknown")


RESEARCH: list[str | dict[str, Any]] = [
    {"tool_calls": [{"tool": "lookup", "args": {"country": "Australia"}}]},
    "lookup(Australia) returned Canberra.",
]


async def _path(agent: Agent, prompt: str) -> tuple[Any, list[tuple[str, str]]]:
    result = await agent.run(prompt)
    history = await agent.history(result.run_id)
    # Transitions of the top-level graph (seq 0 is the first state, before any node ran).
    return result, [(c.node, c.next_node) for c in history if c.seq and "/" not in c.node]


async def test_the_graph_ends_on_a_clear_majority() -> None:
    model = ScriptedModel(
        [
            *RESEARCH,
            "ANSWER: Canberra",
            "ANSWER: Sydney",
            "ANSWER: Canberra",
            "ANSWER: Canberra",
            "ANSWER: Canberra",
        ]
    )
    agent = Agent("Answer questions.", model=model, tools=[lookup], architecture=GRAPH)
    result, path = await _path(agent, "What is the capital of Australia?")
    assert result.status == "completed"
    assert result.output == "Canberra"
    assert path == [("research", "vote"), ("vote", "END")]


async def test_a_split_vote_goes_to_the_judge() -> None:
    model = ScriptedModel(
        [
            *RESEARCH,
            "ANSWER: Canberra",
            "ANSWER: Sydney",
            "ANSWER: Perth",
            "ANSWER: Sydney",
            "nothing",
            "Canberra",
        ]
    )
    agent = Agent("Answer questions.", model=model, tools=[lookup], architecture=GRAPH)
    result, path = await _path(agent, "What is the capital of Australia?")
    assert result.status == "completed"
    assert result.output == "Canberra"  # the judge's answer, not the 2-vote "Sydney"
    assert path == [("research", "vote"), ("vote", "judge"), ("judge", "END")]
