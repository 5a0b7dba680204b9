"""A run that stops twice in one node visit, followed over SSE: the second stop's event
comes after the first's id, so a client reconnecting with it hears that the run waits again."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from loomgraph import Agent
from loomgraph.agent.run_events import BadEventId, EventId
from loomgraph.governance import StandardPermissions
from loomgraph.models import ScriptedModel
from serve_in_process import in_process
from serve_process import Sse, sse_events


async def _pay(amount: int) -> str:
    """Pay an amount."""
    return f"paid {amount}"


async def _sse(client: Any, key: str, run_id: str, last: str | None) -> list[Sse]:
    """Every SSE event of the run after `last` (sent as `Last-Event-ID`), until it ends."""
    headers = {"Authorization": f"Bearer {key}"}
    if last is not None:
        headers["Last-Event-ID"] = last
    async with client.stream("GET", f"/v1/runs/{run_id}/events", headers=headers) as response:
        assert response.status_code == 200
        return [event async for event in sse_events(response)]


async def test_sse_reconnect_sees_the_second_approval_stop_of_one_visit() -> None:
    """A client follows a run over SSE: the model asked for two payments in one turn, each
    needing approval. The run stops awaiting approval of the first (then `1.end`); the
    client approves it and reconnects with that `Last-Event-ID` to follow the resumed run,
    which pays, then stops again awaiting approval of the second. What happened: the
    reconnected stream ends with no event at all — the second stop gets the id `1.end`
    too (no transition was journaled in between), which is not "after" the client's id, so
    the client never hears that the run waits again (nor that the first payment was made).
    What should happen (docs/serving.md: "exactly the events after it, none lost"): the
    reconnect gives the new stop, a `run_completed` with status `awaiting_approval`, under
    an id after the one the first stop had (`1.end.K`, K counting the effects begun)."""
    script = ScriptedModel(
        [
            {
                "tool_calls": [
                    {"id": "c1", "tool": "_pay", "args": {"amount": 5}},
                    {"id": "c2", "tool": "_pay", "args": {"amount": 7}},
                ]
            },
            "done",
        ]
    )
    agent = Agent("x", model=script, tools=[_pay], permissions=StandardPermissions(ask=["_pay"]))
    async with in_process(agent) as (client, key):
        headers = {"Authorization": f"Bearer {key}"}
        started = await client.post("/v1/runs", json={"input": "pay both"}, headers=headers)
        run_id = started.json()["run_id"]
        assert started.json()["status"] == "awaiting_approval"
        first = await _sse(client, key, run_id, None)
        # Its stop follows transition 1 (the model's turn); the visit of `tools` is stopped.
        assert first[-1].event == "run_completed" and (first[-1].id or "").startswith("1.end.")
        pending = (await client.get(f"/v1/runs/{run_id}", headers=headers)).json()["pending"]
        assert pending[0]["call"]["id"] == "c1"
        answered = await client.post(
            f"/v1/runs/{run_id}/approvals",
            json={"call_id": "c1", "allow": True, "key": pending[0]["key"]},
            headers=headers,
        )
        assert answered.status_code == 202
        # Answered once the resume holds the run: this follows the resumed run live.
        again = await _sse(client, key, run_id, first[-1].id)
        record = (await client.get(f"/v1/runs/{run_id}", headers=headers)).json()
        assert record["status"] == "awaiting_approval"
        assert record["pending"][0]["call"]["id"] == "c2"  # the run waits again
        stops = [e for e in again if e.event == "run_completed"]
        assert stops, f"the reconnected stream gave no stop event; it gave {again}"
        assert stops[-1].data["payload"]["status"] == "awaiting_approval"
        assert stops[-1].id != first[-1].id
        assert EventId.parse(stops[-1].id or "").comes_after(EventId.parse(first[-1].id or ""))
        # A client holding the stop id an earlier server gave (`1.end`) is given the stop
        # made since too, not left waiting.
        old = await _sse(client, key, run_id, "1.end")
        assert [(e.id, e.event) for e in old] == [(stops[-1].id, "run_completed")]


def test_event_ids_order_a_visits_stops_after_its_events_and_before_the_next_transition() -> None:
    """`seq.end.k` sorts after every event of transition `seq` and a bare `seq`, before the
    next transition's, and by `k` among the stops after `seq`; `seq.end` reads as `k` 0."""
    ids = ["1", "1.end", "1.end.2", "1.end.10", "2.0", "2.3", "2.end.11"]
    parsed = [EventId.parse(text) for text in ids]
    assert all(b.comes_after(a) for a, b in itertools.pairwise(parsed))
    assert EventId.parse("1.7").comes_after(EventId.parse("1.6"))
    assert EventId.parse("1").comes_after(EventId.parse("1.99"))
    assert EventId.parse("1.end") == EventId.parse("1.end.0")
    assert [str(i) for i in parsed] == [
        "1",
        "1.end.0",
        "1.end.2",
        "1.end.10",
        "2.0",
        "2.3",
        "2.end.11",
    ]
    # `1.end.1.2` is a stop's id with its rank (tests/test_sse_stop_ranks.py).
    for bad in ("1.end.", "1.end.x", "1.end.-1", "1.end.1.2.3", "end", "1." + "9" * 40):
        with pytest.raises(BadEventId):
            EventId.parse(bad)
