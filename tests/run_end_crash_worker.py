"""A subprocess for tests/test_run_end_repairs.py: an audited run whose process is SIGKILLed
right after its journal took an end of the run (`finish_run`), before the end's audit entry
reached the log: the crash window of every way a run ends.

    python tests/run_end_crash_worker.py run     DIR --journal SPEC [--schema S] [--die-after X]
    python tests/run_end_crash_worker.py resume  DIR --journal SPEC --run-id ID [...]
    python tests/run_end_crash_worker.py advance DIR --journal SPEC --run-id ID [...]

`--journal` is `sqlite:PATH` or a `postgres://` DSN (then `--schema`). DIR holds
`audit.jsonl` (an unsigned FileAuditLog) and the switches the test sets: the file `broken`
makes the model fail (the run ends `failed`), `poison` makes the `step` tool SIGKILL its
process. `--die-after STATUS` SIGKILLs the process right after `finish_run` journaled a
run `STATUS`; `--max-recoveries N` is the Agent's. `advance` does what a fleet worker does
with the run's (start) job: `workers.advance.advance`.

The worker prints JSON lines: `{"run_id": …, "pid": …}` first (run), `{"crash": …}` just
before it kills itself, then `{"result": …}`, `{"advanced": …}` or `{"dead_letter": …}`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from pathlib import Path
from typing import Any

from crash_worker import say
from loomgraph import Agent
from loomgraph.agent.fleet import JobKind, RunJob, fleet_queue
from loomgraph.agent.recovery import RunDeadLettered
from loomgraph.models import ScriptedModel
from loomgraph.models.scripted import Turn, as_turn
from loomgraph.observability import FileAuditLog
from loomgraph.protocols import ModelError, ModelRequest, Runtime
from loomgraph.runtime.sqlite import SqliteRuntime
from loomgraph.workers.advance import advance

NAME = "ends"
PROMPT = "Take one step."
USER = "alice"


class Dying:
    """Mixed into a journal: SIGKILLs the process right after `finish_run` journaled a run
    `die_after` (the end is committed; its audit entry is not in the log yet)."""

    die_after = ""

    async def finish_run(self, run_id: str, status: Any, reason: str, result: Any) -> None:
        await super().finish_run(run_id, status, reason, result)  # type: ignore[misc]
        if str(status) == self.die_after:
            say(crash=f"after_{status}", run_id=run_id)
            os.kill(os.getpid(), signal.SIGKILL)


def open_journal(spec: str, schema: str | None, die_after: str = "") -> Runtime:
    """The journal (SQLite or Postgres), dying after `die_after` when given."""
    if spec.startswith("sqlite:"):
        base: type = SqliteRuntime
        args: tuple[Any, ...] = (spec.removeprefix("sqlite:"),)
        options: dict[str, Any] = {}
    else:
        from loomgraph.runtime.postgres import PostgresRuntime

        base, args, options = PostgresRuntime, (spec,), {"schema": schema or "public"}
    journal = type("DyingJournal", (Dying, base), {})(*args, **options)
    journal.die_after = die_after
    return journal  # type: ignore[no-any-return]


def make_agent(where: Path, runtime: Runtime, max_recoveries: int = 3) -> Agent:
    """The audited agent of these runs: its model calls `step` once, then answers (or fails
    while `where/broken` exists); `step` dies while `where/poison` exists."""

    def turn(request: ModelRequest) -> Turn:
        if (where / "broken").exists():
            raise ModelError("the model is down")
        if request.call_index == 0:
            return as_turn({"tool_calls": [{"tool": "step", "args": {"n": 1}}]}, 0)
        return Turn(text="stepped")

    async def step(n: int) -> str:
        """Take step n."""
        if (where / "poison").exists():
            say(crash="poison")
            os.kill(os.getpid(), signal.SIGKILL)
        return f"step {n} taken"

    return Agent(
        "You take steps.",
        name=NAME,
        model=ScriptedModel(turn),
        tools=[step],
        runtime=runtime,
        audit_log=FileAuditLog(where / "audit.jsonl", unsigned=True),
        max_recoveries=max_recoveries,
    )


def start_job(run_id: str) -> RunJob:
    """The job `agent.submit` enqueued for a run of these tests."""
    return RunJob(run_id, JobKind.START, user_id=USER, prompt=PROMPT, agent=NAME)


async def main(args: argparse.Namespace) -> None:
    runtime = open_journal(args.journal, args.schema, args.die_after)
    agent = make_agent(Path(args.dir), runtime, args.max_recoveries)
    try:
        if args.mode == "run":
            session = agent.session(PROMPT, user_id=USER)
            say(run_id=session.run_id, pid=os.getpid())
            say(result=(await session.execute(agent.deps.hooks.on_event)).to_dict())
        elif args.mode == "resume":
            try:
                say(result=(await agent.resume(args.run_id)).to_dict())
            except RunDeadLettered as err:
                say(dead_letter=str(err))
        else:
            done = await advance(agent, fleet_queue(runtime), start_job(args.run_id))
            say(advanced=str(done))
    finally:
        await agent.aclose()
        await runtime.close()  # type: ignore[attr-defined]


def parse() -> argparse.Namespace:
    """The worker's arguments."""
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["run", "resume", "advance"])
    parser.add_argument("dir")
    parser.add_argument("--journal", required=True)
    parser.add_argument("--schema", default=None)
    parser.add_argument("--run-id", default=None)
    parser.add_argument("--die-after", default="")
    parser.add_argument("--max-recoveries", type=int, default=3)
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse()))
