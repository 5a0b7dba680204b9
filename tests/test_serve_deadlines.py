"""Approval deadlines over HTTP. A run whose approval request expired is refused an answer
(409 `approval_refused`, saying how to go on), and `POST /v1/runs/{id}/resume` with no body
sends it on: the call is denied as timed out (approver `timeout`), nothing paid. Before the
deadline that same request is 409 `answer_needed` and the run still waits. The desk's clock
is moved on by the test (tests/desk_clock.py), never slept on."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import desk_clock
from loomgraph.governance import StandardPermissions
from loomgraph.observability import FileAuditLog
from loomgraph.serve.expiry import send_on_expired
from serve_agent import PAID, make_agent
from test_fleet import until
from test_serve_api import error, served

clock = desk_clock.clock


async def test_a_run_goes_on_past_an_expired_request_when_told_to(
    tmp_path: Path, clock: type[desk_clock.Clock]
) -> None:
    agent = make_agent(
        str(tmp_path / "journal.db"),
        permissions=StandardPermissions(approval_timeout_s=60),
        audit_log=FileAuditLog(tmp_path / "audit.jsonl", unsigned=True),
    )
    async with served(tmp_path, agent, expiry_seconds=86400) as s:  # (no look meanwhile)
        run_id = (await s.post("alice", "/v1/runs", {"input": "pay acme"})).json()["run_id"]
        early = await s.post("alice", f"/v1/runs/{run_id}/resume", {})
        assert error(early) == (409, "answer_needed"), early.text
        assert "a person may still give" in early.json()["error"]["message"]
        assert (await s.get("alice", f"/v1/runs/{run_id}")).json()["status"] == (
            "awaiting_approval"
        )
        clock.offset += 3600  # nobody answered for an hour
        late = await s.answer("alice", run_id, "call_pay", {"allow": True})
        assert error(late) == (409, "approval_refused")
        assert "/resume" in late.json()["error"]["message"]  # how to go on
        stranger = await s.post("dave", f"/v1/runs/{run_id}/resume", {})
        assert error(stranger) == (404, "not_found")  # another user's run, no approver role
        # An approver may; no body at all is no answer, as `{}` is.
        on = await s.client.post(f"/v1/runs/{run_id}/resume", headers=s.auth("bob"))
        assert on.status_code == 202, on.text
        assert (await s.settled(run_id))["status"] == "completed"
        assert PAID == []
        answers = [e for e in await agent.deps.runtime.effects(run_id) if e.kind == "approval"]
        assert [e.outcome["by"] for e in answers] == ["timeout"]
        again = await s.post("alice", f"/v1/runs/{run_id}/resume", {})
        assert error(again) == (409, "approval_refused")  # a finished run waits for nothing


async def test_the_viewer_sends_on_a_run_whose_request_expired(
    tmp_path: Path, clock: type[desk_clock.Clock]
) -> None:
    """Past its deadline, the card has no approve or deny button (either would be refused),
    only a button that sends the run on, the call denied as timed out."""
    agent = make_agent(
        str(tmp_path / "journal.db"), permissions=StandardPermissions(approval_timeout_s=60)
    )
    async with served(tmp_path, agent, expiry_seconds=86400) as s:  # (no look meanwhile)
        run_id = (await s.post("alice", "/v1/runs", {"input": "pay acme"})).json()["run_id"]
        page = (await s.get("alice", f"/ui/runs/{run_id}")).text
        assert 'data-testid="approve-button"' in page and "go-on-button" not in page
        hx = {"HX-Request": "true", "HX-Target": "notice-0"}
        early = await s.client.post(f"/ui/runs/{run_id}/go-on", headers={**s.auth("alice"), **hx})
        assert "still give" in early.text and "HX-Refresh" not in early.headers
        clock.offset += 3600
        for user, url in (("alice", f"/ui/runs/{run_id}"), ("bob", "/ui/approvals")):
            page = (await s.get(user, url)).text
            assert 'data-testid="approval-expired"' in page, (user, page)
            assert "approve-button" not in page and "deny-button" not in page
            assert f'hx-post="/ui/runs/{run_id}/go-on"' in page
        on = await s.client.post(f"/ui/runs/{run_id}/go-on", headers={**s.auth("bob"), **hx})
        assert on.status_code == 200 and on.headers.get("HX-Refresh") == "true", on.text
        assert (await s.settled(run_id))["status"] == "completed"
        assert PAID == []


async def test_the_server_sends_on_a_run_nobody_answered_in_time(
    tmp_path: Path, clock: type[desk_clock.Clock]
) -> None:
    """The server looks every `expiry_seconds` for the runs it drives whose approval request
    expired, and sends them on by itself: the call denied as timed out, nothing paid."""
    agent = make_agent(
        str(tmp_path / "journal.db"), permissions=StandardPermissions(approval_timeout_s=60)
    )
    async with served(tmp_path, agent, expiry_seconds=0.05) as s:
        run_id = (await s.post("alice", "/v1/runs", {"input": "pay acme"})).json()["run_id"]
        waiting = await s.post("alice", "/v1/runs", {"input": "pay acme"})
        assert await send_on_expired(s.app.state.service) == 0  # in time: it waits
        clock.offset += 3600

        await until("the server to send the run on", lambda: _completed(s, run_id), 60)
        assert PAID == []
        answers = [e for e in await agent.deps.runtime.effects(run_id) if e.kind == "approval"]
        assert [e.outcome["by"] for e in answers] == ["timeout"]
        other = waiting.json()["run_id"]
        await until("the other run too", lambda: _completed(s, other), 60)


async def _completed(s: Any, run_id: str) -> bool:
    return bool((await s.get("alice", f"/v1/runs/{run_id}")).json()["status"] == "completed")


async def test_a_pending_request_says_when_it_expires_and_whether_it_has(
    tmp_path: Path, clock: type[desk_clock.Clock]
) -> None:
    """A client is told the deadline and, by the server's clock, whether it passed: an
    approver then knows to send the run on instead of answering."""
    agent = make_agent(
        str(tmp_path / "journal.db"), permissions=StandardPermissions(approval_timeout_s=60)
    )
    async with served(tmp_path, agent, expiry_seconds=86400) as s:  # (no look meanwhile)
        run_id = (await s.post("alice", "/v1/runs", {"input": "pay acme"})).json()["run_id"]
        [asked] = (await s.get("alice", f"/v1/runs/{run_id}")).json()["pending"]
        assert asked["deadline"] - asked["asked_at"] == 60 and asked["expired"] is False
        clock.offset += 3600
        [late] = (await s.get("alice", f"/v1/runs/{run_id}")).json()["pending"]
        assert late["expired"] is True and late["deadline"] == asked["deadline"]
        [listed] = (await s.get("bob", "/v1/approvals")).json()["runs"]
        assert listed["pending"][0]["expired"] is True


async def test_the_viewer_says_when_an_answer_is_due(
    tmp_path: Path, clock: type[desk_clock.Clock]
) -> None:
    agent = make_agent(
        str(tmp_path / "journal.db"), permissions=StandardPermissions(approval_timeout_s=60)
    )
    async with served(tmp_path, agent, expiry_seconds=86400) as s:  # (no look meanwhile)
        run_id = (await s.post("alice", "/v1/runs", {"input": "pay acme"})).json()["run_id"]
        shown = (await s.get("alice", f"/v1/runs/{run_id}")).json()
        due = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(shown["pending"][0]["deadline"]))
        page = (await s.get("alice", f"/ui/runs/{run_id}")).text
        assert 'data-testid="approval-deadline"' in page and due in page
        started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(shown["created_at"]))
        assert started in (await s.get("alice", "/ui/rows")).text  # not epoch seconds
        clock.offset += 3600
        page = (await s.get("alice", f"/ui/runs/{run_id}")).text
        assert "approval-deadline" not in page and 'data-testid="approval-expired"' in page
