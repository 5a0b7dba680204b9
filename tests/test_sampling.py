"""Sampling settings (temperature, top_p, top_k, stop sequences, seed) reach the provider:
the real SDKs against loopback fakes, asserting on the request bodies they sent."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from fake_servers import FakeServer, Reply, chat_stream, sse_message
from loomgraph.models.anthropic import AnthropicModel
from loomgraph.models.openai_compat import OpenAICompatModel
from loomgraph.protocols import ModelRequest, Sampling


@pytest.fixture
def server() -> Iterator[FakeServer]:
    srv = FakeServer().start()
    yield srv
    srv.stop()


def ask(**kw: Any) -> ModelRequest:
    return ModelRequest(messages=[{"role": "user", "content": "hi"}], **kw)


async def drain(model: Any, request: ModelRequest) -> None:
    async for _ in model.stream(request):
        pass


def test_request_settings_win_over_the_models_defaults() -> None:
    defaults = Sampling(temperature=0.9, top_p=0.5, stop_sequences=("END",), seed=3)
    got = ask(temperature=0.0, stop_sequences=["STOP"]).sampling(defaults)
    assert got == Sampling(temperature=0.0, top_p=0.5, stop_sequences=("STOP",), seed=3)
    assert ask().sampling() == Sampling()


async def test_anthropic_request_carries_sampling(server: FakeServer) -> None:
    server.add(Reply(events=sse_message([("text", ["ok"])])))
    model = AnthropicModel(
        "claude-sonnet-4-6", api_key="k", base_url=server.url, temperature=0.2, top_k=40
    )
    await drain(model, ask(top_p=0.7, stop_sequences=["\n\nHuman:"], max_tokens=77))
    body = server.bodies[0]
    assert body["temperature"] == 0.2
    assert body["top_p"] == 0.7
    assert body["top_k"] == 40
    assert body["stop_sequences"] == ["\n\nHuman:"]
    assert body["max_tokens"] == 77
    assert "seed" not in body  # not an Anthropic setting


async def test_anthropic_sends_no_sampling_when_unset(server: FakeServer) -> None:
    server.add(Reply(events=sse_message([("text", ["ok"])])))
    await drain(AnthropicModel("claude-sonnet-4-6", api_key="k", base_url=server.url), ask())
    assert not {"temperature", "top_p", "top_k", "stop_sequences"} & set(server.bodies[0])


async def test_openai_request_carries_sampling(server: FakeServer) -> None:
    server.add(Reply(events=chat_stream(["ok"])))
    model = OpenAICompatModel(
        "qwen3:8b", base_url=server.url + "/v1", seed=7, stop_sequences=["DONE"]
    )
    await drain(model, ask(temperature=0.0, top_p=0.9))
    body = server.bodies[0]
    assert body["temperature"] == 0.0
    assert body["top_p"] == 0.9
    assert body["seed"] == 7
    assert body["stop"] == ["DONE"]
    assert "top_k" not in body  # not an OpenAI API setting


async def test_openai_sends_no_sampling_when_unset(server: FakeServer) -> None:
    server.add(Reply(events=chat_stream(["ok"])))
    await drain(OpenAICompatModel("qwen3:8b", base_url=server.url + "/v1"), ask())
    assert not {"temperature", "top_p", "seed", "stop"} & set(server.bodies[0])
