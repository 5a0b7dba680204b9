"""`loomgraph runs …`, `render --run` and `run --runtime`, run as real subprocesses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from loomgraph import Agent
from loomgraph.models import ScriptedModel
from loomgraph.runtime.sqlite import SqliteRuntime

TESTS = Path(__file__).parent
ROOT = TESTS.parent

# A module the subprocesses import by path: ledger-writing tools and scripted models.
HELPERS = '''
import json, os
from loomgraph.models import ScriptedModel

TOOL_TURN = {"text": "", "tool_calls": [{"tool": "lookup", "args": {"city": "Paris"}},
                                        {"tool": "lookup", "args": {"city": "Tokyo"}}]}


def _write(key, args):
    with open(os.environ["CLI_LEDGER"], "a") as f:
        f.write(key + "\\t" + json.dumps(args) + "\\n")


async def lookup(city: str, idempotency_key: str) -> str:
    """Find the country of a city."""
    _write(idempotency_key, {"city": city})
    return {"Paris": "France", "Tokyo": "Japan"}[city]


async def add(a: int, b: int, idempotency_key: str) -> int:
    """Add two numbers."""
    _write(idempotency_key, {"a": a, "b": b})
    return a + b


TOOLS = [lookup, add]
RECOVERED = ScriptedModel([TOOL_TURN, "France and Japan."])
BROKEN = ScriptedModel([TOOL_TURN, RuntimeError("provider down")])


def crash_script():
    import crash_worker
    return ScriptedModel(crash_worker.SCRIPT)
'''


@pytest.fixture
def env(tmp_path: Path) -> dict[str, Any]:
    """A journal path, a ledger, and the helper module on the subprocesses' path."""
    (tmp_path / "cli_helpers.py").write_text(HELPERS)
    ledger = tmp_path / "ledger.tsv"
    variables = dict(
        os.environ,
        CLI_LEDGER=str(ledger),
        PYTHONPATH=os.pathsep.join([str(tmp_path), str(TESTS), os.environ.get("PYTHONPATH", "")]),
    )
    return {"db": tmp_path / "journal.db", "ledger": ledger, "env": variables, "dir": tmp_path}


def loomgraph(env: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    """Run the real command."""
    return subprocess.run(
        [sys.executable, "-m", "loomgraph.cli.main", *args],
        capture_output=True,
        text=True,
        cwd=env["dir"],
        env=env["env"],
        timeout=120,
    )


def journal(env: dict[str, Any]) -> list[str]:
    return ["--runtime", f"sqlite:{env['db']}"]


def ledger(env: dict[str, Any]) -> Counter[str]:
    path: Path = env["ledger"]
    return (
        Counter(line.split("\t")[0] for line in path.read_text().splitlines())
        if path.exists()
        else Counter()
    )


def failed_run(env: dict[str, Any]) -> str:
    """`loomgraph run --runtime`: a durable run whose second model call fails."""
    done = loomgraph(
        env,
        "run",
        "Where are Paris and Tokyo?",
        "--model",
        "cli_helpers:BROKEN",
        "--tools",
        "cli_helpers:TOOLS",
        "--user",
        "alice",
        "--json",
        *journal(env),
    )
    assert done.returncode == 1, done.stderr  # the run failed
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert events[-1]["kind"] == "run_completed" and events[-1]["payload"]["status"] == "failed"
    run_id: str = events[0]["run_id"]
    return run_id


def test_run_with_a_runtime_is_durable_and_listed(env: dict[str, Any]) -> None:
    done = loomgraph(env, "run", "hello", "--model", "echo", "--user", "bob", *journal(env))
    assert done.returncode == 0, done.stderr
    assert "run=" in done.stdout
    run_id = done.stdout.split("run=")[1].split()[0]
    failed = failed_run(env)

    listed = loomgraph(env, "runs", "list", *journal(env), "--json")
    assert listed.returncode == 0, listed.stderr
    runs = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(r["run_id"], r["status"], r["user_id"], r["graph_name"]) for r in runs] == [
        (run_id, "completed", "bob", "react"),
        (failed, "failed", "alice", "react"),
    ]
    text = loomgraph(env, "runs", "list", *journal(env))
    assert text.returncode == 0
    header, *rows = text.stdout.splitlines()
    assert header.split()[:5] == ["RUN", "STATUS", "USER", "GRAPH", "CREATED"]
    assert rows[0].split()[:4] == [run_id, "completed", "bob", "react"]
    only_alice = loomgraph(env, "runs", "list", "--user", "alice", *journal(env), "--json")
    assert [json.loads(x)["run_id"] for x in only_alice.stdout.splitlines()] == [failed]


def test_show_prints_transitions_state_and_result(env: dict[str, Any]) -> None:
    run_id = failed_run(env)
    shown = loomgraph(env, "runs", "show", run_id, *journal(env), "--json")
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["run"]["status"] == "failed" and "provider down" in data["run"]["reason"]
    assert [(t["seq"], t["node"], t["visit"], t["next"]) for t in data["transitions"]] == [
        (1, "model", 1, "tools"),
        (2, "tools", 1, "model"),
    ]
    assert [m["content"] for m in data["state"]["messages"] if m["role"] == "tool"] == [
        "France",
        "Japan",
    ]
    assert data["result"]["status"] == "failed"
    text = loomgraph(env, "runs", "show", run_id, *journal(env)).stdout
    assert f"run {run_id}  status=failed" in text
    assert "2    tools  1      model" in text
    assert '"content": "Japan"' in text


def test_resume_continues_a_failed_run_without_rerunning_its_tools(env: dict[str, Any]) -> None:
    run_id = failed_run(env)
    assert sorted(ledger(env).values()) == [1, 1]
    resumed = loomgraph(
        env,
        "runs",
        "resume",
        run_id,
        "--model",
        "cli_helpers:RECOVERED",
        "--tools",
        "cli_helpers:TOOLS",
        *journal(env),
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "node_completed  model -> END" in resumed.stdout
    assert "status=completed output='France and Japan.'" in resumed.stdout
    assert sorted(ledger(env).values()) == [1, 1]  # the finished tool calls were replayed
    shown = json.loads(loomgraph(env, "runs", "show", run_id, *journal(env), "--json").stdout)
    assert shown["run"]["status"] == "completed"
    assert [t["node"] for t in shown["transitions"]] == ["model", "tools", "model"]
    # A finished run: resuming again returns its result and executes nothing.
    again = loomgraph(
        env,
        "runs",
        "resume",
        run_id,
        "--model",
        "cli_helpers:BROKEN",
        "--tools",
        "cli_helpers:TOOLS",
        *journal(env),
        "--json",
    )
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout.splitlines()[-1])["result"]["output"] == "France and Japan."


def test_resume_that_fails_again_exits_one(env: dict[str, Any]) -> None:
    run_id = failed_run(env)
    again = loomgraph(
        env,
        "runs",
        "resume",
        run_id,
        "--model",
        "cli_helpers:BROKEN",
        "--tools",
        "cli_helpers:TOOLS",
        *journal(env),
    )
    assert again.returncode == 1
    assert "status=failed" in again.stdout and "provider down" in again.stdout


def test_resume_after_a_crash_takes_over_the_dead_workers_lease(env: dict[str, Any]) -> None:
    crashed = subprocess.run(
        [
            sys.executable,
            str(TESTS / "crash_worker.py"),
            "run",
            "--journal",
            f"sqlite:{env['db']}",
            "--ledger",
            str(env["ledger"]),
            "--point",
            "after_effect",
            "--n",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    run_id = json.loads(crashed.stdout.splitlines()[0])["run_id"]
    options = ["--model", "cli_helpers:crash_script", "--tools", "cli_helpers:TOOLS", *journal(env)]
    # The killed worker's lease has not expired, but its process is gone: taken over at
    # once, without a flag (--break-dead-lease is still accepted, and changes nothing).
    resumed = loomgraph(env, "runs", "resume", run_id, *options)
    assert resumed.returncode == 0, resumed.stderr
    assert "effect_unknown_after_crash" in resumed.stdout
    assert "2 + 3 = 5" in resumed.stdout
    counts = ledger(env)
    assert counts[f"{run_id}:tools:1:1"] == 2  # ran, crashed before its outcome, ran again
    assert counts[f"{run_id}:tools:1:2"] == 1 and counts[f"{run_id}:tools:2:1"] == 1
    shown = loomgraph(env, "runs", "show", run_id, *journal(env)).stdout
    assert f"unknown_after_crash, executed again after a crash: {run_id}:tools:1:1" in shown, shown
    data = json.loads(loomgraph(env, "runs", "show", run_id, *journal(env), "--json").stdout)
    effects = {e["key"]: e for e in data["effects"]}
    crashed = effects[f"{run_id}:tools:1:1"]  # its row keeps the crash, though it is done now
    assert (crashed["status"], crashed["attempts"], crashed["recovered"]) == ("done", 2, True)
    # The turn's second call runs beside the first: its intent may be journaled before the
    # kill (then it is recovered), but it ran exactly once (the ledger above).
    assert effects[f"{run_id}:tools:1:2"]["status"] == "done"


def test_resume_of_a_run_another_process_drives_exits_busy(env: dict[str, Any]) -> None:
    """A run another live process is driving (it holds the run's lease, inside a tool): a
    `runs resume` of it does nothing and says to try again later, with exit code 75 — not 1,
    which says the run failed."""
    worker = [sys.executable, str(TESTS / "crash_worker.py")]
    where = ["--journal", f"sqlite:{env['db']}", "--ledger", str(env["ledger"])]
    crashed = subprocess.run(
        [*worker, "run", *where, "--point", "after_effect", "--n", "2"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    run_id = json.loads(crashed.stdout.splitlines()[0])["run_id"]
    holder = subprocess.Popen(
        [*worker, "resume", *where, "--run-id", run_id, "--hold"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert "holding" in json.loads(holder.stdout.readline())  # inside a tool, leased
        options = ["--model", "cli_helpers:crash_script", "--tools", "cli_helpers:TOOLS"]
        busy = loomgraph(env, "runs", "resume", run_id, *options, *journal(env))
        assert busy.returncode == 75, (busy.returncode, busy.stderr)
        assert "try again later" in busy.stderr and run_id in busy.stderr
    finally:
        holder.communicate("", timeout=120)  # the held tool goes on at end of file
    assert holder.returncode == 0


async def test_fork_starts_a_new_run_from_a_checkpoint_with_a_patch(
    env: dict[str, Any],
) -> None:
    run_id = failed_run(env)
    patch = json.dumps({"messages": [{"role": "user", "content": "And Rome?"}]})
    forked = loomgraph(
        env,
        "runs",
        "fork",
        run_id,
        "--at",
        "2",
        "--patch",
        patch,
        "--model",
        "echo",
        "--tools",
        "cli_helpers:TOOLS",
        *journal(env),
        "--json",
    )
    assert forked.returncode == 0, forked.stderr
    result = json.loads(forked.stdout.splitlines()[-1])["result"]
    assert result["status"] == "completed" and result["output"] == "And Rome?"
    runtime = SqliteRuntime(env["db"])
    try:
        record = await runtime.load_run(result["run_id"])
    finally:
        await runtime.close()
    assert record is not None
    assert (record.parent_run_id, record.parent_seq) == (run_id, 2)
    listed = loomgraph(env, "runs", "list", *journal(env)).stdout
    assert f"{run_id}@2" in listed


def test_diff_prints_what_changed_between_two_checkpoints(env: dict[str, Any]) -> None:
    run_id = failed_run(env)
    done = loomgraph(env, "runs", "diff", run_id, "1", "2", *journal(env), "--json")
    assert done.returncode == 0, done.stderr
    changes = json.loads(done.stdout)
    assert set(changes) == {"messages"}
    added = changes["messages"]["after"][len(changes["messages"]["before"]) :]
    assert [m["content"] for m in added] == ["France", "Japan"]
    text = loomgraph(env, "runs", "diff", run_id, "0", "1", *journal(env)).stdout
    assert "messages:\n  + " in text and "usage:" in text
    same = loomgraph(env, "runs", "diff", run_id, "2", "2", *journal(env)).stdout
    assert "no change" in same


def test_render_run_draws_the_path_and_highlights_where_it_failed(
    env: dict[str, Any],
) -> None:
    run_id = failed_run(env)
    out = env["dir"] / "run.dot"
    done = loomgraph(env, "render", "react", "--run", run_id, *journal(env), "-o", str(out))
    assert done.returncode == 0, done.stderr
    dot = out.read_text()
    assert "visits: 1" in dot  # model and tools, once each
    model_line = next(line for line in dot.splitlines() if "<B>model</B>" in line)
    assert "#dc2626" in model_line  # failed: the node it stopped at, in red
    assert "\N{MULTIPLICATION SIGN}1" in dot  # edges taken, with counts
    svg = env["dir"] / "run.svg"
    assert (
        loomgraph(env, "render", "react", "--run", run_id, *journal(env), "-o", str(svg)).returncode
        == 0
    )
    assert "<svg" in svg.read_text()


BAD_INPUT = [
    ["runs", "show", "no-such-run"],
    ["runs", "diff", "RUN", "0", "99"],
    ["runs", "fork", "RUN", "--at", "99"],
    ["runs", "fork", "RUN", "--at", "1", "--patch", "{not json"],
    ["runs", "fork", "RUN", "--at", "1", "--patch", '{"no_such_field": 1}'],
    ["runs", "resume", "no-such-run"],
    ["runs", "resume", "RUN", "--graph", "no-such-graph"],
    ["render", "react", "--run", "no-such-run", "-o", "x.svg"],
]


def test_unknown_runs_and_bad_input_exit_two(env: dict[str, Any]) -> None:
    run_id = failed_run(env)
    for args in BAD_INPUT:
        done = loomgraph(env, *[run_id if a == "RUN" else a for a in args], *journal(env))
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert done.stderr.startswith("loomgraph: "), (args, done.stderr)
        assert "Traceback" not in done.stderr, args


def test_bad_journals_exit_two(env: dict[str, Any]) -> None:
    missing = loomgraph(env, "runs", "list", "--runtime", f"sqlite:{env['dir'] / 'nope.db'}")
    assert missing.returncode == 2 and "no journal at" in missing.stderr
    assert not (env["dir"] / "nope.db").exists()  # listing never creates a journal
    garbage = env["dir"] / "garbage.db"
    garbage.write_bytes(b"not a database at all" * 10)
    bad = loomgraph(env, "runs", "list", "--runtime", f"sqlite:{garbage}")
    assert bad.returncode == 2 and "not an SQLite database" in bad.stderr
    no_runtime = loomgraph(env, "render", "react", "--run", "x", "-o", "x.svg")
    assert no_runtime.returncode == 2 and "--runtime" in no_runtime.stderr
    usage = loomgraph(env, "runs", "list")  # argparse: --runtime is required
    assert usage.returncode == 2


async def test_resume_uses_the_runs_own_graph_by_default(env: dict[str, Any]) -> None:
    """No --graph: the graph the run was made with is looked up by its name."""
    runtime = SqliteRuntime(env["db"])
    agent = Agent("x", model=ScriptedModel([RuntimeError("down")]), runtime=runtime)
    failed = await agent.run("hi")
    await runtime.close()
    assert failed.status == "failed"
    done = loomgraph(env, "runs", "resume", failed.run_id, "--model", "echo", *journal(env))
    assert done.returncode == 0, done.stderr
    assert "status=completed output='hi'" in done.stdout


def test_resume_goes_on_with_the_pinned_graph_and_moves_only_when_it_fits(
    env: dict[str, Any],
) -> None:
    graph = env["dir"] / "mine.yaml"
    react = (ROOT / "graphs" / "react.yaml").read_text().replace("name: react", "name: mine")
    graph.write_text(react)
    options = ["--model", "cli_helpers:RECOVERED", "--tools", "cli_helpers:TOOLS", *journal(env)]
    started = loomgraph(
        env, "run", "Where?", "--graph", str(graph), "--model", "cli_helpers:BROKEN",
        "--tools", "cli_helpers:TOOLS", "--json", *journal(env),
    )  # fmt: skip
    assert started.returncode == 1, started.stderr
    run_id = json.loads(started.stdout.splitlines()[0])["run_id"]
    # The file changes: its tools node is renamed. Moving the run there is refused, naming
    # the node it visited and the seq it stopped at; nothing is run.
    graph.write_text(
        react.replace("  tools:\n", "  act:\n")
        .replace("to: tools\n", "to: act\n")
        .replace("from: tools\n", "from: act\n")
    )
    moved = loomgraph(env, "runs", "resume", run_id, "--graph", str(graph), *options)
    assert moved.returncode == 2, moved.stdout + moved.stderr
    assert "node 'tools'" in moved.stderr and "seq 2" in moved.stderr
    # By default it goes on with the graph it started with, as the journal keeps it.
    resumed = loomgraph(env, "runs", "resume", run_id, *options)
    assert resumed.returncode == 0, resumed.stderr
    assert "status=completed output='France and Japan.'" in resumed.stdout
    shown = json.loads(loomgraph(env, "runs", "show", run_id, *journal(env), "--json").stdout)
    assert [t["node"] for t in shown["transitions"]] == ["model", "tools", "model"]
    helped = loomgraph(env, "runs", "resume", "--help")
    assert "pinned|current|GRAPH" in helped.stdout and "accept-graph-change" not in helped.stdout
