"""What a consumer saw, against the journal, after a real SIGKILL at every emit point of a
model call (SQLite file).

`crash_worker.py --events FILE --vary` consumes the run's stream as an application would,
writing each event to a file outside the journal; its model words every turn differently in
each process, so a call run again after a crash answers differently. The worker is killed
before a call's first chunk, after some of its chunks, after its last chunk but before its
outcome is journaled, after the outcome, and after the node's transition; a second worker
resumes the run through `agent.resume_stream`, into a second file. Checked, over both files:

- every chunk is provisional and names a model call of the run;
- a call run again is voided (`output_void`, reason `recovered`) before its new chunks;
- what a consumer following the contract shows for each call equals its journaled answer;
- every non-provisional event either worker's consumer saw is in the journal.
"""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Any

import pytest

import crash_worker as W
from loomgraph.protocols import PROVISIONAL_KINDS, VoidReason
from test_crash_matrix import Journal, journal_view, run_worker

# The begin order of the three model calls among the run's six effects, and the transitions
# of the three model nodes.
MODEL_EFFECTS = (1, 4, 6)
MODEL_TRANSITIONS = (1, 3, 5)
# Where a model call can be cut, as crash_worker points.
BEFORE_FIRST_CHUNK = "after_intent"
AFTER_SOME_CHUNKS = "mid_stream"
AFTER_LAST_CHUNK = "after_effect"  # streamed whole, the outcome not journaled yet
AFTER_OUTCOME = "after_outcome"
AFTER_TRANSITION = "after_transition"
RUN_AGAIN = {BEFORE_FIRST_CHUNK, AFTER_SOME_CHUNKS, AFTER_LAST_CHUNK}


def cases() -> list[Any]:
    out = []
    for call, (effect, transition) in enumerate(
        zip(MODEL_EFFECTS, MODEL_TRANSITIONS, strict=True), 1
    ):
        for point in (BEFORE_FIRST_CHUNK, AFTER_SOME_CHUNKS, AFTER_LAST_CHUNK, AFTER_OUTCOME):
            out.append(pytest.param(point, effect, id=f"call{call}-{point}"))
        out.append(pytest.param(AFTER_TRANSITION, transition, id=f"call{call}-{AFTER_TRANSITION}"))
    return out


def read_events(path: Path) -> list[dict[str, Any]]:
    """The events a worker's consumer wrote (each line whole: the worker drained first)."""
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def shown(events: list[dict[str, Any]]) -> dict[str, str]:
    """What a consumer following the contract shows for each model call."""
    text: dict[str, str] = {}
    for event in events:
        payload = event["payload"]
        if event["kind"] == "model_chunk":
            text[payload["call_id"]] = text.get(payload["call_id"], "") + payload["chunk"]["text"]
        elif event["kind"] == "output_void":
            text.pop(payload["call_id"], None)
    return text


def plain(value: Any) -> Any:
    """A value as its JSON form (what the consumer's file holds)."""
    return json.loads(json.dumps(value, default=str))


def in_journal(event: dict[str, Any], view: dict[str, Any]) -> bool:
    """Whether the journal holds what a non-provisional event reported (docs/runtime.md,
    "What a consumer sees", lists the record of each kind)."""
    kind, p = event["kind"], event["payload"]
    record, transitions, effects = view["record"], view["transitions"], view["effects"]
    tools = {e.intent["call"]["id"]: e for e in effects.values() if e.kind == "tool"}
    model_calls = [
        call
        for e in effects.values()
        if e.kind == "model" and e.outcome
        for call in e.outcome.get("tool_calls", [])
    ]
    if kind == "run_started":
        return record.initial.state["input"] == p["prompt"] and record.graph_name == p["graph"]
    if kind == "node_started":
        return any((t.node, t.visit) == (p["node"], p["visit"]) for t in transitions)
    if kind == "node_completed":
        (t,) = [t for t in transitions if t.seq == event["seq"]]
        return (t.node, t.visit, t.next_node, plain(t.patch)) == (
            p["node"],
            p["visit"],
            p["next"],
            p["patch"],
        )
    if kind == "tool_call":
        return plain(p["call"]) in plain(model_calls)
    if kind == "permission_decision":  # an allowed call is journaled as its effect's intent
        return p["verdict"] == "allow" and p["call_id"] in tools
    if kind == "tool_result":
        effect = tools.get(p["call"]["id"])
        return effect is not None and plain(effect.outcome) == p["result"]
    if kind == "effect_unknown_after_crash":
        return effects[p["key"]].recovered
    if kind == "run_completed":
        return plain(record.result) == p["result"] and record.status == p["status"]
    raise AssertionError(f"a non-provisional event kind with no journal record: {kind}")


@pytest.mark.parametrize(("point", "n"), cases())
async def test_what_a_consumer_saw_survives_a_crash(tmp_path: Path, point: str, n: int) -> None:
    journal, ledger = Journal(f"sqlite:{tmp_path / 'journal.db'}"), tmp_path / "ledger.tsv"
    first, second = tmp_path / "crashed.jsonl", tmp_path / "resumed.jsonl"
    crashed = run_worker(
        journal, ledger, "run", "--vary", "--events", str(first), "--point", point, "--n", str(n)
    )
    assert crashed.returncode == -signal.SIGKILL, (crashed.returncode, crashed.stderr)
    run_id = crashed.lines[0]["run_id"]
    crash = crashed.last("crash")
    resumed = run_worker(
        journal, ledger, "resume", "--vary", "--events", str(second), "--run-id", run_id
    )
    assert resumed.returncode == 0, resumed.stderr
    before, after = read_events(first), read_events(second)
    view = await journal_view(journal, run_id)
    assert view["record"].status == "completed"
    assert after[-1]["kind"] == "run_completed" and after[-1]["payload"]["status"] == "completed"

    # Every chunk is provisional and names a model call of this run.
    model_keys = {k for k, e in view["effects"].items() if e.kind == "model"}
    assert len(model_keys) == 3
    for event in before + after:
        assert event["provisional"] == (event["kind"] in PROVISIONAL_KINDS), event
        if event["kind"] == "model_chunk":
            assert event["payload"]["provisional"] is True
            assert event["payload"]["call_id"] in model_keys

    # What the consumer shows for each call is the answer the journal keeps.
    answers = {k: view["effects"][k].outcome["text"] for k in model_keys}
    assert shown(before + after) == answers

    # The call the crash cut: run again (and voided first) or replayed from the journal.
    key = crash.get("key")
    if point in RUN_AGAIN:
        assert key in model_keys
        voids = [i for i, e in enumerate(after) if e["kind"] == "output_void"]
        assert [after[i]["payload"] for i in voids] == [
            {"call_id": key, "reason": VoidReason.RECOVERED.value}
        ]
        chunks = [i for i, e in enumerate(after) if e["kind"] == "model_chunk"]
        assert voids[0] < min(i for i in chunks if after[i]["payload"]["call_id"] == key)
        if point != BEFORE_FIRST_CHUNK:  # the consumer had seen text the journal never kept
            assert shown(before)[key] and shown(before)[key] != answers[key]
    else:
        assert not any(e["kind"] == "output_void" for e in after)
        assert shown(before) == {k: v for k, v in answers.items() if k in shown(before)}
    if point == AFTER_OUTCOME:  # replayed from the journal: not streamed again
        assert key not in shown(after)

    # Every non-provisional event either consumer saw is in the journal.
    for event in before + after:
        if not event["provisional"]:
            assert in_journal(event, view), event


def test_the_worker_consumer_sees_a_whole_uncrashed_run(tmp_path: Path) -> None:
    journal, ledger = Journal(f"sqlite:{tmp_path / 'journal.db'}"), tmp_path / "ledger.tsv"
    events_file = tmp_path / "events.jsonl"
    done = run_worker(journal, ledger, "run", "--vary", "--events", str(events_file))
    assert done.returncode == 0, done.stderr
    events = read_events(events_file)
    view = asyncio.run(journal_view(journal, done.lines[0]["run_id"]))
    assert len([e for e in events if e["kind"] == "node_completed"]) == W.TRANSITIONS
    assert not any(e["kind"] == "output_void" for e in events)
    answers = {k: e.outcome["text"] for k, e in view["effects"].items() if e.kind == "model"}
    assert shown(events) == answers
    assert all(in_journal(e, view) for e in events if not e["provisional"])
