"""A user writing their own strategies (graphs in YAML and Python): what a probe found (each
test failed before its fix). The steps and types the graphs name live in
tests/user_graph_steps.py.
"""

from __future__ import annotations

import re
from typing import Any

from loomgraph import Agent
from loomgraph.memory.in_memory import InMemoryMemory
from loomgraph.models import ScriptedModel


def respond(**answer: Any) -> dict[str, Any]:
    """A model turn answering through the structured-output `respond` tool."""
    return {"tool_calls": [{"tool": "respond", "args": answer}]}


# ----------------------------------------------------------------- lost data


async def test_reflexion_keeps_every_line_of_a_lesson_in_memory() -> None:
    """A user runs the built-in `reflexion` graph with a memory store. The model writes a
    lesson of two lines; the first run stores it in the `lessons` block as is. The next run
    that adds a lesson rebuilds the block from its `- ` lines only
    (`strategies/lessons.lessons_text`), so the lesson's second line is silently dropped
    from the user's memory. Expected: a kept lesson is kept whole."""
    memory = InMemoryMemory()

    async def reflect_once(lesson: str) -> None:
        turns = iter(
            [
                "first try",
                respond(score=0.1, feedback="thin"),
                lesson,
                "second try",
                respond(score=0.9),
            ]
        )
        agent = Agent(
            "x",
            model=ScriptedModel(lambda request: next(turns)),
            architecture="reflexion",
            memory=memory,
        )
        result = await agent.run("Write the summary", user_id="alice")
        assert result.status == "completed", result.reason

    await reflect_once("Check the units first.\nThen cite the source.")
    await reflect_once("Be brief.")
    kept = (await memory.get_blocks("alice"))["lessons"]
    assert "Be brief." in kept
    assert "Then cite the source." in kept, f"the lesson's second line was lost: {kept!r}"


def test_a_lesson_of_several_lines_stays_whole_in_the_block() -> None:
    """Each lesson is one entry however many lines it has; an empty lesson is none; the
    lines of a block written by hand stay lessons of their own."""
    from loomgraph.strategies.lessons import kept_lessons, lessons_text

    block = lessons_text("", ["Check the units.\r\n\r\nThen cite.", "", "  \n", "Be brief."])
    assert block == "- Check the units.\n  \n  Then cite.\n- Be brief."
    assert kept_lessons(block) == ["Check the units.\n\nThen cite.", "Be brief."]
    again = lessons_text(block, ["Be brief.", "New one"])
    assert kept_lessons(again) == ["Check the units.\n\nThen cite.", "Be brief.", "New one"]
    assert kept_lessons("written by hand\n- a lesson") == ["written by hand", "a lesson"]


def test_a_long_lesson_of_several_lines_is_cut_to_fit_with_its_indents() -> None:
    from loomgraph.strategies.lessons import lessons_text, stored_chars

    block = lessons_text("", ["line\n" * 200], limit=100)
    assert stored_chars(block) <= 100 and block.endswith("…") and block.startswith("- line\n  ")


def test_a_lesson_is_not_cut_inside_an_escape() -> None:
    """A lesson holding NULs or lone surrogates is kept escaped (`\\x00`, `\\udcff`); cut to
    fit, it ends before an escape, never inside one (`\\x0…` reads as neither)."""
    from hypothesis import given
    from hypothesis import strategies as st

    from loomgraph.strategies.lessons import lessons_text, stored_chars

    @given(
        st.lists(st.sampled_from(["a", "\x00", "\udcff", "\\", "x"]), min_size=30, max_size=80),
        st.integers(min_value=8, max_value=40),
    )
    def cut_at(parts: list[str], limit: int) -> None:
        block = lessons_text("", ["".join(parts)], limit=limit)
        if not block:
            return
        assert stored_chars(block) <= limit and block.endswith("…")
        # What is left before `…` ends in no beginning of an escape (`\\`, `\\x0`, `\\udc`).
        assert re.search(r"\\(x0?|u(d([89a-f][0-9a-f]?)?)?)?$", block[2:-1]) is None, block

    cut_at()
