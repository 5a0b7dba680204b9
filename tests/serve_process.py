"""A real `loomgraph serve` process on a loopback port, for the process, browser and load tests."""

from __future__ import annotations

import contextlib
import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

TESTS = Path(__file__).parent
AGENT = "serve_agent:make_agent"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def environment(journal: Path, **extra: str) -> dict[str, str]:
    path = [str(TESTS), os.environ.get("PYTHONPATH", "")]
    return dict(os.environ, SERVE_JOURNAL=str(journal), PYTHONPATH=os.pathsep.join(path), **extra)


def loomgraph(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loomgraph.cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=TESTS,
        timeout=900,
    )


def add_key(env: dict[str, str], user: str, *options: str) -> str:
    done = loomgraph(env, "keys", "add", user, "--agent", AGENT, *options)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@dataclass
class Server:
    """A running server: its URL, process and what it printed on start."""

    url: str
    process: subprocess.Popen[str]
    said: list[str] = field(default_factory=list)

    def keep_reading(self) -> None:
        """Read what the server prints from now on in a thread: a pipe nobody empties fills
        up, and a server blocked writing its access log answers nothing."""
        stream = self.process.stderr
        assert stream is not None
        threading.Thread(target=lambda: self.said.extend(stream), daemon=True).start()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=60)


def start_server(env: dict[str, str], *options: str, timeout: float = 900) -> Server:
    """Start `loomgraph serve` and wait (bounded) until uvicorn says it is up."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "loomgraph.cli.main",
            "serve",
            "--agent",
            AGENT,
            "--port",
            str(port),
            "--log-level",
            "info",
            *options,
        ],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=TESTS,
    )
    server = Server(f"http://127.0.0.1:{port}", process)
    deadline = time.monotonic() + timeout
    assert process.stderr is not None
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stderr], [], [], deadline - time.monotonic())
        if not ready:
            break
        line = process.stderr.readline()
        if not line:
            break  # the process ended
        server.said.append(line)
        if "Application startup complete" in line:
            server.keep_reading()
            return server
    server.stop()
    raise AssertionError("the server did not start:\n" + "".join(server.said))


@dataclass
class Sse:
    """One server-sent event."""

    id: str | None
    event: str
    data: dict[str, Any]


async def sse_events(response: httpx.Response) -> AsyncIterator[Sse]:
    """The events of an event-stream response, as they arrive."""
    fields: dict[str, str] = {}
    async for line in response.aiter_lines():
        if not line:
            if "data" in fields:
                import json

                yield Sse(
                    fields.get("id"), fields.get("event", "message"), json.loads(fields["data"])
                )
            fields = {}
            continue
        name, _, value = line.partition(":")
        fields[name] = value[1:] if value.startswith(" ") else value


@contextlib.contextmanager
def in_process(app: Any, wait: float) -> Iterator[str]:
    """`app` served by uvicorn on a free loopback port in a thread of this process (so a
    test can wrap the service's methods); its URL once it listens, stopped after."""
    import uvicorn

    from mcp_steering import ListeningServer

    port = free_port()
    server = ListeningServer(uvicorn.Config(app, port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        if not server.listening.wait(wait):
            raise TimeoutError(f"the server did not listen within {wait} s")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(wait)
