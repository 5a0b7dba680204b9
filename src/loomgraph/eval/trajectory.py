"""Tool trajectories: the calls a run executed, matched against the calls a case expects."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from loomgraph.eval.cases import ExpectedCall, ToolTrajectory, TrajectoryMode
from loomgraph.protocols.json_values import same_json

__all__ = ["CallRecord", "TrajectoryMatch", "match_trajectory", "matches"]


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One tool call a run executed: the tool's name and its arguments. `uncertain`: the
    journal has the call as begun but no outcome (the run stopped during it, or a crash
    left it unknown): it may have run, so it counts as executed."""

    tool: str
    args: dict[str, Any]
    uncertain: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-shaped data (`uncertain` only when true)."""
        data: dict[str, Any] = {"tool": self.tool, "args": self.args}
        if self.uncertain:
            data["uncertain"] = True
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CallRecord:
        """A call from `to_dict()`'s shape."""
        return cls(data["tool"], dict(data["args"]), bool(data.get("uncertain", False)))


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
        elif not same_json(actual, pattern, numbers_by_value=True):  # `true` is not `1`
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


def _shape(tool: str, args: dict[str, Any]) -> tuple[str, str]:
    """A key equal for calls (or expected calls) that match alike: the tool and the repr of
    the arguments in name order (JSON values with the same repr are equal)."""
    return tool, repr(sorted(args.items()))


def _fits(expected: Sequence[ExpectedCall], calls: Sequence[CallRecord]) -> list[list[int]]:
    """For each expected call, the executed calls (by index, in order) it matches; `matches`
    is asked once per distinct expected call and distinct executed call."""
    groups: dict[tuple[str, str], list[int]] = {}
    for index, call in enumerate(calls):
        groups.setdefault(_shape(call.tool, call.args), []).append(index)
    members = list(groups.values())
    fits: dict[tuple[str, str], list[int]] = {}
    out: list[list[int]] = []
    for want in expected:
        shape = _shape(want.tool, want.args)
        if shape not in fits:
            found = [m for m in members if matches(want, calls[m[0]])]
            fits[shape] = sorted(index for m in found for index in m)
        out.append(fits[shape])
    return out


def _augment(start: int, fits: list[list[int]], owner: list[int], seen: list[bool]) -> bool:
    """Find, depth first and without recursion, a path from the unmatched expected call
    `start` to a free executed call through calls it could take over; flip it if found."""
    path, next_edge = [start], [0]
    via: list[int] = []  # via[k]: the call that leads from path[k] to path[k + 1]
    while path:
        edges, position = fits[path[-1]], next_edge[-1]
        while position < len(edges) and seen[edges[position]]:
            position += 1
        if position == len(edges):  # a dead end: back up one step
            path.pop()
            next_edge.pop()
            if via:
                via.pop()
            continue
        next_edge[-1] = position + 1
        call = edges[position]
        seen[call] = True
        via.append(call)
        if owner[call] < 0:
            for want, taken in zip(path, via, strict=True):
                owner[taken] = want
            return True
        path.append(owner[call])
        next_edge.append(0)
    return False


def _bipartite(expected: Sequence[ExpectedCall], calls: Sequence[CallRecord]) -> int:
    """The largest number of expected calls each matched to a distinct executed call: each
    takes the first free call it fits, then augmenting paths are searched (iteratively,
    so thousands of calls need no deep recursion) until a round finds none."""
    fits = _fits(expected, calls)
    owner = [-1] * len(calls)  # executed call -> the expected call it is matched to
    matched = [False] * len(expected)
    start: dict[int, int] = {}  # per list of fits: where the first free call may be
    for want, edges in enumerate(fits):
        position = start.get(id(edges), 0)
        while position < len(edges) and owner[edges[position]] >= 0:
            position += 1
        start[id(edges)] = position
        if position < len(edges):
            owner[edges[position]] = want
            matched[want] = True
    while True:
        # One round: a failed search leaves the matching as it was, so the calls it saw
        # stay useless to the next search of the round; a round that finds no path ends.
        seen = [False] * len(calls)
        grown = False
        for want in range(len(expected)):
            if not matched[want] and _augment(want, fits, owner, seen):
                matched[want] = grown = True
        if not grown:
            return sum(matched)


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
