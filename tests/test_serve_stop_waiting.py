"""A `--fleet` server told to stop while a request waits for a run's result exits and answers
(found by a probe; failed before its fix)."""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

import fleet_env as fleet_support
import pg
from loomgraph.protocols import RunStatus
from serve_in_process import served
from serve_process import Server, loomgraph, start_server

pg_schema = pg.pg_schema
fleet_env = fleet_support.fleet_env
FLEET_AGENT = "fleet_agent:make"


async def until(what: str, check: Callable[[], Awaitable[Any]], timeout: float = 60) -> Any:
    """What `check` gives once it is truthy, polled (bounded: fails after `timeout` s)."""
    deadline = time.monotonic() + timeout
    while not (found := await check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)
    return found


def stopped_waiting(answer: httpx.Response, run_id: str) -> None:
    """`answer` says the server stopped waiting for `run_id`, which goes on in the fleet."""
    assert answer.status_code == 503, answer.text
    assert "retry-after" not in answer.headers  # the run goes on: not to be posted again
    error = answer.json()["error"]
    assert error["type"] == "shutting_down", error
    assert run_id in error["message"] and "queued" in error["message"], error


# --------------------------------------------------------------------------- shutdown


def test_a_fleet_server_told_to_stop_while_a_request_waits_for_a_run_exits(
    fleet_env: dict[str, str],
) -> None:
    """An operator runs `loomgraph serve --fleet`; a client posts a run without `background`
    (the request waits for the result: `agent.wait`), and the workers are down, so the run
    stays `queued`. The operator sends SIGTERM. docs/serving.md says the server then exits
    without waiting for any run to end, and a request waiting for a run's result is answered.
    Instead the server never exits ("Waiting for connections to close" forever): the waiting
    request is no hub watcher (`Service.finished` calls `agent.wait` with no timeout, which
    `RunHub.close` does not end), and uvicorn runs the shutdown only once it closed."""
    made = loomgraph(fleet_env, "keys", "add", "alice", "--agent", FLEET_AGENT, "--approver")
    assert made.returncode == 0, made.stderr
    headers = {"Authorization": f"Bearer {made.stdout.strip()}"}
    server: Server = start_server(fleet_env, "--agent", FLEET_AGENT, "--fleet")
    answered: dict[str, Any] = {}

    def wait_for_the_result() -> None:
        try:
            answered["response"] = httpx.post(
                server.url + "/v1/runs", json={"input": "waited for"}, headers=headers, timeout=300
            )
        except httpx.HTTPError as err:
            answered["error"] = err

    waiting = threading.Thread(target=wait_for_the_result, daemon=True)
    try:
        waiting.start()
        with httpx.Client(base_url=server.url, headers=headers, timeout=60) as client:
            for _ in range(600):  # bounded: until the run is journaled queued
                if client.get("/v1/runs").json()["runs"]:
                    break
                waiting.join(0.1)
            queued = client.get("/v1/runs").json()["runs"][0]
            assert queued["status"] == "queued"
        server.process.terminate()
        try:
            exited = server.process.wait(timeout=45)
        except subprocess.TimeoutExpired:
            exited = None
        assert exited is not None, "the fleet server did not exit after SIGTERM"
        waiting.join(60)
        assert "response" in answered, f"the waiting request got no answer: {answered}"
        # Answered 503 naming the run, which the stop left queued for the fleet.
        stopped_waiting(answered["response"], queued["run_id"])
        assert asyncio.run(_status(fleet_env, queued["run_id"])) == RunStatus.QUEUED
    finally:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait(timeout=60)


async def _status(env: dict[str, str], run_id: str) -> RunStatus | None:
    """The run's status in the journal `env` names."""
    import fleet_agent

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FLEET_DSN", env["FLEET_DSN"])
        patch.setenv("FLEET_SCHEMA", env["FLEET_SCHEMA"])
        agent = fleet_agent.make()
    try:
        record = await agent.deps.runtime.load_run(run_id)
        return None if record is None else record.status
    finally:
        await agent.aclose()


@pytest.fixture
def ledger(pg_schema: str) -> None:
    """The tables `fleet_agent`'s `work` tool writes, in the test's schema."""
    import fleet_agent

    for ddl in fleet_agent.LEDGER_DDL:
        pg._run_sql(ddl.format(s=pg_schema))


async def test_a_fork_waiting_for_its_fleet_result_is_answered_when_the_server_stops(
    pg_schema: str, fleet_env: dict[str, str], ledger: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client forks a run on a `--fleet` server and waits for the fork's result (`/fork`
    answers once the new run stops), and no worker is up. The server is told to stop: the
    request is answered at once, 503 `shutting_down` naming the fork, which stays queued for
    the fleet (neither cancelled nor lost); a run posted after that is refused with 409 and
    nothing is submitted. Before the fix the fork's wait (`agent.wait`, no timeout) held
    the request, and so the server, for as long as no worker took the run."""
    import fleet_agent

    monkeypatch.setenv("FLEET_DSN", fleet_env["FLEET_DSN"])
    monkeypatch.setenv("FLEET_SCHEMA", pg_schema)
    agent = fleet_agent.make()
    async with served(agent, fleet=True) as (app, client, key):
        headers = {"Authorization": f"Bearer {key}"}
        source = await agent.run("forked from", user_id="alice")  # in process: no worker
        assert source.status == RunStatus.COMPLETED
        forking = asyncio.ensure_future(
            client.post(f"/v1/runs/{source.run_id}/fork", json={"at": 1}, headers=headers)
        )

        async def queued_fork() -> str | None:
            assert not forking.done(), forking.result().text
            runs = await agent.deps.runtime.runs("alice")
            return next((r.run_id for r in runs if r.parent_run_id == source.run_id), None)

        fork_id = await until("the fork to be journaled", queued_fork)
        await app.state.service.hub.close()  # what SIGTERM does first
        stopped_waiting(await asyncio.wait_for(forking, 60), fork_id)
        record = await agent.deps.runtime.load_run(fork_id)
        assert record is not None and record.status == RunStatus.QUEUED
        # Shutting down: nothing more is submitted to the fleet.
        before = len(await agent.deps.runtime.runs("alice"))
        refused = await client.post("/v1/runs", json={"input": "late"}, headers=headers)
        assert refused.status_code == 409, refused.text
        assert len(await agent.deps.runtime.runs("alice")) == before
