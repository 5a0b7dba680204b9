"""What a process writes to one of its pipes, read in a thread as it comes, waited for with a
bound: the CLI tests read prompts (no newline) and announcements this way."""

from __future__ import annotations

import threading
from typing import IO


class Output:
    """What a process writes to one of its pipes, read in a thread as it comes (lines or
    not: a prompt has no newline), waited for with a bound."""

    def __init__(self, stream: IO[str]) -> None:
        self.text = ""
        self.ended = False
        self._changed = threading.Condition()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        while chunk := stream.read(1):
            with self._changed:
                self.text += chunk
                self._changed.notify_all()
        with self._changed:
            self.ended = True
            self._changed.notify_all()

    def wait_for(self, wanted: str, timeout: float = 120) -> str:
        """All read so far once it holds `wanted` (AssertionError when it ends or times out)."""
        with self._changed:
            found = self._changed.wait_for(lambda: wanted in self.text or self.ended, timeout)
            if not found or wanted not in self.text:
                raise AssertionError(f"{wanted!r} never came; got:\n{self.text}")
            return self.text

    def ended_text(self, timeout: float = 60) -> str:
        """All it wrote, once the pipe is closed (AssertionError after `timeout`)."""
        with self._changed:
            if not self._changed.wait_for(lambda: self.ended, timeout):
                raise AssertionError(f"the pipe stayed open; got:\n{self.text}")
            return self.text
