"""The node-kind registry: what `register_node` accepts, and how installed distributions'
`loomgraph.nodes` entry points are loaded (only the one a graph names; a broken one is an
error naming it, and breaks nothing else).

Distributions are real: a `.dist-info` folder with `entry_points.txt` and a module beside it
in a tmp folder put on sys.path, as `pip install --target` leaves them.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from loomgraph.authoring.loader import graph_from_data
from loomgraph.errors import GraphValidationError, Problem
from loomgraph.graph import registry
from loomgraph.graph.node_context import NodeContext
from loomgraph.graph.registry import (
    NodeKind,
    NodeKindLoadError,
    UnknownNodeKind,
    node_kind,
    register_node,
)

KIND_MODULE = """\
from loomgraph import NodeKind

class {cls}(NodeKind):
    default_reads = ("input",)
    default_writes = ("output",)

    async def run(self, state, ctx):
        return {{"output": state["input"].upper()}}
"""


@pytest.fixture(autouse=True)
def _registry_as_it_was() -> Iterator[None]:
    """Each test leaves the registry as it found it (the built-ins included)."""
    node_kind("model")  # the built-ins are in before the snapshot
    kinds, replaced = dict(registry._REGISTRY), set(registry._replaced)
    modules = set(sys.modules)
    yield
    registry._REGISTRY.clear()
    registry._REGISTRY.update(kinds)
    registry._replaced.clear()
    registry._replaced.update(replaced)
    for name in set(sys.modules) - modules:
        if name.startswith("lgtest_"):
            del sys.modules[name]


def install(
    site: Path, dist: str, entry_points: Mapping[str, str], modules: Mapping[str, str] = {}
) -> None:
    """A distribution `dist` 0.1 in `site` declaring `entry_points`, with `modules`."""
    info = site / f"{dist}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    lines = "".join(f"{name} = {value}\n" for name, value in entry_points.items())
    (info / "entry_points.txt").write_text(f"[loomgraph.nodes]\n{lines}")
    for name, source in modules.items():
        (site / f"{name}.py").write_text(source)


def one_node_graph(kind: str, **params: Any) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "name": "g",
        "entry": "n",
        "nodes": {"n": {"kind": kind, **params}},
        "edges": [{"from": "n", "to": "END"}],
    }


def problems_of(data: dict[str, Any]) -> list[Problem]:
    with pytest.raises(GraphValidationError) as err:
        graph_from_data(data)
    return err.value.problems


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An installed `lgtest-broken` distribution whose entry point cannot be imported, and
    an `lgtest-good` one with a working kind."""
    install(tmp_path, "lgtest_broken", {"lgtest-fancy": "lgtest_no_such_module:Fancy"})
    install(
        tmp_path,
        "lgtest_good",
        {"lgtest-shout": "lgtest_shout:Shout", "lgtest-whisper": "lgtest_whisper:Whisper"},
        {
            "lgtest_shout": KIND_MODULE.format(cls="Shout"),
            "lgtest_whisper": KIND_MODULE.format(cls="Whisper"),
        },
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


# --------------------------------------------------------------------------- entry points


def test_a_broken_entry_point_is_an_error_naming_it_and_its_distribution(site: Path) -> None:
    with pytest.raises(NodeKindLoadError) as err:
        node_kind("lgtest-fancy")
    message = str(err.value)
    assert "'lgtest-fancy'" in message
    assert "lgtest-fancy = lgtest_no_such_module:Fancy" in message
    assert "lgtest_broken 0.1" in message
    assert "No module named 'lgtest_no_such_module'" in message
    assert "uninstall" in message


def test_a_graph_naming_a_broken_entry_point_is_a_problem_at_its_node(site: Path) -> None:
    # Validation reports it beside the graph's other problems, so `loomgraph validate`
    # goes on to the next file.
    data = one_node_graph("lgtest-fancy")
    data["nodes"]["m"] = {"kind": "functon"}
    data["edges"].append({"from": "n", "to": "m"})
    problems = [p for p in problems_of(data) if p.rule == "unknown-node-kind"]
    assert len(problems) == 2
    assert "No module named 'lgtest_no_such_module'" in problems[0].message
    assert "node 'm'" in problems[1].message


def test_a_broken_entry_point_leaves_the_other_kinds_working(site: Path) -> None:
    assert node_kind("lgtest-shout").__name__ == "Shout"
    graph = graph_from_data(one_node_graph("lgtest-shout"))
    assert graph.nodes["n"].kind == "lgtest-shout"
    assert node_kind("function").__name__ == "FunctionNode"


def test_a_misspelt_kind_is_still_unknown_with_a_suggestion(site: Path) -> None:
    (problem,) = problems_of(one_node_graph("functon", call="os:getcwd"))
    assert problem.rule == "unknown-node-kind"
    assert "did you mean 'function'?" in problem.message
    # Declared kinds are listed without importing them: the broken one too.
    assert "lgtest-fancy" in problem.message and "lgtest-shout" in problem.message
    assert "lgtest_shout" not in sys.modules
    with pytest.raises(UnknownNodeKind, match=r"registered kinds: .*interrupt, .*map"):
        node_kind("functon")


def test_only_the_entry_point_of_the_kind_asked_for_is_imported(site: Path) -> None:
    node_kind("lgtest-whisper")
    assert "lgtest_whisper" in sys.modules
    assert "lgtest_shout" not in sys.modules


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("lgtest_shout:Nothing", "AttributeError"),  # names nothing in the module
        ("not a module path!", "is not an import path like `package.module:Class`"),
        ("lgtest_shout:NOT_A_KIND", "is not a NodeKind subclass"),
        ("lgtest_sync:Sync", "must be `async def run"),
    ],
)
def test_an_entry_point_that_names_no_usable_kind_is_an_error_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str, said: str
) -> None:
    install(
        tmp_path,
        "lgtest_odd",
        {"lgtest-odd": value},
        {
            "lgtest_shout": KIND_MODULE.format(cls="Shout") + "NOT_A_KIND = 3\n",
            "lgtest_sync": "from loomgraph import NodeKind\n"
            "class Sync(NodeKind):\n    def run(self, state, ctx):\n        return {}\n",
        },
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(NodeKindLoadError) as err:
        node_kind("lgtest-odd")
    assert f"lgtest-odd = {value}" in str(err.value)
    assert "lgtest_odd 0.1" in str(err.value)
    assert said in str(err.value)


def test_a_kind_declared_by_two_distributions_is_an_error_naming_both(
    site: Path, tmp_path: Path
) -> None:
    install(tmp_path, "lgtest_rival", {"lgtest-shout": "lgtest_rival:Shout"})
    with pytest.raises(NodeKindLoadError, match="more than one") as err:
        node_kind("lgtest-shout")
    assert "lgtest_good 0.1" in str(err.value) and "lgtest_rival 0.1" in str(err.value)


def test_an_entry_point_cannot_take_a_built_in_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(tmp_path, "lgtest_hijack", {"model": "lgtest_hijack:Model"}, {
        "lgtest_hijack": KIND_MODULE.format(cls="Model")
    })  # fmt: skip
    monkeypatch.syspath_prepend(str(tmp_path))
    assert node_kind("model").__module__ == "loomgraph.nodes.model"
    assert "lgtest_hijack" not in sys.modules


FRESH_PROCESS = r"""
import importlib.metadata

def no_scan(*args, **kwargs):
    raise AssertionError("entry points were read")

importlib.metadata.entry_points = no_scan
import loomgraph
from loomgraph import NodeKind, register_node
from loomgraph.graph.registry import node_kind

assert "loomgraph.nodes" not in __import__("sys").modules  # nothing registered at import

try:  # a built-in name is refused before the built-ins are imported too
    @register_node("model")
    class Early(NodeKind):
        pass
except ValueError as err:
    print("refused:", err)

@register_node("model", replace=True)
class Mine(NodeKind):
    async def run(self, state, ctx):
        return {}

import loomgraph.nodes.model  # the built-in `model`, imported now, leaves the replacement
assert node_kind("model") is Mine, node_kind("model")
assert node_kind("map").__name__ == "MapNode"  # built-ins: no entry point read
print("ok")
"""


def test_import_reads_no_entry_points_and_built_in_names_are_kept_whatever_the_order() -> None:
    done = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "refused: cannot register __main__.Early as node kind 'model'" in done.stdout
    assert "replace=True" in done.stdout
    assert done.stdout.rstrip().endswith("ok")


# --------------------------------------------------------------------------- register_node


def test_a_sync_run_is_refused_when_the_class_is_registered() -> None:
    with pytest.raises(TypeError, match=r"Loose\.run must be `async def run") as err:

        @register_node("lgtest-loose")
        class Loose(NodeKind):
            def run(self, state: Mapping[str, Any], ctx: NodeContext) -> dict[str, Any]:  # type: ignore[override]
                return {}

    assert "asyncio.to_thread" in str(err.value)
    assert "lgtest-loose" not in registry._REGISTRY


def test_a_class_that_is_not_a_node_kind_is_refused_naming_it() -> None:
    with pytest.raises(TypeError, match=r"NotAKind is not a NodeKind subclass"):

        class NotAKind:
            pass

        register_node("lgtest-nak")(NotAKind)  # type: ignore[type-var]

    assert "lgtest-nak" not in registry._REGISTRY


def test_the_decorator_without_a_name_says_how_to_call_it() -> None:
    class Bare(NodeKind):
        pass

    with pytest.raises(TypeError, match=r'@register_node\("shout"\)'):
        register_node(Bare)  # type: ignore[arg-type]


def test_a_built_in_name_is_refused_unless_replaced_on_purpose() -> None:
    builtin = node_kind("model")
    with pytest.raises(ValueError, match=r"'model' is the name of a built-in kind.*replace=True"):

        @register_node("model")
        class Hijack(NodeKind):
            pass

    assert node_kind("model") is builtin

    @register_node("model", replace=True)
    class Mine(NodeKind):
        pass

    assert node_kind("model") is Mine


def test_a_name_other_code_registered_is_refused_but_the_same_class_again_is_fine() -> None:
    @register_node("lgtest-twice")
    class First(NodeKind):
        pass

    register_node("lgtest-twice")(First)  # a module imported again: no conflict
    with pytest.raises(ValueError, match=r"already registered by .*First"):

        @register_node("lgtest-twice")
        class Second(NodeKind):
            pass

    assert node_kind("lgtest-twice") is First


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = ""
    output: str = "output"


@pytest.mark.parametrize("attr", ["templates", "output_params"])
def test_templates_and_outputs_must_name_params(attr: str) -> None:
    with pytest.raises(TypeError, match=rf"{attr} names 'promt', which _Params does not have"):
        register_node("lgtest-typo")(
            type("Typo", (NodeKind,), {"Params": _Params, attr: ("promt",)})
        )
    assert "lgtest-typo" not in registry._REGISTRY
    ok = register_node("lgtest-typo")(
        type("Fine", (NodeKind,), {"Params": _Params, attr: ("prompt",)})
    )
    assert node_kind("lgtest-typo") is ok


def test_unknown_params_are_refused_though_the_model_does_not_say_so() -> None:
    class LooseParams(BaseModel):
        times: int = 1

    @register_node("lgtest-times")
    class Times(NodeKind):
        Params = LooseParams

    (problem,) = problems_of(one_node_graph("lgtest-times", tims=3))
    assert problem.rule == "bad-params"
    assert "'tims'" in problem.message and "take: times" in problem.message
    assert issubclass(Times.Params, LooseParams)  # still the author's model, for isinstance
    assert graph_from_data(one_node_graph("lgtest-times", times=3)).nodes["n"].params == {
        "times": 3
    }


def test_a_model_that_allows_extra_keys_keeps_them() -> None:
    class OpenParams(BaseModel):
        model_config = ConfigDict(extra="allow")

    @register_node("lgtest-open")
    class Open(NodeKind):
        Params = OpenParams

    assert Open.Params is OpenParams
    graph_from_data(one_node_graph("lgtest-open", anything=1))


def test_the_probe_module_fails_at_import_naming_the_first_bad_class(tmp_path: Path) -> None:
    # The new user's module: the sync `run` of `Loose` is refused as the module is imported.
    (tmp_path / "lgtest_probe.py").write_text(
        textwrap.dedent("""\
        from loomgraph import NodeKind, register_node

        @register_node("lgtest-probe-loose")
        class Loose(NodeKind):
            def run(self, state, ctx):
                return {"output": state["input"]}
        """)
    )
    sys.path.insert(0, str(tmp_path))
    try:
        with pytest.raises(TypeError, match=r"lgtest_probe\.Loose\.run must be `async def"):
            __import__("lgtest_probe")
    finally:
        sys.path.remove(str(tmp_path))
