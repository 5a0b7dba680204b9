"""Leftovers of probes of tools and the command line: a tool's default its own type refuses,
a tool named like a memory tool, `eval --runtime` checked late, a fork's patch the doc shows
(each test failed before its fix)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Annotated, Any

import pytest
from pydantic import AfterValidator, Field

from loomgraph import Agent, tool
from loomgraph.authoring.agent_spec import backend_spec_problem
from loomgraph.cli.main import main
from loomgraph.models.scripted import ScriptedModel
from loomgraph.protocols import ModelRequest
from loomgraph.tools import ToolDefaultInvalid, ToolRegistry

ROOT = Path(__file__).resolve().parent.parent


# --- 1. A default its own type or bounds refuse is shown to the model --------------------


def _below_bound(n: Annotated[int, Field(ge=1)] = 0) -> int:
    """Count."""
    return n


def _not_an_int(x: int = "a") -> int:  # type: ignore[assignment]
    """Number."""
    return x


def _field_default_below_bound(n: int = Field(0, ge=1)) -> int:
    """Count."""
    return n


def _validator_refuses(word: Annotated[str, AfterValidator(lambda s: s + s[0])] = "") -> str:
    """Word (the validator fails on an empty word: IndexError is no ValidationError)."""
    return word


def _long_default(tag: Annotated[str, Field(max_length=3)] = "abcdef") -> str:
    """Tag."""
    return tag


@pytest.mark.parametrize(
    ("fn", "param", "problem"),
    [
        (_below_bound, "n", "greater than or equal to 1"),
        (_not_an_int, "x", "valid integer"),
        (_field_default_below_bound, "n", "greater than or equal to 1"),
        (_long_default, "tag", "at most 3 characters"),
    ],
)
def test_a_default_its_own_type_refuses_is_refused_when_the_tool_is_defined(
    fn: Any, param: str, problem: str
) -> None:
    """`def f(n: Annotated[int, Field(ge=1)] = 0)` was accepted: the schema the model sees
    says `{"default": 0, "minimum": 1}`, and a call leaving `n` out ran with 0. The
    definition is refused, naming the tool, the parameter and what is wrong."""
    with pytest.raises(ToolDefaultInvalid) as refused:
        tool(fn)
    said = str(refused.value)
    assert f"tool {fn.__name__!r}" in said and f"parameter {param!r}" in said, said
    assert problem in said, said
    assert (refused.value.tool, refused.value.parameter) == (fn.__name__, param)
    assert isinstance(refused.value, ValueError)  # as the other bad definitions are
    with pytest.raises(ToolDefaultInvalid):
        ToolRegistry([fn])  # undecorated functions are checked when registered


def test_a_validator_that_raises_on_the_default_is_a_refusal_too() -> None:
    """pydantic lets a validator's own exception through (here IndexError): still a
    refusal of the definition, naming the parameter."""
    with pytest.raises(ToolDefaultInvalid, match=r"parameter 'word'.*IndexError"):
        tool(_validator_refuses)


def test_defaults_that_fit_their_type_are_kept() -> None:
    """What stays valid: a default in bounds, None for an implicit Optional, a default
    pydantic coerces; the function gets the default as validated."""

    @tool
    def fine(
        n: Annotated[int, Field(ge=1)] = 1,
        c: int = None,  # type: ignore[assignment]  # noqa: RUF013 - the implicit Optional
        ratio: float = 1,
    ) -> str:
        """Fine."""
        return f"{n!r} {c!r} {ratio!r}"

    props = fine.parameters["properties"]
    assert props["n"]["default"] == 1 and props["c"]["default"] is None
    args, kwargs = fine.bind({}, "key")
    assert fine(*args, **kwargs) == "1 None 1.0"


# --- 2. A tool named like a memory tool -------------------------------------------------


def recall(query: str) -> str:
    """The user's own tool that happens to be called like a memory tool."""
    return query


def test_a_tool_named_like_a_memory_tool_names_the_memory_tools() -> None:
    """`Agent(tools=[recall], memory=..., memory_tools=True)` raised `a tool named 'recall'
    is already registered`: the user registered one `recall` and cannot tell where the other
    came from. The message names where both are defined: theirs, and memory's
    `memory_tools()`, which made the other."""
    with pytest.raises(ValueError, match="already registered") as refused:
        Agent("x", model="echo", tools=[recall], memory="memory", memory_tools=True)
    said = str(refused.value)
    assert f"already registered ({__name__}.recall)" in said, said  # the user's own
    assert "recall made by loomgraph.memory.tools.memory_tools()" in said, said


def test_the_clash_is_named_in_either_order() -> None:
    """The user's tool added after the memory tools: the registered one is memory's."""
    agent = Agent("x", model="echo", memory="memory", memory_tools=True)
    with pytest.raises(ValueError, match="already registered") as refused:
        agent.add_tool(recall)
    said = str(refused.value)
    assert "already registered (recall made by loomgraph.memory.tools.memory_tools())" in said
    assert f"the one added now is {__name__}.recall" in said, said


# --- 3. `loomgraph eval --runtime SPEC` is checked after the output folder is made --------


@pytest.mark.parametrize("spec", ["sqlite:", "postgres", "bogus"])
def test_eval_refuses_a_bad_runtime_spec_before_making_anything(
    spec: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`loomgraph run --runtime sqlite:` is a usage error naming the spec (argparse's
    `type=`); `loomgraph eval` made its --out folder first and failed later, inside."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "agent.yaml").write_text("schema_version: 1\nname: x\nmodel: echo\n")
    (tmp_path / "one.yaml").write_text("name: one\ncases:\n  - {id: a, input: hi}\n")
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as ended:
        main(["eval", "one.yaml", "-a", "agent.yaml", "--runtime", spec, "--out", str(out)])
    assert ended.value.code == 2
    err = capsys.readouterr().err
    assert "--runtime" in err and repr(spec) in err, err
    assert not out.exists()


# --- 6. docs/runtime.md's fork patch reaches the react model -----------------------------


def _doc_fork_line() -> list[str]:
    """The `loomgraph runs fork` example of docs/runtime.md, as argv."""
    text = (ROOT / "docs" / "runtime.md").read_text(encoding="utf-8")
    line = next(ln for ln in text.splitlines() if re.match(r"loomgraph runs fork\s", ln))
    return shlex.split(line.partition("#")[0])


async def test_the_fork_patch_the_runtime_doc_shows_reaches_a_react_model(
    tmp_path: Path,
) -> None:
    """The doc's `runs fork RUN_ID --at 3 --patch '{"input": "…"}'` changes a react run's
    `input`, which its model never reads (it reads `messages`): the fork ran the old
    question again. The example's patch, at its checkpoint, reaches the model."""
    argv = _doc_fork_line()
    at = int(argv[argv.index("--at") + 1])
    patch = json.loads(argv[argv.index("--patch") + 1])
    seen: list[ModelRequest] = []

    def answer(request: ModelRequest) -> dict[str, Any]:
        seen.append(request)
        return {"text": f"answered: {request.messages[-1]['content']}"}

    agent = Agent("x", model=ScriptedModel(answer), runtime=f"sqlite:{tmp_path / 'j.db'}")
    try:
        first = await agent.run("What is 2+2?")
        forked = await agent.fork(first.run_id, at=at, patch=patch)
    finally:
        await agent.aclose()
    sent = [m["content"] for m in patch["messages"]]
    assert forked.status == "completed"
    assert [m["content"] for m in seen[-1].messages][-len(sent) :] == sent
    assert forked.output == f"answered: {sent[-1]}"


# --- 4. The SQL backends' constructors take a DSN or a path naming nothing -----------------


def _constructors() -> dict[str, Any]:
    from loomgraph.memory.postgres import PostgresMemory
    from loomgraph.memory.sqlite import SqliteMemory
    from loomgraph.runtime.postgres import PostgresRuntime
    from loomgraph.runtime.sqlite import SqliteRuntime

    return {
        "PostgresRuntime": PostgresRuntime,
        "PostgresMemory": PostgresMemory,
        "SqliteRuntime": SqliteRuntime,
        "SqliteMemory": SqliteMemory,
    }


@pytest.mark.parametrize(
    ("backend", "given", "said"),
    [
        ("PostgresRuntime", "", "is empty: write postgres://USER@HOST[:PORT]/DB"),
        ("PostgresRuntime", "  ", "is empty: write postgres://USER@HOST[:PORT]/DB"),
        ("PostgresRuntime", "postgres://", backend_spec_problem("postgres://")),
        ("PostgresRuntime", "postgresql:///", backend_spec_problem("postgresql:///")),
        ("PostgresMemory", "", "is empty: write postgres://USER@HOST[:PORT]/DB"),
        ("PostgresMemory", "postgres://", backend_spec_problem("postgres://")),
        ("SqliteRuntime", "", backend_spec_problem("sqlite:")),
        ("SqliteRuntime", "  ", backend_spec_problem("sqlite:  ")),
        ("SqliteRuntime", "/", backend_spec_problem("sqlite:/")),
        ("SqliteMemory", "  ", backend_spec_problem("sqlite:  ")),
        ("SqliteMemory", "/", backend_spec_problem("sqlite:/")),
    ],
)
def test_a_backend_made_directly_refuses_what_its_spec_would(
    backend: str, given: str, said: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`runtime="postgres://"` is a ConfigError naming the DSN form; `PostgresRuntime("")`
    was made, and its first run connected wherever libpq's defaults point (a blank
    `SqliteRuntime("  ")` made a file named by two spaces). The constructors refuse them
    with the message the spec check gives (one check, in `protocols.backend_specs`)."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError) as refused:
        _constructors()[backend](given)
    assert said is not None and said in str(refused.value), str(refused.value)
    assert backend in str(refused.value)
    assert list(tmp_path.iterdir()) == []  # nothing was made


def test_backends_made_directly_still_take_what_names_something(tmp_path: Path) -> None:
    """What stays open: a path, `:memory:` for the journal, a DSN naming a host."""
    made = _constructors()
    made["SqliteRuntime"](tmp_path / "j.db")
    made["SqliteRuntime"](":memory:")
    made["SqliteMemory"](str(tmp_path / "m.db"))
    made["PostgresRuntime"]("postgres://u@127.0.0.1/db")
    made["PostgresMemory"]("postgresql://u@127.0.0.1/db")
