"""Helpers for the model adapter tests (test_model_faults, test_model_stop_reasons): a fake
server that can answer a raw body (an HTML page, a JSON document where an event stream was
asked for), a pause between SSE items that a test can cut short, and the adapters on it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from fake_servers import FakeServer, Reply, Sleeps
from loomgraph.models.anthropic import AnthropicModel
from loomgraph.models.openai_compat import OpenAICompatModel
from loomgraph.models.retry import RetryPolicy
from loomgraph.protocols import ModelChunk, ModelRequest


class RawServer(FakeServer):
    """A FakeServer whose JSON replies may carry a raw `bytes` body, sent as it is with the
    reply's own Content-Type header (default text/html)."""

    @staticmethod
    def _send_json(handler: BaseHTTPRequestHandler, reply: Reply, headers: dict[str, str]) -> None:
        if not isinstance(reply.body, bytes):
            FakeServer._send_json(handler, reply, headers)
            return
        data = reply.body
        handler.send_response(reply.status)
        headers = {"Content-Type": "text/html; charset=utf-8", **headers}
        headers["Content-Length"] = str(len(data))
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.end_headers()
        handler.wfile.write(data)
        handler.wfile.flush()


class Pause(threading.Event):
    """An SSE item that holds the stream for `seconds` (a slow server trickling keep-alive
    pings), or not at all once `done` is set (the test is over)."""

    def __init__(self, seconds: float, done: threading.Event) -> None:
        super().__init__()
        self.seconds = seconds
        self.done = done

    def wait(self, timeout: float | None = None) -> bool:
        """Hold the server thread for the pause, then let the next item go."""
        self.done.wait(self.seconds)
        return True


def trickled(
    events: list[Any], *, after: int, pings: int, every: float, done: threading.Event
) -> list[Any]:
    """`events` with `pings` keep-alive pings, each `every` seconds apart, after item `after`."""
    ping = ("ping", {"type": "ping"})
    held: list[Any] = []
    for _ in range(pings):
        held += [Pause(every, done), ping]
    return [*events[:after], *held, *events[after:]]


# Bounds on waits that only a broken run reaches.
BOUND_S = 30.0


@pytest.fixture
def server() -> Iterator[RawServer]:
    """A raw server on loopback, stopped after the test."""
    srv = RawServer().start()
    yield srv
    srv.stop()


def anthropic(url: str, *, retries: int = 2, **kw: Any) -> AnthropicModel:
    """A Claude adapter on `url`, its retries quick."""
    kw.setdefault("api_key", "test-key")
    policy = RetryPolicy(max_retries=retries, base_delay=0.01, sleep=Sleeps())
    return AnthropicModel("claude-sonnet-4-6", base_url=url, retry_policy=policy, **kw)


def openai(url: str, *, retries: int = 2, **kw: Any) -> OpenAICompatModel:
    """An OpenAI-compatible adapter on `url`, its retries quick."""
    kw.setdefault("api_key", "test-key")
    policy = RetryPolicy(max_retries=retries, base_delay=0.01, sleep=Sleeps())
    return OpenAICompatModel("local-model", base_url=url, retry_policy=policy, **kw)


def ask(text: str = "hi") -> ModelRequest:
    """A one-message request."""
    return ModelRequest(messages=[{"role": "user", "content": text}])


async def collect(model: Any, request: ModelRequest | None = None) -> list[ModelChunk]:
    """Every chunk of one streamed turn."""
    return [chunk async for chunk in model.stream(request or ask())]


async def failure(model: Any) -> BaseException:
    """What streaming one turn raised (the test fails when it raised nothing)."""
    try:
        chunks = await collect(model)
    except Exception as exc:  # the probe looks at whatever comes out
        return exc
    raise AssertionError(f"the turn completed: {[c['type'] for c in chunks]}")
