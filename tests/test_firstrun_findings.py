"""The first hour of a new user: README, quickstart, run_node and the first CLI commands.

Checks:
- an async tool that returns an un-awaited coroutine (a forgotten `await`) is a tool error
  naming the cause, the coroutine closed, never a success with `<coroutine object ...>`;
- a prompt, user id, session id, instructions or name of the wrong type is a TypeError naming
  the argument, raised by `Agent(...)`, `run`, `stream` or `submit` before anything is journaled;
- one rule finds a graph for `Agent(architecture=)`, `run --graph`, `render` and `validate`:
  a built-in name first, then an existing file (suffix in any case, or none); `-a` takes an
  agent file whose suffix is upper case;
- `module.py:attr`, `./module.py:attr` or `/path/module.py:attr` (for `--tools`, `--model`,
  `call:`) is refused with a hint to name the module (`module:attr`);
- `run_node` refuses a visit past the graph's limits (`max_node_visits`, a node's
  `max_visits`, `limits.max_visits`), as it refuses a visit below 1;
- `ScriptedModel` awaits what an async script function returns; its dict turns refuse an
  unknown `finish_reason`, an empty tool name and two calls with one id; `run_node(model=)`
  takes a model spec string;
- the quickstart runs without warning about itself;
- `render -o` into a folder that does not exist, and `graphs --json`.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

from loomgraph import Agent, LoomgraphError, tool
from loomgraph.authoring.library import UnknownGraph, load_graph
from loomgraph.authoring.render import RenderError, render
from loomgraph.errors import GraphError
from loomgraph.graph.imports import import_object
from loomgraph.models import ScriptedModel, ScriptTurnInvalid
from loomgraph.models.scripted import Turn
from loomgraph.protocols import ModelRequest
from loomgraph.testing import run_node

ROOT = Path(__file__).resolve().parents[1]
ASKED = {"messages": [{"role": "user", "content": "2+2?"}]}


def loomgraph(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loomgraph.cli.main", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


def _calling(name: str, **args: Any) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "user", "content": "go"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"tool": name, "args": args, "id": "c1"}],
            },
        ]
    }


# ------------------------------------------------------------------ 1. forgetting await


async def test_an_async_tool_that_forgot_await_is_not_reported_as_done() -> None:
    """The probe's case: a coroutine returned by an async tool is no success."""
    sent: list[str] = []

    async def deliver(to: str) -> str:
        sent.append(to)
        return f"sent to {to}"

    @tool
    async def send_mail(to: str) -> str:
        """Send a mail."""
        return deliver(to)  # type: ignore[return-value]  # the forgotten await

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        run = await run_node("react", "tools", _calling("send_mail", to="bob"), tools=[send_mail])
    result = run.patch["messages"][0]
    assert "coroutine object" not in result["content"], result
    assert sent == ["bob"] or result["is_error"] is True, result


async def test_a_forgotten_await_is_a_tool_error_naming_it_and_the_coroutine_is_closed() -> None:
    """Refused, not awaited: the side effect does not happen, the error says `await`, and the
    coroutine is closed (no "never awaited" warning on top of the error)."""
    sent: list[str] = []

    async def deliver(to: str) -> str:
        sent.append(to)
        return "sent"

    @tool
    async def send_mail(to: str) -> str:
        """Send a mail."""
        return deliver(to)  # type: ignore[return-value]

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = await run_node("react", "tools", _calling("send_mail", to="bob"), tools=[send_mail])
        gc.collect()
    result = run.patch["messages"][0]
    assert result["is_error"] is True, result
    assert "send_mail" in result["content"] and "missing `await`" in result["content"], result
    assert "deliver" in result["content"], result
    assert sent == []
    assert not [w for w in caught if "never awaited" in str(w.message)]


async def test_a_sync_tool_returning_an_awaitable_is_still_awaited_once() -> None:
    """docs/tools.md: a sync wrapper around an async function has its awaitable awaited; only
    an awaitable left after that is a forgotten await."""

    async def search(q: str) -> str:
        return f"found {q}"

    wrapped = tool(lambda q: search(q), name="search")
    run = await run_node("react", "tools", _calling("search", q="x"), tools=[wrapped])
    assert run.patch["messages"][0]["content"] == "found x"

    async def twice(q: str) -> Any:
        return search(q)

    nested = tool(lambda q: twice(q), name="nested")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        run = await run_node("react", "tools", _calling("nested", q="x"), tools=[nested])
    assert run.patch["messages"][0]["is_error"] is True


# ------------------------------------------------------------------ 2. wrong argument types


@pytest.mark.parametrize(
    ("instructions", "prompt", "options", "named"),
    [
        ("x", 123, {}, "prompt"),
        ("x", None, {}, "prompt"),
        ("x", ["What is 2+2?"], {}, "prompt"),
        ("x", "hi", {"user_id": 123}, "user_id"),
        (None, "hi", {}, "instructions"),
    ],
    ids=["prompt-int", "prompt-none", "prompt-list", "user-id-int", "instructions-none"],
)
async def test_a_wrong_type_for_a_run_argument_is_a_clear_error_before_anything_runs(
    instructions: Any, prompt: Any, options: dict[str, Any], named: str
) -> None:
    made: list[Agent] = []
    with pytest.raises((TypeError, LoomgraphError)) as caught:
        made.append(Agent(instructions, model="echo"))
        await made[0].run(prompt, **options)
    assert named in str(caught.value), f"{type(caught.value).__name__}: {caught.value}"
    for agent in made:
        assert await agent.runs() == []


async def test_stream_session_and_submit_check_their_arguments_too() -> None:
    agent = Agent("x", model="echo")
    with pytest.raises(TypeError, match="session_id"):
        agent.stream("hi", session_id=7)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"prompt.*list"):
        agent.session(["hi"])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="prompt"):
        await agent.submit(b"hi")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="name"):
        Agent("x", model="echo", name=5)  # type: ignore[arg-type]
    assert await agent.runs() == []


# ------------------------------------------------------------------ 3. a graph file by its name


def test_an_existing_graph_file_with_an_upper_case_suffix_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "Loop.YAML").write_text((ROOT / "graphs" / "react.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    assert load_graph("Loop.YAML").name == "react"


def test_a_graph_is_found_by_one_rule_built_in_names_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A suffix-less file loads; a file named like a built-in graph does not shadow it; a
    name that is neither says both."""
    text = (ROOT / "graphs" / "react.yaml").read_text()
    (tmp_path / "loop").write_text(text.replace("name: react", "name: mine", 1))
    (tmp_path / "reflexion").write_text(text.replace("name: react", "name: mine", 1))
    monkeypatch.chdir(tmp_path)
    assert load_graph("loop").name == "mine"
    assert Agent(model="echo", architecture="loop").graph.name == "mine"
    assert load_graph("reflexion").name == "reflexion"
    with pytest.raises(UnknownGraph, match=r"no built-in graph 'lop'.*built-in graphs: .*react"):
        load_graph("lop")
    with pytest.raises(UnknownGraph, match=r"no graph file 'Missing\.YML'"):
        load_graph("Missing.YML")


def test_render_run_and_validate_find_the_same_graphs(tmp_path: Path) -> None:
    (tmp_path / "Loop.YAML").write_text((ROOT / "graphs" / "react.yaml").read_text())
    drawn = loomgraph("render", "Loop.YAML", "-o", "loop.mmd", cwd=tmp_path)
    assert drawn.returncode == 0, drawn.stderr
    ran = loomgraph("run", "hi", "--model", "echo", "--graph", "Loop.YAML", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    checked = loomgraph("validate", "react", "Loop.YAML", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "react: ok" in checked.stdout and "Loop.YAML: ok" in checked.stdout
    missing = loomgraph("validate", "nothing", cwd=tmp_path)  # bad input, as for `render`
    assert missing.returncode == 2 and "no built-in graph 'nothing'" in missing.stdout


def test_agent_files_and_subgraphs_find_graphs_by_the_same_rule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An agent file's `architecture:` and a subgraph's `graph:` name a graph as
    `load_graph` does: a built-in name first, then a file of any suffix next to the file."""
    from loomgraph.agent.from_file import validate_agent_file

    folder = tmp_path / "bot"
    folder.mkdir()
    react = (ROOT / "graphs" / "react.yaml").read_text()
    (folder / "Inner.YML").write_text(react.replace("name: react", "name: inner", 1))
    outer = (ROOT / "graphs" / "reflexion.yaml").read_text()
    assert "graph: react" in outer
    (folder / "Loop.YAML").write_text(
        outer.replace("name: reflexion", "name: outer", 1).replace(
            "graph: react", "graph: Inner.YML"
        )
    )
    (folder / "react").write_text(react.replace("name: react", "name: stray", 1))
    monkeypatch.chdir(tmp_path)  # not the agent file's folder
    head = "schema_version: 1\nname: a\nmodel: echo\n"
    (folder / "a.yaml").write_text(head + "architecture: Loop.YAML\n")
    graph = validate_agent_file(folder / "a.yaml").graph
    assert graph is not None and graph.name == "outer"
    assert graph.resolve_graph("Inner.YML").name == "inner"
    (folder / "b.yaml").write_text(head + "architecture: react\n")
    built_in = validate_agent_file(folder / "b.yaml").graph
    assert built_in is not None and built_in.name == "react"  # the stray file does not shadow it


def test_an_agent_file_with_an_upper_case_suffix_is_an_agent_file(tmp_path: Path) -> None:
    (tmp_path / "Agent.YAML").write_text("schema_version: 1\nname: a\nmodel: echo\n")
    done = loomgraph("run", "hi", "-a", "Agent.YAML", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "status=completed output='hi'" in done.stdout


# ------------------------------------------------------------------ 4. import paths


@pytest.mark.parametrize("spec", ["mytools.py:add", "./mytools.py:add"])
def test_a_tool_named_by_its_file_gets_a_hint_to_name_the_module(tmp_path: Path, spec: str) -> None:
    (tmp_path / "mytools.py").write_text(
        "def add(a: int, b: int) -> int:\n    '''Add.'''\n    return a + b\n"
    )
    done = loomgraph("run", "hi", "--model", "echo", "--tools", spec, cwd=tmp_path)
    assert done.returncode == 2, done.stdout
    assert "mytools/py.py" not in done.stderr, done.stderr
    assert "relative import" not in done.stderr, done.stderr
    assert "mytools:add" in done.stderr, done.stderr


@pytest.mark.parametrize(
    ("spec", "hint"),
    [
        ("./pkg/mytools.py:add", "pkg.mytools:add"),
        ("pkg/mytools:add", "pkg.mytools:add"),
        ("/srv/app/mytools.py:add", "mytools:add"),
        ("../mytools.py:add", "mytools:add"),
        ("mytools.py", "mytools:NAME"),
    ],
)
def test_every_file_spelling_of_an_import_path_says_how_to_name_the_module(
    spec: str, hint: str
) -> None:
    with pytest.raises(ImportError) as refused:
        import_object(spec, what="function")
    assert f"`{hint}`" in str(refused.value), refused.value
    assert spec in str(refused.value)


def test_a_model_named_by_its_file_gets_the_hint_too(tmp_path: Path) -> None:
    done = loomgraph("run", "hi", "--model", "mymodel.py:MODEL", cwd=tmp_path)
    assert done.returncode == 2 and "`mymodel:MODEL`" in done.stderr, done.stderr


# ------------------------------------------------------------------ 5. run_node's visits


async def test_run_node_refuses_a_visit_past_the_graphs_limits() -> None:
    with pytest.raises(GraphError, match="26"):
        await run_node("react", "model", ASKED, model=["hi"], visit=26)


async def test_run_node_takes_the_last_visit_a_run_has_and_refuses_past_any_limit() -> None:
    last = await run_node("react", "model", ASKED, model=["hi"], visit=25)
    assert last.next == "END"
    with pytest.raises(GraphError, match=r"visits\['tools'\]=26"):
        await run_node("react", "model", ASKED, model=["hi"], visits={"tools": 26})
    small = load_graph("react")
    small.limits.max_visits = 10  # visits in all, every node's counted
    await run_node(small, "model", ASKED, model=["hi"], visit=5, visits={"tools": 5})
    with pytest.raises(GraphError, match="max_visits"):
        await run_node(small, "model", ASKED, model=["hi"], visit=5, visits={"tools": 6})


# ------------------------------------------------------------------ 6. ScriptedModel


async def test_an_async_script_function_plays_or_is_refused_when_built() -> None:
    async def answer(request: ModelRequest) -> str:
        return "async hi"

    try:
        model = ScriptedModel(answer)  # type: ignore[arg-type]
    except ScriptTurnInvalid as refused:
        assert "async" in str(refused)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        run = await run_node("react", "model", ASKED, model=model)
    assert run.patch["messages"][0]["content"] == "async hi"


async def test_an_async_script_function_is_awaited_and_its_turn_checked() -> None:
    async def calls(request: ModelRequest) -> dict[str, Any]:
        return {"tool_call": []}

    with pytest.raises(ScriptTurnInvalid, match="unknown key 'tool_call'"):
        await run_node("react", "model", ASKED, model=calls)
    model = ScriptedModel(calls)  # type: ignore[arg-type]
    request = ModelRequest(messages=[], run_id="r")
    with pytest.raises(ScriptTurnInvalid, match="async"):
        model.turn_for(request)  # sync: it cannot await the function's turn


@pytest.mark.parametrize(
    ("turn", "problem"),
    [
        ({"finish_reason": "bogus"}, "'finish_reason' is 'bogus'"),
        ({"finish_reason": "max_token"}, "did you mean 'max_tokens'"),
        ({"tool_calls": [{"tool": ""}]}, "'tool' is empty"),
        (
            {"tool_calls": [{"tool": "a", "id": "x"}, {"tool": "b", "id": "x"}]},
            "id 'x' twice",
        ),
    ],
)
def test_a_scripted_turn_refuses_what_no_model_answers(turn: dict[str, Any], problem: str) -> None:
    with pytest.raises(ScriptTurnInvalid, match=problem):
        ScriptedModel([turn])


def test_provider_spellings_of_a_finish_reason_and_a_turn_object_are_kept() -> None:
    ScriptedModel([{"finish_reason": "length"}, {"finish_reason": "stop"}])
    ScriptedModel([Turn(finish_reason="bogus")])  # a Turn plays as it is, unchecked


async def test_run_node_takes_a_model_spec_string() -> None:
    run = await run_node("react", "model", ASKED, model="echo")
    assert run.patch["messages"][0]["content"] == "2+2?"


# ------------------------------------------------------------------ 7. the quickstart


def test_the_quickstart_runs_without_warning_about_itself(tmp_path: Path) -> None:
    svg = tmp_path / "react.svg"
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py"), str(svg)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "run_completed   status=completed" in done.stdout
    assert svg.read_text().lstrip().startswith("<?xml")
    assert done.stderr == "", done.stderr


# ------------------------------------------------------------------ minor CLI findings


def test_render_into_a_missing_folder_names_the_folder_before_drawing(tmp_path: Path) -> None:
    with pytest.raises(RenderError, match=r"no folder '.*nodir'"):
        render("react", tmp_path / "nodir" / "x.svg")
    done = loomgraph("render", "react", "-o", "nodir/x.svg", cwd=tmp_path)
    assert done.returncode == 2 and "no folder 'nodir'" in done.stderr, done.stderr
    assert "Errno" not in done.stderr


def test_graphs_lists_json_lines_with_json(tmp_path: Path) -> None:
    done = loomgraph("graphs", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert {"name": "react"} in rows and all(set(row) == {"name"} for row in rows)
