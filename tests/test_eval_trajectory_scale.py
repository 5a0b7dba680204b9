"""Trajectory matching at scale: `any_order` with thousands of calls, iteratively, with the
same results as a plain augmenting-path matching."""

from __future__ import annotations

import random
from typing import Any

from loomgraph.eval import CallRecord
from loomgraph.eval.dataset import ExpectedCall, ToolTrajectory
from loomgraph.eval.trajectory import match_trajectory, matches


def _spec(calls: list[dict[str, Any]], mode: str = "any_order") -> ToolTrajectory:
    return ToolTrajectory.model_validate({"mode": mode, "calls": calls})


def test_any_order_with_thousands_of_identical_calls() -> None:
    n = 3000
    spec = _spec([{"tool": "get_weather", "args": {"city": "Par*"}}] * n)
    calls = [CallRecord("get_weather", {"city": "Paris"})] * n
    match = match_trajectory(spec, calls)
    assert (match.matched, match.expected, match.actual, match.passed) == (n, n, n, True)
    short = match_trajectory(spec, [*calls[:-1], CallRecord("cancel_order", {})])
    assert (short.matched, short.passed) == (n - 1, False)


def _parity(i: int) -> str:
    return "even" if i % 2 == 0 else "odd"


def test_any_order_finds_a_long_augmenting_path() -> None:
    """Expected A_i fits calls c_i and c_i+1; taking c_i for every A_i leaves the last
    expected call (which fits c_0 only) unmatched unless every A_i moves one call along."""
    n = 1500
    expected = [{"tool": "t", "args": {_parity(i): i}} for i in range(n)]
    expected.append({"tool": "t", "args": {"first": True}})
    calls = [CallRecord("t", {"even": 0, "odd": -1, "first": True})]
    for j in range(1, n + 1):
        calls.append(CallRecord("t", {_parity(j - 1): j - 1, _parity(j): j}))
    match = match_trajectory(_spec(expected), calls)
    m = n + 1
    assert (match.matched, match.expected, match.actual, match.passed) == (m, m, m, True)


def _reference(expected: list[ExpectedCall], calls: list[CallRecord]) -> int:
    """A plain recursive augmenting-path matching (Kuhn's), for small inputs."""
    owner: dict[int, int] = {}

    def place(want: int, seen: set[int]) -> bool:
        for index, call in enumerate(calls):
            if index in seen or not matches(expected[want], call):
                continue
            seen.add(index)
            if index not in owner or place(owner[index], seen):
                owner[index] = want
                return True
        return False

    return sum(place(want, set()) for want in range(len(expected)))


def test_any_order_agrees_with_a_plain_matching_on_random_cases() -> None:
    rng = random.Random(7)
    tools = ["a", "b", "c"]
    patterns: list[dict[str, Any]] = [{"tool": "*"}, {"tool": "a"}, {"tool": "b", "args": {"x": 1}}]
    patterns += [{"tool": "?", "args": {"x": "[12]"}}, {"tool": "c", "args": {"y": 2}}]
    for _ in range(400):
        expected = [rng.choice(patterns) for _ in range(rng.randint(0, 8))]
        calls = [
            CallRecord(rng.choice(tools), {k: rng.randint(1, 3) for k in rng.sample("xy", 2)})
            for _ in range(rng.randint(0, 8))
        ]
        spec = _spec(expected)
        want = _reference(list(spec.calls), calls)
        match = match_trajectory(spec, calls)
        assert match.matched == want, (expected, calls)
        assert match.passed == (want == len(expected))
