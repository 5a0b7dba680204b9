"""`loomgraph eval` killed (SIGKILL, a real subprocess) right after a case's run was journaled
`failed`, before the evaluation wrote that the run finished: the rerun takes the failed run's
outcome from the journal. It used to resume the run, which retries a failed run: its model
was called again (a paid call), and the case was scored on a second attempt the first
evaluation never made. Model calls and tool executions are counted in files outside the
journal."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

AGENT = '''
import os, signal
from pathlib import Path
from loomgraph import Agent, tool
from loomgraph.protocols import ModelError
from loomgraph.runtime.sqlite import SqliteRuntime


class Dying(SqliteRuntime):
    """Killed right after it journaled a run `failed`, when the test says so."""

    async def finish_run(self, run_id, status, reason="", result=None):
        await super().finish_run(run_id, status, reason, result)
        if str(status) == "failed" and Path("die").exists():
            os.kill(os.getpid(), signal.SIGKILL)


class FailingModel:
    """Calls `step`, then fails: the provider is down."""

    name = "failing"

    async def stream(self, request):
        with Path("model.log").open("a") as log:
            log.write("call\\n")
        if any(m.get("role") == "tool" for m in request.messages):
            raise ModelError("the provider is down")
        yield {"type": "tool_call", "call": {"id": "c1", "tool": "step", "args": {}}}
        yield {"type": "finish", "finish_reason": "tool_use"}


@tool
async def step() -> str:
    """Take a step."""
    with Path("tool.log").open("a") as log:
        log.write("step\\n")
    return "ok"


def make(**options):
    return Agent("x", model=FailingModel(), tools=[step], runtime=Dying("journal.db"), **options)
'''

CASES = "schema_version: 1\nname: one\ncases:\n  - {id: a, input: go}\n"


def _eval(work: Path) -> subprocess.CompletedProcess[str]:
    code = "import sys; from loomgraph.cli.main import main; sys.exit(main(sys.argv[1:]))"
    command = ["eval", "one.yaml", "-a", "failing_agent:make", "--out", "out", "--json"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(work), *sys.path])}
    return subprocess.run(
        [sys.executable, "-c", code, *command],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_a_run_journaled_failed_before_the_crash_is_not_run_again(tmp_path: Path) -> None:
    (tmp_path / "failing_agent.py").write_text(AGENT)
    (tmp_path / "one.yaml").write_text(CASES)
    (tmp_path / "die").touch()
    killed = _eval(tmp_path)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    state = [json.loads(line) for line in (tmp_path / "out/state.jsonl").read_text().splitlines()]
    assert [entry["kind"] for entry in state] == ["started"]  # killed before "finished"
    calls, steps = _lines(tmp_path / "model.log"), _lines(tmp_path / "tool.log")
    assert (calls, steps) == (2, 1)

    (tmp_path / "die").unlink()
    again = _eval(tmp_path)
    assert again.returncode == 0, again.stderr
    report = json.loads((tmp_path / "out/report.json").read_text())
    [run] = report["runs"]
    assert run["outcome"]["status"] == "failed"
    assert "provider is down" in run["outcome"]["error"]
    assert (_lines(tmp_path / "model.log"), _lines(tmp_path / "tool.log")) == (calls, steps)
