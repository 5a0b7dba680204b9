"""InMemoryRuntime keeps a stopped run as one compact blob (`runtime.frozen`): what it reads
back equals what was journaled, a resumed run goes on from it, and readers get copies."""

from __future__ import annotations

import array
import asyncio
import dataclasses
import math
import threading
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from loomgraph.protocols import (
    EffectRecord,
    EffectStatus,
    RunRecord,
    RunStatus,
    Transition,
    Usage,
)
from loomgraph.runtime.memory import InMemoryRuntime

# What a patch, an intent or an outcome may hold in memory: JSON, and tuples besides.
_SCALARS = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_PATCHES = st.dictionaries(st.sampled_from(["messages", "notes", "n"]), _VALUES, max_size=3)
_USAGES = st.builds(
    Usage,
    input_tokens=st.integers(0, 10**6),
    output_tokens=st.integers(0, 10**6),
    model_calls=st.integers(0, 3),
    tool_calls=st.integers(0, 3),
    cost_usd=st.floats(0, 10, allow_nan=False),
)
_STOPS = st.sampled_from(
    [RunStatus.FAILED, RunStatus.INTERRUPTED, RunStatus.AWAITING_APPROVAL, RunStatus.CANCELLED]
)
# One stretch of a run between a start (or resume) and a stop: its steps and effects.
_STRETCH = st.tuples(
    st.lists(st.tuples(_PATCHES, _USAGES), max_size=4),
    st.lists(st.tuples(_VALUES, _VALUES, st.booleans()), max_size=3),
    _STOPS,
)


def _record() -> RunRecord:
    return RunRecord("r1", "react", "h1", None, None)


async def _play(stretches: list[Any]) -> None:
    """Journal the stretches, stopping after each (a resume writes on after the stop);
    after every stop the run reads back as a plain list of everything journaled so far."""
    rt = InMemoryRuntime()
    await rt.start_run(_record())
    steps: list[Transition] = []
    effects: list[EffectRecord] = []
    for stretch_no, (patches, calls, stop) in enumerate(stretches):
        for patch, usage in patches:
            t = Transition("r1", len(steps) + 1, "model", 1, patch, "tools", usage, 1.5, None)
            await rt.append_transition(t)
            steps.append(t)
        for call_no, (intent, outcome, ends) in enumerate(calls):
            key = f"r1:tools:{stretch_no}:{call_no}"
            effect = EffectRecord("r1", key, "tool", {"args": intent})
            await rt.begin_effect(effect)
            if ends:
                await rt.end_effect("r1", key, {"value": outcome}, EffectStatus.DONE)
            effects.append(effect)
        await rt.finish_run("r1", stop, "stopped", None)
        assert await rt.transitions("r1") == steps
        assert await rt.transitions_after("r1", 1) == steps[1:]
        assert await rt.effects("r1") == effects
        for effect in effects:
            assert await rt.effect("r1", effect.key) == effect


@settings(max_examples=60, deadline=None)
@given(st.lists(_STRETCH, min_size=1, max_size=4))
def test_a_stopped_run_reads_back_as_journaled_and_resumes_from_there(stretches: Any) -> None:
    asyncio.run(_play(stretches))


async def test_readers_of_a_stopped_run_get_copies() -> None:
    rt = InMemoryRuntime()
    await rt.start_run(_record())
    patch = {"messages": [{"role": "assistant", "content": "hi"}]}
    await rt.append_transition(Transition("r1", 1, "model", 1, patch, "end", Usage(), 1.0))
    await rt.begin_effect(EffectRecord("r1", "k", "model", {"model": "m"}))
    await rt.end_effect("r1", "k", {"text": "hi"}, EffectStatus.DONE)
    await rt.finish_run("r1", RunStatus.COMPLETED, "", {"output": "hi"})
    patch["messages"].append({"role": "user", "content": "changed after the run"})

    first = (await rt.transitions("r1"))[0]
    assert first.patch == {"messages": [{"role": "assistant", "content": "hi"}]}
    first.patch["messages"].clear()
    effect = await rt.effect("r1", "k")
    assert effect is not None and effect.status == EffectStatus.DONE
    effect.outcome = {"text": "tampered"}

    again = await rt.transitions("r1")
    assert again[0].patch == {"messages": [{"role": "assistant", "content": "hi"}]}
    kept = await rt.effect("r1", "k")
    assert kept is not None and kept.outcome == {"text": "hi"}


@dataclasses.dataclass
class _Plan:
    """A value of the user's own type, as a custom state field may hold."""

    steps: list[str]


async def test_values_read_back_with_their_own_types() -> None:
    rt = InMemoryRuntime()
    await rt.start_run(_record())
    values = {
        "plan": _Plan(["a", "b"]),
        "raw": bytearray(b"\x00\x01"),
        "ints": array.array("i", [1, 2, 3]),
        "pair": (1, "x"),
        "x": math.nan,
    }
    await rt.append_transition(Transition("r1", 1, "plan", 1, values, "end", Usage(), 1.0))
    await rt.begin_effect(EffectRecord("r1", "k", "tool", {"args": bytearray(b"x")}))
    await rt.finish_run("r1", RunStatus.COMPLETED, "", None)
    kept = (await rt.transitions("r1"))[0].patch
    assert {k: type(v) for k, v in kept.items()} == {k: type(v) for k, v in values.items()}
    assert kept["plan"] == _Plan(["a", "b"]) and kept["plan"] is not values["plan"]
    assert kept["ints"] == array.array("i", [1, 2, 3]) and math.isnan(kept["x"])
    effect = await rt.effect("r1", "k")
    assert effect is not None and type(effect.intent["args"]) is bytearray


async def test_a_run_holding_a_value_pickle_cannot_take_is_kept_as_it_is() -> None:
    rt = InMemoryRuntime()
    await rt.start_run(_record())
    lock = threading.Lock()
    await rt.append_transition(Transition("r1", 1, "plan", 1, {"lock": lock}, "end", Usage(), 1.0))
    await rt.finish_run("r1", RunStatus.COMPLETED, "", None)
    assert (await rt.transitions("r1"))[0].patch["lock"] is lock


async def test_forgetting_a_stopped_run_forgets_its_records() -> None:
    rt = InMemoryRuntime(max_runs=1)
    await rt.start_run(_record())
    await rt.append_transition(Transition("r1", 1, "model", 1, {"n": 1}, "end", Usage(), 1.0))
    await rt.finish_run("r1", RunStatus.COMPLETED, "", None)
    await rt.start_run(RunRecord("r2", "react", "h1", None, None))
    assert await rt.load_run("r1") is None
    assert await rt.effects("r1") == []
    assert await rt.transitions("r2") == []
