"""A Hypothesis state machine over governed Agent runs whose tool calls carry paths (through
real symlinks, `..`, doubled slashes) and shell strings, under random policies, answered by
random approvals, denials and replayed approvals, resumed in random order.

Invariants, read from a side-effect ledger the tools write and the keyed audit log:
1. no call executes unless an allow decision for that call id of that run (by a rule, or an
   explicit approval of it) precedes it in the audit log;
2. a call allowed by an allow rule stays inside what the rule names: the path's real location
   is under the allowed root, the command is one `ls`;
3. no approval is used twice: a replayed approval is refused and changes nothing.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from loomgraph import Agent, Approval, tool
from loomgraph.agent.checkpoints import ApprovalRefused
from loomgraph.governance import StandardPermissions
from loomgraph.models import ScriptedModel
from loomgraph.observability import FileAuditLog

KEY = "trust-properties"

# Policies over a root the test makes: allow inside it, ask or deny the rest.
POLICIES = [
    {"mode": "strict", "allow": ["write_file(path:path={root}/**)", "shell(cmd:command=ls *)"]},
    {
        "mode": "default",
        "ask": ["write_file", "shell"],
        "allow": ["write_file(path:path={root}/**)"],
    },
    {
        "mode": "strict",
        "deny": ["shell(cmd=*rm*)"],
        "ask": ["write_file unless write_file(path:path={root}/**)"],
        "allow": ["shell(cmd:command=ls *)"],
    },
]

PATHS = [
    "{root}/a.txt",
    "{root}//b.txt",
    "{root}/sub/../c.txt",
    "{root}/escape/passwd",  # `escape` is a symlink out of the root
    "{root}/../outside/x",
    "{root}/sub/./d.txt",
    "{root}/loop/e",  # a symlink back into the root
    "{root}/a.txt.",
    "/etc/passwd",
]
COMMANDS = ["ls -l", "ls; rm -rf /", "ls && curl evil", "ls $(whoami)", "rm -rf /", "ls 'a;b'"]


class GovernedRuns(RuleBasedStateMachine):
    """Runs started, approved, denied, replayed and resumed at random."""

    @initialize(policy=st.sampled_from(POLICIES))
    def setup(self, policy: dict[str, Any]) -> None:
        self.tmp = tempfile.TemporaryDirectory()
        base = Path(self.tmp.name)
        self.root = base / "root"
        (self.root / "sub").mkdir(parents=True)
        (base / "outside").mkdir()
        os.symlink(base / "outside", self.root / "escape")
        os.symlink(self.root / "sub", self.root / "loop")
        rules = {k: [r.format(root=self.root) for r in v] if isinstance(v, list) else v
                 for k, v in policy.items()}  # fmt: skip
        self.permissions = StandardPermissions.from_dict(rules)
        self.audit = FileAuditLog(base / "audit.jsonl", key=KEY)
        self.executed: list[tuple[str, str, dict[str, Any], int]] = []  # run, call, args, seq
        self.loop = asyncio.new_event_loop()
        self.waiting: dict[str, str] = {}  # run id -> pending call id
        self.answered: dict[str, Approval] = {}  # run id -> the approval it was resumed with
        self.journal = f"sqlite:{base / 'journal.db'}"
        machine = self

        @tool
        def write_file(path: str, text: str, idempotency_key: str) -> str:
            """Write a file."""
            machine.record(idempotency_key, {"path": path, "text": text})
            return "written"

        @tool
        def shell(cmd: str, idempotency_key: str) -> str:
            """Run a shell command."""
            machine.record(idempotency_key, {"cmd": cmd})
            return "ran"

        self.tools = [write_file, shell]

    def record(self, key: str, args: dict[str, Any]) -> None:
        run_id = key.split(":")[0]
        self.executed.append((run_id, key, args, self.audit.head().seq))

    def agent(self, script: list[Any]) -> Agent:
        return Agent(
            "x",
            model=ScriptedModel(script),
            tools=self.tools,
            permissions=self.permissions,
            runtime=self.journal,
            audit_log=self.audit,
        )

    def teardown(self) -> None:
        self.loop.close()
        self.tmp.cleanup()

    @rule(path=st.sampled_from(PATHS), text=st.sampled_from(["hi", "x" * 20]))
    def write(self, path: str, text: str) -> None:
        self.start({"tool": "write_file", "args": {"path": path.format(root=self.root),
                                                   "text": text}})  # fmt: skip

    @rule(cmd=st.sampled_from(COMMANDS))
    def run_shell(self, cmd: str) -> None:
        self.start({"tool": "shell", "args": {"cmd": cmd}})

    def start(self, call: dict[str, Any]) -> None:
        agent = self.agent([{"tool_calls": [call]}, "done"])
        result = self.loop.run_until_complete(agent.run("go"))
        self.loop.run_until_complete(agent.aclose())
        if result.status == "awaiting_approval":
            assert result.pending is not None and result.pending.call is not None
            self.waiting[result.run_id] = result.pending.call["id"]
        else:
            assert result.status == "completed", result.reason

    @precondition(lambda self: bool(getattr(self, "waiting", None)))
    @rule(data=st.data(), allow=st.booleans())
    def answer(self, data: st.DataObject, allow: bool) -> None:
        run_id = data.draw(st.sampled_from(sorted(self.waiting)))
        approval = Approval(self.waiting.pop(run_id), allow, approver="prop")
        agent = self.agent([{"tool_calls": []}, "done"])
        self.loop.run_until_complete(agent.resume(run_id, approve=approval))
        self.loop.run_until_complete(agent.aclose())
        self.answered[run_id] = approval

    @precondition(
        lambda self: bool(getattr(self, "answered", None) or getattr(self, "waiting", None))
    )
    @rule(data=st.data())
    def replay(self, data: st.DataObject) -> None:
        """A retried approval, or a plain resume of a waiting run: nothing new may run."""
        before = len(self.executed)
        agent = self.agent([{"tool_calls": []}, "done"])
        if self.answered and data.draw(st.booleans()):
            run_id = data.draw(st.sampled_from(sorted(self.answered)))
            try:
                self.loop.run_until_complete(agent.resume(run_id, approve=self.answered[run_id]))
                raise AssertionError(f"approval of run {run_id} used twice")
            except ApprovalRefused:
                pass
        elif self.waiting:
            run_id = data.draw(st.sampled_from(sorted(self.waiting)))
            result = self.loop.run_until_complete(agent.resume(run_id))
            assert result.status == "awaiting_approval", result.status
        self.loop.run_until_complete(agent.aclose())
        assert len(self.executed) == before

    @invariant()
    def every_execution_follows_an_allow_and_stays_in_bounds(self) -> None:
        if not hasattr(self, "audit"):
            return
        assert self.audit.verify().ok
        allowed: dict[tuple[str, str], tuple[int, str]] = {}
        approvals: set[tuple[str, str]] = set()
        for entry in self.audit.entries():
            payload = entry["payload"]
            if entry["action"] == "permission_decision" and payload["verdict"] == "allow":
                allowed.setdefault((entry["run_id"], payload["call_id"]), (entry["seq"],
                                   payload["rule"]))  # fmt: skip
            if entry["action"] == "approval":
                pair = (entry["run_id"], payload["call_id"])
                assert pair not in approvals, f"approval of {pair} used twice"
                approvals.add(pair)
        for run_id, key, args, seq in self.executed:
            calls = [c for (r, c) in allowed if r == run_id]
            assert calls, f"{key} ran with no allow decision"
            allow_seq, rule_name = min(allowed[(run_id, c)] for c in calls)
            assert allow_seq <= seq, f"{key} ran before its allow"
            if rule_name.startswith(("allow:", "unless:")):
                self.within_bounds(args)

    def within_bounds(self, args: dict[str, Any]) -> None:
        if "path" in args:
            real = os.path.realpath(args["path"])
            assert real.startswith(os.path.realpath(self.root) + os.sep), args
        else:
            lexer = shlex.shlex(args["cmd"], posix=True, punctuation_chars=True)
            tokens = list(lexer)
            assert tokens[0] == "ls", args
            operators = [t for t in tokens if t and set(t) <= set("();<>|&")]
            assert not operators and not any(c in args["cmd"] for c in "$`\n"), args


GovernedRuns.TestCase.settings = settings(
    max_examples=20,
    stateful_step_count=10,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_governed_runs = GovernedRuns.TestCase
