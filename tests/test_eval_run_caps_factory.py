"""`loomgraph eval --run-max-*` with an agent factory (`-a MODULE:ATTR`): the factory is
called once per strategy, whether or not its Agent has a budget (one without got per-run caps
by being made a second time, so a factory that opens connections or starts servers did so
twice); and a budget whose caps cannot be read is refused before anything is written."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from loomgraph.cli.main import main

CASES = """schema_version: 1
name: two
cases:
  - {id: a, input: alpha}
  - {id: b, input: beta}
"""

FACTORY = '''
from pathlib import Path
from loomgraph import Agent
from loomgraph.governance import NoBudget

def make(**options):
    with Path("made.log").open("a") as log:
        log.write("made\\n")
    return Agent("Be brief.", model="echo", **options)

class OpaqueBudget(NoBudget):
    """A budget of the user's own: no `config` to add caps to."""

def opaque(**options):
    return Agent("Be brief.", model="echo", budget=OpaqueBudget(), **options)
'''


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "two.yaml").write_text(CASES)
    (tmp_path / "factories.py").write_text(FACTORY)
    sys.modules.pop("factories", None)
    yield tmp_path
    sys.modules.pop("factories", None)


def _statuses(out: Path) -> list[str]:
    report = json.loads((out / "report.json").read_text())
    return [r["outcome"]["status"] for r in report["runs"]]


def test_a_factory_without_a_budget_is_called_once_and_its_runs_are_capped(work: Path) -> None:
    command = ["eval", "two.yaml", "-a", "factories:make", "--concurrency", "1", "--json"]
    assert main([*command, "--out", "out", "--run-max-tokens", "1"]) == 0
    assert (work / "made.log").read_text().splitlines() == ["made"]
    assert _statuses(work / "out") == ["budget_exhausted", "budget_exhausted"]


def test_a_budget_whose_caps_cannot_be_read_is_refused_before_anything_is_written(
    work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    command = ["eval", "two.yaml", "-a", "factories:opaque", "--json", "--out", "out"]
    assert main([*command, "--run-max-cost", "0.5"]) == 2
    err = capsys.readouterr().err
    assert "OpaqueBudget" in err and "per-run caps cannot be added" in err
    assert not (work / "out" / "report.json").exists()
    assert not (work / "out" / "state.jsonl").exists()
