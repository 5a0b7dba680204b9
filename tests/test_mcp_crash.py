"""Killing the agent process in the middle of an MCP call, then resuming: the finished call
replays from the journal, the interrupted one is sent again once, with the same key."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

WORKER = str(Path(__file__).with_name("mcp_crash_worker.py"))
WAIT = 1800.0  # bounded: a loaded machine may take minutes to start Python and the server


def ledger(state: Path) -> list[str]:
    path = state / "ledger"
    return path.read_text().splitlines() if path.exists() else []


def test_kill_mid_mcp_call_then_resume(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    journal = f"sqlite:{tmp_path / 'journal.db'}"
    worker = subprocess.Popen(
        [sys.executable, WORKER, "run", "--journal", journal, "--state", str(state)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert worker.stdout is not None
    run_id = json.loads(worker.stdout.readline())["run_id"]
    # Wait (bounded) until the second call has reached the server, then kill the agent.
    reached = threading.Event()

    def watch() -> None:
        while not reached.is_set() and worker.poll() is None:
            if any(line.startswith("second ") for line in ledger(state)):
                reached.set()
            else:
                threading.Event().wait(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    watcher.join(WAIT)
    assert reached.is_set(), "the second MCP call never reached the server"
    worker.send_signal(signal.SIGKILL)
    worker.wait(WAIT)
    os.kill(int((state / "server.pid").read_text()), signal.SIGKILL)  # the orphaned server
    (state / "released").write_text("")

    resumed = subprocess.run(
        [
            sys.executable,
            WORKER,
            "resume",
            "--journal",
            journal,
            "--state",
            str(state),
            "--run-id",
            run_id,
        ],
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=True,
    )
    result = json.loads(resumed.stdout.strip().splitlines()[-1])["result"]
    assert result == {"status": "completed", "output": "both recorded"}
    lines = ledger(state)
    firsts = [line for line in lines if line.startswith("first ")]
    seconds = [line for line in lines if line.startswith("second ")]
    assert len(firsts) == 1  # finished before the crash: replayed, not sent again
    assert len(seconds) == 2  # interrupted: sent again once...
    assert seconds[0] == seconds[1] and seconds[0].split()[1] != "None"  # ...with the same key
