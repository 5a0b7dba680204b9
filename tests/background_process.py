"""A worker process in the background whose JSON lines arrive on a queue, read with bounded
waits; closing its stdin lets a held step go on."""

from __future__ import annotations

import json
import queue
import subprocess
import threading
from collections.abc import Sequence
from typing import Any


class BackgroundProcess:
    """`argv` running in the background; its JSON lines arrive on a queue (bounded waits)."""

    def __init__(self, argv: Sequence[str]) -> None:
        self.process = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith("{"):
                self.lines.put(json.loads(line))

    def expect(self, key: str) -> dict[str, Any]:
        """The next line carrying `key` (waiting at most 60 s)."""
        while True:
            line = self.lines.get(timeout=60)
            if key in line:
                return line

    def finish(self) -> tuple[int, str]:
        """Close stdin (held steps go on) and wait for the exit code."""
        _, err = self.process.communicate("", timeout=120)
        return self.process.returncode, err
