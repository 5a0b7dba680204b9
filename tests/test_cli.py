"""The `loomgraph` command, run as a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def loomgraph(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loomgraph.cli.main", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


def test_run_streams_events_and_exits_zero() -> None:
    done = loomgraph("run", "hello there", "--model", "echo")
    assert done.returncode == 0, done.stderr
    assert "run_started" in done.stdout and "model_chunk" in done.stdout
    assert "status=completed output='hello there'" in done.stdout


def test_run_with_tools_by_import_path_prints_json_events() -> None:
    done = loomgraph(
        "run", "x", "--model", "echo", "--tools", "examples.quickstart:calculator", "--json"
    )
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert events[0]["kind"] == "run_started" and events[-1]["kind"] == "run_completed"


def test_validate_prints_every_problem_with_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: bad\nentry: a\nnodes:\n  a: {kind: modle}\nedges:\n  - {from: a, to: nowhere}\n"
    )
    done = loomgraph("validate", str(bad))
    assert done.returncode == 1
    assert f"{bad}:4: [unknown-node-kind]" in done.stdout
    assert f"{bad}:6: [unknown-endpoint]" in done.stdout
    ok = loomgraph("validate", str(ROOT / "graphs/react.yaml"))
    assert ok.returncode == 0 and "ok" in ok.stdout


def test_validate_of_a_graph_or_agent_file_that_is_not_there_is_bad_input(
    tmp_path: Path,
) -> None:
    """Found by following the README as an operator: `validate nosuch` printed Python's
    `[Errno 2] No such file or directory` as the file's problem and exited 1, where `render
    nosuch` says which built-in graphs there are and exits 2."""
    good = str(ROOT / "graphs/react.yaml")
    done = loomgraph("validate", "nosuch", good, cwd=tmp_path)
    assert done.returncode == 2, done
    assert "nosuch: no built-in graph 'nosuch' and no file of that name" in done.stdout
    assert "built-in graphs: " in done.stdout and "Errno" not in done.stdout
    assert f"{good}: ok" in done.stdout  # the other files are still checked
    missing = loomgraph("validate", "--agent", "agent.yaml", cwd=tmp_path)
    assert missing.returncode == 2 and "no agent file 'agent.yaml'" in missing.stdout


@pytest.mark.parametrize("suffix", [".svg", ".dot", ".mmd"])
def test_render_writes_each_format(tmp_path: Path, suffix: str) -> None:
    out = tmp_path / f"react{suffix}"
    done = loomgraph("render", "react", "-o", str(out))
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert "tools" in text and "model" in text
    assert ("<svg" in text) == (suffix == ".svg")


def test_help_lists_every_exit_code_of_the_docs() -> None:
    """The epilog of `loomgraph --help` names each code docs/cli.md's table has (75 was
    missing: found by following the docs as an operator)."""
    import re

    table = (ROOT / "docs/cli.md").read_text().split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| (\d+) \|", table, re.MULTILINE))
    epilog = loomgraph("--help").stdout.split("exit codes:", 1)[1]
    listed = set(re.findall(r"(?<![\d.])(\d+) [a-z]", epilog))
    assert documented and documented == listed


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (
            ("worker", "--heartbeat", "0"),
            "argument --heartbeat: must be a finite number of seconds",
        ),
        (("worker", "--poll", "abc"), "argument --poll: must be a number of seconds, not 'abc'"),
        (("worker", "--per-user", "-1"), "argument --per-user: must be at least 0, not -1"),
        (("worker", "--concurrency", "1"), "argument --concurrency: must be at least 2, not 1"),
        (("serve", "--expiry", "0"), "argument --expiry: must be a finite number of seconds"),
        (("worker", "--log-level", "loud"), "argument --log-level: invalid choice: 'loud'"),
    ],
)
def test_an_option_that_cannot_work_is_refused_naming_the_option(
    args: tuple[str, ...], said: str
) -> None:
    """Found by following the docs as an operator: these named the keyword the option is
    passed to (`heartbeat_seconds must be …`), or only `Unknown level: 'LOUD'`."""
    done = loomgraph(*args, "--agent", "no_such_module:agent")  # refused before it is loaded
    assert done.returncode == 2 and said in done.stderr, done.stderr


def test_render_reads_the_agent_file_it_is_given_even_with_a_graph(tmp_path: Path) -> None:
    out = tmp_path / "react.svg"
    done = loomgraph("render", "react", "-a", str(tmp_path / "nosuch.yaml"), "-o", str(out))
    assert done.returncode == 2 and "nosuch.yaml" in done.stderr, done.stderr
    assert not out.exists()  # a typo'd agent file is not passed over


def test_schema_and_usage_errors() -> None:
    schema = json.loads(loomgraph("schema").stdout)
    assert "nodes" in schema["properties"]
    missing = loomgraph("render", "no-such-graph", "-o", "x.svg")
    assert missing.returncode == 2 and "built-in graphs" in missing.stderr
    assert loomgraph("frobnicate").returncode == 2


AGENT_LOADING_COMMANDS = [
    ("serve",),
    ("mcp-serve",),
    ("worker",),
    ("runs", "cancel", "r1"),
    ("keys", "add", "alice"),
    ("keys", "list"),
    ("keys", "revoke", "0123456789ab"),
]


@pytest.mark.parametrize("command", AGENT_LOADING_COMMANDS, ids=" ".join)
def test_commands_that_load_an_agent_require_the_same_agent_option(
    command: tuple[str, ...],
) -> None:
    shown = loomgraph(*command, "--help")
    assert shown.returncode == 0, shown.stderr
    assert "--agent FILE_OR_MODULE:ATTR" in shown.stdout
    assert "MODULE:ATTR naming an Agent or a function making one" in " ".join(shown.stdout.split())
    missing = loomgraph(*command)
    assert missing.returncode == 2
    assert "the following arguments are required: --agent" in missing.stderr
