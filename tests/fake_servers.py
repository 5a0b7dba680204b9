"""Scripted loopback HTTP servers speaking the Messages API and chat completions (stdlib only).

A test queues `Reply`s; each request the server receives takes the next one and is recorded
(path, headers, parsed JSON body), so tests assert both on what the client did with the
replies and on exactly what it sent. A reply is a plain JSON body, or a list of SSE events
sent with chunked transfer encoding, optionally cut (the socket shut without the closing
chunk, as a dropped connection looks to the client) after some events, optionally held at a
`threading.Event` gate until the test has seen the earlier events.
"""

from __future__ import annotations

import json
import socket
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from loomgraph.protocols import ModelChunk, ModelResponse

GATE_TIMEOUT = 10.0  # a forgotten gate fails the test instead of hanging it


@dataclass
class Reply:
    """One scripted response: JSON (`body`) or SSE (`events`), with status and headers."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    # SSE items: (event name or None, data) with data a dict (sent as JSON) or a str;
    # or a threading.Event to wait for before sending the rest.
    events: list[Any] | None = None
    cut_after: int | None = None  # drop the connection after this many SSE items
    hold: threading.Event | None = None  # send nothing at all until this is set


@dataclass
class Received:
    """One request as the server saw it."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any


PREFILL_REFUSED = {
    "type": "error",
    "error": {
        "type": "invalid_request_error",
        "message": "This model does not support assistant message prefill. The conversation "
        "must end with a user message.",
    },
}


def _ends_with_assistant(path: str, body: Any) -> bool:
    """Whether an Anthropic Messages request ends with an assistant turn."""
    if not path.split("?")[0].endswith("/v1/messages") or not isinstance(body, dict):
        return False
    messages = body.get("messages")
    return isinstance(messages, list) and bool(messages) and messages[-1].get("role") == "assistant"


class FakeServer:
    """A threaded HTTP server on 127.0.0.1 and a free port, answering from a reply queue."""

    def __init__(self, default_headers: dict[str, str] | None = None) -> None:
        self.replies: deque[Reply] = deque()
        self.requests: list[Received] = []
        self.default_headers = default_headers or {}
        self._lock = threading.Lock()
        self._count = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                server._handle(self)

            def do_GET(self) -> None:
                server._handle(self)

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                # A client that timed out or hung up leaves a broken pipe behind; expected.
                pass

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )

    def start(self) -> FakeServer:
        """Start serving in a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket."""
        self.httpd.shutdown()
        self.httpd.server_close()

    def add(self, *replies: Reply) -> None:
        """Queue replies, answered in order."""
        self.replies.extend(replies)

    @property
    def bodies(self) -> list[Any]:
        """The JSON bodies received so far."""
        return [r.body for r in self.requests]

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        with self._lock:
            self._count += 1
            request_id = f"req_{self._count:03d}"
            self.requests.append(
                Received(
                    handler.command,
                    handler.path,
                    {k.lower(): v for k, v in handler.headers.items()},
                    body,
                )
            )
            # As the Messages API of Claude 4.6 and later: a conversation ending with an
            # assistant turn (a prefill) is refused, so no test passes while sending one.
            prefill = _ends_with_assistant(handler.path, body)
            reply = None if prefill else self.replies.popleft() if self.replies else None
        if prefill:
            reply = Reply(400, body=PREFILL_REFUSED)
        if reply is None:
            reply = Reply(
                500,
                body={
                    "type": "error",
                    "error": {"type": "test_error", "message": "no scripted reply"},
                },
            )
        if reply.hold is not None and not reply.hold.wait(GATE_TIMEOUT):
            raise RuntimeError("hold never released")
        headers = {"request-id": request_id, "x-request-id": request_id}
        headers.update(self.default_headers)
        headers.update(reply.headers)
        if reply.events is None:
            self._send_json(handler, reply, headers)
        else:
            self._send_sse(handler, reply, headers)

    @staticmethod
    def _send_json(handler: BaseHTTPRequestHandler, reply: Reply, headers: dict[str, str]) -> None:
        data = json.dumps(reply.body if reply.body is not None else {}).encode()
        handler.send_response(reply.status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.end_headers()
        handler.wfile.write(data)
        handler.wfile.flush()

    @staticmethod
    def _send_sse(handler: BaseHTTPRequestHandler, reply: Reply, headers: dict[str, str]) -> None:
        handler.send_response(reply.status)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Transfer-Encoding", "chunked")
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.end_headers()
        handler.wfile.flush()

        def chunk(data: bytes) -> None:
            handler.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            handler.wfile.flush()

        for sent, item in enumerate(reply.events or []):
            if reply.cut_after is not None and sent >= reply.cut_after:
                # No terminating chunk: the client sees the connection drop mid-body.
                handler.connection.shutdown(socket.SHUT_RDWR)
                handler.close_connection = True
                return
            if isinstance(item, threading.Event):
                if not item.wait(GATE_TIMEOUT):
                    raise RuntimeError("gate never opened")
                continue
            name, data = item
            text = data if isinstance(data, str) else json.dumps(data)
            frame = (f"event: {name}\n" if name else "") + f"data: {text}\n\n"
            chunk(frame.encode())
        chunk(b"")


# --------------------------------------------------------------------------- Messages API


def sse_message(
    blocks: list[tuple[str, Any]],
    *,
    stop_reason: str = "end_turn",
    input_tokens: int = 10,
    output_tokens: int = 5,
    cache_read: int = 0,
    cache_write: int = 0,
    model: str = "claude-sonnet-4-6",
) -> list[Any]:
    """The SSE events of one message: `blocks` are ("text", [deltas]) or ("tool", (id, name,
    [json parts])); a ping after message_start, as the real API sends."""
    events: list[Any] = [
        (
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_1",
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {
                        "input_tokens": input_tokens,
                        "output_tokens": 1,
                        "cache_read_input_tokens": cache_read,
                        "cache_creation_input_tokens": cache_write,
                    },
                },
            },
        ),
        ("ping", {"type": "ping"}),
    ]
    for index, (kind, spec) in enumerate(blocks):
        events.extend(_block_events(index, kind, spec))
    events.append(
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": output_tokens},
            },
        )
    )
    events.append(("message_stop", {"type": "message_stop"}))
    return events


def _block_events(index: int, kind: str, spec: Any) -> Iterator[Any]:
    if kind == "text":
        yield (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": index,
                "content_block": {"type": "text", "text": ""},
            },
        )
        for piece in spec:
            yield (
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "text_delta", "text": piece},
                },
            )
    else:
        call_id, name, parts = spec
        yield (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": index,
                "content_block": {"type": "tool_use", "id": call_id, "name": name, "input": {}},
            },
        )
        for part in parts:
            yield (
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "input_json_delta", "partial_json": part},
                },
            )
    yield ("content_block_stop", {"type": "content_block_stop", "index": index})


def api_error(
    status: int, error_type: str, message: str = "scripted failure", **headers: str
) -> Reply:
    """A Messages API error reply."""
    return Reply(
        status,
        headers={k.replace("_", "-"): v for k, v in headers.items()},
        body={"type": "error", "error": {"type": error_type, "message": message}},
    )


def sse_error(error_type: str, message: str = "scripted stream error") -> Any:
    """An SSE `error` event, as the API sends mid-stream."""
    return ("error", {"type": "error", "error": {"type": error_type, "message": message}})


# --------------------------------------------------------------------------- chat completions


def chat_chunk(
    delta: dict[str, Any] | None = None,
    finish: str | None = None,
    usage: dict[str, Any] | None = None,
) -> Any:
    """One chat.completion.chunk SSE item (no event name, as OpenAI sends)."""
    data: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "local-model",
        "choices": []
        if delta is None
        else [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
    }
    if usage is not None:
        data["usage"] = usage
    return (None, data)


def chat_stream(
    text: list[str] | None = None,
    tools: list[tuple[str, str, list[str]]] | None = None,
    *,
    finish: str = "stop",
    prompt_tokens: int = 10,
    completion_tokens: int = 5,
    cached_tokens: int = 0,
) -> list[Any]:
    """The SSE items of a streamed chat completion: text deltas, then tool-call deltas (id and
    name first, then argument fragments), the finish chunk, the usage chunk, `[DONE]`."""
    items: list[Any] = [chat_chunk({"role": "assistant", "content": ""})]
    for piece in text or []:
        items.append(chat_chunk({"content": piece}))
    for index, (call_id, name, parts) in enumerate(tools or []):
        items.append(
            chat_chunk(
                {
                    "tool_calls": [
                        {
                            "index": index,
                            "id": call_id,
                            "type": "function",
                            "function": {"name": name, "arguments": ""},
                        }
                    ]
                }
            )
        )
        for part in parts:
            items.append(
                chat_chunk({"tool_calls": [{"index": index, "function": {"arguments": part}}]})
            )
    items.append(chat_chunk({}, finish=finish))
    usage: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    if cached_tokens:
        usage["prompt_tokens_details"] = {"cached_tokens": cached_tokens}
    items.append(chat_chunk(None, usage=usage))
    items.append((None, "[DONE]"))
    return items


# --------------------------------------------------------------------------- test helpers


class Sleeps:
    """A RetryPolicy `sleep` that records the waits instead of sleeping."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def assemble(chunks: list[ModelChunk]) -> ModelResponse:
    """The response a list of chunks adds up to (its usage: every attempt's)."""
    response = ModelResponse()
    for chunk in chunks:
        if chunk["type"] == "text":
            response.text += chunk["text"]
        elif chunk["type"] == "tool_call":
            response.tool_calls.append(chunk["call"])
        elif chunk["type"] in ("usage", "attempt"):
            response.usage += chunk["usage"]  # a retried attempt billed its own
        else:
            response.finish_reason = chunk["finish_reason"]
    return response
