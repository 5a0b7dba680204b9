"""What a probe of the command line found: approvals of a run started on a graph file, the
in-memory journal, `--json` of the commands that go on with a run, the CLI's own advice in
errors, `--graph current` of a run from a file, and a dead letter's output. The command's
`main` in this process (a real subprocess where a test needs one), on SQLite journals."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from loomgraph.cli.main import main
from test_cli_terminal import HELPERS as STUCK_HELPERS
from test_cli_terminal import environ

ROOT = Path(__file__).parent.parent

HELPERS = '''
import os
from loomgraph import tool
from loomgraph.models import ScriptedModel


@tool(destructive=True)
def pay(to: str, amount: int) -> str:
    """Pay someone."""
    with open(os.environ["PROBE_LEDGER"], "a") as f:
        f.write(f"{to} {amount}\\n")
    return f"paid {amount} to {to}"


TOOLS = [pay]
PAY = ScriptedModel([{"tool_calls": [{"tool": "pay", "args": {"to": "acme", "amount": 5}}]},
                     "done"])
FAIL = ScriptedModel([RuntimeError("provider down")])
'''

ASK = """
name: ask
state:
  count: {type: int, default: 0}
entry: how_many
nodes:
  how_many: {kind: interrupt, request: int, output: count, message: "How many?"}
edges:
  - {from: how_many, to: END}
"""

AGENT = ["--model", "probe_findings_helpers:PAY", "--tools", "probe_findings_helpers:TOOLS"]


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Any:
    """`loomgraph ARGS…` in this process, in tmp_path: (exit code, stdout, stderr)."""
    (tmp_path / "probe_findings_helpers.py").write_text(HELPERS)
    (tmp_path / "ask.yaml").write_text(ASK)
    react = (ROOT / "graphs" / "react.yaml").read_text()
    (tmp_path / "myreact.yaml").write_text(react.replace("name: react", "name: myreact"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("PROBE_LEDGER", str(tmp_path / "ledger.txt"))

    def run(*args: str) -> tuple[int, str, str]:
        code = main(list(args))
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def paid(tmp_path: Path) -> list[str]:
    ledger = tmp_path / "ledger.txt"
    return ledger.read_text().splitlines() if ledger.exists() else []


def run_id_of(out: str) -> str:
    return out.split("run=")[1].split()[0]


def request_of(err: str) -> str:
    """The question a stopped run waits at, as the command it printed to answer it names it
    (`answer with: … --request KEY`): what a user copies."""
    return err.split("answer with: ")[1].split("--request ")[1].split()[0]


def approval_of(cli: Any, run_id: str) -> str:
    """The approval request run `run_id` waits at, as `runs pending --json` lists it: its
    key, for `runs approve|deny … --request KEY`."""
    code, out, err = cli("runs", "pending", *JOURNAL, "--json")
    assert code == 0, err
    (key,) = [row["key"] for row in map(json.loads, out.splitlines()) if row["run_id"] == run_id]
    return str(key)


JOURNAL = ["--runtime", "sqlite:j.db"]


# ----------------------------------------------------------------- 1. approvals of a file run


def test_approve_and_deny_go_on_with_the_pinned_graph_of_a_run_started_on_a_graph_file(
    cli: Any, tmp_path: Path
) -> None:
    code, out, err = cli("run", "pay", "--graph", "myreact.yaml", *AGENT, *JOURNAL)
    assert code == 3, err
    approved = run_id_of(out)
    code, out, err = cli("run", "pay", "--graph", "myreact.yaml", *AGENT, *JOURNAL)
    assert code == 3, err
    denied = run_id_of(out)
    approved_key, denied_key = approval_of(cli, approved), approval_of(cli, denied)
    # The journal keeps the graph: the file may be gone, as for `runs resume`.
    (tmp_path / "myreact.yaml").unlink()
    code, out, err = cli("runs", "approve", approved, "call_0_0", "--request", approved_key,
                         *AGENT, *JOURNAL)  # fmt: skip
    assert code == 0, err
    assert "status=completed" in out
    assert paid(tmp_path) == ["acme 5"]
    code, out, err = cli("runs", "deny", denied, "call_0_0", "--request", denied_key,
                         *AGENT, *JOURNAL)  # fmt: skip
    assert code == 0, err
    assert paid(tmp_path) == ["acme 5"]  # denied: not paid again
    # `--graph` takes the same choices as `runs resume`'s.
    assert "pinned|current|GRAPH" in _help("runs", "approve")


def _help(*command: str) -> str:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        main([*command, "--help"])
    return " ".join(out.getvalue().split())


# ----------------------------------------------------------------- 2. the in-memory journal


def test_run_on_the_in_memory_journal_runs_and_says_it_cannot_be_resumed(
    cli: Any, tmp_path: Path
) -> None:
    (tmp_path / "mem.yaml").write_text(
        "schema_version: 1\nname: mem-bot\nmodel: echo\nruntime: memory\n"
    )
    code, out, err = cli("run", "hi", "-a", "mem.yaml")
    assert code == 0, err
    assert "status=completed output='hi'" in out
    code, out, err = cli("run", "hi", "--model", "echo", "--runtime", "memory")
    assert code == 0, err
    # A question: shown, but no command to answer it (nothing is kept to answer).
    code, out, err = cli("run", "apples", "--graph", "ask.yaml", "--runtime", "memory")
    assert code == 3, err
    assert "How many?" in out
    assert "runs resume" not in err and "in memory" in err and "cannot be answered" in err
    # An ask cannot wait for `runs approve` in a journal that forgets it: denied, as with
    # no journal, saying how to be asked.
    code, out, err = cli("run", "pay", *AGENT, "--runtime", "memory")
    assert code == 0, err
    assert "nobody can approve it here" in out
    assert paid(tmp_path) == []


@pytest.mark.parametrize("journal", ["memory", "sqlite::memory:"])
def test_ctrl_c_of_a_run_in_memory_prints_no_resume_command(tmp_path: Path, journal: str) -> None:
    (tmp_path / "h.py").write_text(STUCK_HELPERS)
    command = ["run", "hi", "--model", "h:stuck", "--runtime", journal]
    proc = subprocess.Popen(
        [sys.executable, "-m", "loomgraph.cli.main", *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=environ(),
    )
    assert proc.stderr is not None
    line = proc.stderr.readline()  # blocks until the model is waiting (or the process ends)
    assert "MODEL-WAITING" in line, line + proc.stderr.read()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out + err
    assert "resume with" not in err and "runs resume" not in err
    assert f"had its journal in memory ({journal})" in err and "cannot be resumed" in err


@pytest.mark.parametrize("journal", ["memory", "sqlite::memory:"])
def test_runs_commands_refuse_a_journal_in_memory(cli: Any, journal: str) -> None:
    code, _, err = cli("runs", "list", "--runtime", journal)
    assert code == 2
    assert f"--runtime {journal} keeps nothing between commands" in err


# ----------------------------------------------------------------- 3. --json is one line


def test_json_of_the_commands_that_go_on_with_a_run_is_one_result_line(
    cli: Any, tmp_path: Path
) -> None:
    code, out, _ = cli("run", "pay", *AGENT, *JOURNAL, "--json")
    assert code == 3
    first = json.loads(out.splitlines()[0])["run_id"]
    first_key = json.loads(out.splitlines()[-1])["payload"]["result"]["pending"]["key"]
    code, out, _ = cli("run", "pay", *AGENT, *JOURNAL, "--json")
    second = json.loads(out.splitlines()[0])["run_id"]
    second_key = json.loads(out.splitlines()[-1])["payload"]["result"]["pending"]["key"]
    code, out, err = cli("runs", "approve", first, "call_0_0", "--request", first_key,
                         *AGENT, *JOURNAL, "--json")  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["result"]["status"] == "completed"  # the whole stdout: one line
    code, out, err = cli("runs", "deny", second, "call_0_0", "--request", second_key,
                         *AGENT, *JOURNAL, "--json")  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["result"]["run_id"] == second
    code, out, err = cli("run", "go", "--model", "probe_findings_helpers:FAIL", *JOURNAL)
    failed = run_id_of(out)
    for command in ("resume", "retry"):
        code, out, err = cli(
            "runs", command, failed, "--model", "probe_findings_helpers:FAIL", *JOURNAL, "--json"
        )
        assert code == 1, err
        assert json.loads(out)["result"]["status"] == "failed"
    code, out, err = cli("runs", "fork", failed, "--at", "0", "--model", "echo", *JOURNAL, "--json")
    assert code == 0, err
    assert json.loads(out)["result"]["output"] == "go"


# ----------------------------------------------------------------- 4. the CLI's own advice


def test_a_changed_policy_is_answered_with_what_the_command_line_offers(
    cli: Any, tmp_path: Path
) -> None:
    (tmp_path / "strict.yaml").write_text("mode: default\nask: [pay]\n")
    code, out, _ = cli("run", "pay", *AGENT, *JOURNAL)
    run_id = run_id_of(out)
    code, _, err = cli("runs", "approve", run_id, "call_0_0", "--request", approval_of(cli, run_id),
                       *AGENT, *JOURNAL, "--permissions", "strict.yaml")  # fmt: skip
    assert code == 2
    assert "override_policy" not in err
    assert "started with the default permissions" in err and "leave --permissions out" in err
    # Started under a file: that file is what to give again.
    code, out, _ = cli("run", "pay", *AGENT, *JOURNAL, "--permissions", "strict.yaml")
    run_id = run_id_of(out)
    code, _, err = cli("runs", "deny", run_id, "call_0_0", "--request", approval_of(cli, run_id),
                       *AGENT, *JOURNAL)  # fmt: skip
    assert code == 2
    assert "override_policy" not in err
    assert "give the --permissions FILE the run started with" in err
    assert paid(tmp_path) == []


def test_audit_verify_without_a_key_names_the_commands_options(
    cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from loomgraph.observability import AuditKeyMissing, resolve_audit_key

    monkeypatch.delenv("LOOMGRAPH_AUDIT_KEY", raising=False)
    (tmp_path / "au.jsonl").write_text("")
    code, _, err = cli("audit", "verify", "au.jsonl")
    assert code == 2
    assert "--key-file" in err and "--key-env" in err and "--unsigned" in err
    assert "key=" not in err and "unsigned=True" not in err
    code, _, err = cli("audit", "head", "au.jsonl", "--key-env", "NO_SUCH_KEY_VAR")
    assert code == 2 and "$NO_SUCH_KEY_VAR" in err and "--key-env" in err
    # The library says which remedy applies as data; its own words stay Python's.
    with pytest.raises(AuditKeyMissing) as missing:
        resolve_audit_key()
    assert (missing.value.variable, missing.value.named) == ("LOOMGRAPH_AUDIT_KEY", False)
    assert "unsigned=True" in str(missing.value)


# ----------------------------------------------------------------- 5. --graph current


def test_graph_current_of_a_run_from_a_file_says_to_pass_the_file(cli: Any, tmp_path: Path) -> None:
    code, out, err = cli("run", "apples", "--graph", "ask.yaml", *JOURNAL)
    assert code == 3
    run_id, answer = run_id_of(out), ["--value", "3", "--request", request_of(err)]
    code, _, err = cli("runs", "resume", run_id, "--graph", "current", *JOURNAL, *answer)
    assert code == 2
    assert "--graph ask.yaml" in err and "no built-in graph 'ask'" not in err
    code, _, err = cli("runs", "resume", run_id, "--graph", "ask.yaml", *JOURNAL, *answer)
    assert code == 0, err
    helped = _help("runs", "resume")
    assert "the file (or built-in) reads now" not in helped
    assert "current: move the run to the agent file's graph" in helped


def test_graph_current_with_an_agent_file_moves_the_run_to_the_files_graph(
    cli: Any, tmp_path: Path
) -> None:
    (tmp_path / "asker.yaml").write_text(
        "schema_version: 1\nname: asker\nmodel: echo\narchitecture: ./ask.yaml\n"
        "runtime: sqlite:j.db\n"
    )
    code, out, err = cli("run", "apples", "-a", "asker.yaml")
    assert code == 3
    run_id = run_id_of(out)
    code, _, err = cli("runs", "resume", run_id, "-a", "asker.yaml", "--graph", "current",
                       "--value", "3", "--request", request_of(err))  # fmt: skip
    assert code == 0, err


# ----------------------------------------------------------------- 6. a dead letter's output


def test_a_dead_letter_prints_an_empty_output_as_every_other_status(cli: Any) -> None:
    fail = ["--model", "probe_findings_helpers:FAIL", *JOURNAL]
    code, out, _ = cli("run", "go", *fail)
    assert code == 1
    run_id = run_id_of(out)
    for _ in range(3):  # each resume fails again: a failed recovery
        code, out, _ = cli("runs", "resume", run_id, *fail)
        assert code == 1 and "status=failed output=''" in out
    code, out, err = cli("runs", "resume", run_id, *fail)
    assert code == 1, err
    assert "status=dead_letter output=''" in out and "output=None" not in out
