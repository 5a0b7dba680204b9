"""Load on one `loomgraph serve` process: SSE clients following live runs, and short runs
submitted over HTTP. Checks that no event is lost, and reports the latency each event gets
over SSE (journal → client) as a ratio to the same events streamed in-process.

    PYTHONPATH=src python3 bench/serve_load.py            # --clients 200 --live 50 --short 1000

Latency of an event = when the client has it minus the event's `at` (when the run made it), on
one machine's clock. The in-process baseline streams the same runs with `agent.stream()`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import httpx  # noqa: E402

from serve_agent import make_agent  # noqa: E402
from serve_process import environment, sse_events, start_server  # noqa: E402


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))] if ordered else float("nan")


async def in_process(runs: int, steps: int, journal: Path) -> list[float]:
    """Latencies of the events of `runs` concurrent runs streamed in-process."""
    agent = make_agent(str(journal))
    latencies: list[float] = []

    async def one(i: int) -> None:
        async for event in agent.stream(f"steps {steps}", user_id="bench"):
            if event.kind in ("node_completed", "run_completed"):
                latencies.append(time.time() - event.at)

    await asyncio.gather(*(one(i) for i in range(runs)))
    await agent.aclose()
    return latencies


async def follow(http: httpx.AsyncClient, run_id: str, out: list[float]) -> list[str]:
    ids = []
    async with http.stream("GET", f"/v1/runs/{run_id}/events") as response:
        async for event in sse_events(response):
            ids.append(event.id or "")
            if event.event in ("node_completed", "run_completed"):
                out.append(time.time() - event.data["at"])
    return ids


async def live_clients(url: str, clients: int, live: int, steps: int) -> dict[str, Any]:
    """`clients` SSE clients spread over `live` runs started together; every client must get
    every event of its run (checked against a replay after the run ended)."""
    limits = httpx.Limits(max_connections=clients + 50, max_keepalive_connections=clients + 50)
    headers = {"X-User-Id": "bench"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=600, limits=limits) as http:
        run_ids = []
        for _ in range(live):
            answer = await http.post(
                "/v1/runs", json={"input": f"steps {steps}", "background": True}
            )
            run_ids.append(answer.json()["run_id"])
        latencies: list[float] = []
        started = time.perf_counter()
        got = await asyncio.gather(
            *(follow(http, run_ids[i % live], latencies) for i in range(clients))
        )
        wall = time.perf_counter() - started
        lost = 0
        for i, ids in enumerate(got):
            replay: list[float] = []
            full = await follow(http, run_ids[i % live], replay)
            lost += len(set(full) - set(ids)) + (len(ids) - len(set(ids)))
    return {"latencies": latencies, "lost": lost, "wall": wall, "events": sum(map(len, got))}


async def short_runs(url: str, count: int, concurrency: int) -> dict[str, Any]:
    """`count` one-turn runs over HTTP, `concurrency` at a time; each must complete and its
    replayed events must end with its completion."""
    limits = httpx.Limits(max_connections=concurrency + 10)
    async with httpx.AsyncClient(
        base_url=url, headers={"X-User-Id": "short"}, timeout=600, limits=limits
    ) as http:
        gate = asyncio.Semaphore(concurrency)
        bad = 0

        async def one(i: int) -> None:
            nonlocal bad
            async with gate:
                answer = await http.post("/v1/runs", json={"input": f"hi {i}"})
                body = answer.json()
                if answer.status_code != 201 or body["output"] != f"done: hi {i}":
                    bad += 1
                    return
                events = await follow(http, body["run_id"], [])
                # The last event is the run's stop: `SEQ.end.K`.
                if not events or events[0] != "0.0" or events[-1].split(".")[1:2] != ["end"]:
                    bad += 1

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(count)))
        wall = time.perf_counter() - started
    return {"bad": bad, "wall": wall}


def measure(clients: int, live: int, steps: int, short: int, concurrency: int) -> dict[str, Any]:
    """Run every measure against a fresh server; the numbers."""
    os.environ["SERVE_STEP_DELAY"] = "0.05"  # the in-process baseline's steps, as the server's
    with tempfile.TemporaryDirectory() as tmp:
        env = environment(Path(tmp) / "journal.db", SERVE_STEP_DELAY="0.05")
        server = start_server(env, "--dev")
        try:
            base = asyncio.run(in_process(live, steps, Path(tmp) / "baseline.db"))
            sse = asyncio.run(live_clients(server.url, clients, live, steps))
            quick = asyncio.run(short_runs(server.url, short, concurrency))
        finally:
            server.stop()
    over = sse["latencies"]
    return {
        "clients": clients,
        "live_runs": live,
        "events_received": sse["events"],
        "events_lost_or_repeated": sse["lost"],
        "sse_p50_ms": 1000 * pct(over, 0.5),
        "sse_p99_ms": 1000 * pct(over, 0.99),
        "in_process_p50_ms": 1000 * pct(base, 0.5),
        "in_process_p99_ms": 1000 * pct(base, 0.99),
        "p50_ratio": pct(over, 0.5) / max(pct(base, 0.5), 1e-9),
        "p99_ratio": pct(over, 0.99) / max(pct(base, 0.99), 1e-9),
        "short_runs": short,
        "short_runs_bad": quick["bad"],
        "short_runs_per_s": short / quick["wall"],
        "mean_in_process_ms": 1000 * statistics.fmean(base) if base else float("nan"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--live", type=int, default=50)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--short", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()
    numbers = measure(args.clients, args.live, args.steps, args.short, args.concurrency)
    for name, value in numbers.items():
        print(f"{name:28} {value:.2f}" if isinstance(value, float) else f"{name:28} {value}")
    return 0 if not numbers["events_lost_or_repeated"] and not numbers["short_runs_bad"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
