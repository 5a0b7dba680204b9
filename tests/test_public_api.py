"""The public surface: every name the docs import exists, and `import loomgraph` stays light."""

from __future__ import annotations

import ast
import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import loomgraph

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_BLOCK = re.compile(r"^```python[^\n]*\n(.*?)^```", re.DOTALL | re.MULTILINE)
_IMPORT = re.compile(r"^\s*(from\s+loomgraph(\.[\w.]+)?\s+import\b|import\s+loomgraph\b)")


def _import_statements(text: str) -> list[str]:
    """The `from loomgraph… import …` / `import loomgraph…` statements of the Python blocks."""
    statements = []
    for block in _BLOCK.findall(text):
        lines = block.splitlines()
        i = 0
        while i < len(lines):
            if not _IMPORT.match(lines[i]):
                i += 1
                continue
            statement = lines[i].strip()
            # A parenthesised or backslash-continued import goes on until it closes.
            while (
                statement.count("(") > statement.count(")") or statement.endswith("\\")
            ) and i + 1 < len(lines):
                i += 1
                statement += "\n" + lines[i]
            statements.append(statement)
            i += 1
    return statements


def _doc_imports() -> list[tuple[str, str, str | None]]:
    """(doc, module, name) for every import the docs show; name is None for `import m`."""
    found = []
    for doc in DOCS:
        for statement in _import_statements(doc.read_text(encoding="utf-8")):
            for node in ast.parse(statement).body:
                if isinstance(node, ast.ImportFrom):
                    assert node.module is not None
                    found += [(doc.name, node.module, alias.name) for alias in node.names]
                elif isinstance(node, ast.Import):
                    found += [(doc.name, alias.name, None) for alias in node.names]
    return found


DOC_IMPORTS = _doc_imports()


def test_the_docs_show_imports() -> None:
    # The parser found the examples (README's `from loomgraph import Agent, tool` among them).
    assert len(DOC_IMPORTS) >= 30
    assert ("README.md", "loomgraph", "Agent") in DOC_IMPORTS
    assert any(module == "loomgraph.governance" for _, module, _ in DOC_IMPORTS)


@pytest.mark.parametrize(
    ("doc", "module", "name"), DOC_IMPORTS, ids=[f"{d}:{m}:{n}" for d, m, n in DOC_IMPORTS]
)
def test_every_name_the_docs_import_exists(doc: str, module: str, name: str | None) -> None:
    imported = importlib.import_module(module)
    if name is not None:
        assert hasattr(imported, name), f"{doc} imports {name} from {module}, which lacks it"


def test_the_top_level_names_the_docs_use_are_public() -> None:
    used = {name for _, module, name in DOC_IMPORTS if module == "loomgraph"}
    assert used <= set(loomgraph.__all__)


def test_every_public_name_resolves_and_is_listed() -> None:
    for name in loomgraph.__all__:
        assert getattr(loomgraph, name) is not None
        assert name in dir(loomgraph)
    assert loomgraph.NodeContext.__module__ == "loomgraph.graph.node_context"
    assert issubclass(loomgraph.OutputValidationError, loomgraph.LoomgraphError)
    with pytest.raises(AttributeError):
        _ = loomgraph.NotAName  # type: ignore[attr-defined]


def _modules_after(code: str) -> set[str]:
    """The modules loaded by `code` in a fresh interpreter."""
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return set(json.loads(out.stdout.splitlines()[-1]))


def _top(modules: set[str]) -> set[str]:
    return {m.partition(".")[0] for m in modules}


def test_import_loomgraph_loads_nothing_else() -> None:
    loaded = _modules_after("import loomgraph")
    assert sorted(m for m in loaded if m.startswith("loomgraph.")) == []
    heavy = {
        "networkx",
        "anthropic",
        "openai",
        "yaml",
        "pydantic",
        "jinja2",
        "graphviz",
        "opentelemetry",
        "asyncpg",
        "aiosqlite",
    }
    assert _top(loaded) & heavy == set()


def test_an_agent_loads_no_sdk_until_it_needs_one() -> None:
    # docs/decisions.md: the model SDKs, OpenTelemetry and asyncpg load with the objects
    # that use them.
    loaded = _modules_after("from loomgraph import Agent, tool")
    assert _top(loaded) & {"anthropic", "openai", "opentelemetry", "asyncpg"} == set()


def test_an_agent_of_local_tools_loads_no_mcp_client() -> None:
    loaded = _modules_after(
        "from loomgraph import Agent\nfrom loomgraph.tools import tool\n"
        "@tool\ndef add(a: int, b: int) -> int:\n    'Add.'\n    return a + b\n"
        "Agent('x', model='echo', tools=[add])"
    )
    assert not {m for m in loaded if m.startswith("loomgraph.tools.mcp")}
    assert _top(loaded) & {"mcp", "jsonschema"} == set()


def test_an_agent_on_a_built_in_graph_is_built_without_networkx() -> None:
    """Shipped graphs had their flow checked by the test suite (test_strategies), and so had
    any graph taking the same routes; a user's own graph is checked in full, which is when
    networkx is imported."""
    built = _modules_after("from loomgraph import Agent; Agent('x', model='echo')")
    assert "networkx" not in _top(built)
    # A copy with other limits takes the same routes, which were checked already.
    copy = _modules_after(
        "from loomgraph.authoring.library import load_graph\n"
        "from loomgraph.authoring.loader import graph_from_data\n"
        "data = load_graph('react').to_data()\n"
        "data['limits'] = {'max_visits': 1000, 'max_node_visits': 500}\n"
        "graph_from_data(data)"
    )
    assert "networkx" not in _top(copy)
    own = _modules_after(
        "from loomgraph.authoring.loader import graph_from_yaml\n"
        "graph_from_yaml('name: g\\nentry: a\\nnodes:\\n  a: {kind: model}\\n"
        "edges:\\n  - {from: a, to: END}\\n')"
    )
    assert "networkx" in _top(own)


def test_an_agent_loads_only_what_its_features_need() -> None:
    """An agent without memory, built in code, loads no memory backend, no agent-file parser
    and no zero-key model it was not given (docs/decisions.md, "Session 35"); building it
    loads neither what runs it (the session, the interpreter), nor what resumes or submits
    runs, nor the node kinds its graph does not use (docs/decisions.md, "Session 38")."""
    built = _modules_after(
        "from loomgraph import Agent\nfrom loomgraph.tools import tool\n"
        "@tool\ndef add(a: int, b: int) -> int:\n    'Add.'\n    return a + b\n"
        "class M:\n    name = 'm'\n    async def stream(self, request):\n"
        "        yield {'type': 'text', 'text': 'hi'}\n"
        "Agent('x', model=M(), tools=[add])"
    )
    unneeded = {
        "loomgraph.authoring.agent_spec",
        "loomgraph.memory.base",
        "loomgraph.memory.extract",
        "loomgraph.memory.in_memory",
        "loomgraph.memory.tools",
        "loomgraph.models.echo",
        "loomgraph.models.scripted",
        "loomgraph.agent.session",
        "loomgraph.agent.resuming",
        "loomgraph.agent.submitting",
        "loomgraph.agent.checkpoints",
        "loomgraph.agent.run_events",
        "loomgraph.engine.interpreter",
        "loomgraph.governance.caps",
        "loomgraph.nodes.map",
        "loomgraph.nodes.subgraph",
        "loomgraph.nodes.interrupt",
        "loomgraph.nodes.llm",
    }
    assert built & unneeded == set()
    assert {"loomgraph.nodes.model", "loomgraph.nodes.tools"} <= built
    with_memory = _modules_after(
        "from loomgraph import Agent\nAgent('x', model='echo', memory='memory')"
    )
    assert {"loomgraph.memory.base", "loomgraph.memory.in_memory"} <= with_memory
