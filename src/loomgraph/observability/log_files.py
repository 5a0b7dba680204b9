"""Byte-level file work of an append-only log: its last line, a quarantine file for a torn
tail, whole writes, and the directory fsync that makes a new file's name durable."""

from __future__ import annotations

import os
import time
from pathlib import Path

from .audit_chain import AuditLogError

_TAIL_BLOCK = 8192  # the first read from a file's end; doubled for longer lines

__all__ = ["fsync_dir", "last_line", "sync_data", "write_all", "write_quarantine"]


def last_line(fd: int, size: int) -> bytes:
    """The bytes after the last newline before the final byte: the last line, newline kept."""
    if size <= 0:
        return b""
    buf = b""
    pos = size
    block = _TAIL_BLOCK
    while True:
        start = max(0, pos - block)
        buf = os.pread(fd, pos - start, start) + buf
        cut = buf.rfind(b"\n", 0, len(buf) - 1)
        if cut >= 0:
            return buf[cut + 1 :]
        if start == 0:
            return buf
        pos = start
        block *= 2  # long lines: grow the read so the scan stays linear


def write_quarantine(path: Path, data: bytes) -> Path:
    """Write `data` to a new `<path>.quarantine-<UTC time>[-n]` file, durably."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for n in range(1000):
        target = path.with_name(f"{path.name}.quarantine-{stamp}" + (f"-{n}" if n else ""))
        try:
            qfd = os.open(target, flags, 0o640)
        except FileExistsError:
            continue
        try:
            write_all(qfd, data)
            os.fsync(qfd)
        finally:
            os.close(qfd)
        fsync_dir(path.parent)
        return target
    raise AuditLogError(f"cannot create a quarantine file next to {path}")  # pragma: no cover


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def sync_data(fd: int) -> None:
    """Make what was written to `fd` durable, with the size that reaches it, but not its
    times: `fdatasync` where the platform has it (half an `fsync`'s cost on ext4 here, the
    inode's times being a second write), else `fsync`."""
    _SYNC_DATA(fd)


_SYNC_DATA = getattr(os, "fdatasync", os.fsync)


def fsync_dir(directory: Path) -> None:
    try:
        dfd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return  # some platforms cannot open directories; the data itself is fsynced
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)
