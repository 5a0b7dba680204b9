"""Helpers for tests/test_probe_models.py: a fake server that can answer a raw body (an HTML
page, a JSON document where an event stream was asked for), and a pause between SSE items
that a test can cut short."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler
from typing import Any

from fake_servers import FakeServer, Reply


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
