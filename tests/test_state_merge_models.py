"""`merge` into a state field holding a record (a pydantic model): the patch is merged into the
field's value first and the merged value validated, so the fields the patch does not name
keep their values (they used to be reset to the model's defaults); the journal keeps the
record as merged, so a replay (history, resume, fork) rebuilds it without validating again."""

from __future__ import annotations

import functools
import itertools
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from loomgraph import Agent, NodeKind, register_node
from loomgraph.authoring.loader import graph_from_data
from loomgraph.errors import StateError
from loomgraph.graph.compiled import compile_graph
from loomgraph.graph.node_context import NodeContext
from loomgraph.graph.state import StateSchema
from loomgraph.models import ScriptedModel
from loomgraph.runtime import SqliteRuntime
from loomgraph.testing import run_node

HERE = __name__  # the module as pytest imported it: one Record class, one registration


class Record(BaseModel):
    """A record with a required field, defaults, and a rule across fields."""

    model_config = ConfigDict(extra="forbid")
    # How often a Record was validated: a replay of the journal validates none.
    validations: ClassVar[int] = 0

    title: str
    tags: list[str] = Field(default_factory=list)
    score: float = 0.0
    done: bool = False

    @field_validator("title")
    @classmethod
    def _counted(cls, title: str) -> str:
        Record.validations += 1
        return title

    @model_validator(mode="after")
    def _done_needs_a_score(self) -> Record:
        if self.done and self.score <= 0:
            raise ValueError("a done record needs a score above 0")
        return self


class _WriteParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    field: str
    value: Any = None


@register_node("merge_models_write")
class _WriteNode(NodeKind):
    """Writes `{field: value}`: a node whose patch the test chooses."""

    Params = _WriteParams
    params: _WriteParams
    output_params = ("field",)

    async def run(self, state: Mapping[str, Any], ctx: NodeContext) -> dict[str, Any]:
        """The patch the params say."""
        return {self.params.field: self.params.value}


def _one_node(state: dict[str, Any], value: Any, *, field: str = "record") -> Any:
    return graph_from_data(
        {
            "name": "merging",
            "state": state,
            "entry": "write",
            "nodes": {"write": {"kind": "merge_models_write", "field": field, "value": value}},
            "edges": [{"from": "write", "to": "END"}],
        }
    )


RECORD = {"record": {"type": f"{HERE}:Record", "reducer": "merge"}}


async def test_a_patch_merged_into_a_model_field_keeps_the_fields_it_does_not_name() -> None:
    graph = graph_from_data(
        {
            "name": "merging",
            "state": {"plan": {"type": "loomgraph.strategies:Plan", "reducer": "merge"}},
            "entry": "finish",
            "nodes": {
                "finish": {
                    "kind": "merge_models_write",
                    "field": "plan",
                    "value": {"done": True},
                    "reads": ["plan"],
                }
            },
            "edges": [{"from": "finish", "to": "END"}],
        }
    )
    before = {"steps": ["search", "summarise"], "parallel": True, "done": False, "answer": "x"}
    run = await run_node(graph, "finish", {"plan": before})
    assert run.state["plan"] == {**before, "done": True}


async def test_a_required_field_the_patch_leaves_out_is_taken_from_the_value() -> None:
    graph = _one_node(RECORD, {"tags": ["b"], "score": 2})
    run = await run_node(graph, "write", {"record": {"title": "t", "tags": ["a"]}})
    assert run.state["record"] == {"title": "t", "tags": ["b"], "score": 2.0, "done": False}
    # What the step journals is the record as merged (replayed, it needs no validation).
    assert run.patch["record"] == run.state["record"]


async def test_the_merged_value_is_validated_not_the_patch_alone() -> None:
    # Alone, `{done: true}` breaks the rule (score 0.0 by default); merged, it does not.
    graph = _one_node(RECORD, {"done": True})
    run = await run_node(graph, "write", {"record": {"title": "t", "score": 1.5}})
    assert run.state["record"] == {"title": "t", "tags": [], "score": 1.5, "done": True}
    # Merged into a record whose score is 0, it breaks the rule: a StateError naming the field.
    with pytest.raises(StateError, match=r"node 'write' wrote state field 'record'.*needs a score"):
        await run_node(graph, "write", {"record": {"title": "t"}})


@pytest.mark.parametrize(
    ("patch", "said"),
    [
        ({"tags": 5}, r"state field 'record': tags: Input should be a valid list"),
        ({"titel": "x"}, r"state field 'record': titel: Extra inputs are not permitted"),
    ],
)
async def test_a_patch_whose_own_keys_are_wrong_fails_the_node_naming_the_key(
    patch: Any, said: str
) -> None:
    """What the patch's own keys hold is checked before the merge (so `retry` retries it),
    even though the record's required `title` is not among them."""
    graph = _one_node(RECORD, patch)
    with pytest.raises(StateError, match=rf"node 'write' wrote {said}"):
        await run_node(graph, "write", {"record": {"title": "t"}})


_attempts = itertools.count()


def flaky_tags(state: Any) -> dict[str, Any]:
    """A wrong type on the first attempt, a good patch on the next."""
    return {"record": {"tags": 5 if next(_attempts) == 0 else ["x"]}}


async def test_a_wrong_key_in_the_patch_is_retried_as_a_failed_attempt() -> None:
    global _attempts
    _attempts = itertools.count()
    graph = graph_from_data(
        {
            "name": "retrying",
            "state": RECORD,
            "entry": "write",
            "nodes": {
                "write": {
                    "kind": "function",
                    "call": f"{HERE}:flaky_tags",
                    "writes": ["record"],
                    "retry": {"attempts": 2, "backoff": 0},
                }
            },
            "edges": [{"from": "write", "to": "END"}],
        }
    )
    run = await run_node(graph, "write", {"record": {"title": "t"}})
    assert run.state["record"]["tags"] == ["x"]
    assert run.state["record"]["title"] == "t"


def start(state: Any) -> dict[str, Any]:
    return {"record": {"title": "report", "tags": ["draft"]}, "counts": {"a": 1}}


def finish(state: Any) -> dict[str, Any]:
    return {"record": {"score": 0.9, "done": True}, "counts": {"b": 2}}


def _two_steps() -> Any:
    return graph_from_data(
        {
            "name": "two-steps",
            "state": {**RECORD, "counts": {"type": "dict[str, int]", "reducer": "merge"}},
            "entry": "start",
            "nodes": {
                "start": {
                    "kind": "function",
                    "call": f"{HERE}:start",
                    "writes": ["record", "counts"],
                },
                "finish": {
                    "kind": "function",
                    "call": f"{HERE}:finish",
                    "writes": ["record", "counts"],
                },
            },
            "edges": [{"from": "start", "to": "finish"}, {"from": "finish", "to": "END"}],
        }
    )


MERGED = {"title": "report", "tags": ["draft"], "score": 0.9, "done": True}


async def test_the_journal_keeps_the_merged_record_and_a_replay_does_not_validate_it(
    tmp_path: Path,
) -> None:
    journal = str(tmp_path / "journal.db")
    agent = Agent(
        "x", model=ScriptedModel([]), architecture=_two_steps(), runtime=SqliteRuntime(journal)
    )
    result = await agent.run("go")
    assert result.status == "completed", result.reason
    # Another process reads the journal: the state is rebuilt from the patches.
    again = Agent(
        "x", model=ScriptedModel([]), architecture=_two_steps(), runtime=SqliteRuntime(journal)
    )
    validations = Record.validations
    history = await again.history(result.run_id)
    assert Record.validations == validations, "a replay of the journal validated the record"
    assert history[-1].state["record"] == MERGED
    assert history[-1].state["counts"] == {"a": 1, "b": 2}
    # The record is journaled whole (as merged); a dict field keeps only the keys written.
    assert history[-1].patch == {"record": MERGED, "counts": {"b": 2}}


async def test_a_fork_patch_merges_into_the_record(tmp_path: Path) -> None:
    journal = str(tmp_path / "journal.db")
    agent = Agent(
        "x", model=ScriptedModel([]), architecture=_two_steps(), runtime=SqliteRuntime(journal)
    )
    result = await agent.run("go")
    history = await agent.history(result.run_id)
    forked = await agent.fork(result.run_id, at=history[1].seq, patch={"record": {"score": 3.0}})
    assert forked.status == "completed", forked.reason
    after = await agent.history(forked.run_id)
    assert after[0].state["record"] == {
        "title": "report",
        "tags": ["draft"],
        "score": 3.0,
        "done": False,
    }
    assert after[-1].state["record"] == MERGED  # the fork's `finish` wrote its own score


def tag_item(state: Any) -> dict[str, Any]:
    return {"record": {"tags": [*state["record"]["tags"], state["input"]]}, "output": "ok"}


def describe(state: Any) -> dict[str, Any]:
    record = state["record"]
    return {"output": f"{record['title']}:{','.join(record['tags'])}:{record['score']}"}


async def test_map_branches_merging_into_their_records_at_once_keep_their_own_fields(
    tmp_path: Path,
) -> None:
    """Branches share the child graph's schema and step concurrently: each merges into its
    own state's record, which keeps the title and score the parent gave it."""
    (tmp_path / "child.yaml").write_text(
        "name: child\nentry: tag\nstate:\n"
        f"  record: {{type: '{HERE}:Record', reducer: merge}}\n"
        "nodes:\n"
        f"  tag: {{kind: function, call: '{HERE}:tag_item', reads: [record, input], "
        "writes: [record, output]}\n"
        f"  describe: {{kind: function, call: '{HERE}:describe', reads: [record], "
        "writes: [output]}\n"
        "edges:\n  - {from: tag, to: describe}\n  - {from: describe, to: END}\n",
        encoding="utf-8",
    )
    parent = tmp_path / "parent.yaml"
    parent.write_text(
        "name: parent\nentry: each\nstate:\n"
        f"  record: {{type: '{HERE}:Record', reducer: merge, default: {{title: t, score: 2}}}}\n"
        "  items: {type: 'list[str]', default: [a, b, c, d, e, f]}\n"
        "  results: {type: 'list[str]', default: []}\n"
        "nodes:\n"
        "  each: {kind: map, graph: child.yaml, over: items, inputs: {record: record}, "
        "output: results, concurrency: 6}\n"
        "edges:\n  - {from: each, to: END}\n",
        encoding="utf-8",
    )
    agent = Agent("x", model=ScriptedModel([]), architecture=str(parent))
    result = await agent.run("go")
    assert result.status == "completed", result.reason
    history = await agent.history(result.run_id)
    assert history[-1].state["results"] == [f"t:{item}:2.0" for item in "abcdef"]


# --------------------------------------------------------------------------- the invariant

_TITLES = st.text(min_size=1, max_size=5)
_RECORDS = st.fixed_dictionaries(
    {"title": _TITLES},
    optional={
        "tags": st.lists(st.text(max_size=3), max_size=3),
        "score": st.floats(min_value=0, max_value=10, allow_nan=False),
        "done": st.booleans(),
    },
)
_PATCHES = st.fixed_dictionaries(
    {},
    optional={
        "title": _TITLES,
        "tags": st.lists(st.text(max_size=3), max_size=3),
        "score": st.floats(min_value=-1, max_value=10, allow_nan=False),
        "done": st.booleans(),
    },
)


@functools.cache
def _schema() -> StateSchema:
    return compile_graph(_one_node(RECORD, {})).schema


def _valid(data: dict[str, Any]) -> dict[str, Any] | None:
    try:
        return Record.model_validate(data).model_dump(mode="json")
    except ValueError:
        return None


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(old=_RECORDS, patch=_PATCHES)
def test_a_merge_is_the_record_validated_with_the_patch_over_it(
    old: dict[str, Any], patch: dict[str, Any]
) -> None:
    """Applied: the state holds `Record(**{**old, **patch})` as JSON, or the patch fails and
    changes nothing; replayed as journaled onto the old state, it gives the same state."""
    stored = _valid(old)
    if stored is None:
        return  # not a value the state can hold
    schema = _schema()
    state = schema.initial({"record": stored})
    expected = _valid({**stored, **patch})
    try:
        checked = schema.check({"record": dict(patch)})
        schema.apply(state, checked)
    except StateError:
        assert expected is None
        assert state["record"] == stored
        return
    assert state["record"] == expected
    journaled = json.loads(json.dumps(checked))  # as the journal gives the patch back
    replayed = schema.initial({"record": stored})
    schema.apply(replayed, journaled)
    assert replayed == state


def test_a_state_value_is_checked_whole_not_as_a_patch() -> None:
    """A run's state value (a run moved to another graph: `agent/pinning.py`, or `initial`)
    is a whole record: one missing a required field is refused, not left to merge."""
    schema = compile_graph(_one_node(RECORD, {"done": False})).schema
    with pytest.raises(StateError, match=r"state field 'record'.*title"):
        schema.check({"record": {"tags": []}}, whole=True)
    assert schema.check({"record": {"title": "t"}}, whole=True)["record"]["title"] == "t"
