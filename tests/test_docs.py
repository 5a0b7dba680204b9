"""Every code block of README.md and docs/*.md runs, so a documented example cannot drift.

Each page's python blocks run in order in one namespace, in a fresh temporary directory
holding a copy of graphs/, with LOOMGRAPH_AUDIT_KEY set to a test key. A block may use
top-level `await`; `test_*` functions it defines are called too (async ones with
asyncio.run). bash blocks run when every command is a cheap `loomgraph` one (CHEAP). A
block that cannot run (an API key, a server, a fragment) is preceded by
`<!-- skip: why -->`. New pages are picked up by the glob.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
FENCE = re.compile(r"^```(\w+)\s*$")
SKIP = re.compile(r"<!--\s*skip:\s*(.+?)\s*-->")
# `loomgraph` subcommands that run quickly and need nothing but the package.
CHEAP = {"validate", "render", "schema", "graphs", "new-graph", "--version", "--help"}


@dataclass
class Block:
    page: Path
    line: int  # of the opening fence
    language: str
    code: str
    skip: str | None

    def where(self) -> str:
        page = self.page.relative_to(ROOT) if self.page.is_relative_to(ROOT) else self.page
        return f"{page}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """The fenced code blocks of a page, with the skip reason of the comment before one."""
    lines = page.read_text(encoding="utf-8").splitlines()
    out: list[Block] = []
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if match is None:
            i += 1
            continue
        start = i
        i += 1
        body = []
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i])
            i += 1
        before = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        skip = m.group(1) if (m := SKIP.search(before)) else None
        out.append(Block(page, start + 1, match.group(1), "\n".join(body) + "\n", skip))
        i += 1
    return out


def run_python(block: Block, namespace: dict[str, Any]) -> None:
    """Run one block in the page's namespace (top-level await allowed), then its tests."""
    before = set(namespace)
    code = compile(
        block.code, block.where(), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True
    )
    result = eval(code, namespace)
    if inspect.iscoroutine(result):
        asyncio.run(result)
    for name in sorted(set(namespace) - before):
        fn = namespace[name]
        if name.startswith("test_") and callable(fn):
            outcome = fn()
            if inspect.iscoroutine(outcome):
                asyncio.run(outcome)


def cheap_commands(block: Block) -> list[list[str]] | None:
    """The block's `loomgraph` commands, or None when any line is not a cheap one."""
    commands = []
    for raw in block.code.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("$ "):
            line = line[2:]
        argv = shlex.split(line)
        if argv[:1] != ["loomgraph"] or len(argv) < 2 or argv[1] not in CHEAP:
            return None
        commands.append(argv)
    return commands


def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the examples assume of their directory: the graphs/ folder and an audit key."""
    shutil.copytree(ROOT / "graphs", tmp_path / "graphs")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("LOOMGRAPH_AUDIT_KEY", "docs-test-key-0123456789abcdef")


def page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_python_blocks_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    todo = [b for b in blocks(page) if b.language == "python" and b.skip is None]
    if not todo:
        pytest.skip("no runnable python blocks")
    workdir(tmp_path, monkeypatch)
    namespace: dict[str, Any] = {"__name__": f"docs_{page.stem}"}
    for block in todo:
        try:
            run_python(block, namespace)
        except BaseException as err:
            raise AssertionError(f"{block.where()}: {type(err).__name__}: {err}") from err


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_bash_blocks_of_cheap_commands_run(
    page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runnable = [
        (b, cmds)
        for b in blocks(page)
        if b.language in ("bash", "sh", "console") and b.skip is None
        if (cmds := cheap_commands(b))
    ]
    if not runnable:
        pytest.skip("no cheap loomgraph commands")
    workdir(tmp_path, monkeypatch)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(tmp_path)])}
    for block, commands in runnable:
        for argv in commands:
            done = subprocess.run(
                [sys.executable, "-m", "loomgraph.cli.main", *argv[1:]],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert done.returncode == 0, f"{block.where()}: {shlex.join(argv)}: {done.stderr}"


def test_skipped_blocks_say_why() -> None:
    skipped = [b for page in PAGES for b in blocks(page) if b.skip is not None]
    python = [b for page in PAGES for b in blocks(page) if b.language == "python"]
    assert all(len(b.skip or "") >= 8 for b in skipped)
    # Most examples run: the skipped ones stay a minority.
    assert len([b for b in skipped if b.language == "python"]) * 2 < len(python)


def test_the_collector_finds_blocks_and_skip_marks(tmp_path: Path) -> None:
    page = tmp_path / "p.md"
    page.write_text(
        "text\n\n```python\nx = 1\n```\n\n<!-- skip: needs an API key -->\n```python\n"
        "boom()\n```\n",
        encoding="utf-8",
    )
    found = blocks(page)
    assert [(b.line, b.skip) for b in found] == [(3, None), (8, "needs an API key")]
    namespace: dict[str, Any] = {}
    run_python(found[0], namespace)
    assert namespace["x"] == 1
    with pytest.raises(NameError):
        run_python(found[1], namespace)


def test_the_authoring_guide_quotes_the_lines_validate_prints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/authoring.md step 3 shows `loomgraph validate` on the `new-graph` starter with two
    slips; the lines it quotes are the ones the command prints for that file (they drifted
    when the starter's comments changed)."""
    from loomgraph.authoring.scaffold import new_graph_yaml
    from loomgraph.cli.main import main

    page = ROOT / "docs" / "authoring.md"
    text = page.read_text(encoding="utf-8")
    step = text.partition("## 3. Validate and render it")[2]
    shown = next(b for b in blocks(page) if b.language == "console" and b.code.strip() in step)
    command, *expected = shown.code.strip().splitlines()
    # The two slips the page names: an edge `to: polsh`, and `output: answer` in `polish`.
    assert "`to: polsh`" in step and "`output: answer`" in step
    starter = new_graph_yaml("my-strategy")
    slipped = re.sub(r"^(\s*)to: polish\b", r"\1to: polsh", starter, count=1, flags=re.M)
    slipped = re.sub(r"^(\s*)output: output\b", r"\1output: answer", slipped, count=1, flags=re.M)
    assert slipped.count("polsh") == 1 and "output: answer" in slipped
    (tmp_path / "graphs").mkdir()
    (tmp_path / "graphs" / "my-strategy.yaml").write_text(slipped, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert main(shlex.split(command.removeprefix("$ "))[1:]) == 1
    printed = capsys.readouterr()
    assert (printed.out + printed.err).strip().splitlines() == expected


def test_concepts_lists_every_event_kind_loomgraph_emits() -> None:
    # It lacked six (permission_decision, budget_warning, node_retry, tool_progress and the
    # two memory ones): a consumer matching on kinds learnt of them from the code only.
    from loomgraph.protocols.events import EVENT_KINDS

    text = (Path(__file__).parents[1] / "docs" / "concepts.md").read_text(encoding="utf-8")
    listed = text[text.index("Event kinds:") :]
    listed = listed[: listed.index("holds\nthem all")]
    assert [kind for kind in sorted(EVENT_KINDS) if f"`{kind}`" not in listed] == []
