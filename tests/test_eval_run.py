"""`loomgraph eval` end to end: the worked example, resuming after a kill, reports, gates."""

from __future__ import annotations

import json
import os
import re
import selectors
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from loomgraph.eval import Dataset, Report, evaluate
from loomgraph.eval.html_report import PLOTS

ROOT = Path(__file__).parents[1]
EXAMPLE = ROOT / "examples" / "eval"
ARCHITECTURES = ["react", "plan-execute", "reflexion"]


def loomgraph(*args: str, cwd: Path = EXAMPLE, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loomgraph.cli.main", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
        env={**os.environ, **env},
    )


def _strategy_args() -> list[str]:
    return [arg for name in ARCHITECTURES for arg in ("--architecture", name)]


@pytest.fixture(scope="module")
def worked_example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("eval")
    done = loomgraph(
        "eval", "cases.yaml", "-a", "agents:make_agent", *_strategy_args(), "--out", str(out)
    )
    assert done.returncode == 0, done.stderr
    assert "plan-execute - react" in done.stdout
    return out


def test_the_worked_example_compares_three_strategies(worked_example: Path) -> None:
    report = Report.read_json(worked_example / "report.json")
    assert [s.strategy for s in report.strategies] == ARCHITECTURES
    react, plan, reflexion = (report.summary(n) for n in ARCHITECTURES)
    assert all(s.runs == 23 for s in report.strategies)
    # The sloppy player makes one call per task: splitting the task (plan-execute) and
    # retrying with a lesson (reflexion) both recover the calls it skipped.
    assert plan.score > react.score and reflexion.score > react.score
    assert react.evaluators["not_called"] < 1.0  # it cancels late orders nobody asked about
    assert {c.b for c in report.comparisons} == {"plan-execute", "reflexion"}
    assert all(c.low <= c.mean_diff <= c.high for c in report.comparisons)


def test_the_committed_report_is_what_the_example_gives(worked_example: Path) -> None:
    fresh = Report.read_json(worked_example / "report.json")
    committed = Report.read_json(ROOT / "docs" / "eval" / "report.json")
    assert committed.case_scores == fresh.case_scores
    assert [s.pass_rate for s in committed.strategies] == [s.pass_rate for s in fresh.strategies]


def _shape(data: Any) -> Any:
    """The keys of a report, nested, without the values (each list by its first item)."""
    if isinstance(data, dict):
        return {key: _shape(value) for key, value in data.items()}
    if isinstance(data, list):
        return [_shape(data[0])] if data else []
    return None


def _report_shape(path: Path) -> Any:
    data = json.loads(path.read_text())
    shape = _shape(data)
    # Per-case keys are names, not fields; a run's first score stands for every score.
    shape["case_scores"] = shape["comparisons"] = None
    return shape


def test_the_committed_report_has_every_field_a_fresh_one_has(worked_example: Path) -> None:
    committed = _report_shape(ROOT / "docs" / "eval" / "report.json")
    assert committed == _report_shape(worked_example / "report.json"), (
        "docs/eval/report.json predates the report's fields: regenerate it (docs/eval.md)"
    )


def test_the_html_report_is_one_offline_file_with_every_plot(worked_example: Path) -> None:
    page = (worked_example / "report.html").read_text()
    for name in PLOTS:
        start = page.index(f'data-plot="{name}"')
        assert "<svg" in page[start : page.index("</figure>", start)]
    assert "<script" not in page
    assert not re.search(r"""(src|href)=["']?https?:|url\(https?:""", page)  # nothing fetched


HANGING_AGENTS = """
import os, sys, threading
sys.path.insert(0, {example!r})
import tools
from agents import make_agent as _make_agent

def get_weather(city: str) -> str:
    \"\"\"The weather now in a city.

    Args:
        city: the city's name
    \"\"\"
    if os.environ.get("EVAL_HANG") and city == "Tokyo":
        print("hung in get_weather", file=sys.stderr, flush=True)
        threading.Event().wait()  # stuck in the tool until the process is killed
    return tools.get_weather(city)

tools.TOOLS[0] = get_weather

def make_agent(architecture="react", **options):
    return _make_agent(architecture, **options)
"""


def _finished(state: Path) -> list[dict[str, Any]]:
    if not state.exists():
        return []
    return [json.loads(line) for line in state.read_text().splitlines() if line.strip()]


def _wait_for_line(child: subprocess.Popen[bytes], text: str, timeout: float) -> None:
    """Read the child's stderr until a line holds `text` (bounded by `timeout`)."""
    assert child.stderr is not None
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(child.stderr, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not selector.select(deadline - time.monotonic()):
                break
            line = child.stderr.readline()
            if not line:
                raise AssertionError("the evaluation ended before it was interrupted")
            if text in line.decode():
                return
    raise AssertionError(f"no {text!r} from the evaluation within {timeout} s")


def test_an_interrupted_evaluation_resumes_to_the_same_report(tmp_path: Path) -> None:
    (tmp_path / "hanging.py").write_text(HANGING_AGENTS.format(example=str(EXAMPLE)))
    out, journal = tmp_path / "out", tmp_path / "journal.db"
    command = [
        sys.executable, "-m", "loomgraph.cli.main", "eval", str(EXAMPLE / "cases.yaml"),
        "-a", "hanging:make_agent", "--architecture", "react", "--concurrency", "1",
        "--out", str(out), "--runtime", f"sqlite:{journal}",
    ]  # fmt: skip
    child = subprocess.Popen(
        command, cwd=tmp_path, env={**os.environ, "EVAL_HANG": "1"}, stderr=subprocess.PIPE
    )
    try:
        _wait_for_line(child, "hung in get_weather", timeout=120)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    before = _finished(out / "state.jsonl")
    assert sum(e["kind"] == "finished" for e in before) == 4
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    resumed = Report.read_json(out / "report.json")
    # Runs finished before the kill were not run again, and the stuck one was resumed (not
    # restarted): one journaled run per case.
    with sqlite3.connect(journal) as db:
        runs = db.execute("SELECT count(*) FROM runs WHERE parent_run_id IS NULL").fetchone()[0]
    assert runs == len(Dataset.load(EXAMPLE / "cases.yaml").cases)
    tokyo = next(r for r in resumed.runs if r["outcome"]["case_id"] == "weather-tokyo")
    stuck = next(e for e in before if e["case_id"] == "weather-tokyo")
    assert tokyo["outcome"]["run_id"] == stuck["run_id"]
    uninterrupted = _in_process_report()
    assert resumed.case_scores == uninterrupted.case_scores


def _in_process_report() -> Report:
    sys.path.insert(0, str(EXAMPLE))
    try:
        from agents import make_agent  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(EXAMPLE))
    import asyncio

    dataset = Dataset.load(EXAMPLE / "cases.yaml")
    return asyncio.run(evaluate(dataset, {"react": make_agent("react")}))


def test_gates_fail_under_and_against_a_baseline(worked_example: Path, tmp_path: Path) -> None:
    base = ["eval", "cases.yaml", "-a", "agents:make_agent", "--architecture", "react"]
    out = ["--out", str(tmp_path / "o")]
    below = loomgraph(*base, *out, "--fail-under", "0.99")
    assert below.returncode == 1 and "gate: react: score" in below.stderr
    baseline = json.loads((worked_example / "report.json").read_text())
    same = loomgraph(*base, *out, "--baseline", str(worked_example / "report.json"))
    assert same.returncode == 0, same.stderr
    baseline["strategies"][0]["evaluators"]["answer"] = 1.0  # a better past
    better = tmp_path / "better.json"
    better.write_text(json.dumps(baseline))
    dropped = loomgraph(*base, *out, "--baseline", str(better), "--max-drop", "0.05")
    assert dropped.returncode == 1 and "answer score dropped from 1.000" in dropped.stderr


def test_each_run_has_its_own_budget(tmp_path: Path) -> None:
    capped = loomgraph(
        "eval", "cases.yaml", "-a", "agents:make_agent", "--architecture", "react",
        "--out", str(tmp_path), "--run-max-tokens", "20", "--json",
    )  # fmt: skip
    assert capped.returncode == 0, capped.stderr
    report = json.loads(capped.stdout)
    statuses = {r["outcome"]["status"] for r in report["runs"]}
    assert statuses == {"budget_exhausted"}  # every run, not only the first: caps per run


def test_schema_and_usage_errors(tmp_path: Path) -> None:
    schema = loomgraph("eval", "--schema")
    assert schema.returncode == 0 and "cases" in json.loads(schema.stdout)["properties"]
    missing = loomgraph("eval", "cases.yaml")
    assert missing.returncode == 2 and "--agent" in missing.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("cases:\n  - id: a\n")
    invalid = loomgraph("eval", str(bad), "-a", "agents:make_agent")
    assert invalid.returncode == 2 and f"{bad}:2" in invalid.stderr
    unknown = loomgraph("eval", "cases.yaml", "-a", "nowhere:make")
    assert unknown.returncode == 2 and "cannot import agent 'nowhere:make'" in unknown.stderr
