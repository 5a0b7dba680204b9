"""Agent files: a good file per feature, a bad file per rule, secrets never shown, the schema,
import paths next to the file, model names."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from loomgraph.agent.agent import Agent
from loomgraph.agent.config_errors import ConfigError
from loomgraph.agent.model_specs import resolve_model
from loomgraph.authoring.agent_file import AgentFileError, agent_json_schema, load_agent_file
from loomgraph.authoring.agent_spec import CapsSpec

HERE = Path(__file__).parent / "agent_files"
KEY = "k" * 32
SECRET_MODEL = (
    "schema_version: 1\nname: b\nmodel: {name: anthropic:claude-x, api_key: '${TEST_LLM_KEY}'}\n"
)


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the test agent files, the working directory elsewhere (so the file's own
    folder must be what finds its modules)."""
    copy = tmp_path / "agent"
    shutil.copytree(HERE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("LOOMGRAPH_TEST_AUDIT_KEY", KEY)
    for name in ("helper_tools", "judge_fn", "agent_models"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    return copy


def write(folder: Path, text: str, name: str = "agent.yaml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(AgentFileError) as caught:
        load_agent_file(path)
    return [str(p) for p in caught.value.problems]


# --------------------------------------------------------------------------- good files


async def test_full_file_builds_a_working_agent(folder: Path) -> None:
    agent = Agent.from_file(folder / "full.yaml")
    try:
        assert agent.name == "support-bot"
        assert agent.instructions.startswith("You are support-bot, a helpful assistant.")
        assert "Never share a password." in agent.instructions  # the template's include
        assert {t["name"] for t in agent.deps.tools.specs()} >= {"search"}
        assert "journal.db" in repr(agent.deps.runtime)
        assert agent.deps.budgeted
        assert type(agent.deps.permissions).__name__ == "StandardPermissions"
        result = await agent.run("hello", user_id="ann")
        assert result.status == "completed" and result.output == "hello"
    finally:
        await agent.aclose()
    # Relative paths are the file's folder's, not the working directory's.
    assert (folder / "journal.db").exists() and (folder / "audit.jsonl").exists()
    assert not Path("journal.db").exists()


async def test_overrides_replace_what_the_file_says(folder: Path) -> None:
    from loomgraph.models.scripted import ScriptedModel

    agent = Agent.from_file(folder / "full.yaml", model=ScriptedModel(["scripted"]), runtime=None)
    try:
        assert (await agent.run("hi")).output == "scripted"
    finally:
        await agent.aclose()


def test_model_settings_reach_the_adapter(folder: Path) -> None:
    path = write(
        folder,
        "schema_version: 1\nname: b\ninstructions: hi\n"
        "model: {name: openai:gpt-4o, max_tokens: 64, temperature: 0.2, top_p: 0.9,"
        " stop_sequences: [END], base_url: 'http://127.0.0.1:9/v1', total_timeout: 90}\n",
    )
    model: Any = Agent.from_file(path).deps.model
    assert type(model).__name__ == "OpenAICompatModel" and model.name == "gpt-4o"
    assert model.max_tokens == 64 and model.temperature == 0.2
    assert model.total_timeout == 90
    assert model.sampling.top_p == 0.9 and model.sampling.stop_sequences == ("END",)


def test_inline_graph_and_graph_file_next_to_the_agent_file(folder: Path) -> None:
    inline = write(
        folder,
        "schema_version: 1\nname: b\narchitecture:\n  name: inline\n  entry: judge\n"
        "  nodes:\n    judge: {kind: function, call: 'judge_fn:judge'}\n"
        "  edges:\n    - {from: judge, to: END}\n",
    )
    assert Agent.from_file(inline).graph.name == "inline"
    by_file = write(
        folder, "schema_version: 1\nname: b\narchitecture: judge_graph.yaml\n", "b.yaml"
    )
    assert Agent.from_file(by_file).graph.name == "judged"


def test_round_trip_through_yaml_gives_the_same_spec(folder: Path) -> None:
    first = load_agent_file(folder / "full.yaml").spec
    again = write(folder, yaml.safe_dump(first.model_dump(exclude_none=True)), "again.yaml")
    assert load_agent_file(again).spec == first


def test_env_substitution_and_no_secret_is_ever_shown(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_LLM_KEY", "sk-very-secret-value")
    path = write(
        folder,
        SECRET_MODEL + "tools: [nope_module:tool]\n",
    )
    with pytest.raises(AgentFileError) as caught:
        load_agent_file(path)
    assert "sk-very-secret-value" not in str(caught.value)
    good = write(
        folder,
        SECRET_MODEL,
        "g.yaml",
    )
    spec = load_agent_file(good).spec
    assert spec.model_spec.api_key == "sk-very-secret-value"  # the value is used ...
    assert "sk-very-secret-value" not in repr(spec)  # ... never shown
    assert "sk-very-secret-value" not in str(spec) and "***" in repr(spec)


def test_schema_is_json_schema_and_accepts_the_files(folder: Path) -> None:
    schema = agent_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    data = yaml.safe_load((folder / "full.yaml").read_text())
    jsonschema.validate(data, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**data, "modle": "echo"}, schema)


def test_caps_spec_matches_the_budget_caps() -> None:
    from dataclasses import fields

    from loomgraph.governance.caps import Caps

    assert set(CapsSpec.model_fields) == {f.name for f in fields(Caps)}


# --------------------------------------------------------------------------- bad files


def test_every_problem_at_once_with_lines_and_suggestions(folder: Path) -> None:
    found = problems(
        write(
            folder,
            "schema_version: 2\n"  # 1
            "name: bot\n"  # 2
            "instructons: hi\n"  # 3
            "model: {name: echo, temprature: 0.1}\n"  # 4
            "tools:\n"  # 5
            "  - {mcp: stdio, comand: [x], name: t}\n"  # 6
            "budget: {per_user: {total_tokens: -1}}\n",  # 7
        )
    )
    text = "\n".join(found)
    assert ":1: [schema] schema_version" in text and "version is 1" in text
    assert ":3: [unknown-key] unknown key 'instructons'" in text
    assert "did you mean 'instructions'?" in text
    assert (
        ":4: [unknown-key] unknown key 'temprature' in model (did you mean 'temperature'?)" in text
    )
    assert ":6: [unknown-key] unknown key 'comand' in tools.0 (did you mean 'command'?)" in text
    assert ":6: [schema] tools.0: missing key 'command'" in text
    assert ":7: [schema] budget.per_user.total_tokens" in text
    assert "valid string" not in text  # the union branch a mapping did not take is not reported
    assert len(found) == 6


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("model: gpt-9\n", "[model] unknown model 'gpt-9'; use echo, claude-NAME, anthropic:NAME"),
        ('model: "echo\\n"\n', "[model] unknown model 'echo\\n'"),
        ("tools: [nope_module:search]\n", "No module named 'nope_module' (looked in"),
        ("tools: [helper_tools:serch]\n", "has no 'serch' (did you mean 'search'?)"),
        ("runtime: redis://x\n", "[backend] runtime 'redis://x'"),
        ("architecture: reac\n", "[architecture] no built-in graph 'reac'"),
        ("instructions: a\ninstructions_file: prompt.md\n", "not both"),
        (
            "instructions_file: missing.md\n",
            "[instructions-file] no instructions file 'missing.md' in ",
        ),
        ("instructions_file: broken.md\n", "Jinja2 template error"),
        (
            "telemetry: {otlp_endpoint: '${NOT_SET_ANYWHERE}'}\n",
            "[env-missing] ${NOT_SET_ANYWHERE}",
        ),
        ("permissions: {mode: sloppy}\n", "[permissions]"),
        # A typo in a URL: before, `validate` said ok and only the exporter's log told.
        (
            "telemetry: {otlp_endpoint: 'htp:/bad'}\n",
            "[schema] telemetry.otlp_endpoint: not an http:// or https:// URL with a host: "
            "'htp:/bad'",
        ),
        (
            "tools: [{mcp: http, url: 'localhost:8000/mcp', name: t}]\n",
            "not an http:// or https:// URL with a host: 'localhost:8000/mcp'",
        ),
    ],
)
def test_one_bad_file_per_rule(folder: Path, body: str, expected: str) -> None:
    (folder / "broken.md").write_text("{% if %}")
    path = write(folder, "schema_version: 1\nname: b\n" + body)
    with pytest.raises(AgentFileError) as caught:
        Agent.from_file(path)
    assert expected in str(caught.value)
    assert all(p.line for p in caught.value.problems)


def test_graph_problems_keep_their_own_file_and_line(folder: Path) -> None:
    write(folder, "name: g\nentry: a\nnodes:\n  a: {kind: modle}\n", "g.yaml")
    found = problems(write(folder, "schema_version: 1\nname: b\narchitecture: g.yaml\n"))
    assert any("g.yaml:4: [unknown-node-kind]" in p for p in found)


def test_not_a_mapping_and_yaml_syntax(folder: Path) -> None:
    assert "not-a-mapping" in problems(write(folder, "- a\n"))[0]
    for empty in ("", "  \n# only a comment\n"):
        [said] = problems(write(folder, empty))
        assert "not-a-mapping" in said and "the file is empty: an agent file is a" in said
    assert "yaml-syntax" in problems(write(folder, "name: [\n"))[0]


# --------------------------------------------------------------------------- names


def test_model_name_forms(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (folder / "agent_models.py").write_text(
        "from loomgraph.models.echo import EchoModel\n"
        "model = EchoModel('mine')\n"
        "def make(**kw):\n    return EchoModel('made')\n"
    )
    monkeypatch.chdir(folder)  # MODULE:ATTR from the current directory, no PYTHONPATH
    assert resolve_model("agent_models:model").name == "mine"
    assert resolve_model("agent_models:make").name == "made"
    assert type(resolve_model("anthropic:claude-x")).__name__ == "AnthropicModel"
    assert type(resolve_model("claude-sonnet-4-6")).__name__ == "AnthropicModel"
    assert resolve_model("openai:gpt-4o").name == "gpt-4o"
    assert resolve_model("openai-compat:qwen3:8b").name == "qwen3:8b"
    with pytest.raises(ConfigError) as caught:
        resolve_model("gpt-9")
    for form in ("'echo'", "'claude-NAME'", "'anthropic:NAME'", "'openai:NAME'", "'MODULE:ATTR'"):
        assert form in str(caught.value)
    with pytest.raises(ConfigError, match="did you mean 'model'"):
        resolve_model("agent_models:modle")


def test_function_node_finds_its_module_next_to_the_graph_file(folder: Path) -> None:
    from loomgraph.authoring.loader import load_graph_file

    graph = load_graph_file(folder / "judge_graph.yaml")  # validation imports judge_fn
    assert graph.name == "judged"
    (folder / "lost.yaml").write_text(
        "name: lost\nentry: j\nnodes:\n  j: {kind: function, call: 'nowhere_fn:judge'}\n"
        "edges:\n  - {from: j, to: END}\n"
    )
    from loomgraph.errors import GraphValidationError

    with pytest.raises(GraphValidationError) as caught:
        load_graph_file(folder / "lost.yaml")
    text = str(caught.value)
    assert "No module named 'nowhere_fn'" in text and str(folder) in text and "looked in" in text


def test_schema_command_prints_the_agent_schema(capsys: pytest.CaptureFixture[str]) -> None:
    from loomgraph.cli.main import main

    assert main(["schema", "--agent"]) == 0
    assert json.loads(capsys.readouterr().out)["title"] == "AgentSpec"


@pytest.mark.parametrize(
    ("memory", "said"),
    [("sqlite:{dir}", "Is a directory"), ("sqlite:{dir}/missing/m.db", "does not exist")],
)
def test_run_with_memory_it_cannot_open_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], memory: str, said: str
) -> None:
    # It used to end in a traceback (exit 1), where a journal it cannot open is one line.
    from loomgraph.cli.main import main

    agent = tmp_path / "agent.yaml"
    where = memory.format(dir=tmp_path)
    agent.write_text(f"schema_version: 1\nname: bot\nmodel: echo\nmemory: '{where}'\n")
    assert main(["run", "-a", str(agent), "--user", "u", "hi"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "sqlite memory" in err and said in err, err


def test_memory_in_an_sqlite_connection_of_its_own_is_a_problem_at_its_line(
    tmp_path: Path,
) -> None:
    # `validate` said ok, and `from_file` raised SqliteMemory's bare MemoryInputError: the
    # two must refuse the same thing, at its line. (A journal `sqlite::memory:` is fine.)
    from loomgraph.agent.from_file import validate_agent_file

    path = write(tmp_path, "schema_version: 1\nname: bot\nmemory: 'sqlite::memory:'\n")
    for load in (validate_agent_file, Agent.from_file):
        with pytest.raises(AgentFileError) as caught:
            load(path)
        [problem] = [str(p) for p in caught.value.problems]
        assert f"{path}:3: [backend] memory 'sqlite::memory:'" in problem, problem
        assert "memory" in problem and "sqlite:PATH" in problem
    fine = write(tmp_path, "schema_version: 1\nname: bot\nruntime: 'sqlite::memory:'\n", "j.yaml")
    validate_agent_file(fine)


@pytest.mark.parametrize(
    ("cap", "value"),
    [("model_calls", "'3'"), ("cost_usd", "'1.5'"), ("tool_calls", "true"), ("cost_usd", ".inf")],
)
def test_a_budget_cap_that_is_not_a_number_is_a_problem_at_its_line(
    tmp_path: Path, cap: str, value: str
) -> None:
    # A quoted `'3'` was taken as 3, where a quoted price is a problem: caps are alike now.
    text = f"schema_version: 1\nname: bot\nbudget:\n  per_user:\n    {cap}: {value}\n"
    [problem] = problems(write(tmp_path, text))
    assert f":5: [schema] budget.per_user.{cap}" in problem, problem
