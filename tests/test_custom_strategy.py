"""The example package in `examples/custom_strategy`, installed for real, adds a node kind.

Why it installs the way it does: the claim under test is that a node kind shipped in a
*separate distribution* reaches loomgraph through the `loomgraph.nodes` entry point alone —
and entry points are metadata that exists only once a distribution is installed. So the test
runs `pip install --target <tmp dir>`: pip builds the wheel with hatchling (already installed,
hence `--no-build-isolation`; `--no-deps --no-index` because loomgraph is already installed
and nothing may be downloaded) and unpacks it, `.dist-info/entry_points.txt` included, into a
temporary folder. Fresh interpreters with that folder on PYTHONPATH see the distribution; this
interpreter and the main environment never do, and the folder goes away with pytest's tmp
dirs, so nothing stays installed for the rest of the suite (a `pip install -e` would). A venv
would isolate as well but costs several seconds more for nothing this test needs. The whole
module takes about 5 seconds.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "custom_strategy"
EXAMPLE_GRAPH = EXAMPLE / "graphs" / "self_consistency.yaml"
TIMEOUT = 120  # seconds; a hung subprocess fails the test instead of the CI job

# Runs in a fresh interpreter: the graph is located through the installed distribution's
# metadata (not by importing the package), so only the entry point can bring `vote` in.
RUN_INSTALLED_GRAPH = r"""
import asyncio, importlib.metadata, json, sys
from loomgraph import Agent, tool
from loomgraph.models import ScriptedModel

dist = importlib.metadata.distribution("loomgraph-debate")
graph = dist.locate_file("loomgraph_debate/graphs/self_consistency.yaml")
(ep,) = [e for e in dist.entry_points if e.group == "loomgraph.nodes"]
imported_before = "loomgraph_debate" in sys.modules

@tool
def lookup(country: str) -> str:
    '''The capital of a country.'''
    return {"australia": "Canberra"}.get(country.lower(), "unknown")

model = ScriptedModel([
    {"tool_calls": [{"tool": "lookup", "args": {"country": "Australia"}}]},
    "lookup(Australia) returned Canberra.",
    "ANSWER: Canberra", "ANSWER: Sydney", "ANSWER: canberra", "ANSWER: Canberra", "ANSWER: Perth",
])
agent = Agent("Answer questions.", model=model, tools=[lookup], architecture=str(graph))

async def main():
    result = await agent.run("What is the capital of Australia?")
    history = await agent.history(result.run_id)
    return result, history

result, history = asyncio.run(main())
print(json.dumps({
    "imported_before": imported_before,
    "entry_point": f"{ep.name} = {ep.value}",
    "module": sys.modules["loomgraph_debate.vote"].__file__,
    "kind": type(agent.compiled.nodes["vote"]).__name__,
    "status": result.status, "output": result.output,
    "path": [[c.node, c.next_node] for c in history],
    "votes": history[-1].state["votes"], "agreement": history[-1].state["agreement"],
}))
"""


def _env(site: Path | None) -> dict[str, str]:
    env = dict(
        os.environ,
        PYTHONDONTWRITEBYTECODE="1",
        PIP_ROOT_USER_ACTION="ignore",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
    )
    if site is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")]))
    return env


def _python(args: list[str], site: Path | None, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        env=_env(site),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A temporary folder the example package is pip-installed into (once per module)."""
    if importlib.util.find_spec("hatchling") is None:
        pytest.fail(
            "building the example package needs hatchling in this environment "
            "(it is in loomgraph's `dev` extra): pip install 'hatchling>=1.21'"
        )
    target = tmp_path_factory.mktemp("site")
    done = _python(
        [
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--no-cache-dir",
            "--target",
            str(target),
            str(EXAMPLE),
        ],
        None,
        target,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (target / "loomgraph_debate" / "vote.py").is_file()
    return target


def test_the_main_environment_does_not_have_the_example(tmp_path: Path) -> None:
    with pytest.raises(importlib.metadata.PackageNotFoundError):
        importlib.metadata.distribution("loomgraph-debate")  # uninstall it if this fails
    assert importlib.util.find_spec("loomgraph_debate") is None
    # Without the package installed, the graph names a kind nobody registered.
    done = _python(
        [
            "-c",
            "from loomgraph import Agent; import sys; "
            "Agent(model='echo', architecture=sys.argv[1])",
            str(EXAMPLE_GRAPH),
        ],
        None,
        tmp_path,
    )
    assert done.returncode != 0
    assert "unknown-node-kind" in done.stderr and "'vote'" in done.stderr


def test_installed_the_kind_is_found_by_entry_point_and_the_graph_runs(
    site: Path, tmp_path: Path
) -> None:
    done = _python(["-c", RUN_INSTALLED_GRAPH], site, tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["imported_before"] is False
    assert report["entry_point"] == "vote = loomgraph_debate.vote:VoteNode"
    assert Path(report["module"]).is_relative_to(site)  # the installed copy
    assert report["kind"] == "VoteNode"
    assert report["status"] == "completed"
    assert report["output"] == "Canberra"
    assert report["votes"] == ["Canberra", "Sydney", "canberra", "Canberra", "Perth"]
    assert report["agreement"] == pytest.approx(0.6)
    assert report["path"] == [
        ["", "research"],  # seq 0: the first state
        ["research/model", "tools"],
        ["research/tools", "model"],
        ["research/model", "END"],
        ["research", "vote"],
        ["vote", "END"],
    ]


def test_installed_the_example_package_own_tests_pass(site: Path, tmp_path: Path) -> None:
    done = _python(
        ["-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLE / "tests")], site, tmp_path
    )
    assert done.returncode == 0, done.stdout + done.stderr
    passed = re.search(r"(\d+) passed", done.stdout)
    assert passed is not None and int(passed.group(1)) >= 8, done.stdout
    assert "failed" not in done.stdout and "skipped" not in done.stdout


def test_installed_the_readmes_render_command_draws_the_committed_drawing(
    site: Path, tmp_path: Path
) -> None:
    # The README tells a reader to run `loomgraph render ... -o graphs/self_consistency.svg`:
    # a drawing older than what that draws would be rewritten in their checkout.
    drawn = tmp_path / "drawn.svg"
    command = "from loomgraph.cli.main import main; main()"
    done = _python(["-c", command, "render", str(EXAMPLE_GRAPH), "-o", str(drawn)], site, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    committed = EXAMPLE / "graphs" / "self_consistency.svg"
    assert drawn.read_text(encoding="utf-8") == committed.read_text(encoding="utf-8"), (
        "render it again: "
        + " ".join(["loomgraph render", str(EXAMPLE_GRAPH), "-o", str(committed)])
    )
