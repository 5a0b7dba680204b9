"""Committed WAL frames a database's `-shm` records but its `-wal` no longer holds."""

from __future__ import annotations

import os
import struct
from typing import NamedTuple

from loomgraph._storage.sqlite_held import direct_reads


class WalLoss(NamedTuple):
    """Committed transactions the `-shm` records but the `-wal` beside it no longer holds."""

    foreign: bool  # the -wal is another one (not merely missing or cut short)
    detail: str


def lost_wal_frames(path: str) -> WalLoss | None:
    """Compare a database's `-shm` with its `-wal`, without opening either through SQLite.

    After a crash both stay behind: the `-shm` header says how many WAL frames are committed
    (mxFrame), how many are already copied into the database (nBackfill) and the WAL's salt.
    Frames beyond nBackfill live only in the `-wal`; when it is missing, shorter than they
    need, or carries another salt (another database's log), SQLite would open the file without
    them (or apply foreign pages), silently. None: nothing lost, or nothing to tell (no -shm,
    or the file is open in this process: its `-shm` is live, and reading it would drop this
    process's locks; see `sqlite_held`).
    """
    with direct_reads(path) as safe:
        return read_lost_wal_frames(path) if safe else None


def read_lost_wal_frames(path: str) -> WalLoss | None:
    """`lost_wal_frames` for a caller already inside `direct_reads(path)`, safe to read."""
    try:
        with open(path + "-shm", "rb") as f:
            shm = f.read(100)
    except OSError:
        return None  # no -shm: SQLite rebuilds it from the -wal, which loses nothing
    if len(shm) < 100 or shm[:48] != shm[48:96] or not shm[12]:
        return None  # never initialised, or mid-update by a live writer: nothing to claim
    version, _, _, _, _, page, frames = struct.unpack("=IIIBBHI", shm[:20])
    backfilled = struct.unpack("=I", shm[96:100])[0]
    if version != 3007000 or frames <= backfilled:
        return None  # everything committed is in the database file already
    page = page if page > 1 else 65536 if page == 1 else 0
    pending = frames - backfilled
    wal = path + "-wal"
    try:
        with open(wal, "rb") as f:
            head = f.read(32)
        size = os.path.getsize(wal)
    except FileNotFoundError:
        return WalLoss(
            False,
            f"{wal} is missing, but {path}-shm records {pending} committed "
            "WAL frame(s) not yet in the database: those transactions are lost",
        )
    except OSError as err:
        return WalLoss(False, f"{wal} cannot be read: {err.strerror or err}")
    if len(head) < 32 or head[16:24] != shm[32:40]:
        return WalLoss(
            True,
            f"{wal} does not belong to {path}-shm (another salt): it is not "
            f"the log of the {pending} committed frame(s) the -shm records",
        )
    need = 32 + frames * (24 + page)
    if page and size < need:
        return WalLoss(
            False,
            f"{wal} is cut short ({size} of {need} bytes): some of the "
            f"{pending} committed WAL frame(s) the -shm records are lost",
        )
    return None
