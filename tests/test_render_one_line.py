"""Every text a diagram carries from the graph is on one line (docs/rendering.md: "control
characters become spaces"), in DOT as in Mermaid; and the documented Mermaid of react is
what `to_mermaid` writes."""

from __future__ import annotations

import re
from pathlib import Path

from loomgraph.authoring.render import to_dot, to_mermaid
from loomgraph.graph.spec import END, EdgeSpec, Graph, NodeSpec

DOCS = Path(__file__).resolve().parent.parent / "docs" / "rendering.md"


def multiline() -> Graph:
    """model -> tools under a condition written over two lines; described over three."""
    return Graph(
        name="g",
        description="first\nsecond\r\nthird",
        entry="model",
        nodes={
            "model": NodeSpec(kind="model", description="asks\tthe\x0bmodel"),
            "tools": NodeSpec(kind="tools"),
        },
        edges=[
            EdgeSpec(source="model", target="tools", when="last_message.tool_calls\n| length > 0"),
            EdgeSpec(source="model", target=END),
            EdgeSpec(source="tools", target="model"),
        ],
    )


def quoted_strings(dot: str) -> list[str]:
    """The double-quoted strings of a DOT source."""
    return re.findall(r'"((?:[^"\\]|\\.)*)"', dot)


def test_dot_puts_conditions_and_descriptions_on_one_line() -> None:
    texts = quoted_strings(to_dot(multiline()))
    assert not [t for t in texts if re.search(r"[\x00-\x1f\x7f]", t)]
    assert any("last_message.tool_calls | length > 0" in t for t in texts)
    assert any(re.search("first +second +third", t) for t in texts)
    assert any("asks the model" in t for t in texts)


def test_mermaid_puts_them_on_one_line_too() -> None:
    drawn = to_mermaid(multiline())
    assert "first second third" in drawn
    assert "tool_calls #124; length" in drawn


def test_the_documented_mermaid_of_react_is_what_is_written() -> None:
    text = DOCS.read_text(encoding="utf-8")
    after = text.split("For `graphs/react.yaml`, in Mermaid:", 1)[1]
    block = after.split("```mermaid\n", 1)[1].split("```", 1)[0]
    assert block == to_mermaid("react")
