"""`loomgraph ARGS…` run as a person runs it: stdin, stdout and stderr on one pseudo-terminal;
what it shows, without colours, read with bounded `select` waits (never a timing assertion)."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).parent.parent
WAIT_S = 120.0  # a bound on each wait, never a timing assertion
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")


def terminal_env(work: Path, **extra: str) -> dict[str, str]:
    """This process's environment for a command run in `work`: loomgraph's source and `work`
    importable, a colour terminal 200 columns wide, and `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    path = [str(ROOT / "src"), str(work), env.get("PYTHONPATH", "")]
    env.update(PYTHONPATH=os.pathsep.join(path), TERM="xterm-256color", COLUMNS="200", **extra)
    return env


class Terminal:
    """`loomgraph ARGS…` in `work` on a pseudo-terminal, with the environment `env`."""

    def __init__(self, work: Path, args: Sequence[str], env: Mapping[str, str]) -> None:
        self.leader, follower = pty.openpty()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "loomgraph.cli.main", *args],
            stdin=follower,
            stdout=follower,
            stderr=follower,
            cwd=work,
            env=dict(env),
        )
        os.close(follower)
        self.shown = ""
        self.seen = 0  # what `expect` matched so far ends here
        self.closed = False

    def _read(self, until: float) -> None:
        """Read what the command wrote next (`closed` once it closed the terminal)."""
        ready, _, _ = select.select([self.leader], [], [], max(0.0, until - time.monotonic()))
        if not ready:
            return
        try:
            data = os.read(self.leader, 65536)
        except OSError:  # EIO: the command closed the terminal
            data = b""
        if not data:
            self.closed = True
            return
        self.shown += _ANSI.sub("", data.decode("utf-8", "replace"))

    def expect(self, text: str) -> str:
        """Wait until the command shows `text` (after what was matched before); all shown
        since then."""
        until = time.monotonic() + WAIT_S
        while (at := self.shown.find(text, self.seen)) < 0:
            assert not self.closed and time.monotonic() < until, (
                f"{text!r} not shown:\n{self.shown}"
            )
            self._read(until)
        before, self.seen = self.seen, at + len(text)
        return self.shown[before : self.seen]

    def type(self, text: str | bytes) -> None:
        """Type `text` at the terminal (\\x04 is Ctrl-D)."""
        os.write(self.leader, text.encode() if isinstance(text, str) else text)

    def end(self) -> tuple[int, str]:
        """Wait for the command to end: its exit code and all it showed."""
        until = time.monotonic() + WAIT_S
        while not self.closed and time.monotonic() < until:
            self._read(until)
        os.close(self.leader)
        return self.proc.wait(timeout=WAIT_S), self.shown
