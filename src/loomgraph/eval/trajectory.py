"""Tool trajectories: the calls a run executed, matched against the calls a case expects."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from loomgraph.eval.dataset import ExpectedCall, ToolTrajectory, TrajectoryMode

__all__ = ["CallRecord", "TrajectoryMatch", "match_trajectory", "matches"]


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One tool call a run executed: the tool's name and its arguments."""

    tool: str
    args: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """JSON-shaped data."""
        return {"tool": self.tool, "args": self.args}


@dataclass(frozen=True, slots=True)
class TrajectoryMatch:
    """How well the executed calls fit the expected ones."""

    matched: int
    expected: int
    actual: int
    passed: bool  # what the mode asks for holds (all expected, in order or exactly)

    @property
    def precision(self) -> float:
        """The share of executed calls that were expected (1.0 when none were executed)."""
        return self.matched / self.actual if self.actual else 1.0

    @property
    def recall(self) -> float:
        """The share of expected calls that were executed (1.0 when none were expected)."""
        return self.matched / self.expected if self.expected else 1.0


def _arg_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def matches(expected: ExpectedCall, call: CallRecord) -> bool:
    """True when `call` is the expected tool with arguments fitting every pattern."""
    if not fnmatchcase(call.tool, expected.tool):
        return False
    for name, pattern in expected.args.items():
        if name not in call.args:
            return False
        actual = call.args[name]
        if isinstance(pattern, str):
            if not fnmatchcase(_arg_text(actual), pattern):
                return False
        elif actual != pattern:
            return False
    return True


def _in_order(expected: Sequence[ExpectedCall], calls: Sequence[CallRecord]) -> int:
    """The most expected calls matched in order, each to a distinct later executed call: the
    longest common subsequence (a missing or out-of-place call costs only itself)."""
    if _all_in_order(expected, calls):  # the common case, in one pass
        return len(expected)
    # best[j]: the most matched among the expected calls so far and the first j executed ones.
    best = [0] * (len(calls) + 1)
    for want in expected:
        diagonal = 0  # best[j - 1] of the previous row
        for j, call in enumerate(calls, start=1):
            above = best[j]
            best[j] = diagonal + 1 if matches(want, call) else max(above, best[j - 1])
            diagonal = above
    return best[-1]


def _all_in_order(expected: Sequence[ExpectedCall], calls: Sequence[CallRecord]) -> bool:
    """True when every expected call matches a later executed call than the one before it
    (each taking the earliest that fits, which finds such a match whenever one exists)."""
    position = 0
    for want in expected:
        while position < len(calls) and not matches(want, calls[position]):
            position += 1
        if position == len(calls):
            return False
        position += 1
    return True


def _bipartite(expected: Sequence[ExpectedCall], calls: Sequence[CallRecord]) -> int:
    """The largest number of expected calls each matched to a distinct executed call."""
    owner: dict[int, int] = {}  # executed call -> expected call

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


def match_trajectory(spec: ToolTrajectory, calls: Sequence[CallRecord]) -> TrajectoryMatch:
    """Match executed `calls` against `spec` in its mode (extra calls lower the precision)."""
    expected = spec.calls
    if spec.mode is TrajectoryMode.ANY_ORDER:
        matched = _bipartite(expected, calls)
        return TrajectoryMatch(matched, len(expected), len(calls), passed=matched == len(expected))
    matched = _in_order(expected, calls)
    if spec.mode is TrajectoryMode.EXACT:
        same = len(calls) == len(expected) and matched == len(expected)
        return TrajectoryMatch(matched, len(expected), len(calls), passed=same)
    return TrajectoryMatch(matched, len(expected), len(calls), passed=matched == len(expected))
