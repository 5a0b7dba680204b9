"""A stopped run's transitions and effects, kept by `InMemoryRuntime` as one `marshal` blob.

A 50-turn run kept as objects is ~175 KB of small dicts, lists and records, every one of
them tracked by the garbage collector; as one blob it is ~25 KB that the collector never
walks. The blob holds only plain values (marshal refuses anything else), so what a reader
gets back equals what was journaled; each read decodes fresh copies.
"""

from __future__ import annotations

import marshal
from operator import attrgetter
from typing import Any

from loomgraph.protocols import EffectRecord, EffectStatus, Transition, Usage
from loomgraph.protocols.usage import USAGE_FIELDS

# The default marshal format of this Python; the blob never leaves the process.
_VERSION = marshal.version


def freeze(transitions: list[Transition], effects: dict[str, EffectRecord]) -> bytes | None:
    """The run's journal as one blob, or None when it holds a value marshal cannot keep
    (an object a custom state field holds): the run is then kept as it is."""
    records = effects.values()
    # attrgetter and map: the records are taken apart without a Python loop.
    parts = (
        tuple(map(_STEP, transitions)),
        tuple(map(_USAGE, map(_STEP_USAGE, transitions))),
        tuple(map(_EFFECT, records)),
        tuple(map(str, map(_EFFECT_STATUS, records))),  # str of a StrEnum: its plain value
    )
    try:
        return marshal.dumps(parts, _VERSION)
    except ValueError:
        return None


def thaw(run_id: str, blob: bytes) -> tuple[list[Transition], dict[str, EffectRecord]]:
    """Fresh records of a frozen run's transitions and effects (in their order)."""
    steps, usages, done, statuses = marshal.loads(blob)
    transitions = [
        Transition(run_id, seq, node, visit, patch, next_node, _usage_of(usage), at, snapshot)
        for (seq, node, visit, patch, next_node, at, snapshot), usage in zip(
            steps, usages, strict=True
        )
    ]
    effects = {
        key: EffectRecord(
            run_id, key, kind, intent, outcome, EffectStatus(status), attempts, recovered
        )
        for (key, kind, intent, outcome, attempts, recovered), status in zip(
            done, statuses, strict=True
        )
    }
    return transitions, effects


_STEP = attrgetter("seq", "node", "visit", "patch", "next_node", "at", "snapshot")
_STEP_USAGE = attrgetter("usage")
_USAGE = attrgetter(*USAGE_FIELDS)
_EFFECT = attrgetter("key", "kind", "intent", "outcome", "attempts", "recovered")
_EFFECT_STATUS = attrgetter("status")


def _usage_of(fields: tuple[Any, ...]) -> Usage:
    return _NOTHING if not any(fields) else Usage(*fields)


_NOTHING = Usage()
