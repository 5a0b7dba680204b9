"""Values from outside a run (an interrupt's answer, a fork's patch) are validated as the JSON
they are sent as, strictly: `"3"` answers no `int` question and `true` patches no `int` field,
while a date's text and a record's mapping still are what JSON gives for them."""

from __future__ import annotations

import asyncio
import datetime
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from loomgraph import Agent
from loomgraph.agent.checkpoints import ResumeError
from loomgraph.authoring.loader import graph_from_yaml
from loomgraph.errors import StateError
from loomgraph.models import ScriptedModel
from loomgraph.protocols import RunStatus
from loomgraph.runtime import SqliteRuntime


class Meeting(BaseModel):
    title: str
    day: datetime.date


def ask_graph(request: str, field_type: str) -> str:
    """One interrupt asking for a `request`, stored in `answer` (`field_type`), then a reply."""
    return f"""
name: ask
entry: ask
state:
  answer: {{type: '{field_type}'}}
  count: {{type: int, default: 0}}
nodes:
  ask: {{kind: interrupt, request: '{request}', message: 'How many?', output: answer}}
  reply: {{kind: llm, prompt: 'Reply', output: output}}
edges:
  - {{from: ask, to: reply}}
  - {{from: reply, to: END}}
"""


class Asked:
    """An agent on a SQLite journal and a run of it waiting at `ask`."""

    def __init__(self, tmp_path: Path, request: str, field_type: str) -> None:
        self.runtime = SqliteRuntime(str(tmp_path / "journal.db"))
        graph = graph_from_yaml(ask_graph(request, field_type))
        model = ScriptedModel(["done"] * 4)
        self.agent = Agent("x", model=model, runtime=self.runtime, architecture=graph)
        self.run_id = ""

    async def start(self) -> Asked:
        first = await self.agent.run("go")
        assert first.status == RunStatus.INTERRUPTED
        self.run_id = first.run_id
        return self

    async def answer(self, run_id: str | None = None) -> Any:
        """The `answer` field at the end of the run (or another run of the agent)."""
        history = await self.agent.history(run_id or self.run_id)
        return history[-1].state["answer"]

    async def still_waiting(self) -> bool:
        record = await self.runtime.load_run(self.run_id)
        return record is not None and record.status == RunStatus.INTERRUPTED


async def asked(tmp_path: Path, request: str, field_type: str) -> Asked:
    return await Asked(tmp_path, request, field_type).start()


@pytest.mark.parametrize(
    ("request_type", "value"),
    [("int", "3"), ("int", True), ("int", 3.0), ("bool", "true"), ("bool", 1), ("str", 3)],
)
async def test_an_answer_of_another_json_type_is_refused_and_nothing_journaled(
    tmp_path: Path, request_type: str, value: Any
) -> None:
    run = await asked(tmp_path, request_type, "any")
    with pytest.raises(ResumeError, match=f"for a value of type {request_type}; the value"):
        await run.agent.resume(run.run_id, value=value)
    assert await run.still_waiting()
    await run.agent.aclose()


async def test_json_answers_for_dates_and_records_are_taken_as_json_gives_them(
    tmp_path: Path,
) -> None:
    run = await asked(tmp_path, "tests.test_outside_values_strict:Meeting", "any")
    done = await run.agent.resume(run.run_id, value={"title": "plan", "day": "2026-12-04"})
    assert done.status == RunStatus.COMPLETED
    assert await run.answer() == {"title": "plan", "day": "2026-12-04"}
    await run.agent.aclose()


async def test_a_python_callers_date_and_model_instance_are_taken(tmp_path: Path) -> None:
    run = await asked(tmp_path, "tests.test_outside_values_strict:Meeting", "any")
    value = Meeting(title="plan", day=datetime.date(2026, 12, 4))
    await run.agent.resume(run.run_id, value=value)
    assert await run.answer() == {"title": "plan", "day": "2026-12-04"}
    await run.agent.aclose()


async def test_an_answer_json_cannot_hold_is_refused_by_name(tmp_path: Path) -> None:
    run = await asked(tmp_path, "int", "any")
    with pytest.raises(ResumeError, match="object value is no JSON data"):
        await run.agent.resume(run.run_id, value=object())
    assert await run.still_waiting()
    await run.agent.aclose()


async def forked_from(tmp_path: Path) -> Asked:
    """A completed run, to fork at its first checkpoint."""
    run = await asked(tmp_path, "int", "int")
    done = await run.agent.resume(run.run_id, value=3)
    assert done.status == RunStatus.COMPLETED and await run.answer() == 3
    return run


@pytest.mark.parametrize("value", [True, "3", 3.0, [3]])
async def test_a_fork_patch_of_another_json_type_is_refused_and_nothing_journaled(
    tmp_path: Path, value: Any
) -> None:
    run = await forked_from(tmp_path)
    before = await run.runtime.runs()
    with pytest.raises(StateError, match="state field 'count'"):
        await run.agent.fork(run.run_id, at=1, patch={"count": value})
    assert await run.runtime.runs() == before
    forked = await run.agent.fork(run.run_id, at=1, patch={"count": 7})
    assert (await run.agent.history(forked.run_id))[-1].state["count"] == 7
    await run.agent.aclose()


JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**62), max_value=2**62),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)


def json_type_fits(request_type: str, value: Any) -> bool:
    """What strict JSON takes: an int (no bool) for int, a number for float, etc."""
    if request_type == "int":
        return type(value) is int
    if request_type == "float":
        return type(value) in (int, float) and math.isfinite(value)
    if request_type == "bool":
        return type(value) is bool
    return type(value) is str


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(request_type=st.sampled_from(["int", "float", "bool", "str"]), value=JSON_SCALARS)
def test_an_answer_is_stored_only_when_its_json_type_is_the_questions(
    tmp_path_factory: pytest.TempPathFactory, request_type: str, value: Any
) -> None:
    async def body() -> None:
        run = await asked(tmp_path_factory.mktemp("run"), request_type, "any")
        try:
            done = await run.agent.resume(run.run_id, value=value)
        except ResumeError:
            assert not json_type_fits(request_type, value)
            assert await run.still_waiting()
        else:
            assert json_type_fits(request_type, value) and done.status == RunStatus.COMPLETED
            stored = await run.answer()
            assert stored == value and (type(stored) is bool) == (request_type == "bool")
        finally:
            await run.agent.aclose()

    asyncio.run(body())
