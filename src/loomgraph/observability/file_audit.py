"""A keyed, hash-chained JSONL audit log that several processes can append to at once."""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from loomgraph.protocols.threads import run_in_thread

from .audit_chain import (
    EMPTY_HEAD,
    AuditAction,
    AuditEntry,
    AuditHead,
    AuditLogError,
    AuditLogUnavailable,
    VerifyResult,
    chain_entries,
    dumps,
    entry_hash,
    normalize_payload,
    parse_entry,
)
from .audit_key import AuditConfigError, resolve_audit_key
from .audit_verify import ChainVerifier
from .content_flag import content_flag
from .log_files import fsync_dir, last_line, sync_data, write_all, write_quarantine


class FileAuditLog:
    """An append-only JSONL file, one canonical hash-chained entry per line.

    Appends take an exclusive `flock` on the file itself, read the last line for the seq
    and hash to chain onto, write the new line with one `write` and `fsync` it, so any
    number of processes on one host can share a file. `flock` is not reliable on network
    file systems; keep the log on a local disk.

    A torn last line (a crash in the middle of an append, never acknowledged) is moved to
    `<path>.quarantine-<time>` when the log is opened or appended to, and an
    `audit_quarantined` entry records it; appending then goes on.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        key: bytes | str | None = None,
        *,
        key_file: str | os.PathLike[str] | None = None,
        key_env: str | None = None,
        unsigned: bool = False,
        capture_content: bool = False,
        heal: bool = True,
    ) -> None:
        """A log at `path` keyed from `key`, `key_file` or `$key_env` (see resolve_audit_key).

        `capture_content=True` makes runs record prompts, answers, tool arguments and tool
        output too (docs/observability.md lists where); by default they never do.
        `heal=False` leaves a torn tail in place when opening (for read-only checks).
        """
        self._path = _log_path(path)
        self._key = resolve_audit_key(key, key_file=key_file, key_env=key_env, unsigned=unsigned)
        self.capture_content = content_flag(capture_content)
        if heal and self._ends_torn():
            self.repair()  # only now is write access needed: read-only users can still open

    @property
    def path(self) -> Path:
        """Where the log lives."""
        return self._path

    @property
    def keyed(self) -> bool:
        """Whether entries are HMAC-SHA256 (True) or plain SHA-256 (False)."""
        return self._key is not None

    # ----------------------------------------------------------------------- writing

    async def close(self) -> None:
        """Nothing to close: every append opens and closes the file."""

    async def record(
        self,
        action: str,
        *,
        run_id: str,
        user_id: str | None,
        actor: str,
        payload: Mapping[str, Any],
    ) -> None:
        """Append one entry without blocking the event loop (the I/O runs in a thread of
        loomgraph's own, never the loop's default executor: a disk that hangs an fsync holds
        that thread only, not host-name resolution)."""
        await run_in_thread(
            self.append, action, run_id=run_id, user_id=user_id, actor=actor, payload=payload
        )

    async def record_many(
        self,
        entries: Sequence[tuple[str, str, Mapping[str, Any]]],
        *,
        run_id: str,
        user_id: str | None,
    ) -> None:
        """Append several entries of one run, (action, actor, payload) each, in order, with
        one write and one fsync (a run's `AuditWriter` hands over what queued up meanwhile);
        all are durable when this returns."""
        await run_in_thread(self.append_many, entries, run_id=run_id, user_id=user_id)

    def append(
        self,
        action: str,
        *,
        run_id: str,
        user_id: str | None,
        actor: str,
        payload: Mapping[str, Any],
    ) -> AuditEntry:
        """Append one entry, durable (fsynced) when this returns; blocking."""
        [entry] = self.append_many([(action, actor, payload)], run_id=run_id, user_id=user_id)
        return entry

    def append_many(
        self,
        entries: Sequence[tuple[str, str, Mapping[str, Any]]],
        *,
        run_id: str,
        user_id: str | None,
    ) -> list[AuditEntry]:
        """Append (action, actor, payload) entries in order under one lock, with one write
        and one fsync: durable when this returns; blocking. A file that cannot be opened or
        written (a directory gone, permissions, a full disk, an I/O error) raises
        `AuditLogUnavailable`: a run stays to be resumed, as for a log server that is down."""
        # Normalise before taking the lock so other writers wait only for the I/O.
        bodies = [(action, actor, normalize_payload(payload)) for action, actor, payload in entries]
        try:
            return self._append_bodies(bodies, run_id, user_id)
        except OSError as err:
            raise AuditLogUnavailable(str(self._path), f"{type(err).__name__}: {err}") from err

    def _append_bodies(
        self, bodies: list[tuple[str, str, dict[str, Any]]], run_id: str, user_id: str | None
    ) -> list[AuditEntry]:
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(self._path, flags, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            size = os.fstat(fd).st_size
            if self._quarantine_torn_tail(fd, size):
                size = os.fstat(fd).st_size
            made = self._chain_locked(fd, size, bodies, run_id, user_id)
            # Synced after unlocking: the next writer chains onto this line while it is being
            # made durable, and writers syncing at once share one journal commit (group
            # commit). The sync flushes the whole file, so when a later entry is
            # acknowledged, every entry before it is durable too.
            fcntl.flock(fd, fcntl.LOCK_UN)
            sync_data(fd)
            if size == 0:
                # A new file's directory entry must be durable too, or a crash loses the log.
                fsync_dir(self._path.parent)
            return made
        finally:
            os.close(fd)  # closing also releases the flock

    def repair(self) -> bytes:
        """Move a torn last line aside (recorded in the log); return the bytes moved.

        Opening the log and every append do this already; it is public for tools that
        want to heal a log without writing anything else.
        """
        try:
            # O_APPEND: the quarantine entry must go at the end, not at offset 0.
            fd = os.open(self._path, os.O_RDWR | os.O_APPEND | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            return b""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            return self._quarantine_torn_tail(fd, os.fstat(fd).st_size)
        finally:
            os.close(fd)

    def _append_locked(
        self,
        fd: int,
        size: int,
        action: str,
        run_id: str,
        user_id: str | None,
        actor: str,
        body: dict[str, Any],
    ) -> AuditEntry:
        """Chain one entry onto the file's last line and fsync it; the flock is held."""
        [entry] = self._chain_locked(fd, size, [(action, actor, body)], run_id, user_id)
        sync_data(fd)
        if size == 0:
            fsync_dir(self._path.parent)
        return entry

    def _chain_locked(
        self,
        fd: int,
        size: int,
        bodies: Sequence[tuple[str, str, dict[str, Any]]],
        run_id: str,
        user_id: str | None,
    ) -> list[AuditEntry]:
        """Chain entries onto the file's last line and write them with one `write` (not
        fsynced); the flock is held."""
        head = self._head_of(fd, size)
        made = chain_entries(head, bodies, run_id=run_id, user_id=user_id, key=self._key)
        write_all(fd, "".join(dumps(entry) + "\n" for entry in made).encode("utf-8"))
        return made

    def _quarantine_torn_tail(self, fd: int, size: int) -> bytes:
        """With the flock held: move a torn last line to a quarantine file and record it.

        The torn bytes are durable in the quarantine file before the log is cut, so a
        crash in between loses nothing; the entry that follows names the file and the
        bytes' SHA-256 (not the bytes: they may hold content the log must not).
        """
        last = last_line(fd, size)
        if not last or last.endswith(b"\n"):
            return b""
        quarantine = write_quarantine(self._path, last)
        os.ftruncate(fd, size - len(last))
        sync_data(fd)
        payload = {
            "file": quarantine.name,
            "bytes": len(last),
            "sha256": hashlib.sha256(last).hexdigest(),
            "reason": "torn last line (a crash during an append); the entry was never acknowledged",
        }
        self._append_locked(
            fd,
            size - len(last),
            AuditAction.AUDIT_QUARANTINED,
            "",
            None,
            "audit_log",
            payload,
        )
        return last

    # ----------------------------------------------------------------------- reading

    def head(self) -> AuditHead:
        """The (seq, hash) of the last complete entry; `(0, GENESIS_HASH)` when empty.

        Keep it somewhere the log's writers cannot change, and pass it to `verify` later
        to detect a truncated or rewritten tail.
        """
        fd = self._open_read()
        if fd is None:
            return EMPTY_HEAD
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            size = os.fstat(fd).st_size
            last = last_line(fd, size)
            if last and not last.endswith(b"\n"):
                last = last_line(fd, size - len(last))  # the head is the last complete entry
            if not last:
                return EMPTY_HEAD
            try:
                entry = parse_entry(last.decode("utf-8").rstrip("\n"))
            except (ValueError, UnicodeDecodeError) as exc:
                raise AuditLogError(f"the last entry of {self._path} is malformed: {exc}") from None
            return AuditHead(entry["seq"], entry["hash"])
        finally:
            os.close(fd)

    def torn_bytes(self) -> int:
        """How many bytes of an incomplete last entry follow the last complete one (a crash
        mid-append; `verify` reports it, a writer that heals moves it aside); 0 for none."""
        fd = self._open_read()
        if fd is None:
            return 0
        try:
            size = os.fstat(fd).st_size
            last = last_line(fd, size)
            return len(last) if last and not last.endswith(b"\n") else 0
        finally:
            os.close(fd)

    def entries(self, *, run_id: str | None = None) -> Iterator[AuditEntry]:
        """Every entry in order (only one run's with `run_id`); not verified.

        Raises AuditLogError at a malformed or torn line, after yielding those before it.
        """
        for number, (raw, complete) in enumerate(self._lines(), start=1):
            if not complete:
                raise AuditLogError(f"torn last line (line {number}) in {self._path}")
            try:
                entry = parse_entry(raw.decode("utf-8").rstrip("\n"))
            except (ValueError, UnicodeDecodeError) as exc:
                raise AuditLogError(f"malformed line {number} in {self._path}: {exc}") from None
            if run_id is None or entry["run_id"] == run_id:
                yield entry

    def verify(self, expected_head: tuple[int, str] | None = None) -> VerifyResult:
        """Check the whole chain (and, given a recorded head, that the tail is intact)."""
        verifier = ChainVerifier(self._key, expected_head)
        for raw, complete in self._lines():
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                verifier.fail(verifier.count + 1, f"entry {verifier.count + 1} is not UTF-8")
                break
            verifier.feed(text[:-1] if complete else text, complete=complete)
            if verifier.failed:
                break
        return verifier.result()

    async def averify(self, expected_head: tuple[int, str] | None = None) -> VerifyResult:
        """`verify` in a thread, for use inside an event loop."""
        return await asyncio.to_thread(self.verify, expected_head)

    # ----------------------------------------------------------------------- internals

    def _ends_torn(self) -> bool:
        """Whether the file's last byte is not a newline (checked without a lock or writing)."""
        fd = self._open_read()
        if fd is None:
            return False
        try:
            size = os.fstat(fd).st_size
            return size > 0 and os.pread(fd, 1, size - 1) != b"\n"
        finally:
            os.close(fd)

    def _open_read(self) -> int | None:
        try:
            return os.open(self._path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            return None

    def _lines(self) -> Iterator[tuple[bytes, bool]]:
        """Each line with whether it ends in a newline, up to the size seen under a lock."""
        fd = self._open_read()
        if fd is None:
            return
        with open(fd, "rb", closefd=True) as f:
            # Appends finish under the exclusive lock, so the size seen under a shared lock
            # ends on a line boundary (or on a torn line left by a crash), and the prefix up
            # to it never changes; reading it needs no lock.
            fcntl.flock(fd, fcntl.LOCK_SH)
            limit = os.fstat(fd).st_size
            fcntl.flock(fd, fcntl.LOCK_UN)
            read = 0
            while read < limit:
                raw = f.readline(limit - read)
                if not raw:
                    break
                read += len(raw)
                yield raw, raw.endswith(b"\n")

    def _head_of(self, fd: int, size: int) -> AuditHead:
        """The head to chain onto; refuses a broken last line (a torn one is moved first)."""
        last = last_line(fd, size)
        if not last:
            return EMPTY_HEAD
        if not last.endswith(b"\n"):  # pragma: no cover - quarantined before this is called
            raise AuditLogError(f"{self._path} ends in a torn line")
        try:
            entry = parse_entry(last[:-1].decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise AuditLogError(f"the last entry of {self._path} is malformed: {exc}") from None
        if ("unsigned" in entry) != (self._key is None) or entry_hash(entry, self._key) != entry[
            "hash"
        ]:
            # Chaining onto an entry this key cannot verify would make the whole log
            # unverifiable; most often the key is wrong (or the log was tampered with).
            raise AuditLogError(
                f"the last entry of {self._path} does not verify with this key "
                "(wrong key, or the entry was edited)"
            )
        return AuditHead(entry["seq"], entry["hash"])


def _log_path(path: str | os.PathLike[str]) -> Path:
    """The log's path, refused when no run could ever write there: empty, a folder, or in a
    folder that does not exist (found when the log is made, not at a run's first entry)."""
    if not os.fspath(path):
        raise AuditConfigError("the audit log's path is empty: name a file")
    where = Path(path)
    if where.is_dir():
        raise AuditConfigError(f"the audit log's path {str(where)!r} is a folder: name a file")
    if not where.parent.is_dir():
        raise AuditConfigError(
            f"the audit log's folder {str(where.parent)!r} does not exist: make it first"
        )
    return where
