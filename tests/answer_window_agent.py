"""Kill points inside the answer window — from a resume taking up a person's answer to the
node or tool call that uses it — for `test_answer_window.py`.

Two ways to run it: `loomgraph worker --agent answer_window_agent:make` (the fleet tests:
`fleet_agent`'s agent, its Postgres ledger, on a dying journal), and

    python tests/answer_window_agent.py run|answer|resume --journal sqlite:PATH|DSN
        [--schema S] --ledger FILE --kind approve|value [--run-id ID]

for resumes by hand: `run` starts a run that stops to wait (`approve`: the tool `pay` asks
for approval; `value`: an `interrupt` asks for a number), `answer` resumes it with the answer
(`approve=True`, `value=3`), `resume` resumes it without one. Each prints one JSON line.

`ANSWER_KILL_AT` names where the process SIGKILLs itself; it fires only once the file
`ANSWER_ARM` exists (the test makes it when the run waits), and once: the process that
creates `ANSWER_ARM.died` dies there, after writing the run's journaled status into it.

- `answered`: the answer's effect (`approval`, or an interrupt's `answer`) journaled done;
- `running`: the run journaled `running` by the resume that took the answer up;
- `run_started`: the resumed run's `run_started` event (after the MCP servers, the budget's
  clock, the audit entry and `restore`: the slow part of the window).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from typing import Any

from loomgraph import Agent
from loomgraph.governance import StandardPermissions
from loomgraph.governance.null import NoHooks
from loomgraph.models import ScriptedModel
from loomgraph.protocols import EffectStatus, Event, RunStatus
from loomgraph.runtime.postgres import PostgresRuntime
from loomgraph.runtime.sqlite import SqliteRuntime

POINTS = ("answered", "running", "run_started")
VALUE = 3  # the number `answer` gives an interrupt

# Waits for a number, then answers with it (a function node: nothing to ask again).
HOW_MANY = """
name: how-many
entry: ask
state:
  times: {type: int}
nodes:
  ask: {kind: interrupt, request: int, message: 'How many times?', output: times}
  answer: {kind: function, call: "answer_window_agent:did", reads: [times], writes: [output]}
edges:
  - {from: ask, to: answer}
  - {from: answer, to: END}
"""


def did(state: Any) -> dict[str, Any]:
    """The answer of a `HOW_MANY` run."""
    return {"output": f"did the work {state['times']} times"}


async def die(runtime: Any, run_id: str, point: str) -> None:
    """SIGKILL this process at `point` when the test named it and armed it, once."""
    arm = os.environ.get("ANSWER_ARM", "")
    if os.environ.get("ANSWER_KILL_AT") != point or not arm or not os.path.exists(arm):
        return
    try:
        fd = os.open(arm + ".died", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    record = await runtime.load_run(run_id)
    os.write(fd, json.dumps({"pid": os.getpid(), "status": str(record.status)}).encode())
    os.fsync(fd)
    os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)


def _is_answer(key: str) -> bool:
    """True for the key of a person's answer: an approval, or an interrupt's value."""
    return ":approval:" in key or key.endswith(":answer")


class _Dying:
    """A journal that dies after the answer's outcome or the resume's `running`."""

    async def end_effect(
        self, run_id: str, key: str, outcome: dict[str, Any], status: EffectStatus
    ) -> None:
        await super().end_effect(run_id, key, outcome, status)  # type: ignore[misc]
        if _is_answer(key):
            await die(self, run_id, "answered")

    async def finish_run(
        self, run_id: str, status: RunStatus, reason: str, result: dict[str, Any] | None
    ) -> None:
        await super().finish_run(run_id, status, reason, result)  # type: ignore[misc]
        if status == RunStatus.RUNNING:  # only a resume journals a run `running` this way
            await die(self, run_id, "running")


class DyingSqlite(_Dying, SqliteRuntime):
    """The SQLite journal with the kill points."""


class DyingPostgres(_Dying, PostgresRuntime):
    """The Postgres journal with the kill points."""


class DyingHooks(NoHooks):
    """Dies at the resumed run's `run_started` event (when armed)."""

    runtime: Any = None

    async def on_event(self, event: Event) -> None:
        """At `run_started`: the kill point of the same name."""
        if event.kind == "run_started":
            await die(self.runtime, event.run_id, "run_started")


def make(**overrides: Any) -> Agent:
    """`fleet_agent`'s agent on a dying Postgres journal (the fleet tests' workers)."""
    import fleet_agent

    runtime = DyingPostgres(
        os.environ["FLEET_DSN"],
        schema=os.environ["FLEET_SCHEMA"],
        lease_seconds=float(os.environ.get("FLEET_LEASE", "30")),
        pool_size=4,
    )
    hooks = DyingHooks()
    hooks.runtime = runtime
    options: dict[str, Any] = {"runtime": runtime, "hooks": hooks}
    if os.environ.get("FLEET_INTERRUPT"):
        from loomgraph.authoring.loader import graph_from_yaml

        options["architecture"] = graph_from_yaml(HOW_MANY)
    options.update(overrides)
    return fleet_agent.make(**options)


def journal(spec: str, schema: str | None) -> Any:
    """The dying journal `spec` names: `sqlite:PATH`, or a Postgres DSN (with `schema`)."""
    if spec.startswith("sqlite:"):
        return DyingSqlite(spec.removeprefix("sqlite:"))
    return DyingPostgres(spec, schema=schema or "public")


def agent_on(runtime: Any, kind: str, ledger: str) -> Agent:
    """The agent of a resume by hand: `pay` asks for approval (`approve`), or the run waits
    for a number (`value`). `pay` appends its idempotency key to `ledger`, durably."""

    async def pay(to: str, idempotency_key: str) -> str:
        """Pay someone."""
        fd = os.open(ledger, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, f"{idempotency_key}\n".encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        return f"paid {to}"

    hooks = DyingHooks()
    hooks.runtime = runtime
    options: dict[str, Any] = {"runtime": runtime, "hooks": hooks}
    if kind == "approve":
        call = {"tool_calls": [{"tool": "pay", "args": {"to": "bob"}}]}
        options.update(
            model=ScriptedModel([call, "paid bob"]),
            tools=[pay],
            permissions=StandardPermissions(ask=["pay"]),
        )
    else:
        from loomgraph.authoring.loader import graph_from_yaml

        options.update(model=ScriptedModel(["unused"]), architecture=graph_from_yaml(HOW_MANY))
    return Agent("You pay people.", **options)


async def main(args: argparse.Namespace) -> int:
    """One step of a resume by hand; its outcome as a JSON line."""
    runtime = journal(args.journal, args.schema)
    agent = agent_on(runtime, args.kind, args.ledger)
    try:
        if args.mode == "run":
            result = await agent.run("pay bob", user_id="u")
        elif args.mode == "answer" and args.kind == "approve":
            result = await agent.resume(args.run_id, approve=True)
        elif args.mode == "answer":
            result = await agent.resume(args.run_id, value=VALUE)
        else:
            result = await agent.resume(args.run_id)
    finally:
        await agent.aclose()
    sys.stdout.write(json.dumps({"result": result.to_dict()}, default=str) + "\n")
    sys.stdout.flush()
    return 0


def parse(argv: list[str]) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["run", "answer", "resume"])
    parser.add_argument("--journal", required=True)
    parser.add_argument("--schema", default=None)
    parser.add_argument("--ledger", required=True)
    parser.add_argument("--kind", choices=["approve", "value"], required=True)
    parser.add_argument("--run-id", default=None)
    return parser.parse_args(argv)


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main(parse(sys.argv[1:]))))
