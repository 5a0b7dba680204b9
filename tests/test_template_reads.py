"""`undefined-read` for what a condition or template reads that no run has: `self` (Jinja's
reference to the template's blocks, never a state field) and `state.<a field nowhere
declared>`. Both loaded before and rendered empty or tested false at every run."""

from __future__ import annotations

from typing import Any

import pytest

from test_validation_gaps import graph, problems


def with_condition(when: str) -> dict[str, Any]:
    """A one-node graph whose node goes to END under `when`, else to END."""
    data = graph({"plan": {"type": "str | None"}}, kind="llm", prompt="x", output="output")
    data["edges"] = [{"from": "n", "to": "END", "when": when}, {"from": "n", "to": "END"}]
    return data


@pytest.mark.parametrize(
    ("when", "shown"),
    [
        ("self", "self"),
        ("self.x", "self"),
        ("not self", "self"),
        ("state.nosuch", "state.nosuch"),
        ("state['nosuch']", "state.nosuch"),
        ("state.nosuch | length > 0", "state.nosuch"),
        ("state.plna == 'x'", "state.plna"),
    ],
)
def test_a_condition_reading_what_no_run_has(when: str, shown: str) -> None:
    assert problems(with_condition(when)) == [
        (
            "undefined-read",
            f"condition {when!r} uses {shown!r}, which is not a state field"
            + (" (did you mean 'plan'?)" if shown == "state.plna" else ""),
        )
    ]


@pytest.mark.parametrize(
    ("prompt", "shown"),
    [
        ("{{ self }}", "self"),
        ("Say {{ self.title }}", "self"),
        ("{{ state.nosuch }}", "state.nosuch"),
        ("{% if state['nosuch'] %}x{% endif %}", "state.nosuch"),
    ],
)
def test_a_template_reading_what_no_run_has(prompt: str, shown: str) -> None:
    found = problems(graph(kind="llm", prompt=prompt, output="output"))
    said = f"node 'n': template 'prompt' uses {shown!r}, which is not a state field"
    assert found == [("undefined-read", said)]


@pytest.mark.parametrize(
    "when",
    [
        "state.plan == 'x'",
        "state.messages | length > 0",
        "state.get('nosuch') is none",
        "visits.get('n', 0) < 3",
        "visits.n < 3",
        "visits.get('n')",
    ],
)
def test_what_a_run_has_is_no_problem(when: str) -> None:
    assert problems(with_condition(when)) == []


def test_a_template_setting_self_reads_its_own() -> None:
    prompt = "{% for self in ['a'] %}{{ self }}{% endfor %}"
    assert problems(graph(kind="llm", prompt=prompt, output="output")) == []
