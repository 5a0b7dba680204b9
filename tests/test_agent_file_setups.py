"""Agent files that validate must build, and setups that look durable must say what they
keep (found by a probe; each test failed before its fix)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from loomgraph import Agent
from loomgraph.agent.from_file import validate_agent_file
from loomgraph.authoring.agent_file import AgentFileError
from shell_command import loomgraph

# --- 2. An agent file that validates but cannot run ------------------------------------

ECHO_WITH_SETTINGS = (
    "schema_version: 1\nname: bot\nmodel:\n  name: echo\n  max_tokens: 1024\n  temperature: 0.2\n"
)


def model_problems_of(path: Path) -> tuple[list[str], list[str]]:
    """The problems `validate_agent_file` and `Agent.from_file` report, as text, each."""
    with pytest.raises(AgentFileError) as checked:
        validate_agent_file(path)
    with pytest.raises(AgentFileError) as built:
        Agent.from_file(path)
    return [str(p) for p in checked.value.problems], [str(p) for p in built.value.problems]


def test_agent_file_model_settings_with_echo_validate_and_build_alike(tmp_path: Path) -> None:
    """docs/agent-files.md shows `model: {name: claude-opus-4-7, max_tokens: 1024,
    temperature: 0.2}`; to try it without a key the user swaps in the documented zero-key
    name, `echo`. `loomgraph validate` (and `validate_agent_file`) said the file is ok, but
    `Agent.from_file` raised a ConfigError (not the documented `AgentFileError`) whose text
    is a raw `EchoModel.__init__() got an unexpected keyword argument 'max_tokens'`.
    Validation and loading now agree, through one check: each setting echo does not take is
    a `[model]` problem at its own line, saying echo takes no settings."""
    path = tmp_path / "agent.yaml"
    path.write_text(ECHO_WITH_SETTINGS, encoding="utf-8")
    checked, built = model_problems_of(path)
    assert checked == built
    assert checked == [
        f"{path}:5: [model] model 'echo' does not take `max_tokens`; it takes no settings "
        "(remove it, or name a model that takes it)",
        f"{path}:6: [model] model 'echo' does not take `temperature`; it takes no settings "
        "(remove it, or name a model that takes it)",
    ]
    # The documented example itself (a Claude model takes these) validates and builds,
    # with no key: the adapter reads its key at the first call.
    path.write_text(ECHO_WITH_SETTINGS.replace("echo", "claude-opus-4-7"), encoding="utf-8")
    validate_agent_file(path)
    assert Agent.from_file(path).deps.model.name == "claude-opus-4-7"


def test_cli_runs_an_echo_agent_file_that_validates(tmp_path: Path) -> None:
    """The same file on the command line: `loomgraph validate agent.yaml` printed `ok` (exit
    0), then `loomgraph run hi -a agent.yaml` exited 2 with `model 'echo':
    EchoModel.__init__() got an unexpected keyword argument 'max_tokens'`. Now both refuse
    it, with the same `[model]` problem at the same line."""
    (tmp_path / "agent.yaml").write_text(ECHO_WITH_SETTINGS, encoding="utf-8")
    checked = loomgraph("validate", "agent.yaml", cwd=tmp_path)
    ran = loomgraph("run", "hi", "-a", "agent.yaml", cwd=tmp_path)
    assert (checked.returncode == 0) == (ran.returncode == 0), (checked.stdout, ran.stderr)
    said = "agent.yaml:5: [model] model 'echo' does not take `max_tokens`"
    assert said in checked.stdout + checked.stderr, (checked.stdout, checked.stderr)
    assert ran.returncode == 2 and said in ran.stderr, ran.stderr
    assert "unexpected keyword argument" not in checked.stdout + checked.stderr + ran.stderr


@pytest.fixture(autouse=True)
def fresh_models_module(monkeypatch: pytest.MonkeyPatch) -> None:
    """`my_models` is imported anew from each test's folder (a module is imported once per
    process, and each test writes its own)."""
    monkeypatch.delitem(sys.modules, "my_models", raising=False)


MODELS_PY = """\
from loomgraph.models.echo import EchoModel

made = EchoModel("made")


def tuned(temperature: float = 0.0, *, max_tokens: int = 16) -> EchoModel:
    return EchoModel("tuned")


def needs_url(base_url: str) -> EchoModel:
    return EchoModel("needs_url")


def anything(**settings: object) -> EchoModel:
    return EchoModel("anything")


def watched(**settings: object) -> EchoModel:
    import pathlib

    pathlib.Path(__file__).with_name("called.txt").write_text("called")  # calling is visible
    return EchoModel("watched")
"""


@pytest.mark.parametrize(
    ("model", "said"),
    [
        pytest.param(
            "{name: my_models:tuned, max_tokens: 8, seed: 3}",
            ":3: [model] model 'my_models:tuned' does not take `seed`; it takes "
            "`temperature`, `max_tokens`",
            id="function-without-the-setting",
        ),
        pytest.param(
            "{name: my_models:needs_url, temperature: 0.5}",
            "model 'my_models:needs_url' does not take `temperature`; it takes `base_url`\n"
            "{path}:3: [model] model 'my_models:needs_url' needs `base_url`, which has no "
            "default",
            id="function-needing-another",
        ),
        pytest.param(
            "{name: my_models:made, temperature: 0.5}",
            "model 'my_models:made' does not take `temperature`; it is a Model object, made "
            "already, so it takes no settings",
            id="model-object",
        ),
        pytest.param(
            "{name: 'openai:gpt-4o', base_url: 'ftp://models.example'}",
            ":3: [model] openai-compat model 'gpt-4o': base_url 'ftp://models.example' is not "
            "a server's address",
            id="adapter-refuses-a-value",
        ),
    ],
)
def test_model_settings_a_model_cannot_take_are_problems_before_building(
    tmp_path: Path, model: str, said: str
) -> None:
    """Every model form is checked the same way by validation and by loading: a function
    (`MODULE:ATTR`) by its signature, never called; a Model object takes no settings; a
    built-in adapter by its own checks of a value (a URL it could never send to). Before,
    each validated and then failed to build with a raw TypeError or ModelConfigError."""
    (tmp_path / "my_models.py").write_text(MODELS_PY, encoding="utf-8")
    path = tmp_path / "agent.yaml"
    path.write_text(f"schema_version: 1\nname: bot\nmodel: {model}\n", encoding="utf-8")
    checked, built = model_problems_of(path)
    assert checked == built, (checked, built)
    assert said.replace("{path}", str(path)) in "\n".join(checked), checked


def test_a_model_function_needing_a_setting_not_given_is_a_problem(tmp_path: Path) -> None:
    """A `MODULE:ATTR` function with a parameter without default, which the file does not
    give, could never be called: a problem naming it, not a TypeError when building."""
    (tmp_path / "my_models.py").write_text(MODELS_PY, encoding="utf-8")
    path = tmp_path / "agent.yaml"
    path.write_text("schema_version: 1\nname: bot\nmodel: my_models:needs_url\n")
    checked, built = model_problems_of(path)
    assert (
        checked
        == built
        == [f"{path}:3: [model] model 'my_models:needs_url' needs `base_url`, which has no default"]
    )


def test_model_functions_get_the_settings_they_take_and_validation_calls_none(
    tmp_path: Path,
) -> None:
    """Settings a function takes (by name or `**settings`) pass; validation reads the
    function's signature and never calls it (it builds nothing), loading calls it."""
    (tmp_path / "my_models.py").write_text(MODELS_PY, encoding="utf-8")
    path = tmp_path / "agent.yaml"
    for name, settings in (
        ("tuned", "temperature: 0.5, max_tokens: 8"),
        ("anything", "seed: 1, top_k: 3"),
        ("watched", "seed: 1"),
    ):
        path.write_text(
            f"schema_version: 1\nname: bot\nmodel: {{name: 'my_models:{name}', {settings}}}\n"
        )
        validate_agent_file(path)
        assert not (tmp_path / "called.txt").exists()
        assert Agent.from_file(path).deps.model.name == name
    assert (tmp_path / "called.txt").read_text() == "called"


# --- 3. Setups that look durable and keep nothing ---------------------------------------


def test_agent_file_budget_without_a_journal_caps_across_commands(tmp_path: Path) -> None:
    """An agent file with `budget: {per_user: {model_calls: 1}}` and no `runtime:`: each
    `loomgraph run --user alice` starts a fresh in-memory ledger, so the cap resets with
    every command and alice makes as many calls as she likes; nothing said so (the second
    run even printed `budget_warning fraction 1.0` and completed). The command line refuses
    an in-memory journal for `runs` ("keeps nothing between commands"); a cap that keeps
    nothing between commands is now said the same way: every such run warns on stderr,
    naming the caps and how to keep them (a `runtime:`, where the ledger then lives)."""
    (tmp_path / "agent.yaml").write_text(
        "schema_version: 1\nname: bud\nmodel: echo\nbudget: {per_user: {model_calls: 1}}\n",
        encoding="utf-8",
    )
    for journal in ([], ["--runtime", "sqlite::memory:"]):
        first = loomgraph(
            "run", "hi", "-a", "agent.yaml", "--user", "alice", *journal, cwd=tmp_path
        )
        second = loomgraph(
            "run", "hi", "-a", "agent.yaml", "--user", "alice", *journal, cwd=tmp_path
        )
        assert first.returncode == second.returncode == 0, (first.stderr, second.stderr)
        for ran in (first, second):
            assert "the budget's per_user.model_calls hold only within this command" in ran.stderr
            assert "runtime: sqlite:PATH" in ran.stderr, ran.stderr


def test_agent_file_budget_with_a_journal_caps_across_commands_and_says_nothing(
    tmp_path: Path,
) -> None:
    """With `runtime: sqlite:PATH` the budget's ledger lives in the journal's database: the
    cap holds across commands (alice's second run stops, exit 4, bob's does not) and no
    warning is printed; a budget of `wall_clock_s` alone (each run's own) warns of nothing
    without a journal either."""
    (tmp_path / "agent.yaml").write_text(
        "schema_version: 1\nname: bud\nmodel: echo\nruntime: sqlite:./journal.db\n"
        "budget: {per_user: {model_calls: 1}}\n",
        encoding="utf-8",
    )
    runs = [
        loomgraph("run", "hi", "-a", "agent.yaml", "--user", user, cwd=tmp_path)
        for user in ("alice", "alice", "bob")
    ]
    assert [ran.returncode for ran in runs] == [0, 4, 0], [ran.stderr for ran in runs]
    assert all("budget" not in ran.stderr for ran in runs), [ran.stderr for ran in runs]
    (tmp_path / "clock.yaml").write_text(
        "schema_version: 1\nname: bud\nmodel: echo\nbudget: {per_user: {wall_clock_s: 60}}\n",
        encoding="utf-8",
    )
    ran = loomgraph("run", "hi", "-a", "clock.yaml", "--user", "alice", cwd=tmp_path)
    assert ran.returncode == 0 and "budget" not in ran.stderr, ran.stderr
