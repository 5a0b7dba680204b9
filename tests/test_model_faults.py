"""The model adapters under faults: the real SDKs against scripted loopback servers, through
`model.stream()` and whole Agent runs (found by a probe; each test failed before its fix)."""

from __future__ import annotations

import asyncio
import json
import math
import threading
from collections.abc import Callable
from typing import Any

import pytest

# ------------------------------------------------------------------ 2. cut-off charging
import model_raw_server
from fake_servers import (
    Reply,
    api_error,
    chat_chunk,
    chat_stream,
    sse_message,
)
from loomgraph import Agent
from loomgraph.governance import BudgetConfig, StandardBudget
from loomgraph.models.anthropic import AnthropicModel
from loomgraph.models.errors import (
    AdapterError,
    ModelBadResponse,
    ModelConfigError,
    ModelConnectionError,
    ModelTimeout,
)
from model_raw_server import (
    BOUND_S,
    RawServer,
    anthropic,
    collect,
    failure,
    openai,
    trickled,
)

server = model_raw_server.server  # the fixture


async def test_a_call_cut_off_mid_stream_is_charged_the_prompt_the_provider_reported(
    server: RawServer,
) -> None:
    """A user's caller cancels a run (or its deadline passes) while Claude is streaming. The
    provider had already reported, in message_start, that it billed 5,000 input tokens and
    3,000 cache reads; the budget is charged 1 input token (the engine's estimate of the
    two-word prompt). The cancelled path (`engine.context._attempt`'s `BaseException`
    branch → `cancelled_usage`) never sees the usage the adapter had read: the adapter's
    `_Turn.usage` dies with the cancelled generator. A broken stream is charged the reported
    prompt (docs/models.md, "usage= what the provider already billed"); a cut-off one should
    be too."""
    gate = threading.Event()
    events = sse_message([("text", ["abcd"] * 10)], input_tokens=5000, cache_read=3000)
    server.add(Reply(events=[*events[:13], gate, *events[13:]]))  # held after 10 text deltas
    budget = StandardBudget(BudgetConfig(input_tokens=1_000_000))
    agent = Agent("x", model=anthropic(server.url, retries=0), budget=budget)
    streaming = asyncio.Event()

    async def drive() -> None:
        async for event in agent.stream("go"):
            if event.kind == "model_chunk":
                streaming.set()

    task = asyncio.create_task(drive())
    try:
        await asyncio.wait_for(streaming.wait(), BOUND_S)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        gate.set()
    spent = (await budget.totals("global")).spent
    assert spent.get("input_tokens", 0) >= 5000, spent


# ------------------------------------------------------------------ 3. truncated tool call


@pytest.mark.parametrize(
    ("make", "truncated"),
    [
        pytest.param(
            anthropic,
            lambda: sse_message(
                [("tool", ("toolu_1", "write_file", ['{"path": "a.txt", "content": "lo']))],
                stop_reason="max_tokens",
            ),
            id="anthropic",
        ),
        pytest.param(
            openai,
            lambda: chat_stream(
                tools=[("call_1", "write_file", ['{"path": "a.txt", "content": "lo'])],
                finish="length",
            ),
            id="openai-compat",
        ),
    ],
)
async def test_a_tool_call_cut_by_max_tokens_is_not_resent_unchanged(
    server: RawServer, make: Callable[..., Any], truncated: Callable[[], list[Any]]
) -> None:
    """A user's agent asks for a tool call bigger than max_tokens; the provider stops inside
    the tool input (stop_reason max_tokens / finish_reason length), so its JSON is cut. The
    adapter calls it "invalid tool arguments: not valid JSON" (`HTTPModel._read`), a
    retryable `ModelBadResponse`, and sends the very same request again until the retries
    run out, paying for the same truncated answer each time; the run's reason never says
    max_tokens. The OpenAI adapter even has the finish reason in hand when it assembles the
    call (`openai_stream.ChatCompletion._choice`). A user should get an error naming
    max_tokens, and no identical request sent twice."""

    async def write_file(path: str, content: str) -> str:
        """Write a file."""
        return "ok"

    for _ in range(12):
        server.add(Reply(events=truncated()))
    agent = Agent("x", model=make(server.url, retries=4), tools=[write_file])
    result = await agent.run("write the report")
    bodies = [json.dumps(body, sort_keys=True) for body in server.bodies]
    assert len(bodies) == len(set(bodies)), f"{len(bodies)} requests, identical"
    assert "max_tokens" in result.reason or "length" in result.reason, result.reason


# ------------------------------------------------------------------ 4. id-less tool calls


async def test_two_unindexed_tool_calls_without_ids_are_both_run(server: RawServer) -> None:
    """A user's OpenAI-compatible server sends tool-call fragments with no `index` (as
    Ollama, Gemini's endpoint and several proxies do) and no `id`, one call per fragment:
    `now` with empty arguments, then `weather` with {}. The adapter folds the second
    fragment into the first call (`ChatCompletion._fragment`: a fragment without an id
    "continues" the last call even when it names another function), so `now` is silently
    dropped and only `weather` runs. Each named function should be its own call."""
    ran: list[str] = []

    async def now() -> str:
        """The time."""
        ran.append("now")
        return "12:00"

    async def weather() -> str:
        """The weather."""
        ran.append("weather")
        return "sunny"

    def fragment(name: str, arguments: str) -> Any:
        call = {"type": "function", "function": {"name": name, "arguments": arguments}}
        return chat_chunk({"tool_calls": [call]})

    server.add(
        Reply(
            events=[
                chat_chunk({"role": "assistant", "content": ""}),
                fragment("now", ""),
                fragment("weather", "{}"),
                chat_chunk({}, finish="tool_calls"),
                (None, "[DONE]"),
            ]
        ),
        Reply(events=chat_stream(["It is noon and sunny."])),
    )
    result = await Agent("x", model=openai(server.url), tools=[now, weather]).run("time+weather?")
    assert result.status == "completed", result.reason
    assert sorted(ran) == ["now", "weather"]


async def test_unindexed_fragments_without_ids_split_by_name_and_whole_arguments(
    server: RawServer,
) -> None:
    """The same kind of server calling one function twice, each call whole in its fragment,
    then a call streamed in pieces (its name once, then arguments only): three calls, each
    with its own arguments."""

    def fragment(arguments: str, name: str | None = None) -> Any:
        function = {"arguments": arguments} | ({"name": name} if name else {})
        return chat_chunk({"tool_calls": [{"type": "function", "function": function}]})

    server.add(
        Reply(
            events=[
                chat_chunk({"role": "assistant", "content": ""}),
                fragment('{"city": "Oslo"}', "weather"),
                fragment('{"city": "Rome"}', "weather"),
                fragment('{"zone": ', "now"),
                fragment('"UTC"}'),
                chat_chunk({}, finish="tool_calls"),
                (None, "[DONE]"),
            ]
        )
    )
    chunks = await collect(openai(server.url))
    calls = [(c["call"]["tool"], c["call"]["args"]) for c in chunks if c["type"] == "tool_call"]
    assert calls == [
        ("weather", {"city": "Oslo"}),
        ("weather", {"city": "Rome"}),
        ("now", {"zone": "UTC"}),
    ]


# ------------------------------------------------------------------ 5. timeout


@pytest.mark.parametrize(
    ("make", "answer", "after"),
    [  # (held before the first text)
        pytest.param(anthropic, lambda: sse_message([("text", ["late"])]), 2, id="anthropic"),
        pytest.param(openai, lambda: chat_stream(["late"]), 1, id="openai-compat"),
    ],
)
async def test_the_total_timeout_bounds_a_stream_that_trickles_forever(
    server: RawServer, make: Callable[..., Any], answer: Callable[[], list[Any]], after: int
) -> None:
    """A user sets `timeout=0.3`, documented as "seconds, per HTTP request" (docs/models.md).
    A server (or a proxy) that keeps the stream alive with a ping every 0.05 s never times
    out: the SDK's timeout is per read (httpx), so the call runs as long as the server likes;
    here 40 pings (2 s) and then the answer, which is accepted. Against a server that never
    stops pinging, the agent hangs. `timeout` is now documented as what it is (per read) and
    `total_timeout` bounds the whole request: a user gets `ModelTimeout` once the request has
    run longer than that."""
    done = threading.Event()
    events = trickled(answer(), after=after, pings=40, every=0.05, done=done)
    server.add(Reply(events=events))
    model = make(server.url, retries=0, total_timeout=0.3)
    try:
        err = await asyncio.wait_for(failure(model), BOUND_S)
    finally:
        done.set()
    assert isinstance(err, ModelTimeout), repr(err)
    assert "total_timeout=0.3" in str(err)


@pytest.mark.parametrize("seconds", [0, -1.0, math.nan, math.inf])
def test_a_total_timeout_that_bounds_nothing_is_a_config_error(seconds: float) -> None:
    """`total_timeout=0` (or a negative number, NaN, infinity) would time every request out
    at once, or never: refused when the model is made, naming the setting."""
    with pytest.raises(ModelConfigError, match="total_timeout"):
        AnthropicModel("claude-sonnet-4-6", total_timeout=seconds)


# ------------------------------------------------------------------ 6. config mistakes


async def failure_building(make: Callable[[], Any]) -> BaseException:
    """What making a model, or else streaming one turn with it, raised."""
    try:
        model = make()
    except Exception as exc:
        return exc
    return await failure(model)


@pytest.mark.parametrize(
    ("make", "options"),
    [
        pytest.param(openai, {"api_key": "sk-proj-abc…"}, id="openai-non-ascii-key"),
        pytest.param(openai, {"api_key": "sk-test\n"}, id="openai-key-with-newline"),
        pytest.param(anthropic, {"api_key": "sk-ant-test\n"}, id="anthropic-key-with-newline"),
        pytest.param(openai, {"base_url": "http://127.0.0.1:99999/v1"}, id="openai-port-99999"),
        pytest.param(anthropic, {"base_url": "http://127.0.0.1:99999"}, id="anthropic-port-99999"),
        pytest.param(openai, {"base_url": "http://[::1/v1"}, id="openai-unclosed-bracket"),
        pytest.param(anthropic, {"base_url": "http://[::1"}, id="anthropic-unclosed-bracket"),
        # The same in the environment variables read at the first call:
        pytest.param(anthropic, {"api_key": None, "$ANTHROPIC_API_KEY": "sk-a\n"}, id="env-key"),
        pytest.param(anthropic, {"base_url": None, "$ANTHROPIC_BASE_URL": "http://[::1"}, id="env"),
        pytest.param(openai, {"api_key": None, "$OPENAI_API_KEY": "sk-test\r"}, id="env-key-2"),
        pytest.param(openai, {"base_url": None, "$OPENAI_BASE_URL": "http://h:0/v1"}, id="env-2"),
    ],
)
async def test_a_misconfigured_key_or_url_is_a_typed_config_error(
    server: RawServer,
    monkeypatch: pytest.MonkeyPatch,
    make: Callable[..., Any],
    options: dict[str, Any],
) -> None:
    """A user pastes a key with a trailing newline or a typographic ellipsis, or types a bad
    port or an unclosed IPv6 bracket in base_url. Today the openai adapter raises a bare
    `UnicodeEncodeError`, `ExceptionGroup` ("unhandled errors in a TaskGroup") or
    `httpx.InvalidURL`, the anthropic one a bare `InvalidURL` or a `ModelConnectionError`
    ("connection failed: LocalProtocolError") retried with backoff as if the network were
    down; an Agent run fails with "node 'model' failed: ExceptionGroup: …". `_translate`
    ends in `raise exc` for anything the SDK did not wrap. A user should get a
    `ModelConfigError` naming the setting (or the environment variable), raised once, before
    anything is sent (a setting given to the constructor is checked there)."""
    named = next(name for name, value in options.items() if value is not None)
    for variable in [name for name in options if name.startswith("$")]:
        monkeypatch.setenv(variable[1:], options.pop(variable))
    url = options.pop("base_url", server.url)
    err = await failure_building(lambda: make(url, **options))
    assert isinstance(err, ModelConfigError), repr(err)
    assert err.attempts == 1
    assert named in str(err), str(err)
    assert "sk-" not in str(err), "the message shows the key"
    assert server.requests == []


# ------------------------------------------------------------------ retry-after: nan


@pytest.mark.parametrize("header", ["retry-after", "retry-after-ms"])
async def test_a_retry_after_that_is_not_a_number_leaves_the_backoff(
    server: RawServer, header: str
) -> None:
    """A server (or a proxy) answers 429 with `retry-after: nan`. Read as NaN seconds,
    `asyncio.sleep(nan)` returns at once, so the retries hammer the server with no backoff.
    A wait that is no finite number is no instruction: the backoff applies."""
    for _ in range(2):
        server.add(api_error(429, "rate_limit_error", **{header.replace("-", "_"): "nan"}))
    server.add(Reply(events=sse_message([("text", ["ok"])])))
    model = anthropic(server.url)
    chunks = await collect(model)
    assert [c["type"] for c in chunks][-1] == "finish"
    delays = model.retry_policy.sleep.delays
    assert len(delays) == 2
    assert all(math.isfinite(delay) and delay > 0 for delay in delays), delays


# ------------------------------------------------------------------ 7. malformed SSE


@pytest.mark.parametrize(
    ("make", "stream", "at", "name"),
    [
        pytest.param(
            anthropic,
            lambda: sse_message([("text", ["hi"])]),
            2,
            "content_block_start",
            id="anthropic",
        ),
        pytest.param(openai, lambda: chat_stream(["hi"]), 1, None, id="openai-compat"),
    ],
)
async def test_an_sse_event_that_is_not_json_is_a_bad_response(
    server: RawServer,
    make: Callable[..., Any],
    stream: Callable[[], list[Any]],
    at: int,
    name: str | None,
) -> None:
    """A server (or a proxy that rewrites the stream) sends `data: {not json`. docs/models.md
    promises a malformed chunk is a `ModelBadResponse` ("malformed stream: …"), never a raw
    decoding error; the user gets `ModelConnectionError("connection failed:
    JSONDecodeError: …")`, blaming the network for the server's output
    (`_translate(streaming=True)` files every exception of the SDK's iterator as a broken
    connection)."""
    for _ in range(3):
        items = stream()
        server.add(Reply(events=[*items[:at], (name, "{not json"), *items[at:]]))
    err = await failure(make(server.url))
    assert isinstance(err, ModelBadResponse), repr(err)
    assert "malformed" in str(err)


# ------------------------------------------------------------------ 8. 200 but not a stream


@pytest.mark.parametrize(
    ("make", "body", "kind"),
    [
        pytest.param(
            anthropic, b"<!doctype html><title>Open WebUI</title>", "text/html", id="anthropic-html"
        ),
        pytest.param(
            openai, b"<!doctype html><title>Open WebUI</title>", "text/html", id="openai-html"
        ),
        pytest.param(
            openai,
            json.dumps(
                {
                    "id": "c1",
                    "object": "chat.completion",
                    "model": "local-model",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "hello"},
                            "finish_reason": "stop",
                        }
                    ],
                }
            ).encode(),
            "application/json",
            id="openai-json-not-streamed",
        ),
    ],
)
async def test_a_200_that_is_not_an_event_stream_says_so(
    server: RawServer, make: Callable[..., Any], body: bytes, kind: str
) -> None:
    """A user points base_url at a web UI (it answers every path with a 200 HTML page) or at
    a server that ignores `stream: true` and answers one JSON document. The adapter reads
    the body as SSE, finds no events, and reports `ModelConnectionError("the stream ended
    before message_stop / a finish_reason")`, retried with backoff as a network fault. The
    error should say what came back (its content type), and not blame the connection."""
    for _ in range(3):
        server.add(Reply(body=body, headers={"Content-Type": kind}))
    err = await failure(make(server.url))
    assert isinstance(err, AdapterError), repr(err)
    assert not isinstance(err, ModelConnectionError), repr(err)
    assert kind in str(err), str(err)
