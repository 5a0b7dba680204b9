"""The audit trail of whole runs: every entry the framework records, and what it never holds.

Secrets are planted in the instructions, the prompt, memory, tool arguments, tool output and
the Anthropic API key; the whole log (the file's bytes, the PostgreSQL table's rows) is then
searched for them. With `capture_content=True` the documented content fields carry them.
"""

from __future__ import annotations

import ast
import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import pg
from fake_servers import FakeServer, Reply, sse_message
from loomgraph import Agent
from loomgraph.engine import audit_trail
from loomgraph.governance import BudgetConfig, Caps, StandardBudget
from loomgraph.memory import InMemoryMemory
from loomgraph.models import ScriptedModel
from loomgraph.observability import FileAuditLog, NoAuditLog, PostgresAuditLog
from loomgraph.protocols import AuditAction, AuditMode, ModelError, ModelRequest, Usage
from loomgraph.runtime import InMemoryRuntime

pg_schema = pg.pg_schema

KEY = b"trail-key"
SECRETS = {
    "instructions": "SECRET-INSTR-1b7e",
    "prompt": "SECRET-PROMPT-52aa",
    "memory": "SECRET-MEMORY-9c01",
    "args": "SECRET-ARGS-77d3",
    "output": "SECRET-OUTPUT-e4f0",
    "answer": "SECRET-ANSWER-0d19",
    "api_key": "sk-ant-SECRET-APIKEY-6f2b",
}


async def lookup(query: str) -> str:
    """Look something up."""
    return f"found: {SECRETS['output']} for {query}"


def _script(seen: list[ModelRequest]) -> ScriptedModel:
    def turn(request: ModelRequest) -> object:
        seen.append(request)
        if request.call_index == 0:
            return {"tool_calls": [{"tool": "lookup", "args": {"query": SECRETS["args"]}}]}
        return f"the answer is {SECRETS['answer']}"

    return ScriptedModel(turn)


async def _memory() -> InMemoryMemory:
    memory = InMemoryMemory()
    # The fact's words match the prompt's, so the seed puts it in the system prompt.
    await memory.add_fact("alice", "ledger", "code", f"ledger code {SECRETS['memory']}")
    return memory


def _prompt() -> str:
    return f"what is the ledger code? {SECRETS['prompt']}"


async def _scripted_run(audit: Any) -> None:
    """A ReAct run on a scripted model with one tool call; checks the secrets reached it."""
    seen: list[ModelRequest] = []
    budget = StandardBudget(BudgetConfig(per_user=Caps(tool_calls=5, model_calls=5)))
    agent = Agent(
        f"You help. {SECRETS['instructions']}",
        model=_script(seen),
        tools=[lookup],
        memory=await _memory(),
        budget=budget,
        audit_log=audit,
    )
    result = await agent.run(_prompt(), user_id="alice", session_id="s1")
    assert result.ok, result.reason
    assert SECRETS["answer"] in str(result.output)
    # The planted strings really went through the run.
    assert SECRETS["memory"] in seen[0].system and SECRETS["instructions"] in seen[0].system
    assert SECRETS["output"] in str(seen[1].messages)


@pytest.fixture
def anthropic(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeServer]:
    srv = FakeServer().start()
    monkeypatch.setenv("ANTHROPIC_BASE_URL", srv.url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRETS["api_key"])
    yield srv
    srv.stop()


async def _anthropic_run(server: FakeServer, audit: Any) -> None:
    """The same run on the Anthropic adapter against the loopback Messages API."""
    server.add(
        Reply(
            events=sse_message(
                [("tool", ("toolu_1", "lookup", [f'{{"query": "{SECRETS["args"]}"}}']))],
                stop_reason="tool_use",
            )
        ),
        Reply(events=sse_message([("text", [f"it is {SECRETS['answer']}"])])),
    )
    agent = Agent(
        f"You help. {SECRETS['instructions']}",
        model="claude-sonnet-4-6",
        tools=[lookup],
        memory=await _memory(),
        audit_log=audit,
    )
    result = await agent.run(_prompt(), user_id="alice")
    assert result.ok, result.reason
    assert SECRETS["api_key"] in str(server.requests[0].headers)  # the key was sent
    assert SECRETS["memory"] in str(server.requests[0].body)
    assert SECRETS["output"] in str(server.requests[1].body)


def _found(text: str, secrets: dict[str, str] = SECRETS) -> list[str]:
    return [name for name, secret in secrets.items() if secret in text]


# --------------------------------------------------------------------------- the trail


async def test_a_react_run_records_every_step(tmp_path: Path) -> None:
    audit = FileAuditLog(tmp_path / "audit.jsonl", key=KEY)
    runtime = InMemoryRuntime()
    seen: list[ModelRequest] = []
    budget = StandardBudget(BudgetConfig(per_user=Caps(tool_calls=5, model_calls=5)))
    agent = Agent(
        "x", model=_script(seen), tools=[lookup], budget=budget, audit_log=audit, runtime=runtime
    )
    result = await agent.run("go", user_id="alice")
    assert result.ok
    entries = list(audit.entries())
    actions = [e["action"] for e in entries]
    assert actions[0] == AuditAction.RUN_STARTED and actions[-1] == AuditAction.RUN_COMPLETED
    assert actions.count(AuditAction.MODEL_CALL) == 2
    for action in (
        AuditAction.PERMISSION_DECISION,
        AuditAction.TOOL_REQUEST,
        AuditAction.TOOL_RESULT,
        AuditAction.BUDGET_RESERVE,
        AuditAction.BUDGET_SETTLE,
        AuditAction.TRANSITION,
    ):
        assert action in actions, action
    by_action: dict[str, list[dict[str, Any]]] = {}
    for e in entries:
        by_action.setdefault(e["action"], []).append(e["payload"])
        assert e["run_id"] == result.run_id and e["user_id"] == "alice"
    args_hash = audit_trail.args_hash({"query": SECRETS["args"]})
    (request,) = by_action[AuditAction.TOOL_REQUEST]
    assert request == {"call_id": request["call_id"], "tool": "lookup", "args_hash": args_hash,
                       "rule": request["rule"]}  # fmt: skip
    (decision,) = by_action[AuditAction.PERMISSION_DECISION]
    assert (decision["verdict"], decision["args_hash"]) == ("allow", args_hash)
    (done,) = by_action[AuditAction.TOOL_RESULT]
    assert done == {"call_id": request["call_id"], "tool": "lookup", "is_error": False}
    first_call = by_action[AuditAction.MODEL_CALL][0]
    assert first_call["model"] == "scripted" and first_call["usage"]["model_calls"] == 1
    assert first_call["tool_calls"] == [
        {"call_id": request["call_id"], "tool": "lookup", "args_hash": args_hash}
    ]
    kinds = [(p["kind"], p["amount"]) for p in by_action[AuditAction.BUDGET_RESERVE]]
    assert ("tool", {"tool_calls": 1}) in kinds and any(k == "model" for k, _ in kinds)
    settled = by_action[AuditAction.BUDGET_SETTLE]
    assert {p["reservation"] for p in settled} == {
        p["reservation"] for p in by_action[AuditAction.BUDGET_RESERVE]
    }
    # What each settlement added to the spending: the tool call, once.
    assert {"tool": {"tool_calls": 1}}.items() <= {
        p["kind"]: p["charged"] for p in settled if p["kind"] == "tool"
    }.items()
    # One transition entry per journaled transition, with the same seq, node and visit.
    journal = await runtime.transitions(result.run_id)
    moves = by_action[AuditAction.TRANSITION]
    assert [(m["seq"], m["node"], m["visit"], m["next"]) for m in moves] == [
        (t.seq, t.node, t.visit, t.next_node) for t in journal
    ]
    assert all(set(m) == {"seq", "node", "visit", "next"} for m in moves)  # never the state
    ended = by_action[AuditAction.RUN_COMPLETED][0]
    assert ended["status"] == "completed" and ended["usage"]["model_calls"] == 2
    assert "output" not in ended
    assert audit.verify().ok


async def test_a_budget_block_is_recorded_with_its_cap(tmp_path: Path) -> None:
    audit = FileAuditLog(tmp_path / "audit.jsonl", key=KEY)
    budget = StandardBudget(BudgetConfig(per_user=Caps(tool_calls=0)))
    agent = Agent("x", model=_script([]), tools=[lookup], budget=budget, audit_log=audit)
    result = await agent.run("go", user_id="bob")
    assert result.status == "budget_exhausted"
    (block,) = [e["payload"] for e in audit.entries() if e["action"] == AuditAction.BUDGET_BLOCK]
    assert block["cap"] == "user:bob:tool_calls"
    ended = [e["payload"] for e in audit.entries() if e["action"] == AuditAction.RUN_COMPLETED]
    assert ended[-1]["status"] == "budget_exhausted"


class _Overloaded:
    """A model whose every call fails for good after billing its prompt."""

    name = "overloaded"

    async def stream(self, request: ModelRequest) -> Any:
        raise ModelError("HTTP 400: prompt is too long", status=400, usage=Usage(input_tokens=7))
        yield  # an async generator


@pytest.mark.parametrize("capture", [False, True])
async def test_a_failed_model_call_is_recorded_with_its_error(
    tmp_path: Path, capture: bool
) -> None:
    """The provider's message only with content capture: a provider may quote the prompt."""
    audit = FileAuditLog(tmp_path / "audit.jsonl", key=KEY, capture_content=capture)
    agent = Agent("x", model=_Overloaded(), audit_log=audit)
    result = await agent.run("go", user_id="bob")
    assert result.status == "failed"
    (call,) = [e["payload"] for e in audit.entries() if e["action"] == AuditAction.MODEL_CALL]
    assert call["finish_reason"] == "error" and call["model"] == "overloaded"
    shown = {"type": "ModelError", "status": 400}
    if capture:
        shown["message"] = "HTTP 400: prompt is too long"
    assert call["error"] == shown
    assert call["usage"]["input_tokens"] == 7
    assert audit.verify().ok


async def _cancelled_mid_tool(agent: Agent) -> str:
    """Start a run, cancel it while its tool runs (the tool's effect stays unfinished)."""
    task = asyncio.create_task(agent.run("go", user_id="carol"))
    await asyncio.wait_for(STARTED.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (run,) = await agent.deps.runtime.runs()
    return str(run.run_id)


STARTED = asyncio.Event()


async def slow(query: str) -> str:
    """Wait until cancelled the first time; answer at once afterwards."""
    if not STARTED.is_set():
        STARTED.set()
        await asyncio.Event().wait()
    return "ok"


@pytest.fixture
def fresh_started() -> Iterator[None]:
    global STARTED
    STARTED = asyncio.Event()
    yield


def _slow_script() -> ScriptedModel:
    return ScriptedModel([{"tool_calls": [{"tool": "slow", "args": {"query": "q"}}]}, "done"])


async def test_a_recovery_names_the_effects_left_unknown(
    tmp_path: Path, fresh_started: None
) -> None:
    audit = FileAuditLog(tmp_path / "audit.jsonl", key=KEY)
    agent = Agent("x", model=_slow_script(), tools=[slow], audit_log=audit)
    run_id = await _cancelled_mid_tool(agent)
    ended = [e["payload"] for e in audit.entries() if e["action"] == AuditAction.RUN_COMPLETED]
    assert ended == [{"status": "cancelled", "reason": "cancelled by the caller", "usage": {}}]
    result = await agent.resume(run_id)
    assert result.ok, result.reason
    entries = [e for e in audit.entries() if e["run_id"] == run_id]
    actions = [e["action"] for e in entries]
    recovered = actions.index(AuditAction.CRASH_RECOVERED)
    # The run's last error only with content capture (an error's message may quote content).
    assert entries[recovered]["payload"] == {"status": "cancelled", "recoveries": 1}
    unknown = [e["payload"] for e in entries if e["action"] == AuditAction.EFFECT_UNKNOWN]
    assert [(u["kind"], u["status"]) for u in unknown] == [("tool", "unknown_after_crash")]
    assert actions.index(AuditAction.EFFECT_UNKNOWN) > recovered
    assert audit.verify().ok


@pytest.mark.parametrize("capture", [False, True])
async def test_a_dead_letter_is_recorded(
    tmp_path: Path, fresh_started: None, capture: bool
) -> None:
    audit = FileAuditLog(tmp_path / "audit.jsonl", key=KEY, capture_content=capture)
    agent = Agent("x", model=_slow_script(), tools=[slow], audit_log=audit, max_recoveries=0)
    run_id = await _cancelled_mid_tool(agent)
    result = await agent.resume(run_id)
    assert result.status == "dead_letter"
    (dead,) = [e for e in audit.entries() if e["action"] == AuditAction.DEAD_LETTER]
    assert dead["run_id"] == run_id
    shown = {"status": "cancelled", "recoveries": 0}
    if capture:  # the run's last error: its message may quote what the run handled
        shown["reason"] = "cancelled by the caller"
    assert dead["payload"] == shown


# --------------------------------------------------------------------------- secrets


async def test_no_secret_reaches_the_audit_log_file(tmp_path: Path, anthropic: FakeServer) -> None:
    path = tmp_path / "audit.jsonl"
    audit = FileAuditLog(path, key=KEY)
    await _scripted_run(audit)
    await _anthropic_run(anthropic, audit)
    text = path.read_bytes().decode("utf-8")
    assert _found(text) == []
    assert audit.verify().ok
    actions = {e["action"] for e in audit.entries()}
    assert {AuditAction.MODEL_CALL, AuditAction.TOOL_RESULT, AuditAction.TRANSITION} <= actions


async def test_no_secret_reaches_the_postgres_audit_table(
    pg_schema: str, anthropic: FakeServer
) -> None:
    import asyncpg

    table = f"{pg_schema}.audit"
    async with PostgresAuditLog(pg.postgres_dsn(), key=KEY, table=table) as audit:
        await _scripted_run(audit)
        await _anthropic_run(anthropic, audit)
        assert (await audit.verify()).ok
    conn = await asyncpg.connect(pg.postgres_dsn())
    try:
        rows = await conn.fetch(f"SELECT t::text AS row FROM {table} t")
    finally:
        await conn.close()
    assert len(rows) > 20
    assert _found("\n".join(r["row"] for r in rows)) == []


async def test_content_capture_records_content_where_documented(
    tmp_path: Path, anthropic: FakeServer
) -> None:
    path = tmp_path / "audit.jsonl"
    audit = FileAuditLog(path, key=KEY, capture_content=True)
    await _scripted_run(audit)
    entries = list(audit.entries())

    def payloads(action: AuditAction) -> list[dict[str, Any]]:
        return [e["payload"] for e in entries if e["action"] == action]

    assert SECRETS["prompt"] in payloads(AuditAction.RUN_STARTED)[0]["prompt"]
    assert SECRETS["answer"] in payloads(AuditAction.RUN_COMPLETED)[0]["output"]
    first, second = payloads(AuditAction.MODEL_CALL)
    assert SECRETS["memory"] in first["system"] and SECRETS["instructions"] in first["system"]
    assert SECRETS["prompt"] in str(first["messages"])
    assert first["tool_calls"][0]["args"] == {"query": SECRETS["args"]}
    assert SECRETS["answer"] in second["text"]
    assert payloads(AuditAction.TOOL_REQUEST)[0]["args"] == {"query": SECRETS["args"]}
    assert SECRETS["output"] in payloads(AuditAction.TOOL_RESULT)[0]["content"]
    # Never the state, and never the key, even with content on.
    assert all("state" not in p and "patch" not in p for p in payloads(AuditAction.TRANSITION))
    await _anthropic_run(anthropic, audit)
    assert "api_key" not in _found(path.read_text(encoding="utf-8"))
    assert audit.verify().ok


# --------------------------------------------------------------------------- the no-op log


async def test_the_no_op_log_builds_no_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[str] = []
    for name in ("run_started", "run_completed", "model_call", "tool_request", "tool_result",
                 "decision", "budget", "transition", "args_hash"):  # fmt: skip
        monkeypatch.setattr(audit_trail, name, lambda *a, _n=name, **k: built.append(_n))
    modes: list[AuditMode] = []
    real_of = AuditMode.of.__func__  # type: ignore[attr-defined]

    def counting(cls: type[AuditMode], log: Any) -> AuditMode:
        mode: AuditMode = real_of(cls, log)
        modes.append(mode)
        return mode

    monkeypatch.setattr(AuditMode, "of", classmethod(counting))
    budget = StandardBudget(BudgetConfig(per_user=Caps(tool_calls=5)))
    agent = Agent("x", model=_script([]), tools=[lookup], budget=budget, audit_log=NoAuditLog())
    result = await agent.run("go", user_id="alice")
    assert result.ok
    assert built == []
    assert modes == [AuditMode(enabled=False, content=False)]  # read once, for the one run


def test_audit_mode_of_a_log(tmp_path: Path) -> None:
    assert AuditMode.of(NoAuditLog()) == AuditMode(False, False)
    assert AuditMode.of(object()) == AuditMode(True, False)  # type: ignore[arg-type]
    log = FileAuditLog(tmp_path / "never-written.jsonl", unsigned=True, capture_content=True)
    assert AuditMode.of(log) == AuditMode(True, True)


def test_no_bare_audit_action_strings() -> None:
    """`audit(…)` and `audit_log.record(…)` name their action through `AuditAction`."""
    src = Path(audit_trail.__file__).parent.parent
    offenders = []
    for path in src.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and (
                    node.func.attr == "audit"
                    or (
                        node.func.attr in ("record", "append")
                        and any(k.arg == "run_id" for k in node.keywords)
                    )
                )
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                offenders.append(f"{path.relative_to(src)}:{node.lineno}")
    assert offenders == []


# ---------------------------------------------- entries written behind the run, before effects


class CountingAuditLog(FileAuditLog):
    """A file log that counts its appends (each one write and one fsync)."""

    appends = 0

    def append_many(self, entries: Any, *, run_id: str, user_id: str | None) -> Any:
        self.appends += 1
        return super().append_many(entries, run_id=run_id, user_id=user_id)


async def test_every_entry_is_in_the_log_before_the_effect_it_leads_to(tmp_path: Path) -> None:
    """Entries are written behind the run, in batches; but the run waits for them before
    anything leaves the process: when a tool runs, its decision, reservation and request
    are in the file (durable), and when a model is called, everything before it is too."""
    audit = CountingAuditLog(tmp_path / "audit.jsonl", key=KEY)
    seen_by_tool: list[list[str]] = []
    seen_by_model: list[list[str]] = []

    async def lookup(query: str) -> str:
        """Look something up."""
        seen_by_tool.append([e["action"] for e in audit.entries()])
        return "found"

    def script(request: ModelRequest) -> Any:
        seen_by_model.append([e["action"] for e in audit.entries()])
        if request.call_index == 0:
            return {"tool_calls": [{"tool": "lookup", "args": {"query": "q"}}]}
        return "done"

    budget = StandardBudget(BudgetConfig(per_user=Caps(tool_calls=5, model_calls=5)))
    agent = Agent("x", model=ScriptedModel(script), tools=[lookup], budget=budget, audit_log=audit)
    result = await agent.run("go", user_id="alice")
    assert result.ok, result.reason
    [at_tool] = seen_by_tool
    assert at_tool[-3:] == [
        AuditAction.PERMISSION_DECISION,
        AuditAction.BUDGET_RESERVE,
        AuditAction.TOOL_REQUEST,
    ]
    assert seen_by_model[0][-1] == AuditAction.BUDGET_RESERVE  # the call's own reservation
    assert seen_by_model[1][-1] == AuditAction.BUDGET_RESERVE
    assert AuditAction.TOOL_RESULT in seen_by_model[1]
    entries = list(audit.entries())
    assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))  # in order
    assert entries[-1]["action"] == AuditAction.RUN_COMPLETED  # all in before run() returned
    assert audit.appends < len(entries)  # grouped: fewer writes (and fsyncs) than entries
    assert audit.verify().ok


@pytest.mark.parametrize("where", ["policy", "hook"])
async def test_a_failing_policy_or_hook_quoting_the_arguments_leaves_them_out(
    tmp_path: Path, where: str
) -> None:
    """A permission policy or a `before_tool` hook that raises with the arguments in its
    message denies the call; the decision's audit entry names the error's type only."""
    from loomgraph.governance import Hooks, StandardPermissions

    secret = SECRETS["args"]

    def judge(call: Any, *rest: Any) -> Any:
        raise KeyError(f"no entry for {call['args']['query']}")

    hooks = Hooks()
    if where == "hook":
        hooks.before_tool(judge)
        permissions = StandardPermissions(mode="bypass")
    else:
        permissions = StandardPermissions(mode="bypass", policy=judge)
    model = ScriptedModel([{"tool_calls": [{"tool": "lookup", "args": {"query": secret}}]}, "ok"])
    path = tmp_path / "audit.jsonl"
    audit = FileAuditLog(path, key=KEY)
    agent = Agent("x", model=model, tools=[lookup], audit_log=audit, hooks=hooks,
                  permissions=permissions)  # fmt: skip
    result = await agent.run("go")
    assert result.status == "completed"
    [decided] = [e["payload"] for e in audit.entries() if e["action"] == "permission_decision"]
    assert decided["verdict"] == "deny" and "KeyError" in decided["reason"]
    assert secret not in path.read_text()
