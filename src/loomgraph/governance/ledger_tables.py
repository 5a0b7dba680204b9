"""The SQL ledgers' tables (SQLite and PostgreSQL alike): their DDL, the columns added since
they were first made, and how a hold's or a charge's row is read and written."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from loomgraph.governance.ledger import Charge, Hold
from loomgraph.protocols.governance import EffectRef

__all__ = [
    "ADDED_COLUMNS",
    "CHARGE_COLUMNS",
    "HOLD_COLUMNS",
    "charge_of",
    "ddl",
    "dump_amounts",
    "effect_columns",
    "effect_of",
    "hold_of",
    "load_amounts",
]


def ddl(prefix: str, real: str) -> list[str]:
    return [
        f"CREATE TABLE IF NOT EXISTS {prefix}loom_budget_scopes (scope TEXT PRIMARY KEY, "
        "spent TEXT NOT NULL, reserved TEXT NOT NULL)",
        f"CREATE TABLE IF NOT EXISTS {prefix}loom_budget_holds (id TEXT PRIMARY KEY, "
        f"run_id TEXT NOT NULL, scopes TEXT NOT NULL, amounts TEXT NOT NULL, "
        f"created_at {real} NOT NULL, effect TEXT, execution INTEGER)",
        f"CREATE INDEX IF NOT EXISTS loom_budget_holds_run ON {prefix}loom_budget_holds (run_id)",
        f"CREATE TABLE IF NOT EXISTS {prefix}loom_budget_charges (id TEXT PRIMARY KEY, "
        f"run_id TEXT NOT NULL, amounts TEXT NOT NULL, created_at {real} NOT NULL, "
        "effect TEXT, execution INTEGER)",
        f"CREATE INDEX IF NOT EXISTS loom_budget_charges_run ON {prefix}loom_budget_charges "
        "(run_id)",
        f"CREATE TABLE IF NOT EXISTS {prefix}loom_budget_runs (run_id TEXT PRIMARY KEY, "
        f"started_at {real} NOT NULL, deadline {real})",
    ]


# The columns added since the tables were first made (NULL in older rows: no effect named),
# as (table, column, type): a ledger made before gets them when it is opened.
ADDED_COLUMNS = (
    ("loom_budget_holds", "effect", "TEXT"),
    ("loom_budget_holds", "execution", "INTEGER"),
    ("loom_budget_charges", "effect", "TEXT"),
    ("loom_budget_charges", "execution", "INTEGER"),
)
# What `ddl` makes and `ADDED_COLUMNS` adds: a schema that has them all is not altered.
TABLES = ("loom_budget_scopes", "loom_budget_holds", "loom_budget_charges", "loom_budget_runs")
INDEXES = ("loom_budget_holds_run", "loom_budget_charges_run")
HOLD_COLUMNS = "id, run_id, scopes, amounts, created_at, effect, execution"
CHARGE_COLUMNS = "id, run_id, amounts, created_at, effect, execution"


def dump_amounts(amounts: Mapping[str, int]) -> str:
    """Amounts as the tables keep them: JSON, sorted, zeros left out."""
    return json.dumps({k: v for k, v in sorted(amounts.items()) if v}, separators=(",", ":"))


def load_amounts(text: str) -> dict[str, int]:
    """Amounts as `dump_amounts` wrote them."""
    return {str(k): int(v) for k, v in json.loads(text).items()}


def effect_of(key: Any, execution: Any) -> EffectRef | None:
    """The effect a hold or charge row names (NULL in rows written before it was kept)."""
    return None if key is None else EffectRef(str(key), int(execution or 1))


def effect_columns(effect: EffectRef | None) -> list[Any]:
    """An effect as the row's two columns."""
    return [None, None] if effect is None else [effect.key, effect.execution]


def hold_of(row: Sequence[Any]) -> Hold:
    """A hold from its row (`HOLD_COLUMNS`)."""
    scopes, effect = tuple(json.loads(row[2])), effect_of(row[5], row[6])
    return Hold(str(row[0]), str(row[1]), scopes, load_amounts(row[3]), float(row[4]), effect)


def charge_of(row: Sequence[Any]) -> Charge:
    """A charge from its row (`CHARGE_COLUMNS`)."""
    effect = effect_of(row[4], row[5])
    return Charge(str(row[0]), str(row[1]), load_amounts(row[2]), float(row[3]), effect)
