"""`loomgraph run -` takes the prompt from stdin (a file, a heredoc, another program's
output), as `-` means for most commands; an empty or undecodable stdin, or one that
`--approve` would also read answers from, is a usage error naming the problem."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def loomgraph(*args: str, stdin: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "loomgraph.cli.main", *args],
        input=stdin,
        capture_output=True,
        cwd=ROOT,
        timeout=120,
    )


def test_a_prompt_from_stdin_is_what_the_run_is_asked() -> None:
    """Read whole, as UTF-8; the line end that closes the input is not part of it."""
    text = "a prompt of two lines,\nread from a pipe — with é and ü"
    done = loomgraph("run", "-", "--model", "echo", "--json", stdin=(text + "\n").encode())
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.decode("utf-8").splitlines()]
    assert events[0]["kind"] == "run_started" and events[0]["payload"]["prompt"] == text
    assert events[-1]["payload"]["result"]["output"] == text  # the echo model's answer


def test_an_empty_stdin_is_refused() -> None:
    done = loomgraph("run", "-", "--model", "echo", stdin=b" \n\n")
    assert done.returncode == 2
    assert b"stdin" in done.stderr and b"empty" in done.stderr
    assert b"run_started" not in done.stdout


def test_a_stdin_that_is_not_utf8_is_refused() -> None:
    done = loomgraph("run", "-", "--model", "echo", stdin=b"caf\xe9\n")
    assert done.returncode == 2
    assert b"UTF-8" in done.stderr and b"stdin" in done.stderr
    assert b"run_started" not in done.stdout


def test_approve_cannot_read_answers_from_the_stdin_that_held_the_prompt() -> None:
    done = loomgraph("run", "-", "--model", "echo", "--approve", stdin=b"hello\n")
    assert done.returncode == 2
    assert b"--approve" in done.stderr and b"stdin" in done.stderr
    assert b"run_started" not in done.stdout


def test_a_literal_dash_is_still_a_prompt_after_double_dash() -> None:
    """`run -- -` would be argparse's way to say a prompt starting with `-`; a prompt that
    is exactly `-` is read from stdin, as documented: nothing else changes."""
    done = loomgraph("run", "--model", "echo", "--", "- not stdin", stdin=b"ignored")
    assert done.returncode == 0, done.stderr
    assert b"- not stdin" in done.stdout
