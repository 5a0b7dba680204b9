"""A failed or cancelled run resumed by hand is journaled `running` while it goes on (a viewer,
`runs list` and the fleet read the journal), then ends with its new status."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from loomgraph import Agent
from loomgraph.models import ScriptedModel
from loomgraph.protocols import RunStatus
from loomgraph.runtime.sqlite import SqliteRuntime


@pytest.mark.parametrize("ended", ["failed", "cancelled"])
async def test_a_run_resumed_by_hand_is_running_while_it_goes_on(
    tmp_path: Path, ended: str
) -> None:
    runtime = SqliteRuntime(tmp_path / "journal.db")
    inside, release = asyncio.Event(), asyncio.Event()

    async def wait() -> str:
        """Wait for the test."""
        inside.set()
        await release.wait()
        return "waited"

    calls: list[int] = []

    def answer(request: Any) -> Any:
        calls.append(request.call_index)
        if ended == "failed" and len(calls) == 1:
            raise RuntimeError("the model broke")
        return [{"tool_calls": [{"tool": "wait", "args": {}}]}, "done"][request.call_index]

    agent = Agent("x", model=ScriptedModel(answer), tools=[wait], runtime=runtime)
    try:
        first = asyncio.create_task(agent.run("go"))
        if ended == "cancelled":
            await inside.wait()
            first.cancel()
            with pytest.raises(asyncio.CancelledError):
                await first
            inside.clear()
            [record] = await runtime.runs()
        else:
            result = await first
            record = (await runtime.runs())[0]
            assert result.status == RunStatus.FAILED
        assert record.status == ended
        resumed = asyncio.create_task(agent.resume(record.run_id))
        await inside.wait()
        during = await runtime.load_run(record.run_id)
        assert during is not None and during.status == RunStatus.RUNNING
        release.set()
        done = await resumed
    finally:
        await agent.aclose()
    assert done.status == RunStatus.COMPLETED and done.output == "done"
