"""A subprocess for the crash matrix: one ReAct run on a durable journal, killed on purpose.

    python tests/crash_worker.py run    --journal sqlite:PATH --ledger FILE [--point P --n N]
    python tests/crash_worker.py resume --journal sqlite:PATH --ledger FILE --run-id ID
                                        [--hold]

`--journal` is `sqlite:PATH` or a `postgres://` DSN (then `--schema` names the schema).
The worker prints JSON lines and flushes each: `{"run_id": …, "pid": …}` first, `{"crash": …}` just
before it SIGKILLs itself, `{"holding": …}` when `--hold` makes a tool wait for a line on
stdin, `{"conflict": …}` (exit 3) when resume met RunConflict, `{"lease_lost": …}` (exit 4)
when another worker took the run over meanwhile, and `{"result": …}` at the end.
`retry` is `agent.retry` (a dead letter's recoveries forgotten); `--poison` makes the `add`
tool SIGKILL its process every time. `--lease-seconds` sets the journal's lease;
`--wait-lease S` makes resume retry a lease held by a live worker for up to S seconds
(until it expires) instead of exiting 3. `--budget` gives the agent a budget with caps no run
reaches, its ledger in the journal's database, so every call holds and settles there.

`--events FILE` runs the agent as a consumer would: through `agent.stream()` (or
`agent.resume_stream()`), each event written to FILE as a JSON line (its `provisional` flag
added) before the next is read; before a chosen crash the worker waits until the consumer has
written every event sent so far, so FILE holds exactly what the consumer saw. `--vary` makes
the model's text differ in every process (the pid in it) and arrive in several chunks, as a
real model answers a repeated call differently.

Crash points (P) and what N counts:
- `before_intent`, `after_intent`: the Nth `begin_effect`, before / after the journal call;
- `after_effect`: the Nth effect itself has run (the tool wrote its ledger line, or the model
  streamed its turn) but its outcome is not journaled yet;
- `mid_stream`: the Nth effect, a model call, has streamed its second text chunk (use
  `--vary`, whose turns come in several chunks);
- `after_outcome`: the Nth `end_effect`, after the journal call;
- `after_transition`: the Nth `append_transition`, after the journal call.

The kill comes from inside (`os.kill(os.getpid(), SIGKILL)`), so it is deterministic; the
core is not changed: the runtime and the model are wrapped here, test-only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from loomgraph import Agent
from loomgraph.agent.streaming import event_stream
from loomgraph.governance import BudgetConfig, StandardBudget
from loomgraph.governance.null import NoHooks
from loomgraph.models import ScriptedModel
from loomgraph.models.scripted import Turn, as_turn
from loomgraph.protocols import (
    EffectRecord,
    EffectStatus,
    ModelChunk,
    ModelRequest,
    RunRecord,
    RunStatus,
    Runtime,
    Transition,
)
from loomgraph.protocols.events import Event
from loomgraph.runtime.errors import LeaseLost, RunConflict

POINTS = ("before_intent", "after_intent", "after_effect", "after_outcome", "after_transition")
STREAM_POINTS = ("mid_stream",)  # only with --vary (a turn in several chunks)

# model → 2 parallel tool calls → model → 1 tool call → final answer:
# 6 effects (3 model calls, 3 tool calls) and 5 transitions.
SCRIPT: list[Any] = [
    {
        "text": "Looking both up.",
        "tool_calls": [
            {"tool": "lookup", "args": {"city": "Paris"}},
            {"tool": "lookup", "args": {"city": "Tokyo"}},
        ],
    },
    {"text": "Adding.", "tool_calls": [{"tool": "add", "args": {"a": 2, "b": 3}}]},
    "Paris is in France, Tokyo in Japan, and 2 + 3 = 5.",
]
EFFECTS, TRANSITIONS = 6, 5
INSTRUCTIONS = "You answer geography and sums."
PROMPT = "Where are Paris and Tokyo, and what is 2 + 3?"


def say(**fields: Any) -> None:
    """One JSON line on stdout, flushed at once (the test reads it before any kill)."""
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


class Killer:
    """Where to die, and the counters that say when."""

    def __init__(self, point: str | None, n: int) -> None:
        self.point, self.n = point, n
        self.poison = False  # `add` kills the process whenever it is called
        self.begun = 0
        self.index: dict[str, int] = {}  # effect key -> its begin order in this process
        self.model_effect = 0  # the index of the model effect being executed
        self.model_key = ""  # and its key
        self.transitions = 0
        self.executed: list[str] = []  # keys of effects this process really executed
        self.unknown: list[str] = []  # keys the journal reported unknown_after_crash
        # With `--events`: waits until the consumer has written every event sent so far.
        self.drain: Callable[[], Awaitable[None]] | None = None

    async def reach(self, point: str, index: int, **detail: Any) -> None:
        """`maybe_die`, once the consumer (if any) has seen every event sent before it."""
        if point == self.point and index == self.n and self.drain is not None:
            await self.drain()
        self.maybe_die(point, index, **detail)

    def maybe_die(self, point: str, index: int, **detail: Any) -> None:
        """SIGKILL this process when (point, index) is the chosen crash point."""
        if point == self.point and index == self.n:
            say(crash=point, n=index, **detail)
            os.kill(os.getpid(), signal.SIGKILL)


class KillingRuntime:
    """Delegates to a real journal, dying before or after the chosen call."""

    def __init__(self, inner: Any, killer: Killer) -> None:
        self.inner, self.killer = inner, killer

    def __getattr__(self, name: str) -> Any:
        # Leases, snapshots, connect/close: whatever else the agent asks of the journal.
        return getattr(self.inner, name)

    async def start_run(self, run: RunRecord) -> None:
        await self.inner.start_run(run)

    async def load_run(self, run_id: str) -> RunRecord | None:
        return await self.inner.load_run(run_id)  # type: ignore[no-any-return]

    async def append_transition(self, transition: Transition) -> None:
        await self.inner.append_transition(transition)
        self.killer.transitions += 1
        await self.killer.reach(
            "after_transition",
            self.killer.transitions,
            node=transition.node,
            visit=transition.visit,
        )

    async def transitions(self, run_id: str) -> list[Transition]:
        return await self.inner.transitions(run_id)  # type: ignore[no-any-return]

    async def begin_effect(self, effect: EffectRecord) -> EffectRecord | None:
        k = self.killer
        k.begun += 1
        index = k.begun
        k.index[effect.key] = index
        await k.reach("before_intent", index, key=effect.key, kind=effect.kind)
        prior: EffectRecord | None = await self.inner.begin_effect(effect)
        if prior is not None and prior.status == "unknown_after_crash":
            k.unknown.append(effect.key)
        if effect.kind == "model":
            k.model_effect, k.model_key = index, effect.key
        await k.reach("after_intent", index, key=effect.key, kind=effect.kind)
        return prior

    async def end_effect(
        self, run_id: str, key: str, outcome: dict[str, Any], status: EffectStatus
    ) -> None:
        await self.inner.end_effect(run_id, key, outcome, status)
        await self.killer.reach("after_outcome", self.killer.index[key], key=key)

    async def finish_run(
        self, run_id: str, status: RunStatus, reason: str, result: dict[str, Any] | None
    ) -> None:
        await self.inner.finish_run(run_id, status, reason, result)

    async def effects(self, run_id: str) -> list[EffectRecord]:
        return await self.inner.effects(run_id)  # type: ignore[no-any-return]

    async def runs(
        self, user_id: str | None = None, *, status: RunStatus | None = None
    ) -> list[RunRecord]:
        return await self.inner.runs(user_id, status=status)  # type: ignore[no-any-return]


class KillingModel:
    """The scripted model, dying after it streamed the chosen model effect's whole turn."""

    def __init__(self, killer: Killer, vary: bool = False) -> None:
        self.inner, self.killer = ScriptedModel(SCRIPT), killer
        if vary:  # this process's own wording, in chunks of 8 characters
            self.inner = ScriptedModel(varied, chunk_size=8)
        self.name = "scripted"

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        k = self.killer
        k.executed.append(k.model_key)
        texts = 0
        async for chunk in self.inner.stream(request):
            yield chunk
            if chunk.get("type") == "text":
                texts += 1
                if texts == 2:
                    await k.reach("mid_stream", k.model_effect, key=k.model_key, kind="model")
            if chunk.get("type") == "finish":
                await k.reach("after_effect", k.model_effect, key=k.model_key, kind="model")


def varied(request: ModelRequest) -> Turn:
    """The script's turn for this call, its text naming this process."""
    turn = as_turn(SCRIPT[request.call_index], request.call_index)
    turn.text = f"{turn.text} (worker {os.getpid()})"
    return turn


def make_tools(ledger: str, killer: Killer, hold: bool) -> list[Any]:
    """Tools that write one `key<TAB>args` line per call to the ledger, durably."""

    def write(key: str, args: dict[str, Any]) -> None:
        with open(ledger, "a", encoding="utf-8") as f:
            f.write(f"{key}\t{json.dumps(args, sort_keys=True)}\n")
            f.flush()
            os.fsync(f.fileno())
        killer.executed.append(key)
        killer.maybe_die("after_effect", killer.index[key], key=key, kind="tool")

    async def lookup(city: str, idempotency_key: str) -> str:
        """Find the country of a city."""
        if hold:
            # The lease holder waits here, mid-run, until the test says go on.
            say(holding=idempotency_key)
            await asyncio.to_thread(sys.stdin.readline)
        write(idempotency_key, {"city": city})
        return {"Paris": "France", "Tokyo": "Japan"}.get(city, "unknown")

    async def add(a: int, b: int, idempotency_key: str) -> int:
        """Add two numbers."""
        if killer.poison:  # a tool that kills its process every time it is called
            say(crash="poison", key=idempotency_key)
            os.kill(os.getpid(), signal.SIGKILL)
        if hold:
            say(holding=idempotency_key)
            await asyncio.to_thread(sys.stdin.readline)
        write(idempotency_key, {"a": a, "b": b})
        return a + b

    return [lookup, add]


class UnknownEffects(NoHooks):
    """Collects the keys of `effect_unknown_after_crash` events."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.sent = 0  # every event the run sent (a stream's consumer gets them after this)

    async def on_event(self, event: Event) -> None:
        self.sent += 1
        if event.kind == "effect_unknown_after_crash":
            self.keys.append(event.payload["key"])


def open_journal(spec: str, schema: str | None, lease_seconds: float = 30.0) -> Runtime:
    """The real journal the run is recorded in."""
    if spec.startswith("sqlite:"):
        from loomgraph.runtime.sqlite import SqliteRuntime

        return SqliteRuntime(spec.removeprefix("sqlite:"), lease_seconds=lease_seconds)
    from loomgraph.runtime.postgres import PostgresRuntime

    return PostgresRuntime(spec, schema=schema or "public", lease_seconds=lease_seconds)


async def resume(agent: Agent, run_id: str, wait: float) -> Any:
    """Resume the run; with `wait`, retry a live worker's lease until it expires."""
    deadline = asyncio.get_running_loop().time() + wait
    while True:
        try:
            return await agent.resume(run_id)
        except LeaseLost:
            raise
        except RunConflict:
            if asyncio.get_running_loop().time() >= deadline:
                raise
            await asyncio.sleep(0.05)  # polling the lease's expiry, bounded by `wait`


class Consumer:
    """Reads a run's event stream as an application would, writing each event to a file."""

    def __init__(self, path: str, killer: Killer, hooks: UnknownEffects) -> None:
        self.file = open(path, "a", encoding="utf-8")  # noqa: SIM115 (closed in consume)
        self.written = 0
        self.seen = asyncio.Condition()
        hooks.sent = 0
        self.hooks = hooks
        killer.drain = self.drained

    async def drained(self) -> None:
        """Wait until every event sent so far is in the file."""
        async with self.seen:
            await self.seen.wait_for(lambda: self.written >= self.hooks.sent)

    async def consume(self, events: AsyncIterator[Event]) -> dict[str, Any]:
        """Write every event; the run's result, from its `run_completed` event."""
        result: dict[str, Any] = {}
        try:
            async for event in events:
                line = {**event.to_dict(), "provisional": event.provisional}
                self.file.write(json.dumps(line, default=str) + "\n")
                self.file.flush()  # in the kernel: a SIGKILL of this process keeps it
                if event.kind == "run_completed":
                    result = event.payload["result"]
                async with self.seen:
                    self.written += 1
                    self.seen.notify_all()
        finally:
            self.file.close()
        return result


class StreamResult:
    """A run's result as the `run_completed` event carried it."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def to_dict(self) -> dict[str, Any]:
        return self.data


async def main(args: argparse.Namespace) -> int:
    killer = Killer(args.point, args.n)
    killer.poison = args.poison
    inner = open_journal(args.journal, args.schema, args.lease_seconds)
    hooks = UnknownEffects()
    consumer = Consumer(args.events, killer, hooks) if args.events else None
    agent = Agent(
        INSTRUCTIONS,
        model=KillingModel(killer, args.vary),
        tools=make_tools(args.ledger, killer, args.hold),
        runtime=KillingRuntime(inner, killer),
        hooks=hooks,
        # Caps no run reaches: the ledger (in the journal's database) records every hold.
        budget=StandardBudget(BudgetConfig(tool_calls=1000)) if args.budget else None,
    )
    events = hooks.keys
    try:
        if consumer is not None and args.mode == "run":
            session = agent.session(PROMPT, user_id="crash-test")
            say(run_id=session.run_id, pid=os.getpid())
            stream = event_stream(session.execute, hooks.on_event)
            result = StreamResult(await consumer.consume(stream))
        elif consumer is not None and args.mode == "resume":
            result = StreamResult(await consumer.consume(agent.resume_stream(args.run_id)))
        elif args.mode == "run":
            session = agent.session(PROMPT, user_id="crash-test")
            say(run_id=session.run_id, pid=os.getpid())  # before anything can crash
            result = await session.execute(hooks.on_event)
        elif args.mode == "retry":
            result = await agent.retry(args.run_id)
        else:
            result = await resume(agent, args.run_id, args.wait_lease)
    except LeaseLost as err:  # another worker took the run over: this one wrote nothing more
        say(lease_lost=str(err), executed=killer.executed)
        return 4
    except RunConflict as err:
        say(conflict=str(err), executed=killer.executed)
        return 3
    finally:
        await inner.close()  # type: ignore[attr-defined]
    say(
        result=result.to_dict(),
        executed=killer.executed,
        unknown=killer.unknown,
        unknown_events=events,
    )
    return 0


def parse(argv: list[str]) -> argparse.Namespace:
    """The worker's arguments."""
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["run", "resume", "retry"])
    parser.add_argument("--journal", required=True)
    parser.add_argument("--schema", default=None)
    parser.add_argument("--ledger", required=True)
    parser.add_argument("--point", choices=POINTS + STREAM_POINTS, default=None)
    parser.add_argument("--n", type=int, default=0)
    parser.add_argument("--run-id", default=None)
    parser.add_argument("--lease-seconds", type=float, default=30.0)
    parser.add_argument("--wait-lease", type=float, default=0.0)
    parser.add_argument("--poison", action="store_true", help="`add` SIGKILLs its process")
    parser.add_argument("--budget", action="store_true", help="a capped budget, in the journal")
    parser.add_argument("--events", default=None, help="consume the run's stream into FILE")
    parser.add_argument("--vary", action="store_true", help="each process words turns anew")
    parser.add_argument(
        "--hold",
        action="store_true",
        help="tools wait for a stdin line before they act (lease tests)",
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main(parse(sys.argv[1:]))))
