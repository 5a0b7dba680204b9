"""A fleet job's payload: which run, what a worker is to do with it (`JobKind`), and what
it needs that the journal does not keep yet; written as JSON, read back checked, so that
workers of different loomgraph versions share one queue (`RunJob.decode`)."""

from __future__ import annotations

import enum
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from loomgraph.agent.fleet_errors import JobFromNewerVersion, JobUnusable

__all__ = ["JobKind", "RunJob"]


class JobKind(enum.StrEnum):
    """What a job asks a worker to do with its run."""

    START = "start"  # a queued run: start it
    RESUME = "resume"  # a run waiting for a person: go on with their answer
    # A fork journaled `queued` with its start (its state, node, visits, parent): start it
    # from there. Written only for forks, with fields every version knows, so a worker of a
    # version before it reads a newer version's kind (`JobFromNewerVersion`) and puts it back.
    FORK = "start_fork"


@dataclass(frozen=True, slots=True)
class RunJob:
    """The payload of one job: which run, and what a worker needs to advance it that the
    journal does not keep yet (a queued run's prompt and options, a person's answer; a
    fork's start is in the journal, so its job names the run and its owner only)."""

    run_id: str
    kind: JobKind
    user_id: str | None = None
    prompt: str = ""
    session_id: str | None = None
    # `module:QualName` of the output type, imported by the worker (a type is not data).
    output_schema: str | None = None
    output_retries: int | None = None
    # {"approve": ...} or {"value": ...}, as `agent.resume` takes them.
    answer: dict[str, Any] = field(default_factory=dict)
    # The name of the Agent that submitted it: only a worker of that name starts the run.
    agent: str = ""

    def encode(self) -> bytes:
        """The payload as JSON bytes."""
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def decode(cls, payload: bytes | None) -> RunJob:
        """A payload back. `JobUnusable` for one no version writes (not JSON, no run id or
        kind, a field of the wrong type); `JobFromNewerVersion` for one a newer version
        wrote (a field or a kind this version does not know).

        The rule that keeps versions apart: a newer version may add fields and kinds, and
        writes a new field only when a job uses it, but never changes what a field of an
        older version holds (its type and meaning) nor drops `run_id` or `kind`; a change
        that must do so adds a field instead, which older workers do not know."""
        try:
            data = json.loads((payload or b"").decode())
        except UnicodeDecodeError as err:
            raise JobUnusable(f"the job's payload is not UTF-8 text ({err})") from None
        except ValueError as err:
            raise JobUnusable(f"the job's payload is not JSON ({err})") from None
        if not isinstance(data, dict):
            raise JobUnusable(f"the job's payload is {_json_type(data)}, not an object")
        for name in ("run_id", "kind"):
            if name not in data:
                raise JobUnusable(f"the job's payload has no {name!r}")
        wrong = [
            f"{name} is {_json_type(data[name])}, not {_FIELD_TYPES[name][1]}"
            for name in _FIELD_TYPES
            if name in data and not _FIELD_TYPES[name][0](data[name])
        ]
        if wrong:
            raise JobUnusable(f"the job's payload is invalid: {'; '.join(wrong)}")
        unknown = sorted(set(data) - set(_FIELD_TYPES))
        if unknown:
            raise JobFromNewerVersion(
                f"the job has fields this loomgraph does not know ({', '.join(unknown)})"
            )
        if data["kind"] not in {kind.value for kind in JobKind}:
            raise JobFromNewerVersion(
                f"the job is of a kind this loomgraph does not know ({data['kind']!r})"
            )
        answer = sorted(set(data.get("answer", {})) - _ANSWERS)
        if answer:
            raise JobFromNewerVersion(
                f"the job's answer has keys this loomgraph does not know ({', '.join(answer)})"
            )
        return cls(**{**data, "kind": JobKind(data["kind"])})


def _json_type(value: Any) -> str:
    """What a JSON value is, as a message names it."""
    if value is None:
        return "null"
    if value == "":
        return "an empty string"
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string"}
    return names.get(type(value), "an array" if isinstance(value, list) else "an object")


def _optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: value is None or check(value)


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# What an answer in a job may hold: the resumer's keyword arguments. `value_key` (the request
# a value was checked against) is newer: a worker from before it puts such a job back.
_ANSWERS = frozenset({"approve", "value", "value_key"})

# Every field of a job payload: what its value must be, and how a message names that.
_FIELD_TYPES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "run_id": (lambda v: isinstance(v, str) and v != "", "a non-empty string"),
    "kind": (_is_str, "a string"),
    "user_id": (_optional(_is_str), "a string or null"),
    "prompt": (_is_str, "a string"),
    "session_id": (_optional(_is_str), "a string or null"),
    "output_schema": (_optional(_is_str), "a string or null"),
    "output_retries": (_optional(_is_int), "an integer or null"),
    "answer": (lambda v: isinstance(v, dict), "an object"),
    "agent": (_is_str, "a string"),
}
