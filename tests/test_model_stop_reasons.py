"""The model adapters under faults: the real SDKs against scripted loopback servers, through
`model.stream()` and whole Agent runs (found by a probe; each test failed before its fix)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

# ------------------------------------------------------------------ 1. truncated answers
import model_raw_server
from fake_servers import (
    Reply,
    chat_stream,
    sse_message,
)
from loomgraph import Agent
from loomgraph.agent.result import RunResult
from loomgraph.authoring.loader import graph_from_yaml
from loomgraph.engine.model_answers import response_from
from loomgraph.protocols import FinishReason, RunStatus
from loomgraph.protocols.events import ERROR
from model_raw_server import (
    RawServer,
    anthropic,
    openai,
)

server = model_raw_server.server  # the fixture


@pytest.mark.parametrize(
    ("make", "truncated"),
    [
        pytest.param(
            anthropic,
            lambda: sse_message(
                [("text", ["The three steps are: first, "])], stop_reason="max_tokens"
            ),
            id="anthropic-max_tokens",
        ),
        pytest.param(
            anthropic,
            lambda: sse_message([], stop_reason="refusal", output_tokens=0),
            id="anthropic-refusal",
        ),
        pytest.param(
            openai,
            lambda: chat_stream(["The three steps are: first, "], finish="length"),
            id="openai-length",
        ),
        pytest.param(
            openai,
            lambda: chat_stream([], finish="content_filter"),
            id="openai-content_filter",
        ),
    ],
)
async def test_an_answer_cut_by_max_tokens_or_refused_is_not_reported_as_a_complete_run(
    server: RawServer, make: Callable[..., Any], truncated: Callable[[], list[Any]]
) -> None:
    """A user runs an agent whose model hits its max_tokens mid-sentence (or refuses). The run
    comes back `status == "completed"` with the half sentence (or "") as its output, and
    nothing in the RunResult says the answer was cut off or refused: the finish reason is
    read into the ModelResponse and then ignored by every node (`grep finish_reason
    src/loomgraph/nodes src/loomgraph/strategies` finds nothing). A user should get a run
    that is not `completed`, or at least a reason naming what happened."""
    server.add(Reply(events=truncated()))
    result = await Agent("Answer fully.", model=make(server.url)).run("List the three steps.")
    cut = result.status != "completed" or any(
        word in result.reason for word in ("max_tokens", "length", "refusal", "content_filter")
    )
    assert cut, (result.status, result.output, result.reason)


# ------------------------------------------------------------------ 2. what the run says


def _text_cut(make: Callable[..., Any]) -> list[Any]:
    if make is anthropic:
        return sse_message([("text", ["The three steps are: first, "])], stop_reason="max_tokens")
    return chat_stream(["The three steps are: first, "], finish="length")


def _refused(make: Callable[..., Any]) -> list[Any]:
    if make is anthropic:
        return sse_message([("text", ["I can't help with that."])], stop_reason="refusal")
    return chat_stream(["I can't help with that."], finish="content_filter")


@pytest.mark.parametrize("make", [anthropic, openai], ids=["anthropic", "openai"])
async def test_a_truncated_answer_fails_the_run_with_a_typed_error_naming_max_tokens(
    server: RawServer, make: Callable[..., Any]
) -> None:
    """The run ends `failed` (not `completed`), its reason names the typed error, the limit in
    force and how to raise it; the half sentence is not the run's output; the call it made
    is still counted in the run's usage; a stream consumer sees an `error` event typed
    `ModelAnswerTruncated`."""
    server.add(Reply(events=_text_cut(make)))
    agent = Agent("Answer fully.", model=make(server.url, max_tokens=300))
    events = [event async for event in agent.stream("List the three steps.")]
    errors = [e.payload for e in events if e.kind == ERROR]
    assert [e["type"] for e in errors] == ["ModelAnswerTruncated"], errors
    done = events[-1].payload
    result = RunResult.from_dict(done["result"])
    assert result.status == RunStatus.FAILED
    assert "ModelAnswerTruncated" in result.reason and "max_tokens (300)" in result.reason
    assert "`max_tokens=`" in result.reason, result.reason
    assert result.output == ""  # not "The three steps are: first, "
    assert result.usage.model_calls == 1 and result.usage.output_tokens == 5


@pytest.mark.parametrize("make", [anthropic, openai], ids=["anthropic", "openai"])
async def test_a_refusal_fails_the_run_with_a_typed_error_quoting_it(
    server: RawServer, make: Callable[..., Any]
) -> None:
    """A refusal (Claude's `refusal`, a content filter's `content_filter`) with text is no
    answer either: `failed`, the reason naming `ModelRefused` and quoting what was said."""
    server.add(Reply(events=_refused(make)))
    events = [e async for e in Agent("x", model=make(server.url)).stream("Do the thing.")]
    assert [e.payload["type"] for e in events if e.kind == ERROR] == ["ModelRefused"]
    result = RunResult.from_dict(events[-1].payload["result"])
    assert result.status == RunStatus.FAILED and result.output == ""
    assert "ModelRefused" in result.reason and "I can't help with that." in result.reason


async def test_tool_calls_cut_short_by_max_tokens_still_run(server: RawServer) -> None:
    """A turn that handed out whole tool calls before max_tokens stopped it is a step, not a
    final answer: the calls run and the model goes on from their results."""
    ran: list[str] = []

    async def now() -> str:
        """The time."""
        ran.append("now")
        return "noon"

    server.add(
        Reply(events=sse_message([("tool", ("call_1", "now", ["{}"]))], stop_reason="max_tokens"))
    )
    server.add(Reply(events=sse_message([("text", ["It is noon."])])))
    result = await Agent("x", model=anthropic(server.url), tools=[now]).run("time?")
    assert result.status == RunStatus.COMPLETED and result.output == "It is noon."
    assert ran == ["now"]


async def test_a_stop_sequence_is_a_whole_answer(server: RawServer) -> None:
    """Only max_tokens and refusals are cut short: a stop sequence the caller set ends a whole
    answer."""
    server.add(Reply(events=sse_message([("text", ["1, 2, 3"])], stop_reason="stop_sequence")))
    result = await Agent("x", model=anthropic(server.url, stop_sequences=["4"])).run("count")
    assert result.status == RunStatus.COMPLETED and result.output == "1, 2, 3"


async def test_an_llm_node_cut_by_its_own_max_tokens_names_that_limit(server: RawServer) -> None:
    """An `llm` node's text answer cut by the node's own `max_tokens` fails the run naming
    that limit (sent as the request's), not the model's default; nothing is stored."""
    graph = graph_from_yaml(
        "name: summary\nentry: sum\nstate:\n  summary: {type: str}\nnodes:\n"
        "  sum: {kind: llm, prompt: 'Summarise {{ input }}', output: summary, max_tokens: 64}\n"
        "edges:\n  - {from: sum, to: END}\n"
    )
    server.add(Reply(events=chat_stream(["A long story about"], finish="length")))
    result = await Agent("x", model=openai(server.url), architecture=graph).run("the war")
    assert server.requests[0].body["max_tokens"] == 64
    assert result.status == RunStatus.FAILED, result
    assert "node 'sum' failed: ModelAnswerTruncated" in result.reason
    assert "max_tokens (64)" in result.reason, result.reason


async def test_a_refused_structured_answer_is_not_asked_again(server: RawServer) -> None:
    """With `output_schema`, a refusal of the forced `respond` call is not argued with (the
    answer-fitting retries would send the same request, refused the same way): one request,
    and the run fails naming `ModelRefused`, not an `OutputValidationError`."""
    server.add(Reply(events=sse_message([("text", ["lots of words"])])))
    server.add(Reply(events=sse_message([], stop_reason="refusal", output_tokens=0)))
    result = await Agent("x", model=anthropic(server.url)).run("a number", output_schema=int)
    assert len(server.requests) == 2  # the graph's turn, and one forced `respond`
    assert result.status == RunStatus.FAILED
    assert "node 'structured_output' failed: ModelRefused" in result.reason, result.reason


async def test_a_retry_policy_may_name_the_typed_error(server: RawServer) -> None:
    """The typed errors are errors a graph can act on: a `retry` policy naming
    `ModelAnswerTruncated` passes validation and asks again; both calls are counted."""
    graph = graph_from_yaml(
        "name: r\nentry: model\nnodes:\n"
        "  model: {kind: model, retry: {attempts: 2, errors: [ModelAnswerTruncated]}}\n"
        "edges:\n  - {from: model, to: END}\n"
    )
    server.add(Reply(events=_text_cut(anthropic)))
    server.add(Reply(events=sse_message([("text", ["Three steps: a, b, c."])])))
    result = await Agent("x", model=anthropic(server.url), architecture=graph).run("steps?")
    assert result.status == RunStatus.COMPLETED and result.output == "Three steps: a, b, c."
    assert result.usage.model_calls == 2


def test_a_replayed_answer_keeps_its_typed_finish_reason() -> None:
    """An answer read back from the journal (a resume) carries a `FinishReason`, whichever
    spelling was journaled; one loomgraph does not know stays as it was."""
    assert response_from({"finish_reason": "length"}).finish_reason is FinishReason.MAX_TOKENS
    assert response_from({}).finish_reason is FinishReason.END_TURN
    assert response_from({"finish_reason": "odd"}).finish_reason == "odd"
