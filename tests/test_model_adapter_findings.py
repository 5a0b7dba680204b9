"""The model adapters (AnthropicModel, OpenAICompatModel) through the real SDKs against
loopback servers, as a demanding user tried them: each test's docstring says what went
wrong before it was fixed (a truncated tool call re-sent and paid three times, an OpenAI
refusal taken for an empty answer, reasoning never charged, a cut emoji blamed on the API
key, a vLLM 400 in a stream retried as a server error); one pins that a retried attempt is
charged once."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

import model_raw_server
from fake_servers import Reply, chat_chunk, chat_stream, sse_message
from loomgraph import Agent
from loomgraph.governance import BudgetConfig, StandardBudget
from model_raw_server import RawServer, anthropic, collect, failure, openai

server = model_raw_server.server  # the fixture


# ------------------------------------------------------------------ finding 1


@pytest.mark.parametrize(
    ("make", "truncated"),
    [
        pytest.param(
            anthropic,
            lambda: sse_message(
                [
                    ("text", ["I'll write ", "the report now."]),
                    ("tool", ("toolu_1", "write_file", ['{"path": "a.txt", "content": "lo'])),
                ],
                stop_reason="max_tokens",
            ),
            id="anthropic",
        ),
        pytest.param(
            openai,
            lambda: chat_stream(
                text=["I'll write ", "the report now."],
                tools=[("call_1", "write_file", ['{"path": "a.txt", "content": "lo'])],
                finish="length",
            ),
            id="openai-compat",
        ),
    ],
)
async def test_truncated_tool_call_after_text_is_not_retried_as_a_step(
    server: RawServer, make: Callable[..., Any], truncated: Callable[[], list[Any]]
) -> None:
    """A user's agent says a sentence, then starts a tool call bigger than
    max_tokens; the provider stops inside the tool input. docs/models.md: "A
    ModelToolCallTruncated is not retried: the same request stops at the same limit again,
    and each attempt is paid for." Without the preamble text that holds (test_model_faults).
    With it, `retrying` sees output was yielded and turns the non-retryable error into
    `ModelStreamBroken(retry_step=True)`, so the engine re-sends the identical request
    (STEP_RETRIES more times), paying for the same truncated answer each time."""

    async def write_file(path: str, content: str) -> str:
        """Write a file."""
        return "ok"

    for _ in range(12):
        server.add(Reply(events=truncated()))
    agent = Agent("x", model=make(server.url, retries=4), tools=[write_file])
    result = await agent.run("write the report")
    bodies = [json.dumps(body, sort_keys=True) for body in server.bodies]
    assert len(bodies) == len(set(bodies)), f"{len(bodies)} identical requests sent"
    assert "max_tokens" in result.reason, result.reason


# ------------------------------------------------------------------ finding 2


def _refusal_stream() -> list[Any]:
    """A chat completion in which the model refuses, as OpenAI streams it: the refusal text
    in `delta.refusal` (content null), then finish_reason "stop"."""
    return [
        chat_chunk({"role": "assistant", "content": None, "refusal": ""}),
        chat_chunk({"refusal": "I'm sorry, "}),
        chat_chunk({"refusal": "I can't help with that."}),
        chat_chunk({}, finish="stop"),
        chat_chunk(None, usage={"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21}),
        (None, "[DONE]"),
    ]


async def test_an_openai_refusal_is_a_refusal_not_an_empty_answer(server: RawServer) -> None:
    """A user points OpenAICompatModel at OpenAI ("or OpenAI itself", docs/models.md)
    and the model refuses. OpenAI streams a refusal in `delta.refusal`, with finish_reason
    "stop" (not "content_filter"). The user expects what the docs promise for a refusal:
    finish reason REFUSAL, the run failed with ModelRefused quoting it. The adapter reads
    only `delta.content` (openai_stream.ChatCompletion._choice), so the turn is an empty
    END_TURN answer and the run *completes* with output "" and `result.ok` True."""
    server.add(Reply(events=_refusal_stream()), Reply(events=_refusal_stream()))
    chunks = await collect(openai(server.url))
    finish = [c["finish_reason"] for c in chunks if c["type"] == "finish"]
    result = await Agent("x", model=openai(server.url)).run("help me with something bad")
    assert finish == ["refusal"], finish
    assert not result.ok, f"completed with output {result.output!r}"
    assert "ModelRefused" in result.reason and "can't help" in result.reason, result.reason


# ------------------------------------------------------------------ finding 3


async def test_streamed_reasoning_counts_towards_an_unreported_output(server: RawServer) -> None:
    """A user runs a reasoning model (DeepSeek-R1, Qwen3) on a local
    OpenAI-compatible server that sends no usage, under an output-token budget. The server
    streams 2,000 words of reasoning in `delta.reasoning_content` (vLLM, DeepSeek; Ollama
    and OpenRouter say `delta.reasoning`), then the one-character answer "4". docs/models.md:
    a count the server leaves out is charged the engine's estimate of "what was streamed".
    The reasoning was streamed and generated (and is what the output cap is for), but the
    adapter reads only `delta.content`, so the budget is charged ~1 output token."""
    thinking = ["Let me think about this step by step. "] * 250  # ~9,500 characters
    server.add(
        Reply(
            events=[
                chat_chunk({"role": "assistant", "content": ""}),
                *(chat_chunk({"reasoning_content": piece}) for piece in thinking),
                chat_chunk({"content": "4"}),
                chat_chunk({}, finish="stop"),
                (None, "[DONE]"),
            ]
        )
    )
    budget = StandardBudget(BudgetConfig(output_tokens=1_000_000))
    result = await Agent("x", model=openai(server.url), budget=budget).run("2+2?")
    assert result.ok and result.output == "4", result.reason
    spent = (await budget.totals("global")).spent
    # 250 deltas at the least (the docs' floor: never fewer tokens than deltas).
    assert spent.get("output_tokens", 0) >= 250, spent


# ------------------------------------------------------------------ finding 4


async def test_a_lone_surrogate_in_tool_input_is_not_blamed_on_the_key(server: RawServer) -> None:
    """Claude (or a proxy in front of it) sends tool input whose JSON escapes half
    of a surrogate pair (`{"q": "\\ud83d"}`: an emoji cut at a token boundary). The adapter
    parses it into a Python string holding a lone surrogate and hands the call out; the tool
    runs; the next request cannot be encoded as UTF-8, and the run fails with
    `ModelConfigError: the request could not be sent as configured (UnicodeEncodeError);
    check the model's settings (api_key, base_url)`. The user checks a key and URL that are
    fine. Expected: the bad input is caught where it arrives (a ModelBadResponse naming the
    tool input, retried like other unusable input) or the text is made sendable, never a
    config error blaming the settings."""

    async def lookup(q: str) -> str:
        """Look something up."""
        return f"found {q}"

    server.add(
        Reply(
            events=sse_message(
                [("tool", ("toolu_1", "lookup", ['{"q": "\\ud83d"}']))], stop_reason="tool_use"
            )
        ),
        Reply(events=sse_message([("text", ["done"])])),
        Reply(events=sse_message([("text", ["done"])])),
    )
    result = await Agent("x", model=anthropic(server.url, retries=1), tools=[lookup]).run("go")
    assert "ModelConfigError" not in result.reason, result.reason
    assert "api_key" not in result.reason, result.reason


# ------------------------------------------------------------------ finding 5


async def test_an_in_stream_error_with_a_400_code_is_a_request_error(server: RawServer) -> None:
    """A user's vLLM server rejects a request after the stream started: it sends
    `data: {"error": {"object": "error", "message": ..., "type": "BadRequestError",
    "code": 400}}` (vLLM's streaming error shape). The error carries its HTTP code, yet the
    adapter reads only `type` (`errors.body_error`), finds no status (`error_for_status`
    with status None), and calls it `ModelServerError` "HTTP ?", retried: the same bad
    request is sent max_retries+1 times. Expected: a `ModelRequestError` for HTTP 400,
    sent once, as the same body on a 400 response is."""
    from loomgraph.models.errors import ModelRequestError

    error = {
        "object": "error",
        "message": "This model's maximum context length is 4096 tokens.",
        "type": "BadRequestError",
        "param": None,
        "code": 400,
    }
    for _ in range(4):
        server.add(
            Reply(
                events=[chat_chunk({"role": "assistant", "content": ""}), (None, {"error": error})]
            )
        )
    err = await failure(openai(server.url, retries=2))
    assert isinstance(err, ModelRequestError), repr(err)
    assert "HTTP 400" in str(err), str(err)
    assert len(server.requests) == 1, len(server.requests)


async def test_a_prompt_holding_a_lone_surrogate_is_named_not_blamed_on_the_settings(
    server: RawServer,
) -> None:
    """The Python API takes a prompt with half of a surrogate pair; no request can carry it
    as UTF-8. The run said `ModelConfigError ... check the model's settings (api_key,
    base_url)`; it now names the text, and nothing is sent or retried."""
    server.add(Reply(events=sse_message([("text", ["never"])])))
    result = await Agent("x", model=anthropic(server.url, retries=2)).run("go \ud83d")
    assert not result.ok and "ModelRequestError" in result.reason, result.reason
    assert "UTF-8 cannot carry" in result.reason and "'\\ud83d'" in result.reason
    assert "api_key" not in result.reason
    assert server.requests == []


# ------------------------------------------------------------------ passing: pins behaviour


async def test_a_retried_attempt_is_charged_once_and_the_answer_once(server: RawServer) -> None:
    """Claude reports 1,000 input and 3,000 cache-read
    tokens in message_start, then an `overloaded_error` event before any text; the adapter
    retries and the second attempt answers (10 input, 3,000 cache read, 5 output). The run's
    usage and the budget hold both attempts exactly once: no attempt double-charged, none
    dropped."""
    first = sse_message([("text", ["ok"])], input_tokens=1000, cache_read=3000)
    overloaded = ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "x"}})
    server.add(
        Reply(events=[*first[:2], overloaded]),
        Reply(events=sse_message([("text", ["ok"])], cache_read=3000)),
    )
    budget = StandardBudget(BudgetConfig(input_tokens=10_000_000))
    result = await Agent("x", model=anthropic(server.url, retries=2), budget=budget).run("hi")
    assert result.ok, result.reason
    assert (result.usage.input_tokens, result.usage.cache_read_tokens) == (1010, 6000)
    assert result.usage.output_tokens == 6  # message_start's first token, then the answer's 5
    spent = (await budget.totals("global")).spent
    assert spent["input_tokens"] == 1010 + 6000, spent  # cache reads count as input here
    assert len(server.requests) == 2
