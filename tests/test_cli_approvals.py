"""Approvals from the shell: `loomgraph run --approve / --permissions`, `runs pending`,
`runs approve` and `runs deny`, through the real command in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

HELPERS = '''
import os
from loomgraph import tool
from loomgraph.models import ScriptedModel

if os.environ.get("CLI_CLOCK_FILE"):  # the desk clock a test moves (tests/desk_clock.py)
    import desk_clock

    desk_clock.follow_file(os.environ["CLI_CLOCK_FILE"])


@tool(destructive=True)
def pay(to: str, amount: int) -> str:
    """Pay someone."""
    with open(os.environ["CLI_LEDGER"], "a") as f:
        f.write(f"{to}\\t{amount}\\n")
    return f"paid {amount} to {to}"


TOOLS = [pay]
PAY = ScriptedModel([{"tool_calls": [{"tool": "pay", "args": {"to": "acme", "amount": 5}}]},
                     "done"])
'''


@pytest.fixture
def env(tmp_path: Path) -> dict[str, Any]:
    (tmp_path / "approval_helpers.py").write_text(HELPERS)
    variables = dict(
        os.environ,
        CLI_LEDGER=str(tmp_path / "ledger.tsv"),
        PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
    )
    return {"dir": tmp_path, "env": variables, "db": tmp_path / "journal.db"}


def loomgraph(env: dict[str, Any], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loomgraph.cli.main", *args],
        capture_output=True,
        text=True,
        cwd=env["dir"],
        env=env["env"],
        input=stdin,
        timeout=120,
    )


def paid(env: dict[str, Any]) -> list[str]:
    ledger: Path = env["dir"] / "ledger.tsv"
    return ledger.read_text().splitlines() if ledger.exists() else []


AGENT = ["--model", "approval_helpers:PAY", "--tools", "approval_helpers:TOOLS"]


def journal(env: dict[str, Any]) -> list[str]:
    return ["--runtime", f"sqlite:{env['db']}"]


def test_with_nobody_to_ask_a_destructive_call_is_denied_and_says_how_to_be_asked(
    env: dict[str, Any],
) -> None:
    done = loomgraph(env, "run", "pay acme", *AGENT)
    assert done.returncode == 0, done.stderr
    assert "nobody can approve it here" in done.stdout and "--approve" in done.stdout
    assert paid(env) == []


def test_approve_on_the_terminal(env: dict[str, Any]) -> None:
    done = loomgraph(env, "run", "pay acme", *AGENT, "--approve", stdin="y\n")
    assert done.returncode == 0, done.stderr
    assert "needs approval" in done.stderr
    assert paid(env) == ["acme\t5"]


def test_a_durable_run_waits_is_listed_and_is_approved_once(env: dict[str, Any]) -> None:
    waiting = loomgraph(env, "run", "pay acme", *AGENT, *journal(env))
    assert waiting.returncode == 3 and paid(env) == []  # 3: awaiting approval
    listed = loomgraph(env, "runs", "pending", *journal(env), "--json")
    assert listed.returncode == 0, listed.stderr
    (row,) = [json.loads(line) for line in listed.stdout.splitlines()]
    assert row["tool"] == "pay" and row["args"] == {"to": "acme", "amount": 5}
    assert row["rule"] == "mode:default:destructive"
    assert row["key"].startswith(row["run_id"])  # the request, for `--request`
    approve = ["runs", "approve", row["run_id"], row["call_id"], "--as", "alice"]
    approve += ["--request", row["key"]]
    done = loomgraph(env, *approve, *AGENT, *journal(env))
    assert done.returncode == 0, done.stderr
    assert paid(env) == ["acme\t5"]
    again = loomgraph(env, *approve, *AGENT, *journal(env))
    assert again.returncode == 2 and "not waiting for an approval" in again.stderr
    assert paid(env) == ["acme\t5"]
    assert loomgraph(env, "runs", "pending", *journal(env), "--json").stdout == ""


def test_an_answer_naming_its_request_settles_that_request_or_nothing(
    env: dict[str, Any],
) -> None:
    waiting = loomgraph(env, "run", "pay acme", *AGENT, *journal(env))
    assert waiting.returncode == 3
    row = json.loads(loomgraph(env, "runs", "pending", *journal(env), "--json").stdout)
    assert row["key"].startswith(row["run_id"]) and row["call_id"] in row["key"]
    approve = ["runs", "approve", row["run_id"], row["call_id"]]
    # Not named: refused, with the line that answers the pending request to copy; run
    # twice, such a command would answer whatever the run asks next.
    unnamed = loomgraph(env, *approve, *AGENT, *journal(env))
    assert unnamed.returncode == 2, unnamed.stdout
    assert f"--request {row['key']}" in unnamed.stderr, unnamed.stderr
    assert paid(env) == []
    still = json.loads(loomgraph(env, "runs", "pending", *journal(env), "--json").stdout)
    assert still == row  # nothing ran: the same request waits
    # A request the approver did not see (what a same-id call the run made later has).
    other = loomgraph(env, *approve, "--request", row["key"] + "x", *AGENT, *journal(env))
    assert other.returncode == 2, other.stderr
    assert f"not at request {row['key']}x" in other.stderr, other.stderr
    assert paid(env) == []
    done = loomgraph(env, *approve, "--request", row["key"], *AGENT, *journal(env))
    assert done.returncode == 0, done.stderr
    assert paid(env) == ["acme\t5"]


def test_deny_with_a_reason_and_edited_arguments_on_approve(env: dict[str, Any]) -> None:
    first = loomgraph(env, "run", "pay acme", *AGENT, *journal(env))
    assert first.returncode == 3
    rows = loomgraph(env, "runs", "pending", *journal(env), "--json").stdout.splitlines()
    row = json.loads(rows[0])
    denied = loomgraph(
        env, "runs", "deny", row["run_id"], row["call_id"], "--reason", "not today",
        "--request", row["key"], *AGENT, *journal(env),
    )  # fmt: skip
    assert denied.returncode == 0, denied.stderr
    assert "not today" in denied.stdout and paid(env) == []
    second = loomgraph(env, "run", "pay acme", *AGENT, *journal(env))
    assert second.returncode == 3
    row = json.loads(loomgraph(env, "runs", "pending", *journal(env), "--json").stdout)
    bad = loomgraph(
        env, "runs", "approve", row["run_id"], row["call_id"], "--args", "[1]",
        "--request", row["key"], *AGENT, *journal(env),
    )  # fmt: skip
    assert bad.returncode == 2 and "JSON object" in bad.stderr and paid(env) == []
    # Nested deeper than the JSON decoder's stack (1000): a usage error naming the limit.
    deep = loomgraph(
        env, "runs", "approve", row["run_id"], row["call_id"], "--args",
        '{"to": ' + "[" * 5000 + "]" * 5000 + "}", "--request", row["key"],
        *AGENT, *journal(env),
    )  # fmt: skip
    assert deep.returncode == 2 and "over the limit of 32" in deep.stderr, deep.stderr
    assert "Traceback" not in deep.stderr and paid(env) == []
    edited = loomgraph(
        env, "runs", "approve", row["run_id"], row["call_id"],
        "--args", '{"to": "acme", "amount": 1}', "--request", row["key"], *AGENT, *journal(env),
    )  # fmt: skip
    assert edited.returncode == 0, edited.stderr
    assert paid(env) == ["acme\t1"]


def test_an_expired_request_says_how_to_go_on(env: dict[str, Any]) -> None:
    """Past its deadline an approval is refused with the command that goes on (exit 2), and
    that command denies the call as timed out; the desk's clock is moved, never waited on."""
    env["env"]["PYTHONPATH"] += os.pathsep + str(Path(__file__).parent)
    env["env"]["CLI_CLOCK_FILE"] = str(env["dir"] / "clock")
    policy = env["dir"] / "policy.yaml"
    policy.write_text("mode: default\napproval_timeout_s: 60\n")
    governed = [*AGENT, *journal(env), "--permissions", str(policy)]
    assert loomgraph(env, "run", "pay acme", *governed).returncode == 3
    row = json.loads(loomgraph(env, "runs", "pending", *journal(env), "--json").stdout)
    (env["dir"] / "clock").write_text("3600")  # nobody answered for an hour
    answer = ["runs", "approve", row["run_id"], row["call_id"], "--request", row["key"]]
    late = loomgraph(env, *answer, *governed)
    assert late.returncode == 2 and "expired" in late.stderr, late.stderr
    assert f"loomgraph runs resume {row['run_id']}" in late.stderr and paid(env) == []
    on = loomgraph(env, "runs", "resume", row["run_id"], *governed)
    assert on.returncode == 0, on.stderr
    assert "approval timed out" in on.stdout + on.stderr and paid(env) == []


def test_runs_pending_says_which_requests_expired(env: dict[str, Any]) -> None:
    """The run asks an hour ago by its desk clock (the file holds -3600): by the real clock
    `runs pending` reads with, its request's 60 s passed."""
    env["env"]["PYTHONPATH"] += os.pathsep + str(Path(__file__).parent)
    env["env"]["CLI_CLOCK_FILE"] = str(env["dir"] / "clock")
    (env["dir"] / "clock").write_text("-3600")
    policy = env["dir"] / "policy.yaml"
    policy.write_text("mode: default\napproval_timeout_s: 60\n")
    governed = [*AGENT, *journal(env), "--permissions", str(policy)]
    assert loomgraph(env, "run", "pay acme", *governed).returncode == 3
    row = json.loads(loomgraph(env, "runs", "pending", *journal(env), "--json").stdout)
    assert row["expired"] is True and row["deadline"] is not None
    shown = loomgraph(env, "runs", "pending", *journal(env))
    assert shown.returncode == 0 and "[expired]" in shown.stdout, shown.stdout
    (env["dir"] / "clock").write_text("0")
    assert loomgraph(env, "run", "pay acme", *governed).returncode == 3
    rows = loomgraph(env, "runs", "pending", *journal(env), "--json").stdout.splitlines()
    assert sorted(json.loads(r)["expired"] for r in rows) == [False, True]


def test_send_on_expired_sends_on_the_expired_runs_only(env: dict[str, Any]) -> None:
    """One run asked an hour ago by the desk clock, one now: `runs send-on-expired` denies
    the first's call as timed out and completes it, and leaves the other waiting."""
    env["env"]["PYTHONPATH"] += os.pathsep + str(Path(__file__).parent)
    env["env"]["CLI_CLOCK_FILE"] = str(env["dir"] / "clock")
    policy = env["dir"] / "policy.yaml"
    policy.write_text("mode: default\napproval_timeout_s: 60\n")
    governed = [*AGENT, *journal(env), "--permissions", str(policy)]
    (env["dir"] / "clock").write_text("-3600")
    assert loomgraph(env, "run", "pay acme", *governed).returncode == 3
    (env["dir"] / "clock").write_text("0")
    assert loomgraph(env, "run", "pay acme", *governed).returncode == 3
    rows = [
        json.loads(r)
        for r in loomgraph(env, "runs", "pending", *journal(env), "--json").stdout.splitlines()
    ]
    [old] = [r["run_id"] for r in rows if r["expired"]]
    [fresh] = [r["run_id"] for r in rows if not r["expired"]]
    sent = loomgraph(env, "runs", "send-on-expired", *governed, "--json")
    assert sent.returncode == 0, sent.stderr
    [result] = [json.loads(line)["result"] for line in sent.stdout.splitlines()]
    assert result["run_id"] == old and result["status"] == "completed", result
    assert paid(env) == []
    left = loomgraph(env, "runs", "pending", *journal(env), "--json").stdout.splitlines()
    assert [json.loads(r)["run_id"] for r in left] == [fresh]
    again = loomgraph(env, "runs", "send-on-expired", *governed)
    assert again.returncode == 0 and "0 runs sent on" in again.stdout, again.stdout


GREETED_GRAPH = """
name: greeted
entry: greet
nodes:
  greet: {kind: function, call: 'greeting:greet', reads: [input], writes: []}
  model: {kind: model, reads: [messages], writes: [messages, usage], tools: true}
  tools: {kind: tools, reads: [messages], writes: [messages]}
edges:
  - {from: greet, to: model}
  - {from: model, to: tools, when: "last_message.tool_calls | length > 0"}
  - {from: model, to: END}
  - {from: tools, to: model}
"""


def test_send_on_expired_skips_a_run_it_cannot_go_on_with_and_sends_on_the_rest(
    env: dict[str, Any],
) -> None:
    """The oldest expired run's graph no longer compiles here (a module of its gone): it is
    named on stderr and skipped, and the next expired run is sent on (one bad run stopped
    the whole sweep, every time cron ran it)."""
    env["env"]["PYTHONPATH"] += os.pathsep + str(Path(__file__).parent)
    env["env"]["CLI_CLOCK_FILE"] = str(env["dir"] / "clock")
    (env["dir"] / "greeting.py").write_text("def greet(state):\n    return {}\n")
    (env["dir"] / "greeted.yaml").write_text(GREETED_GRAPH)
    policy = env["dir"] / "policy.yaml"
    policy.write_text("mode: default\napproval_timeout_s: 60\n")
    governed = [*AGENT, *journal(env), "--permissions", str(policy)]
    (env["dir"] / "clock").write_text("-7200")
    assert loomgraph(env, "run", "pay acme", *governed, "--graph", "greeted.yaml").returncode == 3
    (env["dir"] / "clock").write_text("-3600")
    assert loomgraph(env, "run", "pay acme", *governed).returncode == 3
    (env["dir"] / "clock").write_text("0")
    (env["dir"] / "greeting.py").unlink()
    rows = [
        json.loads(r)
        for r in loomgraph(env, "runs", "pending", *journal(env), "--json").stdout.splitlines()
    ]
    broken, fine = (r["run_id"] for r in rows)  # oldest first
    sent = loomgraph(env, "runs", "send-on-expired", *governed, "--json")
    assert sent.returncode == 0, sent.stderr
    assert f"run {broken} not sent on" in sent.stderr, sent.stderr
    [result] = [json.loads(line)["result"] for line in sent.stdout.splitlines()]
    assert result["run_id"] == fine and result["status"] == "completed", result
    left = loomgraph(env, "runs", "pending", *journal(env), "--json").stdout.splitlines()
    assert [json.loads(r)["run_id"] for r in left] == [broken] and paid(env) == []


def test_permissions_file_governs_the_run_and_pins_its_resume(env: dict[str, Any]) -> None:
    policy = env["dir"] / "policy.yaml"
    policy.write_text("mode: default\nask:\n  - pay(amount>1)\nallow:\n  - pay\n")
    waiting = loomgraph(env, "run", "pay", *AGENT, *journal(env), "--permissions", str(policy))
    assert waiting.returncode == 3, waiting.stderr
    row = json.loads(loomgraph(env, "runs", "pending", *journal(env), "--json").stdout)
    assert row["rule"].startswith("ask:pay")
    # Without the file, the resume is refused: the run is pinned to the policy it started with.
    answer = ["runs", "approve", row["run_id"], row["call_id"], "--request", row["key"]]
    refused = loomgraph(env, *answer, *AGENT, *journal(env))
    assert refused.returncode == 2 and "pinned to permission policy" in refused.stderr
    assert paid(env) == []
    done = loomgraph(env, *answer, *AGENT, *journal(env), "--permissions", str(policy))
    assert done.returncode == 0, done.stderr
    assert paid(env) == ["acme\t5"]


def test_a_malformed_permission_file_is_a_usage_error(env: dict[str, Any]) -> None:
    policy = env["dir"] / "policy.yaml"
    policy.write_text("ask:\n  - pay(amount>>1)\n")
    bad = loomgraph(env, "run", "pay", *AGENT, "--permissions", str(policy))
    assert bad.returncode == 2 and "policy.yaml" in bad.stderr and paid(env) == []


def test_two_concurrent_approvals_of_one_call_pay_once(env: dict[str, Any]) -> None:
    waiting = loomgraph(env, "run", "pay acme", *AGENT, *journal(env))
    assert waiting.returncode == 3
    row = json.loads(loomgraph(env, "runs", "pending", *journal(env), "--json").stdout)
    command = [
        sys.executable, "-m", "loomgraph.cli.main", "runs", "approve",
        row["run_id"], row["call_id"], "--request", row["key"], *AGENT, *journal(env),
    ]  # fmt: skip
    both = [
        subprocess.Popen(
            command,
            cwd=env["dir"],
            env=env["env"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outcomes = [(p.wait(timeout=120), p.communicate()[1]) for p in both]
    codes = sorted(code for code, _ in outcomes)
    assert codes[0] == 0 and codes[1] != 0, outcomes
    loser = next(err for code, err in outcomes if code != 0)
    # Refused however far the winner got: still holding the run, its answer journaled, done.
    refusals = ("leased by", "was already answered", "not waiting for an approval")
    assert any(refusal in loser for refusal in refusals), loser
    assert paid(env) == ["acme\t5"]
