"""The `loomgraph` command as a user at a shell runs it (a subprocess, no terminal), and a
loopback port nothing listens on (libpq's defaults pointed there lead nowhere)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

CLI = [sys.executable, "-c", "import sys; from loomgraph.cli.main import main; sys.exit(main())"]


def loomgraph(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the `loomgraph` command in a subprocess, as a user at a shell does (no terminal)."""
    return subprocess.run(
        [*CLI, *args],
        cwd=cwd,
        env={**os.environ, "NO_COLOR": "1", **(env or {})},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


def closed_port() -> int:
    """A loopback port nothing listens on, so libpq's defaults lead nowhere."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
