"""Follow-ups of the command line's probe findings: a dead letter's output at its source, an
agent file's audit log without a key worded with the file's keys, a graph the journal does
not keep answered with `--graph`, and the advice a refused retry gives (`override_policy` on
`retry` too; on the command line only the command line's own command). The command's `main`
in this process, on SQLite journals, as in test_cli_probe_findings."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from loomgraph import Agent
from loomgraph.agent.checkpoints import GraphChanged
from loomgraph.agent.governance_state import PolicyChanged
from loomgraph.authoring.agent_file import AgentFileError
from loomgraph.cli import agent_args
from loomgraph.cli.main import main
from loomgraph.governance.permissions import StandardPermissions
from loomgraph.models import ScriptedModel
from loomgraph.observability import FileAuditLog
from loomgraph.protocols import ModelError, RunStatus
from loomgraph.runtime import InMemoryRuntime
from test_cli_probe_findings import ASK, HELPERS, JOURNAL, request_of, run_id_of


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Any:
    """`loomgraph ARGS…` in this process, in tmp_path: (exit code, stdout, stderr)."""
    (tmp_path / "probe_findings_helpers.py").write_text(HELPERS)
    (tmp_path / "ask.yaml").write_text(ASK)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("PROBE_LEDGER", str(tmp_path / "ledger.txt"))

    def run(*args: str) -> tuple[int, str, str]:
        code = main(list(args))
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def _dead_letter(cli: Any) -> str:
    """A run whose every recovery fails, given up as a dead letter: its id."""
    fail = ["--model", "probe_findings_helpers:FAIL", *JOURNAL]
    code, out, _ = cli("run", "go", *fail)
    assert code == 1
    run_id = run_id_of(out)
    for _ in range(4):  # three failed recoveries, then the resume that gives up
        cli("runs", "resume", run_id, *fail)
    return run_id


# ----------------------------------------------------------------- 2. a dead letter's output


async def test_a_dead_letters_result_has_the_empty_output_of_every_other_status(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from loomgraph.cli.output import print_result

    down = ModelError("provider down")
    agent = Agent("", model=ScriptedModel([down] * 3), max_recoveries=1)
    first = await agent.run("go")
    await agent.resume(first.run_id)  # a failed recovery
    given_up = await agent.resume(first.run_id)
    assert given_up.status == RunStatus.DEAD_LETTER
    assert given_up.output == ""
    record = await agent.deps.runtime.load_run(first.run_id)
    assert record is not None and record.result is not None
    assert record.result["output"] == ""  # as the journal keeps it
    # A dead letter journaled before, with output None, still prints ''.
    old = type(given_up).from_dict({**record.result, "output": None})
    assert print_result(old, False) == 1
    assert "status=dead_letter output=''" in capsys.readouterr().out


# ----------------------------------------------------------------- 3. an agent file's audit key


def test_an_agent_files_audit_log_without_a_key_names_the_files_keys(
    cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LOOMGRAPH_AUDIT_KEY", raising=False)
    head = "schema_version: 1\nname: a\nmodel: echo\n"
    (tmp_path / "a.yaml").write_text(head + "audit_log: {file: ./audit.jsonl}\n")
    with pytest.raises(AgentFileError) as caught:
        Agent.from_file(tmp_path / "a.yaml")
    said = str(caught.value)
    assert "`key_env: NAME`" in said and "`key_file: PATH`" in said
    assert "`unsigned: true`" in said and "$LOOMGRAPH_AUDIT_KEY" in said
    assert "key=" not in said and "unsigned=True" not in said
    # The command line shows the same words.
    code, _, err = cli("run", "hi", "-a", "a.yaml")
    assert code == 2 and "`key_file: PATH`" in err and "key_file=" not in err
    (tmp_path / "b.yaml").write_text(
        head + "audit_log: {file: ./audit.jsonl, key_env: NO_SUCH_AUDIT_KEY_VAR}\n"
    )
    with pytest.raises(AgentFileError) as caught:
        Agent.from_file(tmp_path / "b.yaml")
    said = str(caught.value)
    assert "$NO_SUCH_AUDIT_KEY_VAR" in said and "`key_env`" in said and "key_env=" not in said


# ----------------------------------------------------------------- 4. a graph not kept


def test_a_run_older_than_kept_graphs_is_answered_with_the_graph_option(
    cli: Any, tmp_path: Path
) -> None:
    (tmp_path / "asker.yaml").write_text(
        "schema_version: 1\nname: asker\nmodel: echo\narchitecture: ./ask.yaml\n"
        "runtime: sqlite:j.db\n"
    )
    code, out, err = cli("run", "apples", "-a", "asker.yaml")
    assert code == 3
    run_id, key = run_id_of(out), request_of(err)
    db = sqlite3.connect(tmp_path / "j.db")
    with db:
        db.execute("DELETE FROM graphs")  # a run journaled before graphs were kept
    db.close()
    (tmp_path / "ask.yaml").write_text(ASK.replace("How many?", "How many now?"))
    agent_args._load.cache_clear()  # a command reads its agent file once: here, all run here
    # The library says what the remedy is as data; its own words stay Python's.
    agent = Agent.from_file(tmp_path / "asker.yaml")
    try:
        with pytest.raises(GraphChanged) as caught:
            asyncio.run(agent.resume(run_id, value=3))
    finally:
        asyncio.run(agent.aclose())
    assert caught.value.movable and "graph='current'" in str(caught.value)
    answer = ["--value", "3", "--request", key]
    code, out, err = cli("runs", "resume", run_id, "-a", "asker.yaml", *answer)
    assert code == 2, out + err
    assert "does not keep" in err and "--graph current" in err and "--graph FILE" in err
    assert "graph='current'" not in err and "resume(" not in err
    code, _, err = cli("runs", "resume", run_id, "-a", "asker.yaml", "--graph", "current",
                       *answer)  # fmt: skip
    assert code == 0, err


# ----------------------------------------------------------------- 5. a refused retry's advice


async def test_retry_takes_override_policy_as_resume_does(tmp_path: Path) -> None:
    runtime = InMemoryRuntime()
    down = ModelError("provider down")
    first = Agent("", model=ScriptedModel([down] * 3), runtime=runtime, max_recoveries=1)
    started = await first.run("go")
    await first.resume(started.run_id)
    assert (await first.resume(started.run_id)).status == RunStatus.DEAD_LETTER
    strict = Agent(
        "",
        model=ScriptedModel(["ok"]),
        runtime=runtime,
        max_recoveries=1,
        permissions=StandardPermissions(ask=["pay"]),
        audit_log=FileAuditLog(tmp_path / "audit.jsonl", unsigned=True),
    )
    with pytest.raises(PolicyChanged, match="override_policy=True"):
        await strict.retry(started.run_id)
    # Refused before the count is forgotten: the run is still a dead letter.
    record = await runtime.load_run(started.run_id)
    assert record is not None and record.status == RunStatus.DEAD_LETTER
    done = await strict.retry(started.run_id, override_policy=True)
    assert done.status == RunStatus.COMPLETED and done.output == "ok"
    entries = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [e["action"] for e in entries].count("policy_override") == 1


def test_a_dead_letter_refused_on_the_command_line_names_only_its_command(cli: Any) -> None:
    run_id = _dead_letter(cli)
    fail = ["--model", "probe_findings_helpers:FAIL", *JOURNAL]
    code, _, err = cli("runs", "resume", run_id, *fail)
    assert code == 2
    assert "is a dead letter" in err and f"loomgraph runs retry {run_id}" in err
    assert "agent.retry" not in err
    code, out, err = cli("runs", "retry", run_id, *fail)
    assert code == 1 and "status=failed" in out, err
