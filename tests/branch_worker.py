"""A subprocess for the crash tests of child graphs (`map`, `subgraph`, `interrupt` inside them).

    python tests/branch_worker.py run    --db PATH --graph FILE --ledger FILE [--prompt P]
    python tests/branch_worker.py resume --db PATH --graph FILE --ledger FILE --run-id ID
                                         [--value JSON] [--current]

`--kill` (comma-separated) SIGKILLs the process from inside, at a named point:
`transition:NODE` after the journaled transition of the qualified node NODE (`each/1/tools`),
`write:N` after the Nth journal write of this process (an effect's intent or outcome, a
transition). `--script JSON` gives the model a list of turns taken by `request.call_index`
(else each conversation gets a tool call, then its answer). The graph's functions and tool
are in this module; the tool writes one `key<TAB>item` line per execution to the ledger, a
file outside the journal. The worker prints JSON lines: `{"run_id"}` first, `{"crash"}` just
before a kill, and `{"result", "unknown", "writes"}` at the end (`{"error"}` when it raised).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from loomgraph import Agent
from loomgraph.authoring.loader import load_graph_file
from loomgraph.governance.null import NoHooks
from loomgraph.models import ScriptedModel
from loomgraph.protocols import EffectRecord, EffectStatus, ModelRequest, Transition
from loomgraph.protocols.events import Event
from loomgraph.runtime import SqliteRuntime

LEDGER = "BRANCH_LEDGER"


def say(**fields: Any) -> None:
    """One JSON line on stdout, flushed at once."""
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


# ------------------------------------------------------------------ graph functions, tool


def prep(state: Mapping[str, Any]) -> dict[str, Any]:
    """The words of the input, as the items to map."""
    return {"items": state["input"].split()}


def step_a(state: Mapping[str, Any]) -> dict[str, Any]:
    """A note of the branch's input."""
    return {"note": f"a({state['input']})"}


def step_b(state: Mapping[str, Any]) -> dict[str, Any]:
    """The branch's answer: its note, its last message and the answer it was given."""
    messages = state.get("messages") or []
    last = messages[-1]["content"] if messages else ""
    return {"output": f"{state['note']}|{last}|{state.get('answer') or ''}"}


def fin(state: Mapping[str, Any]) -> dict[str, Any]:
    """The run's answer: the map's results and the subgraph's summary."""
    return {"output": json.dumps({"results": state.get("results"), "summary": state["summary"]})}


async def act(state: Mapping[str, Any], ctx: Any) -> dict[str, Any]:
    """Act on the person's answer through a journaled tool call."""
    answer = state.get("answer") or ""
    call = {"id": "act-1", "tool": "record", "args": {"item": answer}}
    done = await ctx.call_tool(call)
    return {"note": f"{state['note']};acted={done['content']}"}


def record(item: str, idempotency_key: str) -> str:
    """Record one item outside the journal (a side effect)."""
    with open(os.environ[LEDGER], "a", encoding="utf-8") as f:
        f.write(f"{idempotency_key}\t{item}\n")
        f.flush()
        os.fsync(f.fileno())
    return f"rec-{item}"


def turn(request: ModelRequest) -> Any:
    """Each conversation: a tool call recording its first message, then its answer."""
    first = request.messages[0]["content"]
    if request.messages[-1]["role"] == "tool":
        return f"done {first}"
    return {"tool_calls": [{"id": f"c-{first}", "tool": "record", "args": {"item": first}}]}


# ------------------------------------------------------------------ the graphs

_CHILD_STATE = """state:
  note: {type: str, default: ""}
  answer: {type: str, default: ""}
"""
_REACT = """  model: {kind: model, reads: [messages], writes: [messages, usage]}
  tools: {kind: tools, reads: [messages], writes: [messages]}
"""
_A = "  a: {kind: function, call: 'branch_worker:step_a', reads: [input], writes: [note]}\n"
_B = (
    "  b: {kind: function, call: 'branch_worker:step_b', reads: [note, messages, answer], "
    "writes: [output]}\n"
)
_ASK = (
    "  ask: {kind: interrupt, request: str, message: 'value for {{ note }}', output: answer, "
    "reads: [note]}\n"
)
_TO_TOOLS = "  - {from: model, to: tools, when: 'last_message.tool_calls | length > 0'}\n"

# Child graphs, each `a` first and `b` last: a ReAct loop; an interrupt before it (`ask_loop`)
# or after it (`loop_ask`); an interrupt whose answer a tool call acts on (`ask_act`).
CHILDREN = {
    "loop": (_A + _REACT + _B, "a:model,tools:model,model:b"),
    "ask_loop": (_A + _ASK + _REACT + _B, "a:ask,ask:model,tools:model,model:b"),
    "loop_ask": (_A + _REACT + _ASK + _B, "a:model,tools:model,model:ask,ask:b"),
    "ask_act": (
        _A + _ASK + "  act: {kind: function, call: 'branch_worker:act', reads: [note, answer], "
        "writes: [note]}\n" + _B,
        "a:ask,ask:act,act:b",
    ),
}


def child_yaml(name: str) -> str:
    """The child graph `name` (see CHILDREN) as YAML."""
    nodes, edges = CHILDREN[name]
    lines = []
    for edge in edges.split(","):
        source, target = edge.split(":")
        if edge == "model:b" or edge == "model:ask":
            lines.append(_TO_TOOLS)
        lines.append(f"  - {{from: {source}, to: {target}}}\n")
    body = "".join(lines) + "  - {from: b, to: END}\n"
    return f"name: {name}\nentry: a\n{_CHILD_STATE}nodes:\n{nodes}edges:\n{body}"


def parent_yaml(child: str, concurrency: int, over: str = "items", extra: str = "") -> str:
    """prep -> map over the words (child `child`) -> subgraph (same child) -> fin."""
    return f"""name: parent
entry: prep
state:
  items: {{type: 'list[str]'}}
  others: {{type: 'list[str]', default: []}}
  results: {{type: 'list[str]', default: []}}
  summary: {{type: str, default: ""}}
nodes:
  prep: {{kind: function, call: 'branch_worker:prep', reads: [input], writes: [items]}}
  each: {{kind: map, graph: {child}.yaml, over: {over}, output: results, \
concurrency: {concurrency}}}
  sub: {{kind: subgraph, graph: {child}.yaml, inputs: {{input: input}}, \
outputs: {{summary: output}}}}
  fin: {{kind: function, call: 'branch_worker:fin', reads: [results, summary], writes: [output]}}
{extra}edges:
  - {{from: prep, to: each}}
  - {{from: each, to: sub}}
  - {{from: sub, to: fin}}
  - {{from: fin, to: END}}
"""


def write_graphs(folder: Any, child: str, concurrency: int, **options: Any) -> str:
    """Write the parent graph and its child into `folder`; the parent's path."""
    with open(os.path.join(folder, f"{child}.yaml"), "w", encoding="utf-8") as f:
        f.write(child_yaml(child))
    path = os.path.join(folder, "parent.yaml")
    with open(path, "w", encoding="utf-8") as f:
        f.write(parent_yaml(child, concurrency, **options))
    return path


# ------------------------------------------------------------------ the killing journal


class Killing:
    """A real SQLite journal that SIGKILLs the process after a chosen write."""

    def __init__(self, inner: SqliteRuntime, kills: set[str]) -> None:
        self.inner, self.kills, self.writes = inner, kills, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _wrote(self, what: str) -> None:
        self.writes += 1
        if f"write:{self.writes}" in self.kills or what in self.kills:
            say(crash=what, write=self.writes)
            os.kill(os.getpid(), signal.SIGKILL)

    async def append_transition(self, transition: Transition) -> None:
        await self.inner.append_transition(transition)
        self._wrote(f"transition:{transition.node}")

    async def begin_effect(self, effect: EffectRecord) -> EffectRecord | None:
        prior: EffectRecord | None = await self.inner.begin_effect(effect)
        self._wrote(f"intent:{effect.key}")
        return prior

    async def end_effect(
        self, run_id: str, key: str, outcome: dict[str, Any], status: EffectStatus
    ) -> None:
        await self.inner.end_effect(run_id, key, outcome, status)
        self._wrote(f"outcome:{key}")


class Unknown(NoHooks):
    """Collects the keys of `effect_unknown_after_crash` events."""

    def __init__(self) -> None:
        self.keys: list[str] = []

    async def on_event(self, event: Event) -> None:
        if event.kind == "effect_unknown_after_crash":
            self.keys.append(event.payload["key"])


async def main(args: argparse.Namespace) -> int:
    os.environ[LEDGER] = args.ledger
    inner = SqliteRuntime(args.db)
    journal = Killing(inner, {k for k in args.kill.split(",") if k})
    hooks = Unknown()
    script = json.loads(args.script) if args.script else None
    agent = Agent(
        "branches",
        model=ScriptedModel(script if script is not None else turn),
        tools=[record],
        runtime=journal,
        architecture=load_graph_file(args.graph),
        hooks=hooks,
    )
    try:
        if args.mode == "run":
            session = agent.session(args.prompt)
            say(run_id=session.run_id)
            result = await session.execute(hooks.on_event)
        else:
            options: dict[str, Any] = {"graph": "current"} if args.current else {}
            if args.value is not None:
                options["value"] = json.loads(args.value)
            result = await agent.resume(args.run_id, **options)
    except Exception as err:  # reported to the test, which asserts on it
        say(error=f"{type(err).__name__}: {err}")
        return 5
    finally:
        await inner.close()
    data = result.to_dict()
    shown = {k: data.get(k) for k in ("run_id", "status", "reason", "output", "pending")}
    say(result=shown, unknown=hooks.keys, writes=journal.writes)
    return 0


def parse(argv: list[str]) -> argparse.Namespace:
    """The worker's arguments."""
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["run", "resume"])
    parser.add_argument("--db", required=True)
    parser.add_argument("--graph", required=True)
    parser.add_argument("--ledger", required=True)
    parser.add_argument("--prompt", default="x y z")
    parser.add_argument("--run-id", default=None)
    parser.add_argument("--value", default=None)
    parser.add_argument("--current", action="store_true")
    parser.add_argument("--kill", default="")
    parser.add_argument("--script", default=None)
    return parser.parse_args(argv)


def run_worker(folder: Path, mode: str, graph: str, *args: str) -> dict[str, Any]:
    """Run this script as one process (MODE: run or resume) on the journal and ledger in
    `folder` to its end, or its own SIGKILL; what it printed, merged, with its exit code."""
    tests = str(Path(__file__).parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")])}
    files = ["--db", str(folder / "journal.db"), "--ledger", str(folder / "ledger")]
    done = subprocess.run(
        [sys.executable, __file__, mode, *files, "--graph", graph, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    out: dict[str, Any] = {"rc": done.returncode, "stderr": done.stderr[-2000:]}
    for line in done.stdout.splitlines():
        if line.startswith("{"):
            out.update(json.loads(line))
    return out


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main(parse(sys.argv[1:]))))
