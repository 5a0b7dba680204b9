"""What a worker fleet's operator is refused or told, against the real Postgres server
(tests/pg.py), each test in a schema of its own, with `loomgraph worker` subprocesses or
workers in this process (tests/fleet_agent.py):

- `WorkerOptions.check` refuses every option that cannot work, naming it, before the
  worker says it is ready: a duration that is not a finite number of seconds > 0 (NaN,
  infinity, more than a day, a bool), a count that is not an int (`per_user=1.5`), a queue
  named twice, queues given as one string. From the command line each is exit 2 with the
  reason, no traceback, no `ready`.
- `agent.cancel(run_id, by=...)` refuses a `by` that is no text or blank (a typed error
  naming `by`) before anything is written: the run stays `queued`, its job too; a cancel of
  a run nobody advances (`cancel_idle`, the server's non-fleet path) refuses a blank reason
  the same way.
- A worker tells what became of the run each job advanced: a run given up (`dead_letter`)
  or failed is a warning naming the status and the reason, never `resumed` alone.
"""

from __future__ import annotations

import logging
import math
import subprocess
from pathlib import Path
from typing import Any

import pytest

import fleet_agent
import pg
import test_fleet
import test_fleet_cancel_findings
from loomgraph.agent.fleet import FleetError, JobKind, RunJob, fleet_queue
from loomgraph.agent.submitting import CancelReasonInvalid, cancel_idle
from loomgraph.protocols import RunStatus
from loomgraph.workers.advance import Advanced, advance_run
from loomgraph.workers.worker import Worker, WorkerOptions
from test_fleet import CLI, TESTS, sql, until
from test_worker_findings import job_row, options, running

pytestmark = pytest.mark.postgres
pg_schema = pg.pg_schema
env = test_fleet.env


def _worker_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`loomgraph worker --agent fleet_agent:make ARGS`, bounded."""
    cmd = [*CLI, "worker", "--agent", "fleet_agent:make", *args]
    return subprocess.run(cmd, env=env, cwd=TESTS, capture_output=True, text=True, timeout=60)


# --------------------------------------------------------------------------- bad options


@pytest.mark.parametrize(
    "option", [["--heartbeat", "nan"], ["--heartbeat", "inf"], ["--poll", "nan"]]
)
def test_a_non_finite_heartbeat_or_poll_is_a_usage_error(
    env: dict[str, str], option: list[str]
) -> None:
    """NaN and infinity pass `<= 0`: refused as not finite, before `ready`, exit 2."""
    done = _worker_cli(env, *option)
    assert "ready" not in done.stdout, (option, done.stdout)
    assert done.returncode == 2, (option, done.returncode, done.stderr[-400:])
    assert "Traceback" not in done.stderr, done.stderr[-400:]
    assert option[0].lstrip("-") in done.stderr, done.stderr[-400:]


def test_a_queue_named_twice_is_a_usage_error(env: dict[str, str]) -> None:
    """`--queues runs,runs`: exit 2 naming the queue, not pgqueuer's RuntimeError."""
    done = _worker_cli(env, "--queues", "runs,runs", "--poll", "0.2")
    assert "Traceback" not in done.stderr, done.stderr[-400:]
    assert done.returncode == 2, (done.returncode, done.stderr[-400:])
    assert "queue" in done.stderr and "'runs'" in done.stderr, done.stderr[-400:]
    assert "ready" not in done.stdout


@pytest.mark.parametrize("queues", ["a,,b", "runs,", ",", ""])
def test_an_empty_queue_name_is_a_usage_error(env: dict[str, str], queues: str) -> None:
    """`--queues a,,b` started a worker on a and b: the empty name between was dropped."""
    done = _worker_cli(env, "--queues", queues, "--poll", "0.2")
    assert done.returncode == 2, (done.returncode, done.stderr[-400:])
    assert "non-empty names" in done.stderr and "ready" not in done.stdout, done.stderr[-400:]


def test_queues_given_as_one_string_are_refused(env: dict[str, str]) -> None:
    """`queues="runs"` would listen on `r`, `u`, `n`, `s`: a FleetError naming `queues`."""
    with pytest.raises(FleetError, match="queues"):
        Worker(fleet_agent.make(), options(queues="runs"))


def test_a_fractional_per_user_limit_is_refused(env: dict[str, str]) -> None:
    """`per_user=1.5` used to fail every run a worker took (`range(1.5)`): refused now."""
    with pytest.raises(FleetError, match="per_user"):
        Worker(fleet_agent.make(), options(per_user=1.5))


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"concurrency": 4.0}, "concurrency"),
        ({"concurrency": True}, "concurrency"),
        ({"concurrency": 1}, "concurrency"),
        ({"per_user": True}, "per_user"),
        ({"per_user": -1}, "per_user"),
        ({"per_user": "2"}, "per_user"),
        ({"slot_retry_seconds": math.nan}, "slot_retry_seconds"),
        ({"slot_retry_seconds": 0}, "slot_retry_seconds"),
        ({"slot_retry_seconds": "0.2"}, "slot_retry_seconds"),
        ({"heartbeat_seconds": -math.inf}, "heartbeat_seconds"),
        ({"heartbeat_seconds": 1e15}, "heartbeat_seconds"),
        ({"poll_seconds": True}, "poll_seconds"),
        ({"poll_seconds": 0.0}, "poll_seconds"),
        ({"expiry_seconds": math.nan}, "expiry_seconds"),
        ({"expiry_seconds": -1}, "expiry_seconds"),
        ({"queues": ()}, "queues"),
        ({"queues": ("runs", "")}, "queues"),
        ({"queues": ("runs", 5)}, "queues"),
        ({"queues": None}, "queues"),
        ({"queues": ("a", "b", "a")}, "'a'"),
    ],
)
def test_every_option_is_checked_by_one_rule(changes: dict[str, Any], named: str) -> None:
    """Each numeric option is a number of its kind (int counts, finite positive seconds up
    to a day; never a bool), each queue a name given once."""
    with pytest.raises(FleetError, match=named):
        WorkerOptions(**changes).check()


def test_sensible_options_pass() -> None:
    """Ints for seconds, a list of queues and the defaults are all fine."""
    WorkerOptions().check()
    WorkerOptions(concurrency=2, per_user=0, heartbeat_seconds=2, poll_seconds=1).check()
    WorkerOptions(queues=("runs", "urgent"), slot_retry_seconds=86400.0).check()


# --------------------------------------------------------------------------- cancel


@pytest.mark.parametrize("by", [5, None, "", "  "])
async def test_cancel_refuses_a_bad_by_before_writing_anything(
    env: dict[str, str], pg_schema: str, by: Any
) -> None:
    """A `by` that is no text, or blank, is a typed error naming `by`; nothing written."""
    async with fleet_agent.make() as client:
        run_id = await client.submit("cancel me", user_id="alice")
        with pytest.raises(CancelReasonInvalid, match="by"):
            await client.cancel(run_id, by=by)
        record = await client.deps.runtime.load_run(run_id)
        assert record is not None and record.status == RunStatus.QUEUED, record
        row = await job_row(pg_schema, run_id)
        assert row is not None and row["status"] == "queued"
        cancelled = await sql(
            f"SELECT cancelled_by FROM {pg_schema}.fleet_runs WHERE run_id = $1", run_id
        )
        assert cancelled[0][0] is None


@pytest.mark.parametrize("reason", [None, "", " "])
async def test_cancel_idle_refuses_a_blank_reason(
    env: dict[str, str], pg_schema: str, reason: Any
) -> None:
    """The cancel of a run nobody advances (the server's own path) checks its reason by the
    same rule: nothing journaled."""
    async with fleet_agent.make() as client:
        run_id = await client.submit("cancel me", user_id="alice")
        with pytest.raises(CancelReasonInvalid, match="reason"):
            await cancel_idle(client.deps, run_id, reason)
        record = await client.deps.runtime.load_run(run_id)
        assert record is not None and record.status == RunStatus.QUEUED, record


# ------------------------------------------------------------------- what the operator is told


async def test_advance_run_reports_the_status_the_run_was_left_in(
    env: dict[str, str], pg_schema: str
) -> None:
    """A started run that completed: `started`, and `completed` as its status."""
    async with fleet_agent.make() as client, fleet_agent.make() as worker:
        run_id = await client.submit("report me", user_id="alice")
        job = RunJob(run_id, JobKind.START, user_id="alice", prompt="report me")
        done = await advance_run(worker, fleet_queue(worker.deps.runtime), job)
        assert done.what == Advanced.STARTED
        assert done.status == RunStatus.COMPLETED
        assert str(done) == "started, now completed"
        again = await advance_run(worker, fleet_queue(worker.deps.runtime), job)
        assert again.what == Advanced.NOTHING and again.status == RunStatus.COMPLETED
        assert not again.gone_wrong


async def test_a_dead_letter_is_reported_as_one(
    env: dict[str, str],
    pg_schema: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A run given up (`dead_letter` after `max_recoveries`) is a warning naming the run,
    `dead_letter` and why; no line says it was merely `resumed`."""
    async with fleet_agent.make() as client:
        run_id = await test_fleet_cancel_findings._crashed_run(env, tmp_path, client, monkeypatch)
        caplog.set_level(logging.INFO, logger="loomgraph.workers")
        worker = Worker(fleet_agent.make(max_recoveries=0), options())
        async with running(worker):

            async def given_up() -> bool:
                record = await client.deps.runtime.load_run(run_id)
                return record is not None and record.status == RunStatus.DEAD_LETTER

            await until("the worker gives the run up", given_up, 60)
            await until("its job ended", lambda: _no_job(pg_schema, run_id), 30)
    about = [r for r in caplog.records if run_id in r.getMessage()]
    assert not any(r.getMessage().endswith(": resumed") for r in about), [
        r.getMessage() for r in about
    ]
    warned = [r.getMessage() for r in about if r.levelno >= logging.WARNING]
    assert any("dead_letter" in m and "gave up after" in m for m in warned), [
        (r.levelname, r.getMessage()) for r in about
    ]


async def _no_job(schema: str, run_id: str) -> bool:
    rows = await sql(f"SELECT 1 FROM {schema}.pgqueuer WHERE dedupe_key = $1", run_id)
    return not rows
