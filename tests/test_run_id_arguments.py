"""What names a journaled run, and where a fork starts, is checked where it is passed.

Found by the session's trust probe: `fork(run_id, at=True)` and `at=1.0` were taken as
checkpoint 1 and journaled a new run, `patch=[["input", "x"]]` was read as a dict; `at="1"`
was refused as "has no checkpoint 1" (it has), `patch="x"` with "dictionary update sequence
element #0 has length 1", `resume(123)` with "argument of type 'int' is not iterable". Each
is now a TypeError naming the argument, and nothing is journaled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from loomgraph import Agent
from loomgraph.runtime import SqliteRuntime


async def _finished_run(tmp_path: Path) -> tuple[Agent, SqliteRuntime, str]:
    runtime = SqliteRuntime(str(tmp_path / "journal.db"))
    agent = Agent("x", model="echo", runtime=runtime)
    done = await agent.run("hello")
    assert done.status == "completed"
    return agent, runtime, done.run_id


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"at": True}, r"at must be an int .*got bool True"),
        ({"at": 1.0}, r"at must be an int .*got float 1\.0"),
        ({"at": "1"}, r"at must be an int .*got str '1'"),
        ({"at": 1, "patch": "x"}, r"patch must be a dict .*got str 'x'"),
        ({"at": 1, "patch": [["input", "x"]]}, r"patch must be a dict .*got list"),
    ],
)
async def test_a_fork_refuses_a_checkpoint_or_patch_of_another_type(
    tmp_path: Path, options: dict[str, Any], named: str
) -> None:
    agent, runtime, run_id = await _finished_run(tmp_path)
    try:
        with pytest.raises(TypeError, match=named):
            await agent.fork(run_id, **options)
        assert [r.run_id for r in await runtime.runs()] == [run_id]  # no fork journaled
        # The same fork with its arguments' types right is made.
        forked = await agent.fork(run_id, at=1)
        assert forked.status == "completed"
    finally:
        await runtime.close()


@pytest.mark.parametrize("run_id", [123, None, b"abc", ["r1"]])
async def test_a_run_id_of_another_type_is_refused_naming_it(tmp_path: Path, run_id: Any) -> None:
    agent, runtime, real = await _finished_run(tmp_path)
    try:
        for call in (
            lambda: agent.resume(run_id),
            lambda: agent.retry(run_id),
            lambda: agent.fork(run_id, at=1),
            lambda: agent.history(run_id),
        ):
            with pytest.raises(TypeError, match=r"run_id must be a str, got"):
                await call()
        assert [r.run_id for r in await runtime.runs()] == [real]
    finally:
        await runtime.close()
