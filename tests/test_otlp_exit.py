"""An `otlp()` telemetry at the program's end: what the exporters hold is sent, within
`exit_timeout_s`. The SDK's own exit handlers waited for every retry of both exporters (12 s
for a one-step `run -a` with the collector down, the export timeout with one that never
answers); now the exit waits no longer, and says once what was not sent."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from test_telemetry_conventions import Receiver, receiver

__all__ = ["receiver"]  # the fixture, used by name

SCRIPT = textwrap.dedent(
    """\
    import sys
    from loomgraph.observability import otlp

    telemetry = otlp(sys.argv[1], export_timeout_s=600, exit_timeout_s=float(sys.argv[2]))
    with telemetry.tracer_provider.get_tracer("t").start_as_current_span("at-exit"):
        pass
    print("ended", flush=True)
    """
)


@pytest.fixture
def silent() -> Iterator[str]:
    """A loopback collector that takes connections and never answers: its base URL."""
    server = socket.create_server(("127.0.0.1", 0))  # the kernel takes what it is sent
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    server.close()


def program(tmp_path: Path, endpoint: str, exit_timeout: float) -> subprocess.CompletedProcess[str]:
    """Run SCRIPT against `endpoint`; at most a minute (its export timeout is ten)."""
    path = tmp_path / "traced.py"
    path.write_text(SCRIPT)
    return subprocess.run(
        [sys.executable, str(path), endpoint, str(exit_timeout)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_collector_that_never_answers_does_not_hold_the_exit(silent: str, tmp_path: Path) -> None:
    done = program(tmp_path, silent, 0.5)
    assert done.returncode == 0 and done.stdout == "ended\n"
    assert f"not all sent to {silent} within 0.5 s of the program's end" in done.stderr


def test_a_collector_that_answers_gets_the_spans_at_exit(
    receiver: Receiver, tmp_path: Path
) -> None:
    done = program(tmp_path, receiver.url, 30)
    assert done.returncode == 0, done.stderr
    assert "at-exit" in receiver.spans()
    assert "not all sent" not in done.stderr
