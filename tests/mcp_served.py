"""`loomgraph mcp-serve --http` as a subprocess on a loopback port, for the mcp-serve tests."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parent


def free_port() -> int:
    """A loopback port free now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def text(result: Any) -> str:
    """The text of a tool result's content."""
    return " ".join(getattr(c, "text", "") for c in result.content)


@contextlib.contextmanager
def served(
    command: list[str], port: int, env: dict[str, str], folder: Path, wait: float
) -> Iterator[str]:
    """Run `command` (an `mcp-serve --http PORT`); its /mcp URL once it accepts connections
    (within `wait` seconds), its stderr in `folder/server.log`; stopped on the way out."""
    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=(folder / "server.log").open("w"),
        env=env,
        cwd=TESTS,
    )
    try:
        deadline = time.monotonic() + wait
        while True:
            assert process.poll() is None, (folder / "server.log").read_text()
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)  # polling a port: no event to wait on
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=60)
