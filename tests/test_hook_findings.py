"""Hooks and policies fail closed and keep the call's arguments out of the audit trail
(docs/governance.md, *Hooks*, *Policies*). Checks that:

- a policy is given a copy of the call (and spec): its edit cannot run what a deny rule denies;
- a hook `Decision` with a verdict other than allow/ask/deny is junk: it denies and is reported;
- an async hook that swallows its timeout's cancel and returns still times out (denies);
- a junk return of a hook or a policy is named by type and shape in the decision, so the call's
  arguments never reach the `permission_decision` event or the audit log (the value stays in
  `hooks.errors` / the log);
- a policy raising `CancelledError` itself, or returning a value whose `==` raises, denies with
  `policy:error` and the run goes on; a real cancel of the run is never swallowed;
- `on_error` is bounded by the hooks' timeout (async, or sync run off the event loop);
- a hook named `junk` that returns False is a plain denial, not a reported failure;
- a custom `Hooks` whose `before_tool` returns junk (False, an unknown verdict) denies the call.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from loomgraph import Agent
from loomgraph.governance import HookError, Hooks, StandardPermissions
from loomgraph.models import ScriptedModel
from loomgraph.observability import FileAuditLog
from loomgraph.protocols import Decision, ToolCall, ToolSpec

SECRET = "tok-SECRET-4711-do-not-log"


def _shell_agent(ran: list[str], cmd: str = "ls /data", **options: Any) -> Agent:
    """An Agent whose model calls `shell(cmd=...)` once, then answers "ok"."""

    async def shell(cmd: str) -> str:
        """Run a command."""
        ran.append(cmd)
        return "ok"

    model = ScriptedModel([{"tool_calls": [{"tool": "shell", "args": {"cmd": cmd}}]}, "ok"])
    return Agent("x", model=model, tools=[shell], **options)


def _send_agent(ran: list[str], **options: Any) -> Agent:
    """An Agent whose model calls `send(to=..., token=SECRET)` once, then answers "ok"."""

    async def send(to: str, token: str) -> str:
        """Send a message with an API token."""
        ran.append(to)
        return "sent"

    call = {"tool": "send", "args": {"to": "sam@corp.example", "token": SECRET}}
    model = ScriptedModel([{"tool_calls": [call]}, "ok"])
    return Agent("x", model=model, tools=[send], **options)


# ------------------------------------------------------------------------ a bypass of deny rules


async def test_a_policy_is_given_a_copy_so_its_edit_cannot_pass_a_deny_rule() -> None:
    """A user expects `deny: shell(cmd=rm *)` to hold whatever a policy does: hooks and the
    approval handler are given copies so that an edit "after the rules" changes nothing that
    runs (docs/governance.md, *Hooks*). A policy is handed the live call instead: one that
    rewrites `ls /data` into `rm -rf /data` (after the deny rules passed the original) and
    returns "allow" makes the tool run `rm -rf /data`, which the deny rule forbids."""
    ran: list[str] = []

    def policy(call: ToolCall, spec: ToolSpec | None, user: str | None) -> str:
        call["args"]["cmd"] = "rm -rf /data"  # a careless "normalising" policy
        return "allow"

    permissions = StandardPermissions(deny=["shell(cmd=rm *)"], policy=policy)
    agent = _shell_agent(ran, permissions=permissions)
    await agent.run("go")
    await agent.aclose()
    assert "rm -rf /data" not in ran, f"a deny rule was bypassed: the tool ran {ran}"


# ------------------------------------------------------------------ hooks that fail open


async def test_a_hook_decision_of_an_unknown_verdict_denies_and_is_reported() -> None:
    """Docs: a callback returning "a deny Decision, False or a string denies; None, True, an
    allow or an ask Decision change nothing … returns anything else denies the call". A hook
    returning `Decision("block", ...)` (or `"DENY"`: `Decision` checks nothing) is neither:
    it should deny and be reported. Instead `_denial` treats every non-"deny" verdict as
    "no opinion" and the tool runs, with nothing in `hooks.errors`."""
    ran: list[str] = []
    hooks = Hooks()

    @hooks.before_tool
    def guard(call: ToolCall) -> Decision:
        return Decision("block", "office-hours", "deploys only in office hours")  # type: ignore[arg-type]

    agent = _shell_agent(ran, hooks=hooks)
    result = await agent.run("go")
    await agent.aclose()
    assert result.status == "completed"
    assert ran == [], "a hook returning an unknown verdict let the call run"
    assert hooks.errors, "the junk return was not reported"


async def test_an_async_hook_that_swallows_its_timeout_still_times_out() -> None:
    """Docs: "A callback that raises, exceeds `timeout`, or returns anything else denies the
    call". An async `before_tool` hook that catches `CancelledError` (a cleanup
    `except BaseException`, `contextlib.suppress`) and returns None after its timeout fired
    ends `asyncio.timeout` normally: its late "no opinion" is taken, the call runs, and no
    `TimeoutError` is reported — a hook that exceeded its timeout let the call through."""
    ran: list[str] = []
    never = asyncio.Event()
    hooks = Hooks(timeout=0.05)

    @hooks.before_tool
    async def checks_a_quota_service(call: ToolCall) -> None:
        try:
            await never.wait()  # the service never answers
        except asyncio.CancelledError:
            return None  # swallowed: "could not check"
        return None

    agent = _shell_agent(ran, hooks=hooks)
    result = await agent.run("go")
    await agent.aclose()
    assert result.status == "completed"
    assert ran == [], "a hook that exceeded its timeout let the call run"
    assert [e.error.split(":")[0] for e in hooks.errors] == ["TimeoutError"]


# ------------------------------------------------------------- arguments in the audit log


async def test_a_junk_hook_return_is_named_by_shape_not_written_to_the_audit_log(
    tmp_path: Path,
) -> None:
    """Docs: a failing or junk-returning hook denies "naming the hook and the error's type
    (the message is in hooks.errors, on_error and the log: it may quote the arguments)", and
    a `permission_decision` entry never contains the arguments (docs/observability.md). A
    hook written middleware-style, `return call`, is junk and denies — but its reason is
    `hook <lambda> returned {'id': …, 'args': {…, 'token': '<secret>'}} …`, written into the
    event and the audit entry: the call's secret lands in the audit log."""
    ran: list[str] = []
    hooks = Hooks()
    hooks.before_tool(lambda call: call)  # "pass it on", as in a middleware chain
    audit_path = tmp_path / "audit.jsonl"
    audit = FileAuditLog(audit_path, key=b"k" * 32)
    agent = _send_agent(ran, hooks=hooks, audit_log=audit)
    result = await agent.run("go")
    await agent.aclose()
    assert result.status == "completed" and ran == []  # denied, as documented
    assert SECRET not in audit_path.read_text(), "the call's arguments are in the audit log"


async def test_a_junk_policy_return_is_named_by_shape_not_written_to_the_audit_log(
    tmp_path: Path,
) -> None:
    """Docs (*Policies*): a policy that returns anything else denies with `policy:error`; its
    exception message "which may quote the call's arguments, goes to the log, not into the
    decision's event or audit entry", and a `permission_decision` entry never contains the
    arguments. A policy that returns by slip the arguments it looked at (here the dict) has
    its `repr` put into the decision's reason — the call's secret is in the audit log."""
    ran: list[str] = []

    def policy(call: ToolCall, spec: ToolSpec | None, user: str | None) -> Any:
        return call["args"]  # a slip: meant to return a verdict about them

    audit_path = tmp_path / "audit.jsonl"
    audit = FileAuditLog(audit_path, key=b"k" * 32)
    permissions = StandardPermissions(policy=policy)
    agent = _send_agent(ran, permissions=permissions, audit_log=audit)
    result = await agent.run("go")
    await agent.aclose()
    assert result.status == "completed" and ran == []  # denied, as documented
    assert SECRET not in audit_path.read_text(), "the call's arguments are in the audit log"


# ------------------------------------------------- a policy failure that fails the whole run


async def test_a_policy_raising_cancelled_error_itself_denies_with_policy_error() -> None:
    """Docs: "a policy callable or a hook raises | deny". Hooks treat a `CancelledError`
    they raise themselves (nobody cancelled the run) as a failure like any other; a policy
    raising one (an async client cancelled inside it) is not caught (`except Exception`),
    so the `tools` node fails and the whole run ends `failed` instead of the call being
    denied with `policy:error` and the model going on."""
    ran: list[str] = []

    async def policy(call: ToolCall, spec: ToolSpec | None, user: str | None) -> str:
        raise asyncio.CancelledError()

    agent = _shell_agent(ran, permissions=StandardPermissions(policy=policy))
    result = await agent.run("go")
    await agent.aclose()
    assert ran == []
    assert result.status == "completed", f"the run ended {result.status}: {result.reason}"


async def test_a_policy_result_whose_eq_raises_denies() -> None:
    """Docs: a policy that "returns anything else (None included), denies with rule
    `policy:error`". `_ask_policy` compares the result with `"default"` before checking its
    type, so a value whose `==` raises (an array-like, e.g. a pandas Series or a numpy array
    of verdicts, here a stand-in) escapes as that error: the node fails and the run ends
    `failed` instead of the call being denied."""
    ran: list[str] = []

    class Verdicts:
        """An array-like: `==` is element-wise and its truth value is ambiguous."""

        def __eq__(self, other: object) -> bool:
            raise ValueError("The truth value of an array with more than one element is ambiguous")

        __hash__ = None  # type: ignore[assignment]

    permissions = StandardPermissions(policy=lambda call, spec, user: Verdicts())
    agent = _shell_agent(ran, permissions=permissions)
    result = await agent.run("go")
    await agent.aclose()
    assert ran == []
    assert result.status == "completed", f"the run ended {result.status}: {result.reason}"


# ------------------------------------------------------------------------ an unbounded hang


async def test_a_hanging_on_error_is_bounded_by_the_hooks_timeout() -> None:
    """Docs: `Hooks(timeout=...)` bounds each callback, a hung hook "holds only its thread",
    and a failure is "passed to `on_error` (sync or async); nothing is raised into the run".
    `_report` awaits `on_error` with no timeout (and runs a sync one on the event loop): an
    `on_error` that forwards to a service that never answers hangs the run for ever, after
    the failing hook itself was cut off at its 0.05 s timeout."""
    ran: list[str] = []
    never = asyncio.Event()
    heard: list[HookError] = []

    async def on_error(error: HookError) -> None:
        heard.append(error)
        await never.wait()  # the alerting service never answers

    hooks = Hooks(timeout=0.05, on_error=on_error)
    hooks.before_tool(lambda call: 1 / 0)
    agent = _shell_agent(ran, hooks=hooks)
    run = asyncio.ensure_future(agent.run("go"))
    try:
        done, _ = await asyncio.wait({run}, timeout=3.0)
        assert done, "the run hung in on_error, past the hooks' 0.05 s timeout"
        assert run.result().status == "completed" and ran == []
    finally:
        run.cancel()
        never.set()
        await asyncio.gather(run, return_exceptions=True)
        await agent.aclose()
    assert heard


# ------------------------------------------------------------------ around the findings


async def test_a_policy_editing_the_call_or_spec_changes_neither() -> None:
    """The copy covers the spec too: a policy that marks the tool harmless (or its call) in
    what it reads changes nothing the rest of the gate reads (taint notes, the mode)."""
    call: ToolCall = {"id": "c1", "tool": "shell", "args": {"cmd": "ls", "opts": ["-l"]}}
    spec: ToolSpec = {"name": "shell", "description": "", "parameters": {}, "destructive": True}

    def policy(seen: ToolCall, seen_spec: ToolSpec | None, user: str | None) -> str:
        seen["args"]["opts"].append("-R")
        assert seen_spec is not None
        seen_spec["destructive"] = False
        return "default"

    decision = await StandardPermissions(policy=policy).check(call, spec, user_id=None)
    assert call["args"] == {"cmd": "ls", "opts": ["-l"]}
    assert spec["destructive"] is True
    assert (decision.verdict, decision.rule) == ("ask", "mode:default:destructive")


async def test_a_real_cancel_during_a_policy_is_not_swallowed() -> None:
    """A `CancelledError` of the run itself (its caller cancelled it) goes on as a cancel."""
    started, never = asyncio.Event(), asyncio.Event()

    async def policy(call: ToolCall, spec: ToolSpec | None, user: str | None) -> str:
        started.set()
        await never.wait()
        return "allow"

    spec: ToolSpec = {"name": "shell", "description": "", "parameters": {}}
    call: ToolCall = {"id": "c1", "tool": "shell", "args": {}}
    check = StandardPermissions(policy=policy).check(call, spec, user_id=None)
    task = asyncio.ensure_future(check)
    await started.wait()
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=3.0)
    assert done and task.cancelled()


async def test_a_policy_junk_return_reason_names_its_shape() -> None:
    """The reason names the type and size, which helps find the slip without the values."""
    spec: ToolSpec = {"name": "send", "description": "", "parameters": {}}
    call: ToolCall = {"id": "c1", "tool": "send", "args": {"to": "sam", "token": SECRET}}
    perms = StandardPermissions(policy=lambda c, s, u: c["args"])
    decision = await perms.check(call, spec, user_id=None)
    assert (decision.verdict, decision.rule) == ("deny", "policy:error")
    assert "a value of 2 key(s) (dict)" in decision.reason and SECRET not in decision.reason


async def test_a_sync_on_error_runs_off_the_loop_and_is_bounded() -> None:
    """A sync `on_error` that blocks holds its own thread, never the event loop."""
    import threading

    gate = threading.Event()
    threads: list[threading.Thread] = []

    def on_error(error: HookError) -> None:
        threads.append(threading.current_thread())
        gate.wait(5)

    hooks = Hooks(timeout=0.05, on_error=on_error)
    hooks.before_tool(lambda call: 1 / 0)
    try:
        decision = await asyncio.wait_for(
            hooks.before_tool({"id": "c1", "tool": "t", "args": {}}), timeout=3.0
        )
    finally:
        gate.set()
    assert decision is not None and decision.verdict == "deny"
    assert threads and threads[0] is not threading.current_thread()
    assert [e.error.split(":")[0] for e in hooks.errors] == ["ZeroDivisionError"]


async def test_an_on_error_raising_cancelled_error_itself_is_swallowed() -> None:
    """`on_error` raising `CancelledError` (nobody cancelled the run) does not end the run."""

    async def on_error(error: HookError) -> None:
        raise asyncio.CancelledError()

    hooks = Hooks(on_error=on_error)
    hooks.before_tool(lambda call: 1 / 0)
    decision = await hooks.before_tool({"id": "c1", "tool": "t", "args": {}})
    assert decision is not None and decision.verdict == "deny"


async def test_a_hook_named_junk_returning_false_is_a_denial_not_a_failure() -> None:
    """A plain denial is never mistaken for a junk return by the hook's name."""
    hooks = Hooks()

    @hooks.before_tool
    def junk(call: ToolCall) -> bool:
        return False

    decision = await hooks.before_tool({"id": "c1", "tool": "t", "args": {}})
    assert decision is not None and (decision.verdict, decision.rule) == ("deny", "hook:junk")
    assert decision.reason == "denied by hook junk"
    assert not hooks.errors


class _CustomHooks:
    """A hooks object of the user's own, whose `before_tool` breaks the protocol."""

    def __init__(self, returned: Any) -> None:
        self.returned = returned

    async def before_node(self, node: str, state: Any) -> None:
        """Nothing."""

    async def after_node(self, node: str, patch: Any) -> None:
        """Nothing."""

    async def before_tool(self, call: ToolCall) -> Any:
        """Junk."""
        return self.returned

    async def after_tool(self, call: ToolCall, result: Any) -> None:
        """Nothing."""

    async def on_event(self, event: Any) -> None:
        """Nothing."""


async def test_a_custom_hooks_returning_junk_denies_the_call() -> None:
    """A custom `Hooks` whose `before_tool` returns False (or a Decision of no known verdict)
    denies the call, named by shape, instead of failing the node."""
    unknown = Decision("DENY", "x")  # type: ignore[arg-type]
    for returned, shown in [(False, "a value (bool)"), (unknown, "Decision of no known verdict")]:
        ran: list[str] = []
        agent = _send_agent(ran, hooks=_CustomHooks(returned))
        events = [e async for e in agent.stream("go")]
        await agent.aclose()
        [done] = [e for e in events if e.kind == "run_completed"]
        assert done.payload["status"] == "completed", done.payload["reason"]
        assert ran == []
        [decided] = [e.payload for e in events if e.kind == "permission_decision"]
        assert (decided["verdict"], decided["rule"]) == ("deny", "hook:error")
        assert shown in decided["reason"]
