"""A stopped run's transitions and effects, kept by `InMemoryRuntime` as one pickled blob.

A 50-turn run kept as objects is ~175 KB of small dicts, lists and records, every one of
them tracked by the garbage collector; as one blob it is ~21 KB that the collector never
walks. Pickle keeps every value's type (a tuple stays a tuple, a `bytearray` or an object of
the user's own class comes back as one); what it cannot take (a lock, a lambda) leaves the
run as it is. Each read decodes fresh copies. The blob never leaves the process.
"""

from __future__ import annotations

import pickle
from operator import attrgetter
from typing import Any

from loomgraph.protocols import EffectRecord, EffectStatus, Transition, Usage
from loomgraph.protocols.usage import USAGE_FIELDS


def freeze(transitions: list[Transition], effects: dict[str, EffectRecord]) -> bytes | None:
    """The run's journal as one blob, or None when it holds a value pickle cannot take (a
    lock or a lambda a custom state field holds): the run is then kept as it is."""
    records = effects.values()
    # attrgetter and map: the records are taken apart without a Python loop.
    parts = (
        tuple(map(_STEP, transitions)),
        tuple(map(_USAGE, map(_STEP_USAGE, transitions))),
        tuple(map(_EFFECT, records)),
        tuple(map(str, map(_EFFECT_STATUS, records))),  # str of a StrEnum: its plain value
    )
    try:
        return pickle.dumps(parts, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # pickle's refusals are of many types (PicklingError, TypeError, ...)
        return None


def thaw(run_id: str, blob: bytes) -> tuple[list[Transition], dict[str, EffectRecord]]:
    """Fresh records of a frozen run's transitions and effects (in their order)."""
    steps, usages, done, statuses = pickle.loads(blob)  # a blob `freeze` made, never input
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
