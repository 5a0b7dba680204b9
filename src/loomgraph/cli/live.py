"""The live view of a streaming run on a terminal: one status line (node, tokens, cost,
elapsed) under the events as they print."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from loomgraph.protocols import Usage


class LiveView:
    """A status line kept up to date while a run streams; a context manager."""

    def __init__(self) -> None:
        from rich.live import Live

        from loomgraph.cli.console import console

        self.node = "-"
        self.usage = Usage()
        self.started = time.monotonic()
        self.live = Live(console=console(), refresh_per_second=8, transient=True)
        self.live.update(self._render())

    def __enter__(self) -> LiveView:
        self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.stop()

    @contextmanager
    def paused(self) -> Iterator[None]:
        """The status line taken away while the person is asked something (an approval),
        so its redraws do not overwrite the question or what they type; back after."""
        started = self.live.is_started
        self.live.stop()
        try:
            yield
        finally:
            if started:
                self.live.start()

    def see(self, event: Any) -> None:
        """Take in one event: the node now running, the usage spent."""
        payload = event.payload
        if event.kind == "node_started":
            self.node = str(payload.get("node", "-"))
        elif event.kind == "node_completed":
            usage = (payload.get("patch") or {}).get("usage")
            if isinstance(usage, dict):
                self.usage += Usage.from_dict(usage, trusted=True)
        self.live.update(self._render())

    def _render(self) -> Any:
        from rich.text import Text

        u = self.usage
        tokens = u.input_tokens + u.output_tokens
        return Text.assemble(
            ("● ", "bold cyan"),
            (f"node {self.node}", "cyan"),
            f"  tokens {tokens}",
            f"  cost ${u.cost_usd:.4f}",
            f"  {time.monotonic() - self.started:.1f}s",
        )
