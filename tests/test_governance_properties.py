"""Governance properties, through real Agents (issue 5, "How it is checked").

Hypothesis state machines (three set-ups: everything random, approval-heavy, tight caps)
drive real `Agent`s with `ScriptedModel` over random graphs (the built-in `react`, and small
graphs of `function`/`model`/`tools` nodes built in Python), random model scripts (random
calls to random tools, random usage within the documented contract, transient model
failures), random permission rules (allow/ask/deny over tool names and argument globs,
per-user rules, a policy, a mode, a hook), a random budget (global, per-user and one user's
own caps, and how long a reservation waits for other runs' holds), concurrent runs of one
user (whose reservations wait for each other's holds), simulated crashes and resumes, and
approvals answered at random. After every step:

- invariant 1: for the global scope and every user scope, `spent + reserved <= cap` for
  every capped metric (also sampled by every tool while runs are in flight), `spent` never
  decreases, every tool that ran was charged, and no hold is left except by a run whose
  process died and was not resumed;
- invariant 2: no call denied by the rules (an independent oracle of the documented
  semantics), nor one awaiting or refused approval, ever executes — checked against a
  side-effect ledger every tool appends to; an executed call ran with the arguments it was
  allowed with, and ran twice (with one key) only when a crash left its effect unfinished;
- invariant 3: every executed call has an earlier `permission_decision` entry with verdict
  `allow` (and a `tool_request`) for that call id in the `FileAuditLog`, whose chain
  verifies; every decision entry names the rule the oracle expects;
- invariant 4 (checked as runs stop): a request whose answer a resume took up before its
  process died (the run read `running`, or the answer was journaled) is never asked again.

A crash is simulated in-process: a "process" (an Agent with its own connections to the
SQLite files, or the shared in-memory journal and ledger) dies — raises `Crash`, a
BaseException no layer catches — before or after its Nth journal write or ledger
transaction, then refuses every call, as a killed process would, and its connections are
closed; a fresh process resumes the run.

Then: 2 x 10 concurrent runs of one user in two OS processes sharing one SQLite file (journal
and ledger), each process able to exhaust the user's cap alone, and the same on PostgreSQL;
and the bugs found on the way, as deterministic tests.
"""

from __future__ import annotations

import asyncio
import fnmatch
import posixpath
import shutil
import sqlite3
import tempfile
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

import governance_worker as gw
import pg
from dying_process import PROC, Crash, DyingAudit, DyingLedger, DyingRuntime, Proc
from loomgraph import Agent, tool
from loomgraph.agent.checkpoints import ResumeError
from loomgraph.agent.defaults import DEFAULT_MAX_RECOVERIES
from loomgraph.agent.result import RunResult
from loomgraph.authoring.validate import validate_graph
from loomgraph.governance import (
    NANO_USD,
    BudgetConfig,
    Caps,
    Hooks,
    InMemoryLedger,
    SqliteLedger,
    StandardBudget,
    StandardPermissions,
)
from loomgraph.graph.spec import EdgeSpec, Graph, Limits, NodeSpec
from loomgraph.models import ScriptedModel
from loomgraph.observability import FileAuditLog
from loomgraph.protocols import (
    BudgetExceeded,
    BudgetScope,
    ModelError,
    ModelRequest,
    Reservation,
    Usage,
)
from loomgraph.runtime import InMemoryRuntime
from loomgraph.runtime.sqlite import SqliteRuntime

pg_schema = pg.pg_schema

MODEL = "claude-sonnet-4-5"  # in the price table, so cost caps are real
USERS: tuple[str | None, ...] = ("alice", "bob", None)
METRICS = (
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "cost_usd",
    "model_calls",
    "tool_calls",
    "node_visits",
)
TOOLS = ("read", "delete", "search")  # `delete` is destructive
UNKNOWN = "launch"  # a tool the model calls that does not exist
ARG = {"read": "path", "delete": "path", "search": "q", UNKNOWN: "x"}
PATHS = ("/data/a.txt", "/data/sub/b.txt", "/etc/passwd", "/data/../etc/passwd", "/tmp/x")
QUERIES = ("cats", "rm -rf /", "weather today")
# The documented glob semantics, written out for the canonical paths above: in a path `*`
# stays within a segment and `**` crosses `/`.
PATH_GLOBS: dict[str, Callable[[str], bool]] = {
    "/data/**": lambda p: p.startswith("/data/"),
    "/data/*": lambda p: p.startswith("/data/") and "/" not in p[len("/data/") :],
    "/etc/**": lambda p: p.startswith("/etc/"),
    "/tmp/*": lambda p: p.startswith("/tmp/") and "/" not in p[len("/tmp/") :],
}
QUERY_GLOBS = ("*", "c*", "rm *")
POLICY_RESULTS = ("allow", "deny", "ask", "default", "raise", "junk")
FINAL = {"completed", "limit_reached", "budget_exhausted"}

assert set(gw.DIRECT_PATHS) <= set(PATHS)


def arg_value(tool_name: str, k: int) -> Any:
    """The k-th value of a tool's argument."""
    if ARG[tool_name] == "path":
        return PATHS[k % len(PATHS)]
    if ARG[tool_name] == "q":
        return QUERIES[k % len(QUERIES)]
    return k


# ---------------------------------------------------------------------------- the oracle


@dataclass(frozen=True)
class RuleSpec:
    """A permission rule: a tool name (or `*`) and at most one argument glob."""

    tool: str
    arg: str | None = None
    glob: str | None = None

    @property
    def text(self) -> str:
        return self.tool if self.arg is None else f"{self.tool}({self.arg}={self.glob})"

    def matches(self, tool_name: str, args: dict[str, Any]) -> bool:
        if self.tool not in ("*", tool_name):
            return False
        if self.arg is None:
            return True
        if self.arg not in args:  # a constrained argument the call lacks: no match
            return False
        value = args[self.arg]
        if self.arg == "path":
            assert self.glob is not None
            return PATH_GLOBS[self.glob](posixpath.normpath(value))
        return fnmatch.fnmatchcase(str(value), self.glob or "")


def rule_specs() -> st.SearchStrategy[RuleSpec]:
    paths = st.sampled_from(sorted(PATH_GLOBS))
    queries = st.sampled_from(QUERY_GLOBS)
    return st.one_of(
        st.builds(RuleSpec, st.sampled_from((*TOOLS, "*"))),
        st.builds(RuleSpec, st.sampled_from(("read", "delete", "*")), st.just("path"), paths),
        st.builds(RuleSpec, st.sampled_from(("search", "*")), st.just("q"), queries),
    )


rule_lists = st.lists(rule_specs(), max_size=3)
modes = st.sampled_from((None, "default", "accept_edits", "bypass", "strict"))


@dataclass
class PermissionModel:
    """The drawn rules, and the verdict the documentation says they give a call."""

    allow: list[RuleSpec]
    ask: list[RuleSpec]
    deny: list[RuleSpec]
    mode: str | None
    policy_table: dict[str, str] | None
    bob: dict[str, Any] | None  # bob's own rules and mode
    hook: bool  # a before_tool hook denies searches starting with "rm"

    def build(self) -> StandardPermissions:
        per_user = None
        if self.bob is not None:
            per_user = {
                "bob": {
                    "allow": [r.text for r in self.bob["allow"]],
                    "ask": [r.text for r in self.bob["ask"]],
                    "deny": [r.text for r in self.bob["deny"]],
                    **({"mode": self.bob["mode"]} if self.bob["mode"] else {}),
                }
            }
        return StandardPermissions(
            allow=[r.text for r in self.allow],
            ask=[r.text for r in self.ask],
            deny=[r.text for r in self.deny],
            mode=self.mode,  # type: ignore[arg-type]
            per_user=per_user,
            policy=self.policy if self.policy_table is not None else None,
        )

    def policy(self, call: dict[str, Any], spec: Any, user_id: str | None) -> str:
        assert self.policy_table is not None
        answer = self.policy_table[call["tool"]]
        if answer == "raise":
            raise RuntimeError("the policy broke")
        return [] if answer == "junk" else answer  # type: ignore[return-value]

    def decide(self, tool_name: str, args: dict[str, Any], user: str | None) -> tuple[str, str]:
        """(verdict, rule) for one call, from docs/governance.md."""
        if tool_name not in TOOLS:
            return "deny", "unknown_tool"
        mine = self.bob if user == "bob" else None
        mode = (mine or {}).get("mode") or self.mode or "default"

        def labelled(kind: str) -> list[tuple[str, RuleSpec]]:
            own = [(f"{kind}:{r.text}", r) for r in getattr(self, kind)]
            return own + [(f"user:bob:{kind}:{r.text}", r) for r in (mine or {}).get(kind, [])]

        for label, r in labelled("deny"):
            if r.matches(tool_name, args):
                return "deny", label
        for label, r in labelled("ask"):
            if r.matches(tool_name, args):
                return ("allow", "mode:bypass") if mode == "bypass" else ("ask", label)
        for label, r in labelled("allow"):
            if r.matches(tool_name, args):
                return "allow", label
        if self.policy_table is not None:
            answer = self.policy_table[tool_name]
            if answer in ("raise", "junk"):
                return "deny", "policy:error"
            if answer == "ask" and mode == "bypass":
                return "allow", "mode:bypass"
            if answer != "default":
                return answer, f"policy:{self.policy.__qualname__}"
        if mode == "strict":
            return "deny", "mode:strict:deny"
        if mode == "default" and tool_name == "delete":
            return "ask", "mode:default:destructive"
        return "allow", f"mode:{mode}:allow"

    def hook_denies(self, tool_name: str, args: dict[str, Any]) -> bool:
        return self.hook and tool_name == "search" and str(args.get("q", "")).startswith("rm")

    def outcome(
        self, tool_name: str, args: dict[str, Any], user: str | None, answer: Any
    ) -> tuple[str, str, dict[str, Any]]:
        """The final (verdict, rule, args) of a call, given the approval answer (if asked)."""
        verdict, label = self.decide(tool_name, args, user)
        if verdict == "ask":
            if answer is None:  # nobody answered: the call waits
                return "ask", label, args
            if answer is False:
                return "deny", "approval:denied", args
            if isinstance(answer, dict):
                args = answer["args"]
                again = self.decide(tool_name, args, user)
                if again[0] == "deny":
                    return "deny", again[1], args
            verdict, label = "allow", "approval:granted"
        if verdict == "allow" and self.hook_denies(tool_name, args):
            return "deny", "hook:no_rm", args
        return verdict, label, args


async def no_rm(call: dict[str, Any]) -> str | None:
    """A before_tool hook: no search for `rm …`."""
    if call["tool"] == "search" and str(call["args"].get("q", "")).startswith("rm"):
        return "no rm searches"
    return None


permission_models = st.builds(
    PermissionModel,
    allow=rule_lists,
    ask=rule_lists,
    deny=rule_lists,
    mode=modes,
    policy_table=st.one_of(
        st.none(), st.fixed_dictionaries({t: st.sampled_from(POLICY_RESULTS) for t in TOOLS})
    ),
    bob=st.one_of(
        st.none(),
        st.fixed_dictionaries(
            {"allow": rule_lists, "ask": rule_lists, "deny": rule_lists, "mode": modes}
        ),
    ),
    hook=st.booleans(),
)


# ---------------------------------------------------------------------------- budgets

CAP_VALUES = {  # from "a run or two" to "several steps of several runs"
    "input_tokens": st.integers(200, 20_000),
    "output_tokens": st.integers(20, 3_000),
    "total_tokens": st.integers(300, 25_000),
    "cost_usd": st.sampled_from((0.001, 0.005, 0.02, 0.1)),
    "model_calls": st.integers(1, 30),
    "tool_calls": st.integers(0, 20),
    "node_visits": st.integers(1, 80),
}


@st.composite
def caps(draw: st.DrawFn) -> dict[str, Any]:
    """Caps on up to two metrics."""
    metrics = draw(st.lists(st.sampled_from(METRICS), max_size=2, unique=True))
    return {m: draw(CAP_VALUES[m]) for m in metrics}


@st.composite
def budget_configs(draw: st.DrawFn) -> BudgetConfig:
    per_user = draw(st.one_of(st.none(), caps()))
    users = draw(st.one_of(st.just({}), st.fixed_dictionaries({"bob": caps()})))
    return BudgetConfig(
        **draw(caps()),
        per_user=None if per_user is None else Caps(**per_user),
        users={u: Caps(**c) for u, c in users.items()},
        warn_at=draw(st.sampled_from((None, 0.5, 0.8))),
        model=MODEL,
    )


def user_scope(user: str | None) -> str:
    """The documented ledger scope of a user's caps."""
    return f"user:{user if user is not None else '(anonymous)'}"


def capped_scopes(config: BudgetConfig) -> dict[str, dict[str, float]]:
    """Every ledger scope with caps, and its caps as the user wrote them (cost in USD)."""

    def written(c: Caps | None) -> dict[str, float]:
        return {m: getattr(c, m) for m in METRICS if c is not None and getattr(c, m) is not None}

    out = {"global": written(config)}
    for user in USERS:
        out[user_scope(user)] = written(config.users.get(user, config.per_user))  # type: ignore[arg-type]
    return {scope: limits for scope, limits in out.items() if limits}


# ---------------------------------------------------------------------------- graphs


@st.composite
def graphs(draw: st.DrawFn) -> Graph | str:
    """The built-in `react`, or a small valid graph of function/model/tools nodes."""
    if draw(st.sampled_from(("react", "built", "built"))) == "react":
        return "react"
    prep, direct, after = draw(st.booleans()), draw(st.booleans()), draw(st.booleans())
    max_tokens = draw(st.sampled_from((None, 16, 64, 256)))
    nodes = {
        "model": NodeSpec(kind="model", **({"max_tokens": max_tokens} if max_tokens else {})),
        "tools": NodeSpec(kind="tools", concurrency=draw(st.integers(1, 3))),
    }
    edges = [
        EdgeSpec(source="model", target="tools", when="last_message.tool_calls | length > 0"),
        EdgeSpec(source="model", target="after" if after else "END"),
    ]
    if prep:
        nodes["prep"] = NodeSpec(
            kind="function", call="governance_worker:prep", reads=["input"], writes=[]
        )
        edges.append(EdgeSpec(source="prep", target="model"))
    if after:
        nodes["after"] = NodeSpec(
            kind="function", call="governance_worker:after", reads=["messages"], writes=["output"]
        )
        edges.append(EdgeSpec(source="after", target="END"))
    if direct:  # a function node that calls a tool itself, after each tools node
        nodes["direct"] = NodeSpec(
            kind="function", call="governance_worker:direct", reads=[], writes=[]
        )
        edges += [
            EdgeSpec(source="tools", target="direct"),
            EdgeSpec(source="direct", target="model"),
        ]
    else:
        edges.append(EdgeSpec(source="tools", target="model"))
    graph = Graph(
        name=f"gov-{int(prep)}{int(direct)}{int(after)}-{max_tokens}",
        entry="prep" if prep else "model",
        nodes=nodes,
        edges=edges,
        limits=Limits(
            max_visits=draw(st.integers(4, 40)), max_node_visits=draw(st.integers(2, 12))
        ),
    )
    assert validate_graph(graph) == []
    return graph


# ---------------------------------------------------------------------------- scripts


@dataclass(frozen=True)
class TurnPlan:
    """One scripted model turn: tool calls (none: the answer), usage fractions, a failure."""

    calls: tuple[tuple[str, int], ...]
    prompt_pct: int  # actual prompt tokens as a percentage of the counted prompt
    cached: tuple[int, int]  # percentages of the prompt billed as cache read / cache write
    output_pct: int  # output tokens as a percentage of max_tokens
    fail: str | None  # "retry" (a broken stream, retried), "model_error", "runtime"


turn_plans = st.builds(
    TurnPlan,
    calls=st.lists(
        st.tuples(st.sampled_from((*TOOLS, UNKNOWN)), st.integers(0, 4)), max_size=3
    ).map(tuple),
    prompt_pct=st.integers(0, 100),
    cached=st.tuples(st.integers(0, 100), st.integers(0, 100)),
    output_pct=st.integers(0, 100),
    fail=st.sampled_from((*[None] * 8, "retry", "model_error", "runtime")),
)
scripts = st.lists(turn_plans, min_size=1, max_size=4)
crashes = st.one_of(st.none(), st.none(), st.tuples(st.integers(1, 60), st.booleans()))
# An answering process dies more often in its first writes: the answer window (the answer
# journaled, the run journaled `running`, before the call that uses it).
answer_crashes = st.one_of(crashes, st.tuples(st.integers(1, 4), st.booleans()))


def usage_within(request: ModelRequest, plan: TurnPlan) -> dict[str, int]:
    """Random usage within what the budget reserved (the documented contract): prompt tokens
    at most the counted prompt (characters / 4), output at most max_tokens."""
    counted = request.prompt_chars() // 4 + 1
    prompt = counted * plan.prompt_pct // 100
    read = prompt * plan.cached[0] // 100
    write = (prompt - read) * plan.cached[1] // 100
    output = (request.max_tokens or 4096) * plan.output_pct // 100
    return {
        "input_tokens": prompt - read - write,
        "cache_read_tokens": read,
        "cache_write_tokens": write,
        "output_tokens": output,
    }


# ---------------------------------------------------------------------------- processes


@dataclass(frozen=True)
class Executed:
    """One line of the side-effect ledger: a tool really ran."""

    tool: str
    args: dict[str, Any]
    ref: str  # the call id (every call carries it as its `ref` argument)
    key: str  # the idempotency key
    run_id: str
    audit_seq: int  # the audit log's last seq when the tool ran


# ---------------------------------------------------------------------------- the machine


class GovernanceMachine(RuleBasedStateMachine):
    """Random runs, crashes, resumes and approvals on one journal, ledger and audit log."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.dir = Path(tempfile.mkdtemp(prefix="loomgov-"))
        self.ready = False
        self.counter = 0
        self.calls: dict[str, tuple[str, dict[str, Any], str | None]] = {}  # ref -> call
        self.scripts: dict[str, list[TurnPlan]] = {}  # prompt -> turns
        self.users: dict[str, str | None] = {}  # prompt -> user
        self.failed_once: set[tuple[str, int]] = set()
        self.executed: list[Executed] = []
        self.answers: dict[str, Any] = {}  # call id -> the approval given
        self.crashed: set[str] = set()  # runs whose process died, not resumed since
        self.ever_crashed: set[str] = set()
        # Resumes of each crashed or failed run: past the agent's max_recoveries, a dead letter.
        self.recoveries: dict[str, int] = {}
        self.unfinished: set[str] = set()  # effect keys left unfinished by a crash
        self.stale_holds: dict[str, set[str]] = {}  # run id -> holds its dead process left
        self.failed: set[str] = set()
        self.awaiting: dict[str, dict[str, Any]] = {}  # run id -> the pending call
        self.asked: dict[str, str] = {}  # run id -> the key of the request it waits for
        # Run id -> a request whose answer a resume took up before its process died: the
        # journal holds that answer, so the run never asks it again.
        self.taken: dict[str, str] = {}
        self.finished: dict[str, RunResult] = {}
        self.problems: list[str] = []  # found inside runs (tools, the approval handler)
        self.spent: dict[tuple[str, str], int] = {}
        gw.DIRECT_CALLS.clear()

    def teardown(self) -> None:
        try:
            if self.ready:
                self.loop.run_until_complete(self._close())
        finally:
            self.loop.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    async def _close(self) -> None:
        if isinstance(self.journal, SqliteRuntime):
            await self.journal.close()
        await self.ledger.close()

    # ------------------------------------------------------------------ set-up

    # Subclasses draw the set-up (an @initialize rule) and call this.
    def setup(
        self,
        graph: Graph | str,
        permissions: PermissionModel,
        config: BudgetConfig,
        journal: str,
        ledger: str,
        handler: dict[str, Any] | None,
        max_tokens: int | None,
        keyed: bool,
        hold_wait_s: float,
    ) -> None:
        self.graph = graph
        self.oracle = permissions
        self.permissions = permissions.build()
        self.config = replace(config, hold_wait_s=hold_wait_s)
        self.limits = capped_scopes(config)
        self.handler_table = handler
        self.max_tokens = max_tokens
        # SQLite: every process opens its own connections to the files (and a dead process's
        # are closed, as the OS would); these objects are the test's own, for checking.
        # In memory: one object, shared by the processes.
        self.journal_path = str(self.dir / "journal.db") if journal == "sqlite" else None
        self.ledger_path = (
            (self.journal_path or str(self.dir / "ledger.db")) if ledger == "sqlite" else None
        )
        self.journal: Any = self._journal() or InMemoryRuntime()
        self.ledger: Any = self._ledger() or InMemoryLedger()
        self.audit = FileAuditLog(
            self.dir / "audit.jsonl", key=b"k" if keyed else None, unsigned=not keyed
        )
        self.hooks = Hooks()
        if permissions.hook:
            self.hooks.before_tool(no_rm)
        self.tools = self._tools()
        self.ready = True

    def _tools(self) -> list[Any]:
        async def read(path: str, ref: str, idempotency_key: str) -> str:
            """Read a file."""
            await self._execute("read", {"path": path, "ref": ref}, idempotency_key)
            return f"contents of {path}"

        async def delete(path: str, ref: str, idempotency_key: str) -> str:
            """Delete a file."""
            await self._execute("delete", {"path": path, "ref": ref}, idempotency_key)
            return f"deleted {path}"

        async def search(q: str, ref: str, idempotency_key: str) -> str:
            """Search the web."""
            await self._execute("search", {"q": q, "ref": ref}, idempotency_key)
            return f"results for {q}"

        return [read, tool(delete, destructive=True), search]

    async def _execute(self, name: str, args: dict[str, Any], key: str) -> None:
        """What every tool does: check the caps while runs are in flight, then append to the
        side-effect ledger (unless its process is dead)."""
        proc = PROC.get()
        if proc is not None:
            proc.alive()
        await self._check_caps("while a tool ran")
        run_id = key.split(":")[0]
        if self.stale_holds.get(run_id):  # a resumed run: its dead attempt's holds are gone
            left = self.stale_holds[run_id] & {h.id for h in await self.ledger.holds(run_id)}
            if left:
                self.problems.append(f"run {run_id} resumed still holding {left}")
        if proc is not None:
            proc.alive()
        self.executed.append(Executed(name, args, args["ref"], key, run_id, self.audit.head().seq))

    def _approve(self, call: dict[str, Any], decision: Any) -> Any:
        """The in-process approval handler: the answer already given for this call, if any,
        else its table's answer for the tool (None: wait for `resume(approve=...)`)."""
        tool_name, args, user = self.original(call["id"])
        expected = self.oracle.decide(tool_name, args, user)
        if (decision.verdict, decision.rule) != expected or call["args"] != args:
            self.problems.append(
                f"approval handler asked about {call} with {decision}, expected {expected}"
            )
        assert self.handler_table is not None
        answer = self.answers.get(call["id"], self.handler_table[call["tool"]])
        if answer is not None:
            self.answers[call["id"]] = answer
        return answer

    # One process at a time uses the files: a write lock is never waited for long, and a
    # connection left holding one shows up in seconds, not after the default 30.
    def _journal(self) -> SqliteRuntime | None:
        if self.journal_path is None:
            return None
        return SqliteRuntime(self.journal_path, verify=False, busy_timeout=5.0)

    def _ledger(self) -> SqliteLedger | None:
        return SqliteLedger(self.ledger_path, busy_timeout=5.0) if self.ledger_path else None

    async def in_process(
        self, crash: tuple[int, bool] | None, body: Callable[[Agent], Awaitable[None]]
    ) -> None:
        """Run `body` with a fresh process: an Agent over the journal, ledger and audit log
        (its own connections to the SQLite files, closed when it ends or dies)."""
        proc = Proc(crash)
        journal, ledger = self._journal(), self._ledger()
        model = ScriptedModel(self._respond, name=MODEL)
        model.max_tokens = self.max_tokens  # type: ignore[attr-defined]
        agent = Agent(
            "Use the tools.",
            model=model,
            tools=self.tools,
            runtime=DyingRuntime(journal or self.journal, proc),
            budget=StandardBudget(self.config, DyingLedger(ledger or self.ledger, proc)),
            permissions=self.permissions,
            hooks=self.hooks,
            audit_log=DyingAudit(self.audit, proc),  # type: ignore[arg-type]
            approval_handler=self._approve if self.handler_table else None,
            architecture=self.graph,
        )
        token = PROC.set(proc)
        try:
            await body(agent)
        finally:
            PROC.reset(token)
            for own in (journal, ledger):
                if own is not None:
                    await own.close()

    def run_in_process(
        self, crash: tuple[int, bool] | None, body: Callable[[Agent], Awaitable[Any]]
    ) -> Any:
        out: list[Any] = []

        async def keep(agent: Agent) -> None:
            out.append(await body(agent))

        self.loop.run_until_complete(self.in_process(crash, keep))
        return out[0]

    def _respond(self, request: ModelRequest) -> Any:
        """The script of the run the request belongs to (found by its prompt)."""
        proc = PROC.get()
        if proc is not None:
            proc.alive()
        prompt = next(m["content"] for m in request.messages if m.get("role") == "user")
        turns, i = self.scripts[prompt], request.call_index
        if i >= len(turns):
            return {"text": f"done {prompt}", "usage": {"input_tokens": 1, "output_tokens": 1}}
        plan = turns[i]
        usage = usage_within(request, plan)
        if plan.fail is not None and (prompt, i) not in self.failed_once:
            self.failed_once.add((prompt, i))  # transient: the next attempt succeeds
            if plan.fail == "runtime":
                raise RuntimeError(f"scripted failure {prompt}/{i}")
            raise ModelError(
                f"scripted failure {prompt}/{i}",
                retry_step=plan.fail == "retry",
                usage=Usage.from_dict(usage),
            )
        if not plan.calls:
            return {"text": f"answer {prompt}/{i}", "usage": usage}
        calls = []
        for j, (tool_name, k) in enumerate(plan.calls):
            ref = f"{prompt}/{i}/{j}"
            args = {ARG[tool_name]: arg_value(tool_name, k), "ref": ref}
            self.calls[ref] = (tool_name, dict(args), self.users[prompt])
            calls.append({"id": ref, "tool": tool_name, "args": args})
        return {"tool_calls": calls, "usage": usage}

    def original(self, ref: str) -> tuple[str, dict[str, Any], str | None]:
        """A call as the model (or a `direct` node) made it: tool, args, user."""
        if ref in self.calls:
            return self.calls[ref]
        return gw.DIRECT_CALLS[ref]

    # ------------------------------------------------------------------ outcomes

    async def _run_id_of(self, prompt: str) -> str | None:
        for record in await self.journal.runs():
            if record.initial is not None and record.initial.prompt == prompt:
                return str(record.run_id)
        return None

    async def _settle(
        self, outcome: Any, *, prompt: str | None = None, run_id: str | None = None
    ) -> RunResult | None:
        """File one run's outcome: a result, or the crash of its process."""
        if isinstance(outcome, Crash):
            run_id = run_id or (await self._run_id_of(prompt) if prompt else None)
            if run_id is None:
                return None  # died before the run was journaled: nothing to resume
            self._forget(run_id)
            self.crashed.add(run_id)
            self.ever_crashed.add(run_id)
            # Effects begun but not finished when the process died: the only ones that may
            # run again (with the same key) on resume.
            self.unfinished |= {
                e.key for e in await self.journal.effects(run_id) if e.status != "done"
            }
            # What it still holds counts against the caps until a resume releases it.
            self.stale_holds[run_id] = {h.id for h in await self.ledger.holds(run_id)}
            lease = await self.journal.lease(run_id) if hasattr(self.journal, "lease") else None
            if lease is not None:  # the dead process still holds it: release, as an operator
                await self.journal.release_lease(run_id, lease.owner)
            return None
        if isinstance(outcome, BaseException):
            raise outcome
        result: RunResult = outcome
        self._forget(result.run_id)
        record = await self.journal.load_run(result.run_id)
        assert record is not None and record.status == result.status, (record, result)
        if result.status == "awaiting_approval":
            assert result.pending is not None
            call = result.pending.call
            assert call["id"] not in {e.ref for e in self.executed}, call
            assert self.taken.get(result.run_id) != result.pending.key, (
                f"run {result.run_id} asks again for {result.pending.key}, whose answer a "
                "resume took up before its process died"
            )
            self.awaiting[result.run_id] = call
            self.asked[result.run_id] = result.pending.key
        elif result.status == "failed":
            assert "scripted failure" in result.reason, result.reason
            self.failed.add(result.run_id)
        elif result.status == "budget_exhausted":
            user = result.user_id if result.user_id is not None else "(anonymous)"
            named = [
                f"{scope}:{metric}"
                for scope, limits in self.limits.items()
                if scope in ("global", f"user:{user}")
                for metric in limits
                if f"'{scope}:{metric}'" in result.reason
            ]
            assert named, f"no configured cap named in {result.reason!r}"
            blocks = [
                e["payload"]["cap"]
                for e in self.audit.entries(run_id=result.run_id)
                if e["action"] == "budget_block"
            ]
            assert blocks and blocks[-1] in named, (blocks, named)
        elif result.status == "dead_letter":
            # Failed or crashed on every recovery the agent allows: a dead letter, not resumed.
            assert self.recoveries.get(result.run_id, 0) > DEFAULT_MAX_RECOVERIES, result
        else:
            assert result.status in FINAL, result
        if result.status in FINAL:
            self.finished[result.run_id] = result
        return result

    def _forget(self, run_id: str) -> None:
        self.crashed.discard(run_id)
        self.failed.discard(run_id)
        self.awaiting.pop(run_id, None)

    def _prompt(self, user: str | None, turns: list[TurnPlan]) -> str:
        prompt = f"task-{self.counter}"
        self.counter += 1
        self.scripts[prompt], self.users[prompt] = turns, user
        return prompt

    # ------------------------------------------------------------------ rules

    @rule(
        user=st.sampled_from(USERS),
        mixed=st.booleans(),
        turns=st.lists(scripts, min_size=1, max_size=4),
        crash=crashes,
    )
    def run_concurrently(
        self,
        user: str | None,
        mixed: bool,
        turns: list[list[TurnPlan]],
        crash: tuple[int, bool] | None,
    ) -> None:
        """Several runs at once (of one user, or of several), in one process."""
        runs = [
            (self._prompt(USERS[(USERS.index(user) + i) % 3] if mixed else user, t))
            for i, t in enumerate(turns)
        ]

        async def go(agent: Agent) -> list[Any]:
            return await asyncio.gather(
                *(agent.run(p, user_id=self.users[p]) for p in runs), return_exceptions=True
            )

        outcomes = self.run_in_process(crash, go)
        for prompt, outcome in zip(runs, outcomes, strict=True):
            self.loop.run_until_complete(self._settle(outcome, prompt=prompt))

    # Rules have no preconditions and draw the same values whatever happened before: which
    # runs crash, stop or wait depends on scheduling, and Hypothesis needs data generation
    # that does not. A rule with nothing to do checks something about a finished run.

    @rule(picks=st.lists(st.integers(0, 99), min_size=1, max_size=6), crash=crashes)
    def resume(self, picks: list[int], crash: tuple[int, bool] | None) -> None:
        """Resume crashed or failed runs (several at once), in a fresh process; or resume a
        finished run, which returns its stored result and executes nothing."""
        pool = sorted(self.crashed | self.failed)
        if not pool:
            self._resume_finished(picks[0])
            return
        chosen = sorted({pool[i % len(pool)] for i in picks})
        for run_id in chosen:
            self.recoveries[run_id] = self.recoveries.get(run_id, 0) + 1

        async def go(agent: Agent) -> list[Any]:
            return await asyncio.gather(*(agent.resume(r) for r in chosen), return_exceptions=True)

        outcomes = self.run_in_process(crash, go)
        for run_id, outcome in zip(chosen, outcomes, strict=True):
            self.loop.run_until_complete(self._settle(outcome, run_id=run_id))

    def _resume_finished(self, pick: int) -> None:
        if not self.finished:
            return
        run_id = sorted(self.finished)[pick % len(self.finished)]
        before = len(self.executed)

        async def go(agent: Agent) -> None:
            result = await agent.resume(run_id)
            assert result.to_dict() == self.finished[run_id].to_dict()
            with pytest.raises(ResumeError):  # an approval for a run that waits for none
                await agent.resume(run_id, approve=True)

        self.run_in_process(None, go)
        assert len(self.executed) == before

    @rule(
        choices=st.lists(
            st.tuples(st.sampled_from(("yes", "no", "edit")), st.integers(0, 4)),
            min_size=1,
            max_size=4,
        ),
        crash=answer_crashes,
        again=st.booleans(),
    )
    def approve(
        self, choices: list[tuple[str, int]], crash: tuple[int, bool] | None, again: bool
    ) -> None:
        """Answer pending approvals through `resume(approve=...)`, several runs at once, in
        a fresh process; an answer is used once."""
        if not self.awaiting:
            self._resume_finished(choices[0][1])
            return
        answered: dict[str, Any] = {}
        for run_id, (kind, value) in zip(sorted(self.awaiting), choices, strict=False):
            call = self.awaiting[run_id]
            arg = ARG[call["tool"]]
            others = [v for v in (PATHS if arg == "path" else QUERIES) if v != call["args"][arg]]
            edited = {"args": {arg: others[value % len(others)], "ref": call["id"]}}
            # A call answered before (and asked again after a crash) gets the same answer.
            answered[run_id] = self.answers.setdefault(
                call["id"], {"yes": True, "no": False, "edit": edited}[kind]
            )

        async def go(agent: Agent) -> list[Any]:
            return await asyncio.gather(
                *(agent.resume(r, approve=a) for r, a in answered.items()), return_exceptions=True
            )

        outcomes = self.run_in_process(crash, go)
        for run_id, outcome in zip(answered, outcomes, strict=True):
            if isinstance(outcome, Crash):
                self.loop.run_until_complete(self._note_taken(run_id))
            result = self.loop.run_until_complete(self._settle(outcome, run_id=run_id))
            if again and result is not None and result.status != "awaiting_approval":
                before = len(self.executed)

                async def twice(agent: Agent, run_id: str = run_id) -> None:
                    with pytest.raises(ResumeError):  # an approval is used once
                        await agent.resume(run_id, approve=True)

                self.run_in_process(None, twice)
                assert len(self.executed) == before

    async def _note_taken(self, run_id: str) -> None:
        """After a crash while answering: when the resume had taken the answer up (the run
        reads `running`, or only the answer was journaled), that request is answered."""
        key = self.asked.get(run_id, "")
        record = await self.journal.load_run(run_id)
        answer = await self.journal.effect(run_id, key) if key else None
        if key and (record.status == "running" or (answer and answer.status == "done")):
            self.taken[run_id] = key

    # ------------------------------------------------------------------ invariants

    async def _check_caps(self, when: str) -> None:
        for scope, limits in self.limits.items():
            totals = await self.ledger.totals(scope)
            for metric, cap in limits.items():
                committed = totals.committed(metric)
                bound = cap * NANO_USD if metric == "cost_usd" else cap
                if committed > bound:
                    self.problems.append(
                        f"{when}: {scope}:{metric} spent "
                        f"{totals.spent.get(metric, 0)} + reserved "
                        f"{totals.reserved.get(metric, 0)} > cap {bound}"
                    )

    @invariant()
    def governance_holds(self) -> None:
        if self.ready:
            self.loop.run_until_complete(self._check())

    async def _check(self) -> None:
        # Invariant 1: within every cap; spent never decreases; no hold left behind except
        # by a run whose process died (its resume releases them).
        await self._check_caps("between steps")
        for scope in self.limits:
            totals = await self.ledger.totals(scope)
            for metric in METRICS:
                now, before = totals.spent.get(metric, 0), self.spent.get((scope, metric), 0)
                assert now >= before, f"{scope}:{metric} spent went down: {before} -> {now}"
                self.spent[scope, metric] = now
            # Every tool that ran was charged one tool call, except one its process died
            # running before the charge was recorded (it runs, and is charged, again), or
            # one whose charge its dead process left held (below).
            ran = [
                e
                for e in self.executed
                if scope == "global" or scope == user_scope(self.original(e.ref)[2])
            ]
            cut = sum(1 for e in ran if e.key in self.unfinished)
            charged = totals.spent.get("tool_calls", 0)
            # A hold a dead process left is charged on resume, whether its tool ran or not
            # (counted over every crashed run: a bound, whichever user's scope this is).
            crash_charged = 0
            for run_id in self.ever_crashed:
                for charge in await self.ledger.charges(run_id):
                    crash_charged += charge.amounts.get("tool_calls", 0)
            # A call journaled done before its process died before charging it: its hold is
            # kept, and charged when the run is resumed (the outcome is journaled first).
            held = sum(
                h.amounts.get("tool_calls", 0)
                for h in await self.ledger.holds()
                if h.run_id in self.crashed and scope in h.scopes
            )
            assert len(ran) - cut <= charged + held <= len(ran) + crash_charged + held, (
                f"{scope}: {len(ran)} tools ran ({cut} cut by a crash), {charged} charged, "
                f"{held} held by dead processes"
            )
        for hold in await self.ledger.holds():
            assert hold.run_id in self.crashed, f"hold left by run {hold.run_id}: {hold}"
        assert not self.problems, self.problems

        # Invariant 2: nothing denied, awaiting or refused ever ran; what ran, ran with the
        # arguments it was allowed with, and twice (with one key) only after a crash.
        for e in self.executed:
            tool_name, args, user = self.original(e.ref)
            verdict, rule_name, allowed = self.oracle.outcome(
                tool_name, args, user, self.answers.get(e.ref)
            )
            assert verdict == "allow", f"{e} ran, but its verdict is {verdict} ({rule_name})"
            assert e.tool == tool_name and e.args == allowed, (e, allowed)
        ran = {e.ref for e in self.executed}
        for pending in self.awaiting.values():
            assert pending["id"] not in ran, f"{pending} awaits approval, but it ran"
        keys: dict[str, set[str]] = {}
        for e in self.executed:
            keys.setdefault(e.ref, set()).add(e.key)
        assert all(len(k) == 1 for k in keys.values()), keys
        for key, count in Counter(e.key for e in self.executed).items():
            assert count == 1 or key in self.unfinished, f"{key} ran {count} times"

        # Invariant 3: an earlier allow (and tool request) in a verified audit log.
        verified = self.audit.verify()
        assert verified.ok, verified
        entries = list(self.audit.entries())
        allowed_at: dict[tuple[str, str], int] = {}
        requested_at: dict[tuple[str, str], int] = {}
        for entry in entries:
            payload = entry["payload"]
            if entry["action"] == "permission_decision":
                ref = payload["call_id"]
                tool_name, args, user = self.original(ref)
                if payload["verdict"] == "ask":
                    # The run stopped to ask (or, resumed with no answer, still waits): the
                    # rule that asked, or the journaled request that binds the call.
                    asked = self.oracle.decide(tool_name, args, user)
                    assert asked[0] == "ask", (payload, asked)
                    assert payload["rule"] in (asked[1], "approval:pending"), (payload, asked)
                    continue
                verdict, rule_name, _ = self.oracle.outcome(
                    tool_name, args, user, self.answers.get(ref)
                )
                assert (payload["verdict"], payload["rule"]) == (verdict, rule_name), (
                    payload,
                    verdict,
                    rule_name,
                )
                if verdict == "allow":
                    allowed_at.setdefault((entry["run_id"], ref), entry["seq"])
            elif entry["action"] == "tool_request":
                requested_at.setdefault((entry["run_id"], payload["call_id"]), entry["seq"])
        for e in self.executed:
            assert allowed_at.get((e.run_id, e.ref), 1 << 60) <= e.audit_seq, (
                f"{e} ran with no earlier allow in the audit log"
            )
            assert requested_at.get((e.run_id, e.ref), 1 << 60) <= e.audit_seq, e


SETUP = {
    "graph": graphs(),
    "journal": st.sampled_from(("memory", "sqlite")),
    "ledger": st.sampled_from(("memory", "sqlite")),
    "max_tokens": st.sampled_from((32, 128, 512, None)),
    "keyed": st.booleans(),
    # How long a reservation waits for other runs' holds: not at all, or briefly. A dead
    # process's holds stay until its run is resumed, so a later run waits the whole bound
    # for them (30 s by default); short bounds keep that quick, and the caps hold for any.
    "hold_wait_s": st.sampled_from((0.0, 0.05, 0.5)),
}
handlers = st.fixed_dictionaries({t: st.sampled_from((True, False, None)) for t in TOOLS})


class AnyGovernance(GovernanceMachine):
    """Everything random: rules, caps, the approval handler."""

    @initialize(
        permissions=permission_models,
        config=budget_configs(),
        handler=st.one_of(st.none(), handlers),
        **SETUP,
    )
    def init(self, **drawn: Any) -> None:
        self.setup(**drawn)


class ApprovalGovernance(GovernanceMachine):
    """Rules that ask a lot, few caps, mostly no approval handler: approvals and edits."""

    @initialize(
        permissions=st.builds(
            PermissionModel,
            allow=rule_lists,
            ask=st.lists(rule_specs(), min_size=1, max_size=3),
            deny=st.lists(rule_specs(), max_size=1),
            mode=st.sampled_from(("default", "default", "accept_edits", "strict")),
            policy_table=st.one_of(
                st.none(),
                st.fixed_dictionaries(
                    {t: st.sampled_from(("ask", "ask", "allow", "default")) for t in TOOLS}
                ),
            ),
            bob=st.none(),
            hook=st.booleans(),
        ),
        config=st.one_of(st.just(BudgetConfig(model=MODEL)), budget_configs()),
        handler=st.one_of(st.none(), st.none(), handlers),
        **SETUP,
    )
    def init(self, **drawn: Any) -> None:
        self.setup(**drawn)


class BudgetGovernance(GovernanceMachine):
    """Permissive rules and caps for every user: budgets under concurrency and crashes."""

    @initialize(
        permissions=st.builds(
            PermissionModel,
            allow=st.just([]),
            ask=st.just([]),
            deny=st.lists(rule_specs(), max_size=1),
            mode=st.sampled_from(("accept_edits", "bypass")),
            policy_table=st.none(),
            bob=st.none(),
            hook=st.just(False),
        ),
        config=st.builds(
            BudgetConfig,
            per_user=caps().map(lambda c: Caps(**c)),
            warn_at=st.sampled_from((None, 0.8)),
            model=st.just(MODEL),
            **{
                m: st.one_of(st.none(), v)
                for m, v in CAP_VALUES.items()
                if m in ("model_calls", "cost_usd", "tool_calls")
            },
        ),
        handler=st.none(),
        **SETUP,
    )
    def init(self, **drawn: Any) -> None:
        self.setup(**drawn)


MACHINE_SETTINGS = settings(
    max_examples=25,
    stateful_step_count=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def test_governance_invariants_hold_for_random_rules_caps_runs_crashes_and_approvals() -> None:
    run_state_machine_as_test(AnyGovernance, settings=MACHINE_SETTINGS)


def test_governance_invariants_hold_when_approvals_are_asked_and_answered_at_random() -> None:
    run_state_machine_as_test(ApprovalGovernance, settings=MACHINE_SETTINGS)


def test_governance_invariants_hold_for_tight_caps_under_concurrency_and_crashes() -> None:
    run_state_machine_as_test(BudgetGovernance, settings=MACHINE_SETTINGS)


# ----------------------------------------------------------------------- concurrent reservations


@dataclass(frozen=True)
class Effect:
    """One effect of a run: a model call sized to the caps (`fit_output`, then the call's
    `reserve`, as the engine makes them) or a tool call; the share of its hold it spends
    (None: released unspent); how often it lets the other runs go on meanwhile."""

    model: bool
    spent_pct: int | None
    yields: int


effects = st.builds(
    Effect, st.booleans(), st.one_of(st.none(), st.integers(0, 100)), st.integers(0, 3)
)
TIGHT_CAPS = {
    "output_tokens": st.integers(20, 600),
    "total_tokens": st.integers(100, 1_200),
    "cost_usd": st.sampled_from((0.001, 0.003, 0.01)),
    "model_calls": st.integers(1, 8),
    "tool_calls": st.integers(0, 8),
}


@given(
    caps=st.fixed_dictionaries({}, optional=TIGHT_CAPS),
    runs=st.lists(st.lists(effects, min_size=1, max_size=5), min_size=2, max_size=6),
    prompt=st.integers(1, 60),
    ledger_kind=st.sampled_from(("memory", "sqlite")),
)
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_concurrent_reservations_wait_for_each_others_holds_and_never_pass_a_cap(
    caps: dict[str, Any], runs: list[list[Effect]], prompt: int, ledger_kind: str
) -> None:
    """Runs of one user reserve at once under small caps, each holding one effect at a
    time; a reservation that only their holds stand in the way of waits for them. At every
    step `spent + reserved <= cap`; no wait runs out (every hold is settled soon, and no
    waiter holds anything: no cycle); every refusal is one by spending (what was spent by
    the end leaves no room for the least the effect needs); no hold is left, and `spent` is
    what the settlements added."""
    asyncio.run(_reserve_concurrently(caps, runs, prompt, ledger_kind))


async def _reserve_concurrently(
    caps: dict[str, Any], runs: list[list[Effect]], prompt: int, ledger_kind: str
) -> None:
    folder = Path(tempfile.mkdtemp(prefix="loomgraph-concurrent-"))
    ledger: Any = SqliteLedger(folder / "ledger.db") if ledger_kind == "sqlite" else None
    ledger = ledger or InMemoryLedger()
    config = BudgetConfig(model=MODEL, per_user=Caps(**caps), hold_wait_s=30.0)
    budget = StandardBudget(config, ledger)
    limits = Caps(**caps).limits()
    added: Counter[str] = Counter()
    refusals: list[tuple[BudgetExceeded, dict[str, int]]] = []
    problems: list[str] = []

    async def check(when: str) -> None:
        totals = await budget.totals("user:alice")
        for metric, cap in limits.items():
            if totals.committed(metric) > cap:
                problems.append(f"{when}: {metric} {totals.committed(metric)} > cap {cap}")

    async def run(index: int, plan: list[Effect]) -> None:
        scope = BudgetScope(f"run-{index}", "alice")
        for step, effect in enumerate(plan):
            least = Usage(input_tokens=prompt, output_tokens=1, model_calls=1)
            kind = "model" if effect.model else "tool"
            amount = least if effect.model else Usage(tool_calls=1)
            try:
                if effect.model:
                    room = await budget.fit_output(scope, prompt, None)
                    amount = Usage(input_tokens=prompt, output_tokens=room, model_calls=1)
                held = await budget.reserve(Reservation(scope, kind, amount))  # type: ignore[arg-type]
            except BudgetExceeded as err:
                need = budget.worst_case(
                    Reservation(scope, kind, least if effect.model else amount)
                )  # type: ignore[arg-type]
                refusals.append((err, need))
                continue
            await check(f"run {index} step {step} held")
            for _ in range(effect.yields):
                await asyncio.sleep(0)
            if effect.spent_pct is None:
                await budget.release(held)
            else:
                out = amount.output_tokens * effect.spent_pct // 100
                actual = Usage(input_tokens=amount.input_tokens, output_tokens=out)
                added.update(await budget.settle(held, actual if effect.model else amount))
            await check(f"run {index} step {step} ended")

    try:
        await asyncio.gather(*(run(i, plan) for i, plan in enumerate(runs)))
        totals = await budget.totals("user:alice")
        holds = await ledger.holds()
    finally:
        await ledger.close()
        shutil.rmtree(folder, ignore_errors=True)
    assert problems == []
    assert holds == [] and not any(totals.reserved.values()), (holds, totals.reserved)
    assert {m: n for m, n in totals.spent.items() if n} == {m: n for m, n in added.items() if n}
    for err, need in refusals:
        assert "waited" not in err.detail, err  # every wait ended with a hold settled
        metric = err.cap.rpartition(":")[2]
        if metric != "cost_usd":  # (the cost of one output token is rounded when sized)
            left = limits[metric] - totals.spent.get(metric, 0)
            assert need.get(metric, 0) > left, (err, need, totals.spent)


# ---------------------------------------------------------------------------- bugs found on the way


async def test_a_reservation_cancelled_while_waiting_for_sqlite_leaves_the_ledger_usable(
    tmp_path: Path,
) -> None:
    """A budget reservation cancelled while its `BEGIN IMMEDIATE` waits for SQLite's write
    lock (held by another process) must not leave the ledger's connection inside a
    transaction. Here a node's `timeout` cancels it; a sibling tool call's BudgetExceeded or
    approval stop (which cancel the other calls of the turn) or a caller cancelling the run
    do the same, and the state machines above meet it that way now and then."""
    db = tmp_path / "ledger.db"
    budget = StandardBudget(BudgetConfig(per_user=Caps(model_calls=10)), SqliteLedger(db))
    graph = Graph(
        name="slow",
        entry="model",
        nodes={"model": NodeSpec(kind="model", timeout=0.2)},
        edges=[EdgeSpec(source="model", target="END")],
    )
    other = sqlite3.connect(db, isolation_level=None, timeout=5)  # another process's
    hooks, armed = Hooks(), []

    @hooks.on_event
    async def another_process_writes(event: Any) -> None:
        if armed and event.kind == "node_started":
            # It holds the write lock from before the model call reserves until after the
            # node's timeout fired.
            other.execute("BEGIN IMMEDIATE")
            asyncio.get_running_loop().call_later(0.6, other.execute, "ROLLBACK")

    agent = Agent(
        "x",
        model=ScriptedModel(["one", "two", "three"]),
        budget=budget,
        hooks=hooks,
        architecture=graph,
    )
    try:
        assert (await agent.run("first", user_id="alice")).status == "completed"
        armed.append(True)
        timed_out = await agent.run("second", user_id="alice")
        armed.clear()
        assert timed_out.status == "failed" and "timeout" in timed_out.reason
        assert (await agent.run("third", user_id="alice")).status == "completed"
        other.execute("BEGIN IMMEDIATE")  # and the other process can write again
        other.execute("COMMIT")
        totals = await budget.totals("user:alice")
        assert totals.spent["model_calls"] == 2 and not totals.reserved
    finally:
        other.close()
        await budget.ledger.close()


async def test_a_call_that_ran_beside_an_approval_stop_is_charged_once_and_runs_once(
    tmp_path: Path,
) -> None:
    """Two calls in one turn: `read` runs, while `delete` waits for an approval handler that
    then leaves the decision to a person (None). The run stops `awaiting_approval`; the read
    ran, so it must be charged and journaled — and replayed, not run again, on resume."""
    ran: list[str] = []
    read_ran = asyncio.Event()

    async def read(path: str, idempotency_key: str) -> str:
        """Read a file."""
        ran.append(idempotency_key)
        read_ran.set()
        return f"contents of {path}"

    @tool(destructive=True)
    async def delete(path: str) -> str:
        """Delete a file."""
        return f"deleted {path}"

    async def handler(call: dict[str, Any], decision: Any) -> Any:
        await read_ran.wait()  # a person looks at the call while the read runs...
        return None  # ... and answers later, through resume(approve=...)

    runtime = SqliteRuntime(tmp_path / "journal.db")  # the budget's ledger goes in its file
    budget = StandardBudget(BudgetConfig(per_user=Caps(tool_calls=2)))
    script = ScriptedModel(
        [
            {
                "tool_calls": [
                    {"tool": "read", "args": {"path": "/a"}},
                    {"tool": "delete", "args": {"path": "/b"}},
                ]
            },
            "done",
        ]
    )
    agent = Agent(
        "x",
        model=script,
        tools=[read, delete],
        runtime=runtime,
        budget=budget,
        permissions=StandardPermissions(),
        approval_handler=handler,
    )
    try:
        first = await agent.run("go", user_id="alice")
        assert first.status == "awaiting_approval" and len(ran) == 1
        # What ran was charged (a tool call is spent, not merely held and then released).
        assert (await agent.deps.budget.totals("user:alice")).spent.get("tool_calls") == 1
        done = await agent.resume(first.run_id, approve=True)
        assert done.status == "completed"
        effects = {e.key: e for e in await runtime.effects(first.run_id)}
        assert len(ran) == 1, (
            f"read ran {len(ran)} times, attempts "
            f"{effects[ran[0]].attempts}, although nothing crashed"
        )
        # Two tools ran: the cap of two tool calls was not exceeded, and both were charged.
        assert (await agent.deps.budget.totals("user:alice")).spent.get("tool_calls") == 2
    finally:
        await agent.deps.budget.ledger.close()
        await runtime.close()


async def test_a_second_approval_after_a_crash_is_refused_not_silently_overridden(
    tmp_path: Path,
) -> None:
    """The process answering an approval dies at each journal write of the resume, until the
    answer (yes) is journaled. The resume journals the answer before the run reads `running`,
    so a death before it leaves the run waiting for the same request, nothing used. Once the
    yes is journaled (the run still reads `awaiting_approval`: the death came right after
    it), a second, different answer (no) must be refused with ResumeError — not accepted
    and then ignored while the call runs — and a plain resume goes on with the journaled
    answer, running the call once."""
    ran: list[str] = []

    @tool(destructive=True)
    def delete(path: str) -> str:
        """Delete a file."""
        ran.append(path)
        return f"deleted {path}"

    script = [{"tool_calls": [{"tool": "delete", "args": {"path": "/tmp/x"}}]}, "done"]
    journal = SqliteRuntime(tmp_path / "journal.db")

    def agent(runtime: Any) -> Agent:
        return Agent(
            "x",
            model=ScriptedModel(script),
            tools=[delete],
            runtime=runtime,
            permissions=StandardPermissions(),
        )  # default mode: delete asks

    try:
        first = await agent(journal).run("clean up")
        assert first.status == "awaiting_approval"
        for n in range(1, 20):  # die after the Nth journal write, until the yes is journaled
            record = await journal.load_run(first.run_id)
            assert record is not None and record.status == "awaiting_approval" and ran == []
            with pytest.raises(Crash):
                await agent(DyingRuntime(journal, Proc((n, True)))).resume(
                    first.run_id, approve=True
                )
            lease = await journal.lease(first.run_id)
            if lease is not None:  # the dead process's lease, released as an operator would
                await journal.release_lease(first.run_id, lease.owner)
            if any(
                ":approval:" in e.key and e.status == "done"
                for e in await journal.effects(first.run_id)
            ):
                break
        record = await journal.load_run(first.run_id)
        assert record is not None and record.status == "awaiting_approval" and ran == []
        with pytest.raises(ResumeError):
            await agent(journal).resume(first.run_id, approve=False)
        assert ran == []
        done = await agent(journal).resume(first.run_id)
        assert done.status == "completed" and ran == ["/tmp/x"]
    finally:
        await journal.close()


# ---------------------------------------------------------------------------- two processes


def run_two_processes(
    *args: str, runs: int = 10, calls: int = 10, cap: int = 15
) -> list[dict[str, Any]]:
    """Two worker processes, each starting `runs` runs of alice at once after one gate."""
    flags = [*args, "--runs", str(runs), "--calls", str(calls), "--cap", str(cap)]
    return gw.run_gated([*flags, "--cost-cap", "1.0"], 2, timeout=120)


async def check_one_cap(results: list[dict[str, Any]], ledger: Any, runtime: Any, cap: int) -> None:
    """The 20 runs together spent exactly the cap, never more; the stopped ones say so."""
    try:
        totals = await ledger.totals("user:alice")
        holds = await ledger.holds()
        records = {r.run_id: r for r in await runtime.runs("alice")}
    finally:
        await ledger.close()
        await runtime.close()
    assert len(results) == 20 and len(records) == 20
    # Each process alone would make 100 model calls: together they stopped at the cap.
    assert sum(r["usage"].get("model_calls", 0) for r in results) == cap
    assert totals.spent.get("model_calls", 0) == cap
    assert 0 < totals.spent.get("cost_usd", 0) <= 1.0 * NANO_USD
    assert holds == [] and not any(totals.reserved.values()), (holds, totals.reserved)
    statuses = Counter(r["status"] for r in results)
    assert statuses["completed"] <= cap // 10 and statuses["budget_exhausted"] >= 20 - cap // 10
    for r in results:
        assert r["status"] in ("completed", "budget_exhausted"), r
        assert records[r["run_id"]].status == r["status"]
        if r["status"] == "budget_exhausted":
            assert "'user:alice:model_calls'" in r["reason"], r["reason"]


async def test_twenty_runs_of_one_user_in_two_processes_share_one_sqlite_cap(
    tmp_path: Path,
) -> None:
    db = tmp_path / "shared.db"
    results = run_two_processes("--journal", f"sqlite:{db}")
    # The Agent put the ledger in the journal's file: one file holds both.
    with sqlite3.connect(db) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert {"runs", "transitions", "loom_budget_scopes", "loom_budget_holds"} <= tables
    await check_one_cap(results, SqliteLedger(db), SqliteRuntime(db), 15)


@pytest.mark.postgres
async def test_twenty_runs_of_one_user_in_two_processes_share_one_postgres_cap(
    pg_schema: str,
) -> None:
    from loomgraph.governance import PostgresLedger
    from loomgraph.runtime.postgres import PostgresRuntime

    dsn = pg.postgres_dsn()
    results = await asyncio.to_thread(run_two_processes, "--journal", dsn, "--schema", pg_schema)
    await check_one_cap(
        results, PostgresLedger(dsn, schema=pg_schema), PostgresRuntime(dsn, schema=pg_schema), 15
    )
