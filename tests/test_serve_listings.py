"""Listing and reading runs over HTTP: paging while runs start, a queued fleet run's input
(found by a probe; each test failed before its fix)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import fleet_env as fleet_support
import pg
from loomgraph import Agent
from serve_in_process import in_process

pg_schema = pg.pg_schema
fleet_env = fleet_support.fleet_env
TESTS = Path(__file__).parent
SRC = TESTS.parent / "src"
FLEET_AGENT = "fleet_agent:make"


# --------------------------------------------------------------------------- listings


async def test_paging_an_in_memory_journals_runs_repeats_none_when_a_run_starts_between(
    tmp_path: Path,
) -> None:
    """A developer serves an agent on its default (in-memory) journal and pages `GET
    /v1/runs?limit=2` with the `cursor` each page gives, while another run starts between two
    pages. The second page starts with the last run of the first: the in-memory store's
    cursor is a position in the newest-first list (`MemoryStore.runs`), which every new run
    shifts. docs/serving.md promises that a page and its cursor miss none; the SQL stores,
    whose cursor is the journal's row number, repeat none either. (The list was in the order
    runs last stopped, too: the oldest run, answered between the pages, finishing then, moved
    to its top. The pages hold the runs once each, in the order they started, as in SQL.)"""
    from loomgraph.models import ScriptedModel
    from serve_agent import pay

    def script(request: Any) -> Any:
        # A prompt to pay calls `pay`, which waits for approval; any other is answered at once.
        if request.call_index == 0 and "pay" in str(request.messages[-1].get("content")):
            return {"tool_calls": [{"id": "c1", "tool": "pay", "args": {"to": "a", "amount": 1}}]}
        return "done"

    agent = Agent("You pay bills.", model=ScriptedModel(script), tools=[pay])
    async with in_process(agent) as (client, key):
        headers = {"Authorization": f"Bearer {key}"}
        waiting = await client.post("/v1/runs", json={"input": "pay a"}, headers=headers)
        assert waiting.json()["status"] == "awaiting_approval", waiting.text
        started = [waiting.json()["run_id"]]
        for i in range(3):
            done = await client.post("/v1/runs", json={"input": f"run {i}"}, headers=headers)
            assert done.status_code == 201
            started.append(done.json()["run_id"])
        first = (await client.get("/v1/runs?limit=2", headers=headers)).json()
        assert first["cursor"]
        await client.post("/v1/runs", json={"input": "between the pages"}, headers=headers)
        oldest = started[0]
        pending = (await client.get(f"/v1/runs/{oldest}", headers=headers)).json()["pending"][0]
        answer = {"allow": True, "key": pending["key"]}
        approved = await client.post(
            f"/v1/runs/{oldest}/approvals/c1", json=answer, headers=headers
        )
        assert approved.status_code == 202, approved.text
        await client.get(f"/v1/runs/{oldest}/events", headers=headers)  # ends as the run stops
        assert (await client.get(f"/v1/runs/{oldest}", headers=headers)).json()["status"] == (
            "completed"
        )
        second = (
            await client.get(f"/v1/runs?limit=2&cursor={first['cursor']}", headers=headers)
        ).json()
        ids = [r["run_id"] for r in first["runs"] + second["runs"]]
        assert len(ids) == len(set(ids)), "a run is on both pages"
        assert ids == started[::-1], "the pages miss a run, or list one out of its turn"
        assert second["cursor"] is None


async def test_a_queued_fleet_run_shows_the_input_it_was_submitted_with(
    pg_schema: str, fleet_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client posts `{"input": "summarise the report", "background": true}` to a `--fleet`
    server while no worker has taken the run yet, then reads it (`GET /v1/runs/{id}`) and its
    first checkpoint. The run says `"input": ""` and checkpoint 0 is a made-up first state
    with an empty input and no messages: the prompt is only in the queued job, and the
    server builds a state from a record that has none (`run_json`, `Service.state`), instead
    of showing the prompt or saying the run has not started (as fork does: 422 naming it)."""
    import fleet_agent

    monkeypatch.setenv("FLEET_DSN", fleet_env["FLEET_DSN"])
    monkeypatch.setenv("FLEET_SCHEMA", pg_schema)
    async with in_process(fleet_agent.make(), fleet=True) as (client, key):
        headers = {"Authorization": f"Bearer {key}"}
        body = {"input": "summarise the report", "background": True}
        queued = await client.post("/v1/runs", json=body, headers=headers)
        assert queued.status_code == 202 and queued.json()["status"] == "queued"
        run_id = queued.json()["run_id"]
        shown = (await client.get(f"/v1/runs/{run_id}", headers=headers)).json()
        assert shown["status"] == "queued"
        assert shown["input"] == body["input"], shown
        state = await client.get(f"/v1/runs/{run_id}/checkpoints/0", headers=headers)
        assert state.status_code != 200 or state.json()["state"]["input"] == body["input"], (
            state.text
        )
        # No state is made up: every read of a checkpoint is refused as fork refuses, naming
        # the run.
        for path in ("checkpoints", "checkpoints/0", "diff?a=0&b=0"):
            refused = await client.get(f"/v1/runs/{run_id}/{path}", headers=headers)
            assert refused.status_code == 422, (path, refused.text)
            assert "queued and has not started" in refused.json()["error"]["message"]
            assert run_id in refused.json()["error"]["message"]
        # Cancelled before a worker took it up, it never started: its job (and the prompt
        # with it) is gone, and its checkpoints are refused still, never made up.
        cancelled = await client.post(f"/v1/runs/{run_id}/cancel", headers=headers)
        assert cancelled.json()["status"] == "cancelled", cancelled.text
        refused = await client.get(f"/v1/runs/{run_id}/checkpoints/0", headers=headers)
        assert refused.status_code == 422 and "never started" in refused.text, refused.text


async def test_an_answer_queued_for_the_fleet_says_the_status_the_run_has(
    pg_schema: str, fleet_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An approver approves a waiting run on a `--fleet` server with no worker up. The 202
    said `"status": "running"`, while the run waits `awaiting_approval` until a worker takes
    the queued answer up; it now says the status the journal holds."""
    import fleet_agent

    monkeypatch.setenv("FLEET_DSN", fleet_env["FLEET_DSN"])
    monkeypatch.setenv("FLEET_SCHEMA", pg_schema)
    monkeypatch.setenv("FLEET_ASK", "1")
    agent = fleet_agent.make()
    async with in_process(agent, fleet=True) as (client, key):
        headers = {"Authorization": f"Bearer {key}"}
        waiting = await agent.run("work", user_id="alice")
        assert waiting.pending is not None and waiting.pending.call is not None
        call_id = waiting.pending.call["id"]
        body = {"allow": True, "key": waiting.pending.key}
        url = f"/v1/runs/{waiting.run_id}/approvals/{call_id}"
        answered = await client.post(url, json=body, headers=headers)
        assert answered.status_code == 202, answered.text
        assert answered.json()["status"] == "awaiting_approval"
        shown = (await client.get(f"/v1/runs/{waiting.run_id}", headers=headers)).json()
        assert shown["status"] == answered.json()["status"]
