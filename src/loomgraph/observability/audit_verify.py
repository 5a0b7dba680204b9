"""Checking an audit log's hash chain, entry by entry, in log order."""

from __future__ import annotations

from collections.abc import Callable

from .audit_chain import (
    EMPTY_HEAD,
    GENESIS_HASH,
    UNSIGNED_FIELD,
    AuditEntry,
    AuditHead,
    VerifyResult,
    dumps,
    entry_hash,
    parse_entry,
)

__all__ = ["ChainVerifier"]


class ChainVerifier:
    """Checks entries one at a time, in log order, and stops at the first break."""

    def __init__(self, key: bytes | None, expected_head: tuple[int, str] | None = None) -> None:
        """Verify with `key` (None: an unsigned log), optionally against a recorded head."""
        self._key = key
        self._expected = None if expected_head is None else AuditHead(*expected_head)
        self._hash_at_expected: str | None = None
        self.count = 0
        self.prev_hash = GENESIS_HASH
        self.failure: tuple[int, str] | None = None

    @property
    def failed(self) -> bool:
        """Whether a problem was found; later entries are then not checked."""
        return self.failure is not None

    def fail(self, seq: int, problem: str) -> None:
        """Record a problem at `seq` unless an earlier one was already found."""
        if self.failure is None:
            self.failure = (seq, problem)

    def feed(
        self,
        text: str,
        *,
        complete: bool = True,
        check: Callable[[AuditEntry], str | None] | None = None,
    ) -> AuditEntry | None:
        """Check the next line (without its newline); None once the chain is broken.

        `check` may name a further problem with an otherwise intact entry (a backend's
        own consistency rule); it is reported at that entry.
        """
        if self.failure is not None:
            return None
        expected = self.count + 1
        if not complete:
            # The final write never finished (no newline): the entry was never acknowledged,
            # but it is reported rather than skipped so nobody can hide an entry this way.
            self.fail(expected, f"torn last line: entry {expected} was only partly written")
            return None
        try:
            entry = parse_entry(text)
        except ValueError as exc:
            self.fail(expected, f"malformed entry at line {expected}: {exc}")
            return None
        seq = entry["seq"]
        if seq > expected:
            self.fail(expected, f"entry {expected} is missing (found seq {seq} in its place)")
            return None
        if seq < expected:
            self.fail(
                expected,
                f"seq {seq} found where {expected} was expected (inserted, duplicated or "
                "reordered entry)",
            )
            return None
        if entry["prev_hash"] != self.prev_hash:
            self.fail(
                expected,
                f"prev_hash of entry {expected} does not match the hash of entry "
                f"{expected - 1} (an entry was inserted, removed or replaced)",
            )
            return None
        unsigned = UNSIGNED_FIELD in entry
        if unsigned != (self._key is None):
            self.fail(
                expected,
                f"entry {expected} is unsigned in a keyed log (rewritten without the key)"
                if unsigned
                else f"entry {expected} is keyed but no key was given to verify it",
            )
            return None
        if entry_hash(entry, self._key) != entry["hash"]:
            self.fail(expected, f"hash mismatch at entry {expected}: edited, or wrong key")
            return None
        if dumps(entry) != text:
            self.fail(expected, f"entry {expected} is not in canonical form (edited)")
            return None
        problem = None if check is None else check(entry)
        if problem is not None:
            self.fail(expected, problem)
            return None
        self.count = expected
        self.prev_hash = entry["hash"]
        if self._expected is not None and expected == self._expected.seq:
            self._hash_at_expected = entry["hash"]
        return entry

    def result(self) -> VerifyResult:
        """The verdict once every entry has been fed."""
        head = AuditHead(self.count, self.prev_hash)
        if self.failure is not None:
            seq, problem = self.failure
            return VerifyResult(False, self.count, seq, problem, head)
        want = self._expected
        if want is not None:
            if self.count < want.seq:
                return VerifyResult(
                    False,
                    self.count,
                    self.count + 1,
                    f"truncated: the log ends at seq {self.count} but the recorded head is "
                    f"seq {want.seq}",
                    head,
                )
            actual = GENESIS_HASH if want.seq == 0 else self._hash_at_expected
            if actual != want.hash:
                # Rewritten somewhere up to the head's seq, and chained again after: no
                # entry can be told intact, so none is counted as verified.
                return VerifyResult(
                    False,
                    0,
                    want.seq,
                    f"entry {want.seq} differs from the recorded head: the log was rewritten "
                    f"at or before seq {want.seq}",
                    EMPTY_HEAD,
                )
        return VerifyResult(True, self.count, None, "", head)
