"""Payloads and lines the audit chain once choked on: every one is now either stored (keys
made strings, lone surrogates escaped) or refused with a typed `AuditLogError`, and a line
nested past the parser's stack is a malformed entry, not a crash."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from loomgraph.observability import AuditLogError, FileAuditLog
from loomgraph.observability.audit_chain import dumps, entry_hash, normalize_payload

KEY = b"k" * 32


def _log(tmp_path: Path) -> FileAuditLog:
    return FileAuditLog(tmp_path / "audit.jsonl", key=KEY)


def _append(log: FileAuditLog, payload: Any, action: str = "t", **fields: Any) -> Any:
    args: dict[str, Any] = {"run_id": "r", "user_id": None, "actor": "a", **fields}
    return log.append(action, payload=payload, **args)


# ------------------------------------------------------------------------- payload keys


def test_mixed_key_types_become_strings(tmp_path: Path) -> None:
    log = _log(tmp_path)
    entry = _append(log, {1: "a", "b": 2, None: 3, 2.5: 5, "f": {False: 6}})
    assert entry["payload"] == {"1": "a", "b": 2, "null": 3, "2.5": 5, "f": {"false": 6}}
    assert log.verify().ok


def test_nested_mixed_keys_become_strings(tmp_path: Path) -> None:
    log = _log(tmp_path)
    entry = _append(log, {"outer": [{2: "x", "y": 1}], "t": ({3: 4},)})
    assert entry["payload"] == {"outer": [{"2": "x", "y": 1}], "t": [{"3": 4}]}
    assert log.verify().ok


def test_keys_json_cannot_hold_become_their_str(tmp_path: Path) -> None:
    log = _log(tmp_path)
    entry = _append(log, {(1, 2): "pair"})
    assert entry["payload"] == {"(1, 2)": "pair"}
    assert log.verify().ok


def test_keys_that_collide_once_made_strings_are_refused(tmp_path: Path) -> None:
    log = _log(tmp_path)
    with pytest.raises(AuditLogError, match="'1'"):
        _append(log, {1: "a", "1": "b"})
    assert log.verify().entries == 0  # nothing was written


# ------------------------------------------------------------------------- surrogates


def test_a_lone_surrogate_in_the_payload_is_stored_escaped(tmp_path: Path) -> None:
    log = _log(tmp_path)
    entry = _append(log, {"x": "a\ud800b", "\udc80": 1})
    assert entry["payload"] == {"x": "a\\ud800b", "\\udc80": 1}
    assert log.verify().ok
    assert [e["payload"] for e in log.entries()] == [entry["payload"]]


@pytest.mark.parametrize("field", ["run_id", "user_id", "actor", "action"])
def test_a_lone_surrogate_in_a_field_is_stored_escaped(tmp_path: Path, field: str) -> None:
    log = _log(tmp_path)
    entry = _append(log, {}, **{field: "x\udc80"})
    assert entry[field] == "x\\udc80"
    assert log.verify().ok


def test_a_valid_surrogate_pair_is_kept(tmp_path: Path) -> None:
    log = _log(tmp_path)
    entry = _append(log, {"emoji": "\U0001f600"})
    assert entry["payload"] == {"emoji": "\U0001f600"}


def test_verify_reports_a_line_with_an_escaped_lone_surrogate(tmp_path: Path) -> None:
    # A line written by someone else may carry a `\ud800` escape: a mismatch, not a crash.
    log = _log(tmp_path)
    _append(log, {"x": "ok"})
    path = tmp_path / "audit.jsonl"
    path.write_text(path.read_text().replace('"ok"', '"\\ud800"'))
    result = log.verify()
    assert (result.ok, result.first_bad_seq) == (False, 1)
    assert "hash mismatch" in result.problem


def test_entry_hash_of_a_lone_surrogate_does_not_raise() -> None:
    assert len(entry_hash({"payload": {"x": "\ud800"}}, KEY)) == 64


# ------------------------------------------------------------------------- cycles, depth


def test_a_self_referencing_payload_is_refused(tmp_path: Path) -> None:
    log = _log(tmp_path)
    loop: dict[str, Any] = {}
    loop["self"] = loop
    with pytest.raises(AuditLogError, match="refers to itself"):
        _append(log, loop)
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    with pytest.raises(AuditLogError, match="refers to itself"):
        _append(log, {"items": cyclic})
    assert log.verify().entries == 0


def test_a_shared_but_acyclic_value_is_fine(tmp_path: Path) -> None:
    log = _log(tmp_path)
    shared = {"k": 1}
    entry = _append(log, {"a": shared, "b": [shared, shared]})
    assert entry["payload"] == {"a": {"k": 1}, "b": [{"k": 1}, {"k": 1}]}


def test_a_payload_nested_too_deeply_is_refused(tmp_path: Path) -> None:
    log = _log(tmp_path)
    deep: Any = "x"
    for _ in range(sys.getrecursionlimit() * 2):
        deep = [deep]
    with pytest.raises(AuditLogError, match="nested too deeply"):
        _append(log, {"deep": deep})


def test_normalize_payload_matches_json_for_plain_values() -> None:
    payload = {"b": (1, 2.5, None, True), "a": {"z": "é", "y": [{}]}, "c": object}
    assert normalize_payload(payload) == json.loads(json.dumps(payload, default=str))


# ------------------------------------------------------------------------- deep lines


def _deep_line() -> str:
    depth = 100_000
    return '{"payload":' + "[" * depth + "]" * depth + "}"


def test_verify_reports_a_deeply_nested_line_as_malformed(tmp_path: Path) -> None:
    log = _log(tmp_path)
    for i in range(3):
        _append(log, {"i": i})
    path = tmp_path / "audit.jsonl"
    with path.open("a") as f:
        f.write(_deep_line() + "\n")
    result = log.verify()
    assert (result.ok, result.entries, result.first_bad_seq) == (False, 3, 4)
    assert "malformed entry" in result.problem
    assert "nested too deeply" in result.problem


def test_head_and_entries_refuse_a_deeply_nested_last_line(tmp_path: Path) -> None:
    log = _log(tmp_path)
    _append(log, {})
    path = tmp_path / "audit.jsonl"
    with path.open("a") as f:
        f.write(_deep_line() + "\n")
    with pytest.raises(AuditLogError, match="malformed"):
        log.head()
    with pytest.raises(AuditLogError, match="malformed"):
        list(log.entries())
    with pytest.raises(AuditLogError, match="malformed"):
        _append(log, {})  # never chained onto a line nobody can read


def test_the_testers_deep_file_fails_verification_at_its_seq(tmp_path: Path) -> None:
    # The tester's file: valid entries, then one line nested past the stack.
    source = Path("/tmp/probe_auth/j/aud_deep_json.jsonl")
    if not source.exists():
        pytest.skip("the tester's file is not on this machine")
    lines = source.read_bytes().splitlines(keepends=True)
    target = tmp_path / "deep.jsonl"
    target.write_bytes(b"".join(lines))
    log = FileAuditLog(target, key=b"0123456789abcdef0123456789abcdef", heal=False)
    result = log.verify()
    assert not result.ok
    assert result.first_bad_seq == result.entries + 1
    assert "malformed entry" in result.problem


def test_canonical_dumps_unchanged() -> None:
    assert dumps({"b": 1, "a": "é"}) == '{"a":"é","b":1}'
