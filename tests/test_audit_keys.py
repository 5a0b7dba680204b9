"""The audit log's key: where it comes from, no key refused, unsigned logs marked, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import pg
from loomgraph.cli.main import main
from loomgraph.observability import (
    DEFAULT_KEY_ENV,
    AuditConfigError,
    AuditHead,
    AuditKeyMissing,
    AuditLogError,
    FileAuditLog,
    PostgresAuditLog,
)
from loomgraph.observability.audit_chain import GENESIS_HASH, dumps, entry_hash

pg_schema = pg.pg_schema

KEY = b"audit-secret"


def _fill(log: FileAuditLog, n: int = 5) -> None:
    for i in range(n):
        log.append("tool_request", run_id="r", user_id=None, actor="model", payload={"i": i})


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines(keepends=True)


# --------------------------------------------------------------------------- key sources


def test_no_key_is_a_configuration_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DEFAULT_KEY_ENV, raising=False)
    with pytest.raises(AuditKeyMissing, match="unsigned=True"):
        FileAuditLog(tmp_path / "a.jsonl")
    with pytest.raises(AuditKeyMissing, match="MY_KEY"):
        FileAuditLog(tmp_path / "a.jsonl", key_env="MY_KEY")
    with pytest.raises(AuditKeyMissing):
        PostgresAuditLog("postgresql://unused")
    assert not (tmp_path / "a.jsonl").exists()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"key": KEY, "key_env": "X"},
        {"key": KEY, "unsigned": True},
        {"key_file": "f", "key_env": "X"},
        {"key": b""},
    ],
)
def test_contradictory_or_empty_keys_are_refused(tmp_path: Path, kwargs: dict[str, object]) -> None:
    with pytest.raises(AuditConfigError):
        FileAuditLog(tmp_path / "a.jsonl", **kwargs)  # type: ignore[arg-type]


def test_key_from_file_env_and_default_env_are_the_same_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "a.jsonl"
    key_file = tmp_path / "audit.key"
    key_file.write_bytes(KEY + b"\n")  # the trailing newline an editor adds is not key
    monkeypatch.setenv("MY_AUDIT_KEY", KEY.decode())
    monkeypatch.setenv(DEFAULT_KEY_ENV, KEY.decode())
    _fill(FileAuditLog(path, key_file=key_file), 2)
    _fill(FileAuditLog(path, key_env="MY_AUDIT_KEY"), 2)
    _fill(FileAuditLog(path), 2)  # $LOOMGRAPH_AUDIT_KEY
    result = FileAuditLog(path, key=KEY).verify()
    assert (result.ok, result.entries) == (True, 6), result.problem
    with pytest.raises(AuditConfigError, match="cannot read"):
        FileAuditLog(path, key_file=tmp_path / "missing.key")
    (tmp_path / "empty.key").write_bytes(b"\n")
    with pytest.raises(AuditConfigError, match="empty"):
        FileAuditLog(path, key_file=tmp_path / "empty.key")


# --------------------------------------------------------------------------- unsigned logs


def test_unsigned_entries_say_so_and_a_keyed_verifier_refuses_them(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    _fill(FileAuditLog(path, unsigned=True), 3)
    entries = [json.loads(line) for line in _lines(path)]
    assert all(e["unsigned"] is True for e in entries)
    assert entries[0]["hash"] == entry_hash(entries[0], None)
    assert FileAuditLog(path, unsigned=True).verify().ok
    result = FileAuditLog(path, key=KEY).verify()
    assert (result.ok, result.first_bad_seq) == (False, 1)
    assert "unsigned in a keyed log" in result.problem


def test_recomputing_the_chain_without_the_key_is_detected(tmp_path: Path) -> None:
    """An attacker rewrites an entry and recomputes every hash as plain SHA-256."""
    path = tmp_path / "a.jsonl"
    log = FileAuditLog(path, key=KEY)
    _fill(log, 6)
    for mark_unsigned in (False, True):
        lines = _lines(path)
        prev = json.loads(lines[1])["hash"]
        for index in range(2, len(lines)):
            entry = json.loads(lines[index])
            entry.pop("unsigned", None)
            if index == 2:
                entry["payload"] = {"i": 2, "tool": "harmless"}
            if mark_unsigned:  # pretend the log was always unsigned
                entry["unsigned"] = True
            entry["prev_hash"] = prev
            entry["hash"] = entry_hash(entry, None)
            prev = entry["hash"]
            lines[index] = dumps(entry) + "\n"
        forged = tmp_path / f"forged-{mark_unsigned}.jsonl"
        forged.write_text("".join(lines), encoding="utf-8")
        result = FileAuditLog(forged, key=KEY).verify()
        assert (result.ok, result.first_bad_seq, result.entries) == (False, 3, 2)


def test_head_has_the_mac_and_round_trips_as_text(tmp_path: Path) -> None:
    log = FileAuditLog(tmp_path / "a.jsonl", key=KEY)
    assert log.head() == AuditHead(0, GENESIS_HASH)
    _fill(log, 3)
    head = log.head()
    assert head.mac == head.hash == json.loads(_lines(tmp_path / "a.jsonl")[-1])["hash"]
    assert AuditHead.parse(str(head)) == head
    for bad in ("3", "x:" + head.mac, "3:abc", "3:" + "z" * 64):
        with pytest.raises(ValueError):
            AuditHead.parse(bad)


# --------------------------------------------------------------------------- postgres


async def test_postgres_key_sources_unsigned_and_wrong_key_appends(
    pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = f"{pg_schema}.audit"
    monkeypatch.setenv("PG_AUDIT_KEY", KEY.decode())
    async with PostgresAuditLog(pg.postgres_dsn(), table=table, key_env="PG_AUDIT_KEY") as log:
        for i in range(3):
            await log.record("model_call", run_id="r", user_id=None, actor="m", payload={"i": i})
        assert (await log.verify()).ok
    async with PostgresAuditLog(pg.postgres_dsn(), table=table, unsigned=True) as plain:
        result = await plain.verify()
        assert (result.ok, result.first_bad_seq) == (False, 1)
        with pytest.raises(AuditLogError, match="does not verify"):
            await plain.record("x", run_id="r", user_id=None, actor="m", payload={})
    async with PostgresAuditLog(pg.postgres_dsn(), table=table, key=b"wrong") as other:
        with pytest.raises(AuditLogError, match="does not verify"):
            await other.record("x", run_id="r", user_id=None, actor="m", payload={})
    table2 = f"{pg_schema}.plain"
    async with PostgresAuditLog(pg.postgres_dsn(), table=table2, unsigned=True) as plain:
        entry = await plain.append("x", run_id="r", user_id=None, actor="m", payload={})
        assert entry.get("unsigned") is True
        assert (await plain.verify()).ok


# --------------------------------------------------------------------------- CLI


def test_cli_audit_verify_and_head(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "a.jsonl"
    monkeypatch.setenv("CLI_AUDIT_KEY", KEY.decode())
    _fill(FileAuditLog(path, key=KEY), 6)
    assert main(["audit", "head", str(path), "--key-env", "CLI_AUDIT_KEY"]) == 0
    head = capsys.readouterr().out.strip()
    assert head.startswith("6:")
    assert main(["audit", "verify", str(path), "--key-env", "CLI_AUDIT_KEY", "--head", head]) == 0
    assert "ok: 6 entries" in capsys.readouterr().out
    # Truncate the tail: the chain alone still verifies, the exported head does not.
    path.write_text("".join(_lines(path)[:4]), encoding="utf-8")
    assert main(["audit", "verify", str(path), "--key-env", "CLI_AUDIT_KEY"]) == 0
    capsys.readouterr()
    assert main(["audit", "verify", str(path), "--key-env", "CLI_AUDIT_KEY", "--head", head]) == 1
    assert "FAILED at seq 5: truncated" in capsys.readouterr().out
    # A wrong key, a bad head, no key at all.
    monkeypatch.setenv("CLI_AUDIT_KEY", "wrong")
    assert main(["audit", "verify", str(path), "--key-env", "CLI_AUDIT_KEY"]) == 1
    assert "FAILED at seq 1" in capsys.readouterr().out
    assert main(["audit", "verify", str(path), "--unsigned", "--head", "nonsense"]) == 2
    monkeypatch.delenv(DEFAULT_KEY_ENV, raising=False)
    assert main(["audit", "verify", str(path)]) == 2
    assert "no key" in capsys.readouterr().err
    # A path with no log is a mistake, not an empty log that verifies.
    missing = tmp_path / "missing.jsonl"
    assert main(["audit", "verify", str(missing), "--unsigned"]) == 2
    assert f"no audit log at {missing}" in capsys.readouterr().err
    assert not missing.exists()


def test_cli_verify_reports_a_torn_tail_without_moving_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "a.jsonl"
    monkeypatch.setenv(DEFAULT_KEY_ENV, KEY.decode())
    _fill(FileAuditLog(path), 2)
    with path.open("a", encoding="utf-8") as f:
        f.write('{"seq":3,"act')
    assert main(["audit", "verify", str(path)]) == 1
    assert "torn" in capsys.readouterr().out
    assert path.read_text(encoding="utf-8").endswith('{"seq":3,"act')
    assert not list(tmp_path.glob("*.quarantine-*"))


def test_cli_head_of_a_log_with_a_torn_tail_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`audit head` printed the last complete entry's head and said nothing of the torn
    entry after it: an operator storing that head never learnt the log needs `verify`."""
    path = tmp_path / "a.jsonl"
    monkeypatch.setenv(DEFAULT_KEY_ENV, KEY.decode())
    _fill(FileAuditLog(path), 2)
    with path.open("a", encoding="utf-8") as f:
        f.write('{"seq":3,"act')
    assert main(["audit", "head", str(path)]) == 0
    out = capsys.readouterr()
    assert out.out.strip().startswith("2:")  # the head is still the last complete entry
    assert "torn" in out.err and "13 bytes" in out.err and "audit verify" in out.err
    assert path.read_text(encoding="utf-8").endswith('{"seq":3,"act')  # left as it is


def test_a_read_only_log_opens_and_verifies(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    _fill(FileAuditLog(path, key=KEY), 3)
    path.chmod(0o444)
    try:
        assert FileAuditLog(path, key=KEY).verify().ok  # opening does not need write access
    finally:
        path.chmod(0o644)
