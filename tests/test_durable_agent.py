"""An Agent on the SQLite journal: a run resumed by a second Agent (as after a restart)."""

from __future__ import annotations

from pathlib import Path

from loomgraph import Agent
from loomgraph.models import ScriptedModel
from loomgraph.protocols import ModelRequest
from loomgraph.runtime import SqliteRuntime


async def test_resume_from_the_sqlite_journal_in_a_new_agent(tmp_path: Path) -> None:
    ledger: list[str] = []

    async def charge(amount: int, idempotency_key: str) -> str:
        """Charge once per key."""
        ledger.append(idempotency_key)
        return f"charged {amount}"

    def failing(request: ModelRequest) -> object:
        if request.call_index == 0:
            return {"tool_calls": [{"tool": "charge", "args": {"amount": 5}}]}
        raise RuntimeError("provider down")

    path = tmp_path / "journal.db"
    first = Agent("x", model=ScriptedModel(failing), tools=[charge],
                  runtime=f"sqlite:{path}")
    failed = await first.run("pay", user_id="alice")
    assert failed.status == "failed"
    await first.deps.runtime.close()  # type: ignore[attr-defined]

    runtime = SqliteRuntime(str(path))
    second = Agent("x", model=ScriptedModel(lambda r: "paid"), tools=[charge], runtime=runtime)
    resumed = await second.resume(failed.run_id)
    assert resumed.status == "completed" and resumed.output == "paid"
    assert len(ledger) == 1  # the charge was not made twice
    history = await second.history(failed.run_id)
    assert [c.node for c in history] == ["model", "tools", "model"]
    assert (await second.runs(user_id="alice"))[0].run_id == failed.run_id
    await runtime.close()
