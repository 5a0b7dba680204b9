"""What the SQLite and Postgres journals share: versioned JSON encoding and rows (the SQL is
in `schema`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from loomgraph.protocols import (
    EffectRecord,
    EffectStatus,
    PinnedGraph,
    RunRecord,
    RunStart,
    RunStatus,
    Transition,
    Usage,
)
from loomgraph.protocols.runtime import Lease
from loomgraph.runtime.errors import (
    JournalEncodingError,
    JournalVersionError,
)
from loomgraph.runtime.schema import SCHEMA_VERSION
from loomgraph.runtime.text import (
    check_id,
    check_run_ids,
    check_transition_ids,
    storable_reason,
)

# --------------------------------------------------------------------------- JSON


# Made once: json.dumps with options builds a new encoder at every call.
_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def dumps(value: Any, what: str) -> str:
    """Compact JSON text of a journaled value, or JournalEncodingError naming `what`."""
    try:
        text = _COMPACT.encode(value)
    except (TypeError, ValueError) as err:
        raise JournalEncodingError(f"{what} is not plain JSON: {err}") from None
    if text.isascii():  # the common case: nothing to check
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate cannot be stored as UTF-8 text; \u escapes can.
        text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    return text


def loads(text: str | None) -> Any:
    """The value of a JSON column (None for SQL NULL)."""
    return None if text is None else json.loads(text)


def loads_object(text: str | None, where: str) -> dict[str, Any]:
    """The JSON object of a column that always holds one; ValueError naming `where` else."""
    value = None if text is None else json.loads(text)
    if type(value) is not dict:
        raise ValueError(f"{where} is not a JSON object")
    return value


def loads_optional(text: str | None, where: str) -> dict[str, Any] | None:
    """The JSON object of a column that holds one or NULL; ValueError naming `where` else."""
    return None if text is None else loads_object(text, where)


def check_version(v: int | None, where: str) -> None:
    """Refuse a row written by a newer schema than this code reads."""
    if v is not None and v != SCHEMA_VERSION:
        raise JournalVersionError(where, v, SCHEMA_VERSION)


# --------------------------------------------------------------------------- rows


def run_row(run: RunRecord, now: float) -> tuple[Any, ...]:
    """The runs row of a new run; created_at defaults to now, updated_at is now. Ids that
    cannot be stored are refused (`JournalIdError`); the reason is made storable."""
    check_run_ids(run)
    where = f"run {run.run_id!r}"
    return (
        run.run_id,
        run.graph_name,
        run.graph_hash,
        run.user_id,
        run.session_id,
        str(run.status),
        storable_reason(run.reason),
        run.parent_run_id,
        run.parent_seq,
        run.deadline,
        run.created_at or now,
        now,
        None if run.result is None else dumps(run.result, f"{where}: result"),
        None if run.initial is None else dumps(run.initial.to_dict(), f"{where}: initial"),
        SCHEMA_VERSION,
    )


def run_from_row(row: Sequence[Any]) -> RunRecord:
    """A RunRecord from a row selected with RUN_COLUMNS."""
    where = f"row of run {row[0]!r}"
    check_version(row[14], where)
    return RunRecord(
        run_id=row[0],
        graph_name=row[1],
        graph_hash=row[2],
        user_id=row[3],
        session_id=row[4],
        status=RunStatus(row[5]),
        reason=row[6],
        parent_run_id=row[7],
        parent_seq=row[8],
        deadline=row[9],
        created_at=row[10],
        updated_at=row[11],
        result=loads_optional(row[12], f"{where}: result"),
        initial=_run_start(loads_optional(row[13], f"{where}: initial"), where),
        recoveries=int(row[15]) if len(row) > 15 else 0,
    )


def transition_row(t: Transition) -> tuple[Any, ...]:
    """A transition as `schema.TRANSITION_WRITE`, its snapshot (or NULL) last, then its run id."""
    check_transition_ids(t)
    where = f"run {t.run_id!r} transition {t.seq}"
    return (
        t.seq,
        t.node,
        t.visit,
        dumps(t.patch, f"{where}: patch"),
        t.next_node,
        dumps(t.usage.to_dict(), f"{where}: usage"),
        t.at,
        SCHEMA_VERSION,
        None if t.snapshot is None else dumps(t.snapshot, f"{where}: snapshot"),
        t.run_id,
    )


def transition_from_row(row: Sequence[Any]) -> Transition:
    """A Transition from a row selected with `schema.TRANSITION_READ`."""
    where = f"transition {row[1]} of run {row[0]!r}"
    check_version(row[8], where)
    return Transition(
        run_id=row[0],
        seq=row[1],
        node=row[2],
        visit=row[3],
        patch=loads_object(row[4], f"{where}: patch"),
        next_node=row[5],
        usage=Usage.from_dict(loads_object(row[6], f"{where}: usage"), trusted=True),
        at=row[7],
        snapshot=loads_optional(row[9], f"{where}: snapshot"),
    )


def snapshot_from_row(run_id: str, row: Sequence[Any]) -> tuple[int, dict[str, Any]]:
    """A stored snapshot (seq, state, v) of `run_id` as (seq, state)."""
    where = f"snapshot {row[0]} of run {run_id!r}"
    check_version(row[2], where)
    return int(row[0]), loads_object(row[1], where)


def stored_key(run_id: str, key: str) -> str:
    """An effect key as its row keeps it: the run id is in the row already, so a key that
    starts with `run_id:` (every `EffectKey` does) is kept from its colon on; any other key
    is kept whole behind a `=`, so the two never read back as each other. A key that cannot
    be stored is refused (`JournalIdError`)."""
    check_id("effect key", key)
    if key.startswith(run_id) and key[len(run_id) : len(run_id) + 1] == ":":
        return key[len(run_id) :]
    return "=" + key


def key_from_row(run_id: str, stored: str) -> str:
    """The effect key `stored_key` kept."""
    if stored.startswith(":"):
        return run_id + stored
    if stored.startswith("="):
        return stored[1:]
    raise ValueError(f"effect key {stored!r} of run {run_id!r} is not a stored key")


def effect_row(e: EffectRecord) -> tuple[Any, ...]:
    """A newly begun effect as `schema.EFFECT_WRITE`, then its run id (its key is checked
    by `stored_key`)."""
    check_id("effect kind", e.kind)
    where = f"run {e.run_id!r} effect {e.key!r}"
    return (
        stored_key(e.run_id, e.key),
        e.kind,
        dumps(e.intent, f"{where}: intent"),
        None if e.outcome is None else dumps(e.outcome, f"{where}: outcome"),
        str(e.status),
        e.attempts,
        SCHEMA_VERSION,
        e.run_id,
    )


def graph_from_row(row: Sequence[Any]) -> PinnedGraph:
    """A PinnedGraph from a graphs row (hash, name, spec, v)."""
    check_version(row[3], f"graph {row[0]!r}")
    spec = loads(row[2])
    if not isinstance(spec, dict):
        raise ValueError(f"graph {row[0]!r}: the spec is not a mapping")
    return PinnedGraph(row[0], row[1], spec)


def effect_from_row(row: Sequence[Any]) -> EffectRecord:
    """An EffectRecord from a row selected with `schema.EFFECT_READ`."""
    where = f"row of effect {row[1]!r} of run {row[0]!r}"
    check_version(row[7], where)
    return EffectRecord(
        run_id=row[0],
        key=key_from_row(row[0], row[1]),
        kind=row[2],
        intent=loads_object(row[3], f"{where}: intent"),
        outcome=loads_optional(row[4], f"{where}: outcome"),
        status=EffectStatus(row[5]),
        attempts=row[6],
        recovered=bool(row[8]),
    )


__all__ = ["Lease"]  # re-exported: it lives in the protocols, where the agent sees it

# --------------------------------------------------------------------------- the journal


def _run_start(data: dict[str, Any] | None, where: str) -> RunStart | None:
    if data is None:
        return None
    if not isinstance(data.get("state", {}), dict):
        raise ValueError(f"{where}: initial state is not a JSON object")
    return RunStart.from_dict(data)
