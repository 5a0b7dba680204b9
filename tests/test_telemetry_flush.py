"""`OTLPTelemetry.flush(timeout_s)` keeps to its deadline against a collector that accepts
connections and never answers, and says False; each export gives up after `export_timeout_s`."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator

import pytest

from loomgraph import Agent
from loomgraph.models import ScriptedModel
from loomgraph.observability import otlp

SLACK = 1.0  # seconds a flush may overrun its deadline on a loaded machine


@pytest.fixture
def silent_collector() -> Iterator[str]:
    """A port that accepts connections (the kernel's backlog) and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    listener.close()


@pytest.fixture(autouse=True)
def quiet_exporters(caplog: pytest.LogCaptureFixture) -> None:
    # The exporters log each failed export; expected here.
    caplog.set_level(logging.CRITICAL, logger="opentelemetry")


async def test_flush_returns_false_at_its_deadline(silent_collector: str) -> None:
    telemetry = otlp(silent_collector, export_timeout_s=1.0)
    await Agent("x", model=ScriptedModel(["hi"]), telemetry=telemetry).run("go")
    started = time.monotonic()
    flushed = telemetry.flush(timeout_s=0.3)
    took = time.monotonic() - started
    assert flushed is False
    assert took < 0.3 + SLACK
    telemetry.shutdown()  # bounded by the export timeout


async def test_an_export_gives_up_after_its_timeout(silent_collector: str) -> None:
    telemetry = otlp(silent_collector, export_timeout_s=0.5)
    await Agent("x", model=ScriptedModel(["hi"]), telemetry=telemetry).run("go")
    started = time.monotonic()
    # The exports give up (spans, then metrics) within the deadline: the flush is over.
    assert telemetry.flush(timeout_s=0.5 * 2 + 5 * SLACK) is True
    assert time.monotonic() - started < 0.5 * 2 + 5 * SLACK
    telemetry.shutdown()


async def test_shutdown_keeps_to_its_deadline(silent_collector: str) -> None:
    """A collector that never answers held `shutdown()` for as long as the exporters'
    own timeouts allowed (here 30 s, retries included): the end of the program waited."""
    telemetry = otlp(silent_collector, export_timeout_s=30.0, exit_timeout_s=0.1)
    await Agent("x", model=ScriptedModel(["hi"]), telemetry=telemetry).run("go")
    started = time.monotonic()
    stopped = telemetry.shutdown(timeout_s=0.3)
    assert stopped is False
    assert time.monotonic() - started < 0.3 + SLACK


async def test_shutdown_says_true_when_the_collector_is_gone_quickly(silent_collector: str) -> None:
    telemetry = otlp(silent_collector, export_timeout_s=0.2)
    await Agent("x", model=ScriptedModel(["hi"]), telemetry=telemetry).run("go")
    # Each export gives up after its timeout: the shutdown ends well within its deadline.
    assert telemetry.shutdown(timeout_s=0.2 * 2 + 5 * SLACK) is True
