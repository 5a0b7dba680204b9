"""Interrupts from the shell: `loomgraph run` and `runs resume` print what an `interrupt` node
asks, and `runs resume --value JSON` answers it (type-checked as `Agent.resume(value=...)`)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from loomgraph.cli.main import main
from loomgraph.protocols import RunStatus
from loomgraph.runtime.sqlite import SqliteRuntime

GRAPH = """
name: ask
state:
  count: {type: int, default: 0}
  note: {type: str, default: ""}
  tags: {type: "list[str]", default: []}
entry: how_many
nodes:
  how_many: {kind: interrupt, request: int, output: count, message: "How many for {{ input }}?"}
  why: {kind: interrupt, request: str, output: note, message: "Why {{ count }}?"}
  tag: {kind: interrupt, request: "list[str]", output: tags, message: "Tags?"}
edges:
  - {from: how_many, to: why}
  - {from: why, to: tag}
  - {from: tag, to: END}
"""


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Any:
    """`loomgraph ARGS…` in this process on a journal in tmp_path: (exit code, out, err)."""
    (tmp_path / "ask.yaml").write_text(GRAPH)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NO_COLOR", "1")
    journal = ["--runtime", f"sqlite:{tmp_path / 'journal.db'}"]

    def run(*args: str) -> tuple[int, str, str]:
        code = main([*args, *journal])
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def started(cli: Any, prompt: str = "apples") -> tuple[str, str]:
    """A run of ask.yaml waiting at its first question: its id and the question's key."""
    code, out, err = cli("run", prompt, "--graph", "ask.yaml")
    assert code == 3, err
    run_id: str = out.split("run=")[1].split()[0]
    return run_id, key_asked(err)


def key_asked(err: str) -> str:
    """The request the printed `answer with: … --request KEY` line names: what a user copies
    to answer the question the run waits at."""
    line = err.split("answer with: ")[1].splitlines()[0]
    return line.split("--request ")[1].split()[0]


def state_of(tmp_path: Path, run_id: str) -> tuple[RunStatus, dict[str, Any]]:
    async def read() -> tuple[RunStatus, dict[str, Any]]:
        runtime = SqliteRuntime(tmp_path / "journal.db")
        try:
            record = await runtime.load_run(run_id)
            assert record is not None
            patches: dict[str, Any] = {}
            for transition in await runtime.transitions(run_id):
                patches.update(transition.patch)
            return record.status, patches
        finally:
            await runtime.close()

    return asyncio.run(read())


def test_run_prints_the_question_and_how_to_answer_it(cli: Any) -> None:
    code, out, err = cli("run", "apples\x1b[2J", "--graph", "ask.yaml")
    assert code == 3
    assert "How many for apples\\x1b[2J?" in out  # the run's text, escaped
    assert "\x1b" not in out
    assert "asks for a value of type int" in out
    run_id = out.split("run=")[1].split()[0]
    assert f"loomgraph runs resume {run_id} --runtime sqlite:" in err
    assert "--value JSON" in err


def test_resume_with_values_answers_each_interrupt(cli: Any, tmp_path: Path) -> None:
    run_id, key = started(cli)
    code, out, err = cli("runs", "resume", run_id, "--value", "3", "--request", key)
    assert code == 3, err  # answered; the next interrupt asks, with its question
    assert "Why 3?" in out and "--value JSON" in err
    assert state_of(tmp_path, run_id)[1]["count"] == 3
    key = key_asked(err)
    code, out, err = cli(
        "runs", "resume", run_id, "--value", "not JSON: taken as text", "--request", key
    )
    assert code == 3, err
    assert state_of(tmp_path, run_id)[1]["note"] == "not JSON: taken as text"
    assert "Tags?" in out and "the value's JSON Schema" in out
    assert '"items": {"type": "string"}' in out  # a list: its schema says more than its name
    code, out, err = cli("runs", "resume", run_id, "--value", '["a", "b"]', "--request",
                         key_asked(err))  # fmt: skip
    assert code == 0, err
    status, patches = state_of(tmp_path, run_id)
    assert status == RunStatus.COMPLETED and patches["tags"] == ["a", "b"]
    assert "--value" not in err


def test_a_value_that_reads_as_json_is_json(cli: Any, tmp_path: Path) -> None:
    run_id, key = started(cli)
    code, _, err = cli("runs", "resume", run_id, "--value", "3", "--request", key)
    assert code == 3, err
    key = key_asked(err)  # the str request
    code, _, err = cli("runs", "resume", run_id, "--value", "42", "--request", key)
    assert code == 2 and "for a value of type str" in err
    quoted = cli("runs", "resume", run_id, "--value", '"42"', "--request", key)  # text
    assert quoted[0] == 3, quoted
    assert state_of(tmp_path, run_id)[1]["note"] == "42"


def test_a_value_that_does_not_fit_is_a_usage_error_naming_the_type(
    cli: Any, tmp_path: Path
) -> None:
    run_id, key = started(cli)
    code, _, err = cli("runs", "resume", run_id, "--value", "many", "--request", key)
    assert code == 2
    refused = f"run {run_id} waits at 'how_many' for a value of type int; the value does not fit"
    assert refused in err
    assert state_of(tmp_path, run_id) == (RunStatus.INTERRUPTED, {})  # nothing was written


def test_a_value_without_its_request_is_refused_and_a_repeated_answer_answers_nothing(
    cli: Any, tmp_path: Path
) -> None:
    run_id, key = started(cli)
    code, _, err = cli("runs", "resume", run_id, "--value", "3")  # the request not named
    assert code == 2
    line = f"loomgraph runs resume {run_id} --runtime sqlite:"
    assert line in err and f"--value JSON --request {key}" in err  # the line to copy
    assert state_of(tmp_path, run_id) == (RunStatus.INTERRUPTED, {})  # nothing was written
    answer = ("runs", "resume", run_id, "--value", "3", "--request", key)
    code, out, err = cli(*answer)
    assert code == 3 and "Why 3?" in out, err
    code, _, err = cli(*answer)  # run again (a retry): never the next question's answer
    assert code == 2 and "answered already" in err, err
    assert state_of(tmp_path, run_id) == (RunStatus.INTERRUPTED, {"count": 3})


def test_resume_without_a_value_asks_again(cli: Any, tmp_path: Path) -> None:
    run_id, _ = started(cli)
    code, out, err = cli("runs", "resume", run_id)
    assert code == 3
    assert "How many for apples?" in out and "--value JSON" in err
    assert state_of(tmp_path, run_id)[0] == RunStatus.INTERRUPTED


def test_a_value_for_a_run_that_waits_for_none_is_refused(cli: Any) -> None:
    code, out, err = cli("run", "hi", "--model", "echo")  # react: completes
    assert code == 0, err
    run_id = out.split("run=")[1].split()[0]
    code, _, err = cli("runs", "resume", run_id, "--value", "3")
    assert code == 2 and "is not waiting for a value" in err


def test_json_output_keeps_the_request_and_prints_no_question(cli: Any) -> None:
    code, out, _ = cli("run", "apples", "--graph", "ask.yaml", "--json")
    assert code == 3
    last = json.loads(out.splitlines()[-1])
    pending = last["payload"]["result"]["pending"]
    assert pending["message"] == "How many for apples?" and pending["type"] == "int"
    assert all(line.startswith("{") for line in out.splitlines())


def test_the_real_command_answers_an_interrupt(tmp_path: Path) -> None:
    (tmp_path / "ask.yaml").write_text(GRAPH)
    journal = ["--runtime", f"sqlite:{tmp_path / 'journal.db'}"]

    def loomgraph(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "loomgraph.cli.main", *args, *journal],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env={**os.environ, "NO_COLOR": "1"},
            timeout=120,
        )

    done = loomgraph("run", "pears", "--graph", "ask.yaml")
    assert done.returncode == 3, done.stderr
    assert "How many for pears?" in done.stdout
    run_id = done.stdout.split("run=")[1].split()[0]
    done = loomgraph("runs", "resume", run_id, "--value", "7", "--request", key_asked(done.stderr))
    assert done.returncode == 3, done.stderr
    assert "Why 7?" in done.stdout


def test_without_a_journal_the_question_is_shown_but_cannot_be_answered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "ask.yaml").write_text(GRAPH)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NO_COLOR", "1")
    assert main(["run", "plums", "--graph", "ask.yaml"]) == 3
    out, err = capsys.readouterr()
    assert "How many for plums?" in out
    assert "had no journal (--runtime), so its question cannot be answered" in err
    assert "--value" not in err
