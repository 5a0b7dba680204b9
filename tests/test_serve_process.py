"""A real `loomgraph serve` process (uvicorn on a loopback port) driven with httpx: keys made
by `loomgraph keys add`, SSE that replays from the journal and follows the live run, and a
reconnect with `Last-Event-ID` that loses and repeats nothing."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from serve_process import (
    Server,
    add_key,
    environment,
    loomgraph,
    sse_events,
    start_server,
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    journal = tmp_path_factory.mktemp("serve") / "journal.db"
    env = environment(journal, SERVE_STEP_DELAY="0.05")
    keys = {"alice": add_key(env, "alice", "--approver"), "bob": add_key(env, "bob")}
    running: Server = start_server(env)
    try:
        yield {"url": running.url, "keys": keys, "journal": journal, "env": env}
    finally:
        running.stop()


def client(server: dict[str, Any], user: str) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {server['keys'][user]}"}
    return httpx.AsyncClient(base_url=server["url"], headers=headers, timeout=120)


def test_keys_are_stored_hashed_and_printed_once(server: dict[str, Any]) -> None:
    key = server["keys"]["alice"]
    assert key.startswith("lg_") and len(key) > 40
    with sqlite3.connect(server["journal"]) as db:
        rows = db.execute("SELECT key_hash, user_id, approver FROM serve_api_keys").fetchall()
    assert ("alice", 1) in [(r[1], r[2]) for r in rows]
    assert all(key not in r[0] for r in rows)


def test_dev_mode_is_refused_off_loopback_and_says_so(server: dict[str, Any]) -> None:
    done = loomgraph(
        server["env"],
        "serve",
        "--agent",
        "serve_agent:make_agent",
        "--dev",
        "--host",
        "0.0.0.0",
        "--port",
        "1",
    )
    assert done.returncode == 2
    assert "refused" in done.stderr and "loopback" in done.stderr


@pytest.mark.parametrize("expiry", ["0", "nan", "-1"])
def test_an_expiry_that_cannot_work_is_refused(server: dict[str, Any], expiry: str) -> None:
    agent = ("--agent", "serve_agent:make_agent", "--port", "1")
    done = loomgraph(server["env"], "serve", *agent, "--expiry", expiry)
    # Named as typed (argparse's error), before the agent is loaded.
    assert done.returncode == 2 and "argument --expiry: must be" in done.stderr, done.stderr


async def collect(response: httpx.Response, stop_after: int | None = None) -> list[Any]:
    got = []
    async for event in sse_events(response):
        got.append(event)
        if stop_after is not None and len(got) >= stop_after:
            break
    return got


async def test_sse_reconnect_with_last_event_id_loses_and_repeats_nothing(
    server: dict[str, Any],
) -> None:
    async with client(server, "alice") as http:
        started = await http.post("/v1/runs", json={"input": "steps 6", "background": True})
        assert started.status_code == 202
        run_id = started.json()["run_id"]
        async with http.stream("GET", f"/v1/runs/{run_id}/events") as first:
            assert first.headers["content-type"].startswith("text/event-stream")
            before = await collect(first, stop_after=5)
        last = before[-1].id
        async with http.stream(
            "GET", f"/v1/runs/{run_id}/events", headers={"Last-Event-ID": last}
        ) as second:
            after = await collect(second)
        assert after[-1].event == "run_completed"
        assert after[-1].data["payload"]["status"] == "completed"
        async with http.stream("GET", f"/v1/runs/{run_id}/events") as whole:
            replay = await collect(whole)
        ids = [e.id for e in before + after]
        assert len(ids) == len(set(ids))  # nothing twice
        assert ids == [e.id for e in replay]  # nothing lost
        assert [e.data for e in before + after] == [e.data for e in replay]
        kinds = [e.event for e in replay]
        assert kinds.count("tool_call") == 6 and kinds.count("tool_result") == 6
        async with http.stream("GET", f"/v1/runs/{run_id}/events?after={ids[3]}") as tail:
            assert [e.id for e in await collect(tail)] == ids[4:]


async def test_post_with_stream_true_is_an_event_stream_of_the_run(
    server: dict[str, Any],
) -> None:
    async with client(server, "alice") as http:
        async with http.stream("POST", "/v1/runs", json={"input": "steps 2", "stream": True}) as r:
            assert r.status_code == 200
            events = await collect(r)
        assert events[0].event == "run_started" and events[0].id == "0.0"
        assert events[-1].event == "run_completed"
        assert events[-1].data["payload"]["output"] == "done: steps 2"


async def test_following_a_run_that_waits_then_is_approved(server: dict[str, Any]) -> None:
    async with client(server, "alice") as http, client(server, "bob") as other:
        stopped = (await http.post("/v1/runs", json={"input": "pay acme"})).json()
        run_id = stopped["run_id"]
        assert stopped["status"] == "awaiting_approval"
        assert (await other.get(f"/v1/runs/{run_id}/events")).status_code == 404
        async with http.stream("GET", f"/v1/runs/{run_id}/events") as waiting:
            first = await collect(waiting)
        assert first[-1].data["payload"]["status"] == "awaiting_approval"
        (pending,) = (await http.get(f"/v1/runs/{run_id}")).json()["pending"]
        answer = {"allow": True, "key": pending["key"]}
        ok = await http.post(f"/v1/runs/{run_id}/approvals/call_pay", json=answer)
        assert ok.status_code == 202
        async with http.stream(
            "GET", f"/v1/runs/{run_id}/events", headers={"Last-Event-ID": first[-1].id}
        ) as rest:
            more = await collect(rest)
        assert more[-1].data["payload"]["status"] == "completed"
        approvals = [e.data["payload"] for e in more if e.event == "permission_decision"]
        assert any(p.get("approver") == "alice" and p["verdict"] == "allow" for p in approvals)


def _revoked_key_answer(env: dict[str, str], url: str) -> int:
    """Make a key with the CLI, list it, revoke it: the running server's answer to it then."""
    agent = ["--agent", "serve_agent:make_agent"]
    made = loomgraph(env, "keys", "add", "carol", *agent)
    assert made.returncode == 0, made.stderr
    key, key_id = made.stdout.strip(), made.stderr.split()[1]
    listed = loomgraph(env, "keys", "list", *agent)
    assert listed.returncode == 0, listed.stderr
    rows = [line.split() for line in listed.stdout.splitlines()]
    assert [key_id, "carol", "-"] in [row[:3] for row in rows]
    assert key not in listed.stdout  # only ids are ever shown again
    headers = {"Authorization": f"Bearer {key}"}
    assert httpx.get(f"{url}/v1/runs", headers=headers).status_code == 200
    revoked = loomgraph(env, "keys", "revoke", key_id, *agent)
    assert revoked.returncode == 0 and f"revoked key {key_id} of carol" in revoked.stderr
    again = loomgraph(env, "keys", "revoke", key_id, *agent)
    assert again.returncode == 2 and "no key has the id" in again.stderr
    return httpx.get(f"{url}/v1/runs", headers=headers).status_code


@pytest.mark.parametrize("ran", [False, True], ids=["fresh server", "after a run"])
def test_keys_are_listed_and_a_revoked_one_is_refused_by_the_running_server(
    tmp_path: Path, ran: bool
) -> None:
    env = environment(tmp_path / "journal.db")
    alice = add_key(env, "alice")
    running: Server = start_server(env)
    try:
        if ran:
            headers = {"Authorization": f"Bearer {alice}"}
            made = httpx.post(f"{running.url}/v1/runs", json={"input": "hi"}, headers=headers)
            assert made.status_code == 201, made.text
        assert _revoked_key_answer(env, running.url) == 401
        # Not only the first change another process makes after the server opened its key
        # store (once its file locks were gone, the first one still got through).
        assert _revoked_key_answer(env, running.url) == 401
    finally:
        running.stop()


def other_process(journal: Path, sql: str, *args: str) -> list[Any]:
    """Run one statement on the journal in this test's process (not the server's), then close
    the file, as `loomgraph keys` or any other process does: its rows."""
    db = sqlite3.connect(journal, isolation_level=None)
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


def test_the_running_server_reads_other_processes_changes_and_they_read_its_own(
    tmp_path: Path,
) -> None:
    """Runs too, not only keys: a run's status another process changed is what the server
    answers and lists; a run the server journals afterwards, another process reads."""
    journal = tmp_path / "journal.db"
    env = environment(journal)
    alice = add_key(env, "alice")
    headers = {"Authorization": f"Bearer {alice}"}
    running: Server = start_server(env)
    try:
        with httpx.Client(base_url=running.url, headers=headers, timeout=120) as http:
            made = http.post("/v1/runs", json={"input": "hi"})
            assert made.status_code == 201, made.text
            run_id = made.json()["run_id"]
            assert http.get(f"/v1/runs/{run_id}").json()["status"] == "completed"
            for status in ("cancelled", "failed"):  # each change, not only the first
                other_process(
                    journal, "UPDATE runs SET status = ? WHERE run_id = ?", status, run_id
                )
                assert http.get(f"/v1/runs/{run_id}").json()["status"] == status
                listed = http.get("/v1/runs", params={"status": status}).json()["runs"]
                assert [r["run_id"] for r in listed] == [run_id]
            again = http.post("/v1/runs", json={"input": "hi again"})
            assert again.status_code == 201, again.text
            seen = other_process(
                journal, "SELECT status FROM runs WHERE run_id = ?", again.json()["run_id"]
            )
            assert seen == [("completed",)]
    finally:
        running.stop()
