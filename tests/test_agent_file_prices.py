"""An agent file prices its models for a cost cap: `budget: {prices: {PREFIX: {input, output,
cache_write, cache_read}}}` (USD per million tokens). A cost cap refuses a model the price
table does not know (`UnpricedModel`), and a file had no way to give the price: an agent file
with `model: openai:gpt-4o` and `budget: {cost_usd: 5}` could not be built at all."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from fake_servers import FakeServer, Reply, chat_stream
from loomgraph import Agent
from loomgraph.agent.from_file import validate_agent_file
from loomgraph.authoring.agent_file import AgentFileError
from loomgraph.governance import BudgetConfig, StandardBudget
from loomgraph.models import ScriptedModel
from loomgraph.protocols.pricing import Price

ROOT = Path(__file__).resolve().parent.parent
NANO = 1_000_000_000  # nano-dollars in a dollar: the ledger's unit of cost

# $1,000 per million tokens is $0.001 a token: a cap of $0.02 is 20 tokens.
PRICED = """\
schema_version: 1
name: priced
model: {{name: "openai:gpt-4o", base_url: "{url}"}}
budget:
  cost_usd: 0.02
  prices:
    gpt-4o: {{input: 1000, output: 1000}}
"""


@pytest.fixture
def server() -> Iterator[FakeServer]:
    srv = FakeServer().start()
    yield srv
    srv.stop()


def budget_of(agent: Agent) -> StandardBudget:
    """The agent's budget, the StandardBudget its file made."""
    budget = agent.deps.budget
    assert isinstance(budget, StandardBudget)
    return budget


def adapter_prices(agent: Agent) -> object:
    """The price table the agent's model adapter was given."""
    return getattr(agent.deps.model, "prices", "no such attribute")


def problems_of(path: Path) -> tuple[list[str], list[str]]:
    """The problems `validate_agent_file` and `Agent.from_file` report, as text, each."""
    with pytest.raises(AgentFileError) as checked:
        validate_agent_file(path)
    with pytest.raises(AgentFileError) as built:
        Agent.from_file(path)
    return [str(p) for p in checked.value.problems], [str(p) for p in built.value.problems]


async def test_an_openai_model_priced_in_the_file_builds_and_its_cost_cap_binds(
    server: FakeServer, tmp_path: Path
) -> None:
    """The file builds (it raised UnpricedModel, pointing at Python's BudgetConfig), the first
    run is charged at the file's prices — the adapter reports the same cost the ledger
    charges, since it is given the same prices — and the next run, which would pass the cap,
    is refused before its call is sent."""
    path = tmp_path / "agent.yaml"
    path.write_text(PRICED.format(url=server.url + "/v1"), encoding="utf-8")
    agent = Agent.from_file(path)
    assert adapter_prices(agent) == {"gpt-4o": Price(input=1000.0, output=1000.0)}

    server.add(Reply(events=chat_stream(["hello"], prompt_tokens=12, completion_tokens=6)))
    first = await agent.run("hi")
    assert first.status == "completed", first.reason
    assert first.usage.cost_usd == pytest.approx(18 * 0.001)  # the adapter's own figure
    spent = (await budget_of(agent).totals("global")).spent
    assert spent["cost_usd"] == 18 * 1_000_000  # the same, in nano-dollars

    second = await agent.run("and now a longer question, please, with more words in it")
    assert second.status == "budget_exhausted"
    assert "global:cost_usd" in second.reason
    assert len(server.requests) == 1  # the refused call was never sent


async def test_a_scripted_model_named_like_the_priced_model_is_charged_the_files_prices(
    tmp_path: Path,
) -> None:
    """A model that prices nothing itself (a ScriptedModel named `gpt-4o`, replacing the
    file's) is charged by the budget at the file's prices, and the cap binds."""
    path = tmp_path / "agent.yaml"
    path.write_text(PRICED.format(url="http://127.0.0.1:9/v1"), encoding="utf-8")
    turn = {"text": "ok", "usage": {"input_tokens": 12, "output_tokens": 6}}
    model = ScriptedModel([turn, turn], name="gpt-4o")
    agent = Agent.from_file(path, model=model)
    first = await agent.run("hi")
    assert first.status == "completed", first.reason
    assert first.usage.cost_usd == pytest.approx(0.018)
    assert (await budget_of(agent).totals("global")).spent["cost_usd"] == 18 * 1_000_000
    second = await agent.run("and now a longer question, please, with more words in it")
    assert second.status == "budget_exhausted" and "global:cost_usd" in second.reason


async def test_echo_priced_in_the_file_builds_and_is_charged(tmp_path: Path) -> None:
    """`echo` takes no settings, so the prices go to the budget only (not to EchoModel, which
    would refuse them); the budget charges echo's tokens at the file's price."""
    path = tmp_path / "agent.yaml"
    path.write_text(
        "schema_version: 1\nname: e\nmodel: echo\n"
        "budget: {cost_usd: 1, prices: {echo: {input: 1000, output: 1000}}}\n",
        encoding="utf-8",
    )
    validate_agent_file(path)
    agent = Agent.from_file(path)
    result = await agent.run("x" * 40)  # 10 tokens in, 10 out
    assert result.status == "completed", result.reason
    assert result.usage.cost_usd == pytest.approx(0.02)
    assert (await budget_of(agent).totals("global")).spent["cost_usd"] == round(0.02 * NANO)


def test_prices_with_cache_rates_become_the_budgets_price_table(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(
        "schema_version: 1\nname: p\nmodel: {name: 'anthropic:claude-nova-1'}\n"
        "budget:\n  per_user: {cost_usd: 5}\n  prices:\n"
        "    claude-nova: {input: 3, output: 15, cache_write: 3.75, cache_read: 0.3}\n"
        "    gpt-4o-mini: {input: 0.15, output: 0.6}\n",
        encoding="utf-8",
    )
    validate_agent_file(path)
    agent = Agent.from_file(path)
    table = {
        "claude-nova": Price(3.0, 15.0, 3.75, 0.3),
        "gpt-4o-mini": Price(0.15, 0.6),
    }
    assert budget_of(agent).config.prices == table
    assert adapter_prices(agent) == table  # the Anthropic adapter too


# ------------------------------------------------------------------ bad prices, at their lines

BAD = "schema_version: 1\nname: bad\nmodel: echo\nbudget:\n  cost_usd: 5\n  prices:\n{entry}"


@pytest.mark.parametrize(
    ("entry", "line", "said"),
    [
        ("    gpt-4o: {input: 2.5, output: 10, cached: 1}\n", 7, "cached"),
        ("    gpt-4o:\n      input: 2.5\n      output: 10\n      cache_wirte: 1\n", 10, "wirte"),
        ("    gpt-4o: {input: -1, output: 10}\n", 7, "greater than or equal to 0"),
        ("    gpt-4o:\n      input: 2.5\n      output: .nan\n", 9, "finite number"),
        ("    gpt-4o:\n      input: .inf\n      output: 10\n", 8, "finite number"),
        ("    gpt-4o: {input: '2.5', output: 10}\n", 7, "valid number"),
        ("    gpt-4o: {input: true, output: 10}\n", 7, "valid number"),
        ("    gpt-4o: {input: 2.5}\n", 7, "missing key 'output'"),
        ("    gpt-4o: 2.5\n", 7, "valid dictionary"),
        ("    '': {input: 2.5, output: 10}\n", 7, "at least 1 character"),
        ("    gpt-4o: {input: 2.5, output: 10, cache_read: -0.1}\n", 7, "cache_read"),
    ],
)
def test_bad_prices_are_refused_at_their_lines(
    tmp_path: Path, entry: str, line: int, said: str
) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(BAD.format(entry=entry), encoding="utf-8")
    checked, built = problems_of(path)
    assert checked == built
    assert len(checked) == 1, checked
    assert checked[0].startswith(f"{path}:{line}: ["), checked
    assert said in checked[0], checked
    assert "prices" in checked[0], checked


def test_prices_that_are_not_a_mapping_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text("schema_version: 1\nname: bad\nbudget:\n  prices: [gpt-4o]\n", encoding="utf-8")
    checked, built = problems_of(path)
    assert checked == built and len(checked) == 1
    assert checked[0].startswith(f"{path}:4: [schema]") and "prices" in checked[0]


# ------------------------------------------------------------------ a model left unpriced


def test_a_cost_cap_on_a_model_the_file_does_not_price_is_a_budget_problem(
    tmp_path: Path,
) -> None:
    """Without `prices` the file validated and `Agent.from_file` raised `UnpricedModel`
    telling a YAML user to write Python (`BudgetConfig(prices=...)`); both now report one
    `[budget]` problem at the cost cap's line, naming the key to write."""
    path = tmp_path / "agent.yaml"
    path.write_text(
        "schema_version: 1\nname: u\nmodel: openai:gpt-4o\nbudget:\n"
        "  total_tokens: 100000\n  per_user:\n    cost_usd: 5\n",
        encoding="utf-8",
    )
    checked, built = problems_of(path)
    assert checked == built
    assert len(checked) == 1, checked
    assert checked[0].startswith(f"{path}:7: [budget] "), checked
    assert "'gpt-4o'" in checked[0] and "prices:" in checked[0]
    assert "BudgetConfig" not in checked[0]


def test_a_price_keyed_by_the_files_model_spec_says_the_name_to_key_it_by(
    tmp_path: Path,
) -> None:
    """Prices match the model's name (`gpt-4o`), not the file's `openai:gpt-4o`: a price
    keyed that way prices nothing, and the problem, at `prices`, says which name to use."""
    path = tmp_path / "agent.yaml"
    path.write_text(
        "schema_version: 1\nname: u\nmodel: openai:gpt-4o\nbudget:\n  cost_usd: 5\n"
        "  prices: {'openai:gpt-4o': {input: 2.5, output: 10}}\n",
        encoding="utf-8",
    )
    checked, built = problems_of(path)
    assert checked == built and len(checked) == 1, checked
    assert checked[0].startswith(f"{path}:6: [budget] "), checked
    assert "'gpt-4o'" in checked[0]


async def test_a_model_made_by_the_users_code_is_priced_by_the_file_once_made(
    tmp_path: Path,
) -> None:
    """A `MODULE:ATTR` model is named only once made (validation never calls the user's
    code), so `Agent.from_file` checks its price then: a `[budget]` problem, not the raw
    `UnpricedModel`; priced in the file, it builds and the budget charges its tokens."""
    (tmp_path / "prices_local_models.py").write_text(
        "from loomgraph.models import ScriptedModel\n"
        "turn = {'text': 'ok', 'usage': {'input_tokens': 12, 'output_tokens': 6}}\n"
        "llama = ScriptedModel([turn, turn], name='local-llama-3')\n",
        encoding="utf-8",
    )
    path = tmp_path / "agent.yaml"
    unpriced = "schema_version: 1\nname: l\nmodel: prices_local_models:llama\nbudget:\n"
    path.write_text(unpriced + "  cost_usd: 0.02\n", encoding="utf-8")
    validate_agent_file(path)  # the model is not made: nothing to price yet
    with pytest.raises(AgentFileError) as refused:
        Agent.from_file(path)
    [problem] = refused.value.problems
    assert str(problem).startswith(f"{path}:5: [budget] ") and "'local-llama-3'" in str(problem)
    path.write_text(
        unpriced + "  cost_usd: 0.02\n  prices: {local-llama: {input: 1000, output: 1000}}\n",
        encoding="utf-8",
    )
    agent = Agent.from_file(path)
    first = await agent.run("hi")
    assert first.status == "completed", first.reason
    assert first.usage.cost_usd == pytest.approx(0.018)
    second = await agent.run("and now a longer question, please, with more words in it")
    assert second.status == "budget_exhausted" and "global:cost_usd" in second.reason


def test_a_section_an_override_replaces_is_not_priced(tmp_path: Path) -> None:
    """The file's model is not used when `model=` replaces it, so it needs no price; and a
    budget given in Python replaces the file's, prices included (the adapter is not given
    the file's prices then: the budget that charges is the one given)."""
    path = tmp_path / "agent.yaml"
    path.write_text(
        "schema_version: 1\nname: u\nmodel: openai:gpt-4o\nbudget: {cost_usd: 5}\n",
        encoding="utf-8",
    )
    Agent.from_file(path, model=ScriptedModel(["hi"]))  # `scripted` is priced at $0
    path.write_text(PRICED.format(url="http://127.0.0.1:9/v1"), encoding="utf-8")
    agent = Agent.from_file(path, budget=StandardBudget(BudgetConfig(total_tokens=10)))
    assert adapter_prices(agent) is None


# ------------------------------------------------------------------ the documented example


def budget_section() -> str:
    """docs/agent-files.md's section on budgets."""
    text = (ROOT / "docs" / "agent-files.md").read_text(encoding="utf-8")
    return text.partition("## Budgets and the journal")[2].partition("\n## ")[0]


def docs_prices_example() -> str:
    """The YAML block of the budget section that gives `prices`."""
    blocks: list[str] = re.findall(r"```yaml\n(.*?)```", budget_section(), re.S)
    found = [b for b in blocks if "prices:" in b]
    assert len(found) == 1, "the budget section shows one agent file with prices"
    return found[0]


async def test_the_documented_prices_example_builds_and_its_cap_binds(
    server: FakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", server.url + "/v1")
    path = tmp_path / "agent.yaml"
    path.write_text(docs_prices_example(), encoding="utf-8")
    validate_agent_file(path)
    agent = Agent.from_file(path)
    config = budget_of(agent).config
    caps = config.per_user or config
    assert caps.cost_usd is not None
    # A provider billing a prompt that costs the whole cap: recorded in full, so the next
    # call finds nothing left.
    assert isinstance(config.prices, dict)
    price = config.prices[agent.deps.model.name]
    tokens = math.ceil(caps.cost_usd * 1_000_000 / price.input)
    server.add(Reply(events=chat_stream(["ok"], prompt_tokens=tokens, completion_tokens=1)))
    first = await agent.run("hi")
    assert first.status == "completed", first.reason
    assert first.usage.cost_usd == pytest.approx((tokens * price.input + price.output) / 1e6)
    second = await agent.run("again")
    assert second.status == "budget_exhausted", second.reason
    assert len(server.requests) == 1


def test_the_documented_problem_is_what_the_example_without_prices_gets(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(docs_prices_example().partition("  prices:")[0], encoding="utf-8")
    with pytest.raises(AgentFileError) as refused:
        validate_agent_file(path)
    [problem] = refused.value.problems
    said = str(problem).replace(str(path), "agent.yaml")
    assert f"```\n{said}\n```" in budget_section()


def test_a_cap_no_ledger_can_count_is_a_budget_problem_at_its_line(tmp_path: Path) -> None:
    """`validate` reports what the budget would refuse when made (it raised a bare
    BudgetConfigError from `from_file`), at the cap's own line, also under `per_user`."""
    file = tmp_path / "huge.yaml"
    file.write_text(
        "schema_version: 1\nname: huge\nmodel: echo\nbudget:\n  per_user:\n"
        "    model_calls: 3\n    cost_usd: 1.0e+300\n"
    )
    for check in (validate_agent_file, lambda path: Agent.from_file(path)):
        with pytest.raises(AgentFileError) as caught:
            check(file)
        shown = [str(problem) for problem in caught.value.problems]
        assert any(f"{file}:7: [budget]" in p and "cost_usd" in p for p in shown), shown
