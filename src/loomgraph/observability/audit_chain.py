"""The audit entry format and its hash chain, shared by every audit log backend.

An entry is one JSON object with the fields `seq, prev_hash, hash, time, run_id, user_id,
actor, action, payload`, serialised canonically (sorted keys, no spaces, UTF-8). `hash` is
the entry's MAC: HMAC-SHA256 with the log's key over the canonical entry without `hash`;
since that includes `prev_hash` (the previous MAC), each entry commits to everything before
it, and nobody without the key can recompute the chain. An explicitly unsigned log (tests)
uses plain SHA-256 and marks every entry `"unsigned": true`, so a verifier with a key
refuses it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, TypedDict

from loomgraph.errors import LoomgraphError, ServiceUnavailable
from loomgraph.protocols.observability import AuditAction

__all__ = [
    "ENTRY_FIELDS",
    "GENESIS_HASH",
    "UNSIGNED_FIELD",
    "AuditAction",
    "AuditEntry",
    "AuditHead",
    "AuditLogError",
    "AuditLogUnavailable",
    "VerifyResult",
    "chain_entries",
    "dumps",
    "entry_hash",
    "make_entry",
    "normalize_payload",
    "parse_entry",
    "safe_text",
]

GENESIS_HASH = "0" * 64
"""The `prev_hash` of the first entry."""

ENTRY_FIELDS = frozenset(
    {"seq", "prev_hash", "hash", "time", "run_id", "user_id", "actor", "action", "payload"}
)
UNSIGNED_FIELD = "unsigned"
"""Present (always `true`) in every entry of a log written without a key."""
_HEAD = re.compile(r"(?P<seq>[0-9]+):(?P<mac>[0-9a-fA-F]{64})")


class AuditEntry(TypedDict):
    """One audit log entry, as stored (plus `"unsigned": true` in an unsigned log)."""

    seq: int
    prev_hash: str
    hash: str
    time: float
    run_id: str
    user_id: str | None
    actor: str
    action: str
    payload: dict[str, Any]


class AuditHead(NamedTuple):
    """The seq and MAC (`hash`) of the last entry; `(0, GENESIS_HASH)` for an empty log."""

    seq: int
    hash: str

    @property
    def mac(self) -> str:
        """The last entry's MAC (the same as `hash`)."""
        return self.hash

    def __str__(self) -> str:
        """`SEQ:MAC`, the form `loomgraph audit verify --head` takes."""
        return f"{self.seq}:{self.hash}"

    @classmethod
    def parse(cls, text: str) -> AuditHead:
        """Read `SEQ:MAC` back (surrounding whitespace ignored); ValueError naming the form
        when it is not ASCII digits, a colon and exactly 64 hex digits."""
        # A pattern, not int(): int() also takes `0x`, `_`, signs and non-ASCII digits, so a
        # mistyped head would verify as a rewritten log instead of being refused.
        match = _HEAD.fullmatch(text.strip())
        if match is None:
            raise ValueError(
                f"not a head of the form SEQ:HEX64 (the seq in ASCII digits, a colon, the MAC "
                f"in 64 hex digits): {text!r}"
            )
        return cls(int(match["seq"]), match["mac"].lower())


EMPTY_HEAD = AuditHead(0, GENESIS_HASH)


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """The outcome of checking a whole chain.

    `entries` counts the entries that verified before the first problem; `head` is the
    last of them. `first_bad_seq` is the seq at which the chain breaks (for a missing
    entry, the seq that is missing). A log that differs from a recorded head was rewritten
    at or before the head's seq, which is `first_bad_seq`; no entry can then be told
    intact: `entries` is 0 and `head` is `EMPTY_HEAD`.
    """

    ok: bool
    entries: int
    first_bad_seq: int | None = None
    problem: str = ""
    head: AuditHead = EMPTY_HEAD


class AuditLogError(LoomgraphError):
    """The audit log cannot be appended to safely (torn tail, broken last entry, wrong key),
    or refused an entry it cannot store."""


class AuditLogUnavailable(AuditLogError, ServiceUnavailable):
    """The audit log's server cannot be reached: it refuses, drops the connection or does not
    answer in time. Not the run's failure: the engine lets it through, the run stays
    `running` in its journal and is resumed as after a crash. `where` names the server
    (never its password) and table; `detail` is the cause."""

    def __init__(self, where: str, detail: str) -> None:
        super().__init__(f"audit log {where} is unavailable: {detail}")
        self.where = where
        self.detail = detail


def dumps(value: Any) -> str:
    """The canonical JSON text of a value: sorted keys, no spaces, non-ASCII kept."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def normalize_payload(payload: Mapping[str, Any]) -> dict[str, Any]:
    """The payload as it reads back from JSON; values JSON cannot hold become their str().

    Round-tripping before hashing makes the hashed value exactly what a verifier parses
    (tuples become lists, non-string keys become strings as JSON writes them), so
    verification never fails on a conversion the writer made silently. A lone surrogate
    (which UTF-8 cannot encode) is stored as its escape, `\\ud800`; a payload that refers
    to itself, nests past the stack or has two keys that become the same string raises
    AuditLogError.
    """
    try:
        plain = _plain(dict(payload), set())
        text = json.dumps(plain, sort_keys=True, default=_str, ensure_ascii=False)
        result: dict[str, Any] = json.loads(text)
    except RecursionError:
        raise AuditLogError("the payload is nested too deeply to record") from None
    except (TypeError, ValueError) as exc:  # not a mapping, or a __str__ that raised
        raise AuditLogError(f"the payload cannot be recorded: {exc}") from None
    return result


def safe_text(text: str) -> str:
    """`text` with every lone surrogate (which UTF-8 cannot encode) as its escape."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _str(value: object) -> str:
    """What JSON stores for a value it cannot hold: its str(), UTF-8 safe."""
    return safe_text(str(value))


def _key(key: object) -> str:
    """A payload key as JSON writes it (`1`, `true`, `null`, `2.5`), else its str()."""
    if isinstance(key, str):
        return safe_text(key)
    if key is True or key is False or key is None:
        return json.dumps(key)
    if isinstance(key, int | float):
        return json.dumps(key)  # int and float subclasses as the plain number
    return _str(key)


def _plain(value: Any, active: set[int]) -> Any:
    """`value` with string keys and UTF-8-safe strings; AuditLogError on a cycle."""
    if isinstance(value, str):
        return safe_text(value)
    if not isinstance(value, dict | list | tuple):
        return value  # numbers, None, and what `_str` turns into text
    if id(value) in active:
        raise AuditLogError("the payload refers to itself (a reference cycle): not recorded")
    active.add(id(value))
    try:
        if not isinstance(value, dict):
            return [_plain(item, active) for item in value]
        out: dict[str, Any] = {}
        for key, item in value.items():
            name = _key(key)
            if name in out:
                raise AuditLogError(f"two payload keys both become {name!r} as JSON: not recorded")
            out[name] = _plain(item, active)
        return out
    finally:
        active.discard(id(value))


def entry_hash(entry: Mapping[str, Any], key: bytes | None) -> str:
    """The MAC of an entry over its canonical form without `hash` (SHA-256 without a key)."""
    body = {k: v for k, v in entry.items() if k != "hash"}
    # surrogatepass: a line read back may carry an escaped lone surrogate; it then fails to
    # verify rather than raise (appends never write one: see `safe_text`).
    data = dumps(body).encode("utf-8", "surrogatepass")
    if key is None:
        return hashlib.sha256(data).hexdigest()
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def make_entry(
    *,
    seq: int,
    prev_hash: str,
    at: float,
    action: str,
    run_id: str,
    user_id: str | None,
    actor: str,
    payload: dict[str, Any],
    key: bytes | None,
) -> AuditEntry:
    """A new entry chained onto `prev_hash`, hash filled in; `payload` already normalised."""
    entry: AuditEntry = {
        "seq": seq,
        "prev_hash": prev_hash,
        "hash": "",
        "time": at,
        "run_id": safe_text(str(run_id)),
        "user_id": None if user_id is None else safe_text(str(user_id)),
        "actor": safe_text(str(actor)),
        "action": safe_text(str(action)),
        "payload": payload,
    }
    if key is None:
        entry[UNSIGNED_FIELD] = True  # type: ignore[literal-required]  # optional marker
    entry["hash"] = entry_hash(entry, key)
    return entry


def chain_entries(
    head: AuditHead,
    bodies: Sequence[tuple[str, str, dict[str, Any]]],
    *,
    run_id: str,
    user_id: str | None,
    key: bytes | None,
) -> list[AuditEntry]:
    """New entries of one run, (action, actor, normalised payload) each, chained in order
    onto `head`."""
    seq, previous = head.seq, head.hash
    made: list[AuditEntry] = []
    for action, actor, body in bodies:
        seq += 1
        entry = make_entry(
            seq=seq,
            prev_hash=previous,
            at=time.time(),
            action=action,
            run_id=run_id,
            user_id=user_id,
            actor=actor,
            payload=body,
            key=key,
        )
        previous = entry["hash"]
        made.append(entry)
    return made


def parse_entry(text: str) -> AuditEntry:
    """Parse one line into an entry, raising ValueError when it is not a well-formed one."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc.msg})") from None
    except RecursionError:
        raise ValueError("JSON nested too deeply to read") from None
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    keys = set(obj)
    if UNSIGNED_FIELD in keys:
        if obj[UNSIGNED_FIELD] is not True:
            raise ValueError(f"field {UNSIGNED_FIELD!r} must be true when present")
        keys.discard(UNSIGNED_FIELD)
    if keys != ENTRY_FIELDS:
        extra, missing = sorted(keys - ENTRY_FIELDS), sorted(ENTRY_FIELDS - keys)
        raise ValueError(f"wrong fields (extra {extra}, missing {missing})")
    checks: list[tuple[str, bool]] = [
        ("seq", isinstance(obj["seq"], int) and not isinstance(obj["seq"], bool)),
        ("prev_hash", isinstance(obj["prev_hash"], str)),
        ("hash", isinstance(obj["hash"], str)),
        (
            "time",
            isinstance(obj["time"], int | float) and not isinstance(obj["time"], bool),
        ),
        ("run_id", isinstance(obj["run_id"], str)),
        ("user_id", obj["user_id"] is None or isinstance(obj["user_id"], str)),
        ("actor", isinstance(obj["actor"], str)),
        ("action", isinstance(obj["action"], str)),
        ("payload", isinstance(obj["payload"], dict)),
    ]
    for name, good in checks:
        if not good:
            raise ValueError(f"field {name!r} has the wrong type")
    entry: AuditEntry = obj  # type: ignore[assignment]  # checked field by field above
    return entry
