"""More findings on reading model streams, through the official SDKs against the loopback
fake servers (helpers shared with `test_model_stream_findings`):

1. a usage count no real call could have (10**30 tokens; anything over
   `MAX_REPORTED_TOKENS`) is a `ModelBadResponse` naming the field, never charged;
2. `cached_tokens` over `prompt_tokens` is a `ModelBadResponse` naming both (was clamped);
3. a Messages API `text_delta` for a block that is not open is a `ModelBadResponse`;
4. chat-completions text after the `finish_reason` is a `ModelBadResponse`, as a late tool
   call already was.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from fake_servers import FakeServer, Reply, chat_chunk, chat_stream
from loomgraph import Agent
from loomgraph.governance import BudgetConfig, StandardBudget
from loomgraph.models.errors import ModelStreamBroken
from loomgraph.protocols.usage import MAX_REPORTED_TOKENS
from test_model_stream_findings import (
    DONE,
    MSTOP,
    USAGE,
    bad_response,
    claude,
    collect,
    local,
    mdelta,
    start,
    stop,
    td,
    text_start,
    tool_start,
)

HUGE = 10**30


@pytest.fixture
def server() -> Iterator[FakeServer]:
    srv = FakeServer().start()
    yield srv
    srv.stop()


def chat_usage(**usage: Any) -> list[Any]:
    """A finished chat completion whose usage chunk carries `usage`."""
    return [
        chat_chunk({"content": "hi"}),
        chat_chunk({}, finish="stop"),
        chat_chunk(None, usage=usage),
        DONE,
    ]


# --------------------------------------------------------------------------- 1. absurd counts

ABSURD_OPENAI = {
    "prompt_tokens": (chat_usage(prompt_tokens=HUGE, completion_tokens=5), "prompt_tokens"),
    "completion_tokens": (
        chat_usage(prompt_tokens=10, completion_tokens=HUGE),
        "completion_tokens",
    ),
    "cached_tokens": (
        chat_usage(
            prompt_tokens=10, completion_tokens=5, prompt_tokens_details={"cached_tokens": HUGE}
        ),
        "cached_tokens",
    ),
    "one over the bound": (
        chat_usage(prompt_tokens=10, completion_tokens=MAX_REPORTED_TOKENS + 1),
        "completion_tokens",
    ),
}


@pytest.mark.parametrize(("events", "field"), ABSURD_OPENAI.values(), ids=list(ABSURD_OPENAI))
async def test_an_absurd_chat_usage_count_is_a_bad_response(
    server: FakeServer, events: list[Any], field: str
) -> None:
    server.add(Reply(events=events))
    err = await bad_response(local(server))
    assert "impossible usage" in str(err) and field in str(err), str(err)


ABSURD_ANTHROPIC = {
    "input_tokens": (
        [start(inp=HUGE), text_start(0), td(0, "hi"), stop(0), mdelta(), MSTOP],
        "input_tokens",
    ),
    "output_tokens": (
        [
            start(),
            text_start(0),
            td(0, "hi"),
            stop(0),
            mdelta(usage={"output_tokens": HUGE}),
            MSTOP,
        ],
        "output_tokens",
    ),
    "cache_read_input_tokens": (
        [
            start(),
            text_start(0),
            td(0, "hi"),
            stop(0),
            mdelta(usage={"output_tokens": 5, "cache_read_input_tokens": HUGE}),
            MSTOP,
        ],
        "cache_read_input_tokens",
    ),
}


@pytest.mark.parametrize(("events", "field"), ABSURD_ANTHROPIC.values(), ids=list(ABSURD_ANTHROPIC))
async def test_an_absurd_messages_usage_count_is_a_bad_response(
    server: FakeServer, events: list[Any], field: str
) -> None:
    server.add(Reply(events=events))
    err = await bad_response(claude(server))
    assert "impossible usage" in str(err) and field in str(err), str(err)


async def test_a_refused_usage_report_is_used_not_at_all(server: FakeServer) -> None:
    # message_start said 10 input tokens; the message_delta holding an absurd output count
    # also says 500: none of that report counts, the attempt is charged what it streamed.
    usage = {"input_tokens": 500, "output_tokens": HUGE}
    events = [start(inp=10), text_start(0), td(0, "x" * 40), stop(0), mdelta(usage=usage), MSTOP]
    server.add(Reply(events=events))
    with pytest.raises(ModelStreamBroken) as info:
        await collect(claude(server))
    assert info.value.usage is not None
    assert (info.value.usage.input_tokens, info.value.usage.output_tokens) == (10, 10)


async def test_a_count_at_the_bound_is_accepted(server: FakeServer) -> None:
    server.add(Reply(events=chat_usage(prompt_tokens=10, completion_tokens=MAX_REPORTED_TOKENS)))
    chunks = await collect(local(server))
    assert [c["usage"].output_tokens for c in chunks if c["type"] == "usage"] == [
        MAX_REPORTED_TOKENS
    ]


async def test_an_absurd_count_is_never_charged(server: FakeServer) -> None:
    server.add(
        Reply(events=chat_usage(prompt_tokens=10, completion_tokens=HUGE)),
        Reply(events=chat_stream(["fine"], prompt_tokens=10, completion_tokens=5)),
    )
    budget = StandardBudget(BudgetConfig(output_tokens=1_000_000))
    agent = Agent("x", model=local(server), architecture="react", budget=budget)
    result = await agent.run("write")
    await agent.aclose()
    # Text had streamed, so the bad answer is retried as a step; each attempt is charged
    # once, the bad one its estimate (what it streamed), never the count it claimed.
    assert result.status == "completed", result.reason
    assert result.output == "fine"
    assert len(server.requests) == 2
    spent = (await budget.totals("global")).spent["output_tokens"]
    assert spent == result.usage.output_tokens == 1 + 5


# --------------------------------------------------------------------------- 2. cached > prompt


async def test_more_cached_tokens_than_prompt_tokens_is_a_bad_response(
    server: FakeServer,
) -> None:
    server.add(
        Reply(events=chat_stream(["x"], prompt_tokens=10, completion_tokens=5, cached_tokens=600))
    )
    err = await bad_response(local(server))
    message = str(err)
    assert "cached_tokens" in message and "prompt_tokens" in message, message
    assert "600" in message and "10" in message


async def test_every_prompt_token_cached_is_fine(server: FakeServer) -> None:
    server.add(
        Reply(events=chat_stream(["x"], prompt_tokens=600, completion_tokens=5, cached_tokens=600))
    )
    chunks = await collect(local(server))
    usage = next(c["usage"] for c in chunks if c["type"] == "usage")
    assert (usage.input_tokens, usage.cache_read_tokens) == (0, 600)


# --------------------------------------------------------------------------- 3. unopened block

UNOPENED = {
    "never opened": [start(), td(3, "hi"), mdelta(), MSTOP],
    "never opened, after another block": [
        start(),
        text_start(0),
        td(0, "hi"),
        td(1, "there"),
        stop(0),
        mdelta(),
        MSTOP,
    ],
    "already stopped": [start(), text_start(0), td(0, "hi"), stop(0), td(0, "more"), MSTOP],
    "a tool_use block": [start(), tool_start(0), td(0, "hi"), stop(0), mdelta(), MSTOP],
}


@pytest.mark.parametrize("events", UNOPENED.values(), ids=list(UNOPENED))
async def test_a_text_delta_for_a_block_that_is_not_open_is_a_bad_response(
    server: FakeServer, events: list[Any]
) -> None:
    server.add(Reply(events=events))
    err = await bad_response(claude(server))
    assert "malformed stream" in str(err) and "text_delta for block" in str(err), str(err)


# --------------------------------------------------------------------------- 4. late text


async def test_text_after_the_finish_reason_is_a_bad_response(server: FakeServer) -> None:
    server.add(
        Reply(
            events=[
                chat_chunk({"content": "Done."}),
                chat_chunk({}, finish="stop"),
                chat_chunk({"content": " And one more thing."}),
                USAGE,
                DONE,
            ]
        )
    )
    err = await bad_response(local(server))
    assert "after the finish_reason" in str(err), str(err)


async def test_text_with_the_finish_reason_in_one_chunk_is_fine(server: FakeServer) -> None:
    server.add(Reply(events=[chat_chunk({"content": "Done."}, finish="stop"), USAGE, DONE]))
    chunks = await collect(local(server))
    assert [c["type"] for c in chunks] == ["text", "usage", "finish"]
