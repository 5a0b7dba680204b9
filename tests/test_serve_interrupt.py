"""Ctrl-C stops `loomgraph serve` quietly, whatever its journal.

Found by following docs/serving.md as an operator: on a Postgres journal, Ctrl-C after one
request printed tracebacks ("Event loop is closed": the agent's connection pool, made in the
server's event loop, was closed afterwards in a new one) and exited 1; on a SQLite journal,
Ctrl-C before any request printed uvicorn's traceback of the app's lifespan cancelled.
"""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest

import pg
from serve_process import add_key, environment, start_server

pg_schema = pg.pg_schema


def _interrupted(env: dict[str, str], *, request: str | None) -> tuple[int, str]:
    """Serve, send one request (when `request` is a key), then Ctrl-C: the exit code and
    everything the server printed."""
    server = start_server(env)
    try:
        if request is not None:
            answer = httpx.post(
                f"{server.url}/v1/runs",
                json={"input": "hello", "background": True},
                headers={"Authorization": f"Bearer {request}"},
                timeout=60,
            )
            assert answer.status_code == 202, answer.text
        server.process.send_signal(signal.SIGINT)
        code = server.process.wait(timeout=60)
    finally:
        server.stop()
    return code, "".join(server.said)


@pytest.mark.parametrize("requested", [False, True])
def test_ctrl_c_stops_a_server_on_sqlite_without_a_traceback(
    tmp_path: Path, requested: bool
) -> None:
    env = environment(tmp_path / "journal.db")
    key = add_key(env, "alice") if requested else None
    code, said = _interrupted(env, request=key)
    assert code == 0, said
    assert "Traceback" not in said and "CancelledError" not in said, said
    assert "Application shutdown complete" in said


def test_ctrl_c_stops_a_server_on_postgres_without_a_traceback(
    tmp_path: Path, pg_schema: str
) -> None:
    env = environment(tmp_path / "unused.db", SERVE_PG_SCHEMA=pg_schema)
    code, said = _interrupted(env, request=add_key(env, "alice"))
    assert code == 0, said
    assert "Traceback" not in said and "Event loop is closed" not in said, said
