"""Findings of an outside probe of audit, telemetry and budget settings: a setting of the wrong
type is a typed error naming it, when the object is made; none becomes something else (an
int key 123 zero bytes anybody could guess, the text "false" a switch that is on, a user id
1 that no run's user_id matches). And a log rewritten up to a recorded head counts no entry
as verified."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

from loomgraph.governance.budget import StandardBudget
from loomgraph.governance.caps import BudgetConfig, BudgetConfigError, Caps
from loomgraph.observability import FileAuditLog, OTelTelemetry, PostgresAuditLog
from loomgraph.observability.audit_chain import EMPTY_HEAD
from loomgraph.observability.audit_key import AuditConfigError

KEY = b"k" * 32


@pytest.mark.parametrize("key", [123, True, ["k"], 1.5])
def test_an_audit_key_of_no_key_type_is_refused(tmp_path: Path, key: Any) -> None:
    with pytest.raises(
        AuditConfigError, match=f"key= must be bytes or text, not {type(key).__name__}"
    ):
        FileAuditLog(tmp_path / "audit.jsonl", key=key)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("flag", ["false", "true", 0, 1, None])
def test_capture_content_is_true_or_false_and_nothing_else(tmp_path: Path, flag: Any) -> None:
    refused = f"capture_content must be True or False, not {type(flag).__name__}"
    with pytest.raises(TypeError, match=refused):
        OTelTelemetry(TracerProvider(), capture_content=flag)
    with pytest.raises(TypeError, match=refused):
        FileAuditLog(tmp_path / "audit.jsonl", key=KEY, capture_content=flag)
    with pytest.raises(TypeError, match=refused):
        PostgresAuditLog("postgresql://127.0.0.1/test", key=KEY, capture_content=flag)


def test_an_audit_path_no_run_could_write_is_refused_when_the_log_is_made(
    tmp_path: Path,
) -> None:
    with pytest.raises(AuditConfigError, match="path is empty"):
        FileAuditLog("", key=KEY)
    with pytest.raises(AuditConfigError, match="is a folder"):
        FileAuditLog(tmp_path, key=KEY)
    with pytest.raises(AuditConfigError, match=r"folder .*nosuch' does not exist"):
        FileAuditLog(tmp_path / "nosuch" / "audit.jsonl", key=KEY)


@pytest.mark.parametrize(
    ("settings", "field", "says"),
    [
        ({"users": {1: Caps(model_calls=0)}}, "users", "which are text: 1 (int)"),
        ({"users": [("a", Caps())]}, "users", "users maps user ids to Caps"),
        ({"users": {"a": {"tool_calls": 1}}}, "users", "must be Caps, not dict"),
        ({"per_user": {"tool_calls": 1}}, "per_user", "must be Caps, not dict"),
        ({"model_calls": 2.5}, "model_calls", "non-negative whole number"),
        ({"total_tokens": 1e3}, "total_tokens", "non-negative whole number"),
    ],
)
def test_a_budget_setting_of_the_wrong_type_names_its_field(
    settings: dict[str, Any], field: str, says: str
) -> None:
    with pytest.raises(BudgetConfigError, match=re.escape(says)) as err:
        BudgetConfig(**settings)
    assert err.value.field == field


def test_amounts_may_be_fractions() -> None:
    caps = BudgetConfig(cost_usd=0.5, wall_clock_s=1.5, model_calls=3)
    assert (caps.cost_usd, caps.wall_clock_s, caps.model_calls) == (0.5, 1.5, 3)


def test_a_budget_on_no_ledger_is_refused_when_it_is_made() -> None:
    with pytest.raises(BudgetConfigError, match="ledger is a Ledger, not str") as err:
        StandardBudget(BudgetConfig(), "notaledger")  # type: ignore[arg-type]
    assert err.value.field == "ledger"
    with pytest.raises(BudgetConfigError, match="config is a BudgetConfig, not dict"):
        StandardBudget({"model_calls": 1})  # type: ignore[arg-type]


def _append(log: FileAuditLog, n: int) -> None:
    for _ in range(n):
        log.append("t", run_id="r", user_id=None, actor="a", payload={})


def test_a_log_rewritten_below_a_recorded_head_counts_no_entry_as_verified(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.jsonl"
    log = FileAuditLog(path, key=KEY)
    _append(log, 10)
    head = log.head()
    assert head.seq == 10
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:7]))  # cut back to 7, then written on by the key's holder
    _append(FileAuditLog(path, key=KEY), 10)
    result = FileAuditLog(path, key=KEY).verify((head.seq, head.hash))
    assert not result.ok and result.first_bad_seq == 10
    assert "rewritten at or before seq 10" in result.problem
    assert (result.entries, result.head) == (0, EMPTY_HEAD)
