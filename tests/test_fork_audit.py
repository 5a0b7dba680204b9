"""A fork's `run_started` audit entry names the run it was made from (an auditor reading the
fork's trail could not tell where its first state came from)."""

from __future__ import annotations

import json
from pathlib import Path

from loomgraph import Agent
from loomgraph.models import ScriptedModel
from loomgraph.observability import FileAuditLog


def _started(path: Path, run_id: str) -> list[dict[str, object]]:
    entries = [json.loads(line) for line in path.read_text().splitlines()]
    return [e for e in entries if e["action"] == "run_started" and e["run_id"] == run_id]


async def test_a_forks_run_started_names_its_parent(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    model = ScriptedModel(["first", "second"])
    agent = Agent("You help.", model=model, audit_log=FileAuditLog(log, unsigned=True))
    parent = await agent.run("hi", user_id="alice")
    child = await agent.fork(parent.run_id, at=0)
    assert child.ok, child.reason
    assert child.run_id != parent.run_id
    (started,) = _started(log, child.run_id)
    assert started["payload"]["parent_run_id"] == parent.run_id  # type: ignore[index]
    assert started["payload"]["continued"] is True  # type: ignore[index]
    (first,) = _started(log, parent.run_id)
    assert "parent_run_id" not in first["payload"]  # type: ignore[operator]
