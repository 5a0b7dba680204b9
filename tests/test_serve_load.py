"""A smaller version of bench/serve_load.py: SSE clients following live runs and short runs
over HTTP on one server process, with no event lost or repeated (the full numbers, 200
clients on 50 runs and 1,000 short runs, are in bench/README.md)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from serve_load import measure


def test_many_followers_and_short_runs_lose_no_event() -> None:
    numbers = measure(clients=24, live=6, steps=3, short=40, concurrency=10)
    assert numbers["events_received"] >= 24 * (2 + 3 * 4)
    assert numbers["events_lost_or_repeated"] == 0
    assert numbers["short_runs_bad"] == 0
    assert numbers["p50_ratio"] > 0
